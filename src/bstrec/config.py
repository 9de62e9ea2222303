"""Typed run configuration: dataclasses, YAML files and ``--set key=value`` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class DataConfig:
    source: str = "ml-1m"  # folder, interactions file, or cached data set name
    split: str = "leave-one-out"  # leave-one-out | time-cutoff
    max_len: int = 20  # L: history length (paper: 20)


@dataclass
class ModelConfig:
    name: str = "bst"  # bst | popularity | transitions | global-mean | user-mean | bias
    task: str = "ranking"  # ranking | rating
    dim: int = 64  # token embedding width D
    blocks: int = 1  # transformer blocks (paper: 1)
    heads: int = 4  # attention heads (paper: 8; each head costs per candidate)
    ffn_mult: int = 2  # feed-forward width = ffn_mult * D
    dropout: float = 0.1  # on history token embeddings (computed once per user: cheap)
    # on residuals and the MLP, which run once per (user, candidate) pair: random masks
    # there cost more than the matmuls on 2 cores, so off by default
    block_dropout: float = 0.0
    output: str = "target"  # target: read the target position | concat: all positions (paper)
    mlp: list[int] = field(default_factory=lambda: [64, 32])  # paper: 1024-512-256
    use_ratings: bool = True  # rating embedding on history tokens
    use_genres: bool = True
    use_year: bool = True
    use_user_features: bool = True
    use_user_id: bool = False
    interaction_features: bool = True  # add target*history products to the MLP input
    # transitions baseline: pairs up to `window` apart, the last `last_n` movies weighted
    # decay**j; defaults chosen on validation (protocol R) of ml-1m-u2999
    window: int = 5
    last_n: int = 5
    decay: float = 0.6


@dataclass
class TrainConfig:
    seed: int = 0
    epochs: int = 10  # also the horizon of the cosine schedule (10 beat 6 on validation)
    batch_size: int = 512
    lr: float = 1e-2
    weight_decay: float = 0.01
    optimizer: str = "adamw"  # adamw | adagrad (paper)
    schedule: str = "cosine"  # constant | cosine: decay to min_lr_fraction over `epochs`
    warmup_steps: int = 100
    min_lr_fraction: float = 0.05
    loss: str = "sampled-softmax"  # ranking: sampled-softmax | bce; rating: mse
    negatives: int = 64  # sampled negatives per batch (shared) or per positive (bce)
    sampler: str = "uniform"  # uniform | popularity
    patience: int = 3  # epochs without validation improvement before stopping
    max_minutes: float = 0.0  # stop after this wall time (0 = no limit)
    eval_every: float = 1.0  # validate every this many epochs (fractions allowed)
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # torch threads (0 = torch default)
    checkpoint_every_steps: int = 0  # also checkpoint mid-epoch every N steps (0 = off)
    progress: bool = True


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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

    def override(self, assignments: list[str]) -> RunConfig:
        for a in assignments:
            if "=" not in a:
                raise ValueError(f"--set {a!r}: expected key=value, e.g. train.lr=0.001")
            key, value = a.split("=", 1)
            _set(self, key.strip(), yaml.safe_load(value))
        return self


def _set(cfg: RunConfig, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ValueError(f"config key {dotted!r}: expected section.name, e.g. model.dim")
    section, name = parts
    obj = getattr(cfg, section, None)
    if obj is None or not dataclasses.is_dataclass(obj):
        raise ValueError(f"config key {dotted!r}: unknown section {section!r}")
    types = {f.name: f.type for f in dataclasses.fields(obj)}
    if name not in types:
        raise ValueError(
            f"config key {dotted!r}: unknown field; {section} has {', '.join(sorted(types))}"
        )
    current = getattr(obj, name)
    if isinstance(current, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {dotted!r}: expected true/false, got {value!r}")
    elif isinstance(current, int) and not isinstance(value, bool):
        if not isinstance(value, int):
            raise ValueError(f"config key {dotted!r}: expected an integer, got {value!r}")
    elif isinstance(current, float):
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ValueError(f"config key {dotted!r}: expected a number, got {value!r}")
        value = float(value)
    elif isinstance(current, list):
        if not isinstance(value, list):
            raise ValueError(f"config key {dotted!r}: expected a list, got {value!r}")
    elif isinstance(current, str) and not isinstance(value, str):
        value = str(value)
    setattr(obj, name, value)
