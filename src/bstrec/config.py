"""Typed run configuration: dataclasses, YAML files and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
import datetime
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class DataConfig:
    source: str = "ml-1m"  # folder, interactions file, or cached data set name
    split: Literal["leave-one-out", "time-cutoff"] = "leave-one-out"
    # L: history length; 0 = the task's default, written into the run's config.yaml:
    # ranking 20 (the paper's), rating 50 (the fold-in factors read a longer history:
    # validation RMSE 0.9007 at 20, 0.8969 at 50; docs/experiments.md, round 7)
    max_len: int = 0
    # "now" for the time-gap feature: last-input (protocol R, what serving builds: the
    # time of the last watch) | target (the BST paper's offline choice, R-paper)
    now: Literal["last-input", "target"] = "last-input"


@dataclass
class ModelConfig:
    name: str = "bst"  # bst | popularity | cooccurrence | global-mean | user-mean | bias
    task: Literal["ranking", "rating"] = "ranking"
    dim: int = 64  # token embedding width D
    blocks: int = 1  # transformer blocks (paper: 1)
    heads: int = 4  # attention heads (paper: 8; each head costs per candidate)
    ffn_mult: int = 2  # feed-forward width = ffn_mult * D
    dropout: float = 0.1  # on history token embeddings (computed once per user: cheap)
    # on residuals and the MLP, which run once per (user, candidate) pair: random masks
    # there cost more than the matmuls on 2 cores, so off by default
    block_dropout: float = 0.0
    # target: read the target position | concat: all positions (paper)
    output: Literal["target", "concat"] = "target"
    mlp: list[int] = field(default_factory=lambda: [64, 32])  # paper: 1024-512-256
    use_ratings: bool = True  # rating embedding on history tokens
    use_genres: bool = True
    use_year: bool = True
    use_user_features: bool = True
    use_user_id: bool = False
    # share of training examples whose user features (and id) are replaced by "unknown"
    # (code 0), as an anonymous history request has them
    user_feature_dropout: float = 0.1  # val NDCG@10 0.1889 -> 0.1928 (docs, round 4)
    interaction_features: bool = True  # add target*history products to the MLP input
    # ranking: the co-occurrence baseline's score as an input of the head (Wide & Deep),
    # fitted and tuned on the training part when training starts | none
    wide: Literal["cooccurrence", "none"] = "cooccurrence"
    # ranking: add a user-vector . candidate-token term, trained with a full softmax too
    dot: bool = True
    # rating: movie factors of the wide part (ALS on the training ratings; a history's
    # vector is solved from its own ratings), 0 = the bias part alone. BST rating's
    # validation RMSE: 0.9246 with the bias part (L 20), 0.8969 with k 32 (L 50; experiments,
    # round 7)
    rating_factors: int = 32


@dataclass
class TrainConfig:
    seed: int = 0
    # also the horizon of the cosine schedule; 0 = the task's default, written into the
    # run's config.yaml: ranking 20 (windows of max_len targets; about 10 minutes on one
    # core of a 2-core machine for ml-1m-u2999, less where `patience` stops it: its
    # learning rate stays high for longer than a 12-epoch cosine's, and the best
    # validation came at epoch 12 on all users, 12 on users 1-1500, 18 on 1501-2999,
    # 0.001 to 0.013 above the 12-epoch schedule's; docs/experiments.md, round 7),
    # rating 2 (about 3 minutes: the head adds little to its fold-in factors after the
    # first epoch, round 7)
    epochs: int = 0
    # stop after this many epochs of the `epochs`-long schedule (0 = run it all): fixed
    # work that follows the default schedule's first part (the quickstart's 12 of 20)
    stop_after_epochs: int = 0
    batch_size: int = 512
    lr: float = 1e-2
    weight_decay: float = 0.01
    optimizer: Literal["adamw", "adagrad"] = "adamw"  # adagrad: the paper's
    # cosine: decay to min_lr_fraction over `epochs`
    schedule: Literal["constant", "cosine"] = "cosine"
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    # ranking: sampled-softmax | bce; the rating task always regresses with MSE
    loss: Literal["sampled-softmax", "bce"] = "sampled-softmax"
    # sampled negatives per batch (shared) or per positive (bce); 16: within a standard
    # error of 64 at equal steps, at a third of the head's cost (docs/experiments.md)
    negatives: int = 16
    sampler: Literal["uniform", "popularity"] = "uniform"
    # train on every this-many-th target of each user (its window's other positions
    # still teach the causal reading); 0 = the model's own choice (SASRec: max_len)
    target_stride: int = 0
    patience: int = 3  # validations without improvement before stopping
    # ... counted only from this share of the schedule on: a cosine's best validation
    # comes once its learning rate has come down (epoch 12 to 18 of 20 on ml-1m-u2999),
    # and on a small data set noisy early validations stopped the run at epoch 7 of 20
    # with its best at epoch 1, the wide part's level (943 users of ml-1m in ML-100K's
    # files; docs/experiments.md, round 8)
    patience_from: float = 0.5
    max_minutes: float = 0.0  # stop after this wall time (0 = no limit)
    # validate every this many epochs (fractions allowed); every 2: six validations of
    # the default ranking run, each a full-catalogue pass over the validation users
    eval_every: float = 2.0
    # validate during training on a fixed, seeded sample of at most this many users
    # (0 = all); the figure's standard error is logged beside it
    val_users: int = 10000
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # bf16: training steps under bf16 autocast (weights stay fp32). Opt-in: on an H200
    # the default model's steps are bound by kernel launches, not arithmetic, and bf16
    # gave the same validation NDCG@10 no sooner (docs/experiments.md, GPU)
    precision: Literal["fp32", "bf16"] = "fp32"
    # torch threads; 0 = auto: 1 on CPU. On 2-core machines a second thread slowed
    # training steps 3-9x whenever another process was busy (README, Speed)
    threads: int = 0
    # CPU: keep freed memory mapped for the next step instead of returning it to the OS
    # (glibc; a step 1.5x faster on 2 cores, bstrec/training/memory.py)
    keep_freed_memory: bool = True
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N steps (0 = off)
    progress: bool = True


DEFAULT_EPOCHS = {"ranking": 20, "rating": 2}
DEFAULT_MAX_LEN = {"ranking": 20, "rating": 50}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolve(self) -> RunConfig:
        """Check every field's type and allowed values, then fill the settings whose
        default depends on others (``train.epochs``, ``data.max_len``)."""
        for section in (self.data, self.model, self.train):
            hints = typing.get_type_hints(type(section))
            for f in dataclasses.fields(section):
                key = f"{type(section).__name__.removesuffix('Config').lower()}.{f.name}"
                setattr(section, f.name, _coerce(getattr(section, f.name), hints[f.name], key))
        if self.train.epochs == 0:
            self.train.epochs = DEFAULT_EPOCHS.get(self.model.task, 12)
        if self.data.max_len == 0:
            self.data.max_len = DEFAULT_MAX_LEN.get(self.model.task, 20)
        return self

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        cfg = cls()
        for section, values in (d or {}).items():
            if not hasattr(cfg, section):
                raise ValueError(f"config: unknown section {section!r}")
            for k, v in (values or {}).items():
                _set(cfg, f"{section}.{k}", v)
        return cfg

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML: {e}") from None
        return cls.from_dict(raw)

    def set(self, key: str, value: Any) -> RunConfig:
        """Set ``section.name`` (e.g. ``"train.lr"``) to ``value``, checked and converted
        to the field's type as for a config file; ValueError names the key."""
        _set(self, key, value)
        return self

    def override(self, assignments: list[str]) -> RunConfig:
        for a in assignments:
            if "=" not in a:
                raise ValueError(f"--set {a!r}: expected key=value, e.g. train.lr=0.001")
            key, value = a.split("=", 1)
            _set(self, key.strip(), yaml.safe_load(value))
        return self


def _set(cfg: RunConfig, dotted: str, value: Any) -> None:
    """Set ``section.name`` to ``value`` converted to the field's declared type.

    Values come from YAML (a config file, or ``--set``, parsed as YAML 1.1), so the
    type is checked here: YAML reads ``1e-3`` as a string and ``true`` as a boolean.
    """
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ValueError(f"config key {dotted!r}: expected section.name, e.g. model.dim")
    section, name = parts
    obj = getattr(cfg, section, None)
    if obj is None or not dataclasses.is_dataclass(obj):
        raise ValueError(f"config key {dotted!r}: unknown section {section!r}")
    names = {f.name for f in dataclasses.fields(obj)}
    if name not in names:
        raise ValueError(
            f"config key {dotted!r}: unknown field; {section} has {', '.join(sorted(names))}"
        )
    hint = typing.get_type_hints(type(obj))[name]
    setattr(obj, name, _coerce(value, hint, dotted))


_INT_TEXT = re.compile(r"[+-]?\d+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as type ``hint``, or a ValueError naming ``key`` and the type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ValueError:
        return ValueError(
            f"config key {key!r}: expected {expected} ({_type_name(hint)}), got {value!r}"
        )

    if hint is Any:
        return value
    if origin is Literal:
        # the allowed values live in the field's type, so every reader of the config
        # (files, --set, the Python API) gets the same check and the same message
        if isinstance(value, str) and value in args:
            return value
        raise ValueError(
            f"config key {key!r}: expected one of {', '.join(map(str, args))}, got {value!r}"
        )
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ValueError as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise ValueError(f"config key {key!r}: expected {_type_name(hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
            return int(value)
        raise bad("a whole number")
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)
        raise bad("a number")
    if hint is str:
        if isinstance(value, bool):  # YAML 1.1 reads yes/no/on/off as booleans
            return "true" if value else "false"
        if isinstance(value, str | int | float | datetime.date):
            return str(value)
        raise bad("a string")
    if origin is list:
        if not isinstance(value, list):
            raise bad("a list")
        (item,) = args or (Any,)
        return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        kt, vt = args or (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and not isinstance(value, hint):
        raise bad("a value")
    return value


def _type_name(hint: Any) -> str:
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "")
