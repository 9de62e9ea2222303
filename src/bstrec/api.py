"""The public Python API: train into a run folder, load one, evaluate, recommend, explain.

```python
import bstrec
ds = bstrec.load_dataset("ml-1m")
run = bstrec.fit(ds, out="runs/bst", task="ranking", train__epochs=4)
run = bstrec.load_run("runs/bst")
run.evaluate("test")                        # {"protocol": "R", "NDCG@10": ..., ...}
run.recommend(user=100, k=10).to_pandas()   # titles, scores and reasons
run.recommend(history=[1193, 661, 914], k=10)
run.explain(user=100, movie=2571)
```

The ``bstrec`` command is a thin layer over these functions (one code path): what
``bstrec evaluate`` prints is what ``Run.evaluate`` returns. Errors are exceptions
(``bstrec.errors``): ``ArgumentError`` for a call that cannot be, ``DataError`` for
bad data, run folders and unknown ids, ``TrainingError`` when training cannot go on.

The function that trains is ``fit``, not ``train``: ``bstrec.train`` is the module of
the training loop, and a package attribute of that name would be replaced by the
module as soon as anything imports it.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from bstrec.config import RunConfig
from bstrec.data.interactions import DataError, Dataset
from bstrec.errors import ArgumentError
from bstrec.results import Contribution, Explanation, Recommendations
from bstrec.values import plain

Log = Callable[[str], None]


def describe(ds: Dataset) -> dict:
    """Size, density, time range, history lengths, features and ratings of a data set
    (what ``bstrec data info`` prints)."""
    from bstrec.data.stats import describe as _describe

    return _describe(ds)


def fit(
    data: Dataset | str | Path | None = None,
    *,
    out: str | Path | None = None,
    model: str | None = None,
    task: str | None = None,
    config: RunConfig | Mapping | str | Path | None = None,
    resume: bool = False,
    log: Log | None = print,
    progress: bool | None = None,
    **overrides: Any,
) -> Run:
    """Train BST (or fit a baseline) on ``data`` into the run folder ``out``; the run.

    data: a Dataset, or a folder, interactions file or data set name for
        ``load_dataset`` (None: the config's ``data.source``).
    out: the run folder to write (None: a new temporary folder).
    model, task: ``bst`` (default), ``sasrec`` or a baseline (``popularity``,
        ``cooccurrence``, ``itemknn``, ``ease``, ``global-mean``, ...); ``ranking`` or
        ``rating``. They win over ``config``.
    config: a RunConfig, a nested dict ``{"train": {"lr": 0.005}}`` or a YAML file.
    overrides: config keys as ``section__name=value`` (``train__epochs=4``,
        ``model__dim=32``), scikit-learn's spelling, or as ``**{"train.epochs": 4}``;
        values are checked against the field's type.
    resume: continue the run in ``out`` from its last checkpoint (its config.yaml;
        overrides may change epochs, patience, lr, ...).
    log: where progress lines go (None: nowhere); progress: the progress bar
        (None: the config's ``train.progress``).

    Training is seeded and keeps the weights that scored best on validation. A folder
    that this call creates is removed again if training fails before it holds a model
    or a checkpoint. Raises ArgumentError, DataError, TrainingError.
    """
    import bstrec.train as training  # looked up at call time (tests replace `train`)
    from bstrec.distributed import torchrun_world

    if resume:
        if out is None:
            raise ArgumentError("resume=True continues the run in out=; give its folder")
        if config is None:
            if not (Path(out) / "config.yaml").is_file():
                raise DataError(f"{out}: not a run folder (no config.yaml); nothing to resume")
            config = Path(out) / "config.yaml"
    cfg = build_config(
        config,
        model=model,
        task=task,
        data=None if data is None or isinstance(data, Dataset) else data,
        overrides=overrides,
    )
    if progress is not None:
        cfg.train.progress = bool(progress)
    ds = data if isinstance(data, Dataset) else _load(cfg.data.source)
    rank = torchrun_world()[0]
    if out is None:
        out = created = Path(tempfile.mkdtemp(prefix="bstrec-run-"))
    else:
        out = Path(out)
        created = _first_missing(out) if rank == 0 else None
    try:
        training.train(cfg, ds, out, log=log or _quiet, resume=resume)
    except BaseException:
        if created is not None:
            _remove_if_empty_run(created, out)
        raise
    return Run(out)


def load_run(path: str | Path) -> Run:
    """A trained run from its folder alone (no data files needed). DataError when the
    folder is not a complete run."""
    from bstrec.run_dir import load_run as _load_run

    return Run(path, _loaded=_load_run(Path(path)))


def build_config(
    config: RunConfig | Mapping | str | Path | None = None,
    *,
    model: str | None = None,
    task: str | None = None,
    data: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> RunConfig:
    """A RunConfig from a config (object, dict or YAML file), then the named options,
    then ``overrides`` (``section__name`` or ``section.name`` keys); the caller's
    config object is not changed. ArgumentError for bad keys, values or model names."""
    try:
        if config is None:
            cfg = RunConfig()
        elif isinstance(config, RunConfig):
            cfg = copy.deepcopy(config)
        elif isinstance(config, Mapping):
            cfg = RunConfig.from_dict(dict(config))
        elif isinstance(config, str | Path):
            if not Path(config).is_file():
                raise ArgumentError(f"config {config}: no such file")
            cfg = RunConfig.load(Path(config))
        else:
            raise ArgumentError(
                f"config: a RunConfig, a dict or a YAML file, not {type(config).__name__}"
            )
        if model is not None:
            cfg.model.name = model
        if task is not None:
            cfg.model.task = task
        if data is not None:
            cfg.data.source = str(data)
        for key, value in (overrides or {}).items():
            dotted = key.replace("__", ".", 1) if "." not in key else key
            if "." not in dotted:
                raise ArgumentError(
                    f"{key}={value!r}: not an argument of fit, nor a config "
                    "key; write config keys as section__name, e.g. "
                    "train__epochs=4 or model__dim=32"
                )
            cfg.set(dotted, value)
    except ArgumentError:
        raise
    except ValueError as e:  # the config's own checks: the key and the type it wants
        raise ArgumentError(str(e)) from None
    if cfg.model.task not in ("ranking", "rating"):
        raise ArgumentError(f"task must be ranking or rating, not {cfg.model.task!r}")
    check_model_name(cfg.model.name)
    return cfg


def check_model_name(name: str) -> None:
    from bstrec.models.factory import MODELS

    if name not in MODELS:
        raise ArgumentError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


class Run:
    """A run folder written by ``fit`` or ``bstrec train``: its config, learning curve,
    evaluation, recommendations and explanations. The model is loaded on first use."""

    def __init__(self, path: str | Path, *, _loaded=None):
        self.path = Path(path)
        self._loaded = _loaded
        self._recommenders: dict[tuple, object] = {}  # settings -> Recommender

    # ------------------------------------------------------------ what it holds
    @property
    def loaded(self):
        """The run as ``run_dir.load_run`` reads it (model, config, saved data)."""
        if self._loaded is None:
            from bstrec.run_dir import load_run as _load_run

            self._loaded = _load_run(self.path)
        return self._loaded

    @property
    def config(self) -> RunConfig:
        return self.loaded.config

    @property
    def model_name(self) -> str:
        return self.loaded.config.model.name

    @property
    def task(self) -> str:
        return self.loaded.model.task

    @property
    def model(self):
        """The trained torch module (eval mode), following the contract of
        ``models.base.ScoringModel``."""
        return self.loaded.model

    @property
    def dataset(self) -> Dataset:
        """The data set as saved in the run (histories, ids, titles)."""
        return self.loaded.dataset

    @property
    def summary(self) -> dict:
        """summary.json: best validation metrics, training seconds, data checksum."""
        return _read_json(self.path / "summary.json")

    @property
    def learning_curve(self) -> list[dict]:
        """Every validation during training (metrics.jsonl), oldest first: epoch,
        fraction of training done, train_loss, the validation metrics, train_seconds."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            raise DataError(f"{path}: missing; is this a complete run folder?")
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ------------------------------------------------------------ evaluation
    def evaluate(
        self,
        split: str = "val",
        *,
        users: int | None = None,
        paper: bool = False,
        candidates: int | None = None,
    ) -> dict:
        """Protocol R (ranking: full-catalogue HR@k, NDCG@10, MRR) or T (rating: RMSE,
        MAE) on the run's own split; the dict names its ``protocol``.

        split: ``val`` or ``test`` (read test once, at the end). users: a fixed, seeded
        sample of that many users (None: all), with the standard error of NDCG@10.
        paper: R-paper, the gap feature measured from the target's own time (the BST
        paper's offline choice) instead of the last input watch. candidates: retrieve
        this many movies per user with the model's cheap stage and rank only those (0:
        the whole catalogue; None: 200 above 5,000 movies, else 0), reporting the
        stage's recall.
        """
        from bstrec.evaluate_run import evaluate_run

        if split not in ("val", "test"):
            raise ArgumentError(f"split must be 'val' or 'test', not {split!r}")
        if users is not None and (
            isinstance(users, bool) or not isinstance(users, int) or users < 0
        ):
            raise ArgumentError(
                f"users must be a whole number >= 0 (0 or None: all), not {users!r}"
            )
        _check_candidates(candidates)
        return evaluate_run(
            self.loaded,
            split,
            users=users or 0,
            now="target" if paper else "last-input",
            candidates=candidates,
        )

    # ------------------------------------------------------------ recommendations
    def recommender(self, **settings):
        """The ``recommend.Recommender`` over this run with these ``settings``
        (``keep_top``, ``candidates``, ``explain_top``, ``trace``; none: the defaults), built once
        per settings and then reused with what it has kept."""
        from bstrec.recommend import Recommender

        key = tuple(sorted(settings.items()))
        if key not in self._recommenders:
            self._recommenders[key] = Recommender(self.loaded, **settings)
        return self._recommenders[key]

    def recommend(
        self,
        user=None,
        *,
        history: Iterable | None = None,
        k: int = 10,
        user_features: Mapping[str, str] | None = None,
        candidates: int | None = None,
        ratings: Iterable | None = None,
    ) -> Recommendations:
        """The top ``k`` movies the user has not watched, best first, each with the
        watched movies that drove it.

        user: a raw user id of the data set; or history: raw movie ids, oldest first
        (anyone's, e.g. ``[1193, 661, 914]``), with optional ``user_features``
        (``{"gender": "F", "age": "25"}``). DataError for unknown ids. candidates: how
        many movies the cheap stage retrieves for the model to rank (0: the whole
        catalogue; None: 200 above 2,000 movies, else 0). ratings: with a history,
        optional stars of each movie in the same order (None: not rated), which a
        rating model reads the person's taste from.
        """
        _check_candidates(candidates)
        rec = self.recommender() if candidates is None else self.recommender(candidates=candidates)
        _check_k(k)
        if _who(user, history) == "user":
            if user_features is not None:
                raise ArgumentError(
                    "user_features go with a history; a known user's features come from the data"
                )
            if ratings is not None:
                raise ArgumentError("ratings go with a history; a known user's come from the data")
            return rec.for_user(user, k)
        stars = None if ratings is None else list(ratings)
        return rec.for_history(
            _id_list(history), k, user_features=dict(user_features or {}), ratings=stars
        )

    def explain(
        self,
        user=None,
        *,
        movie,
        history: Iterable | None = None,
        user_features: Mapping[str, str] | None = None,
        ratings: Iterable | None = None,
    ) -> Explanation:
        """Why the model scores ``movie`` as it does for ``user`` (or a ``history``):
        its score, its rank among the unwatched movies, and the weight of each watch
        of the model's history window (BST: the movie's attention over the history in
        the first transformer block, averaged over heads; the same weights as the
        "because" of ``recommend``)."""
        import torch

        rec = self.recommender()
        ds = rec.ds
        (item,) = rec.item_indexes([movie])
        if _who(user, history) == "user":
            if ratings is not None:
                raise ArgumentError("ratings go with a history; a known user's come from the data")
            u = rec.user_index(user)
            batch = rec.store.batch_for_users(torch.tensor([u]), rec.max_len)
            seen = ds.item[int(ds.user_offsets[u]) : int(ds.user_offsets[u + 1])]
            user_id = plain(ds.user_ids[u])
        else:
            # the very query Recommender.for_history answers (a test checks the scores agree)
            stars = None if ratings is None else list(ratings)
            query = rec.history_query(
                _id_list(history), 1, dict(user_features or {}), ratings=stars
            )
            batch, seen = query.batch, query.seen
            user_id = None
        with torch.no_grad():
            scores = rec.model.score_all(batch)[0]
            weights = rec.model.explain(batch, torch.tensor([item + 1]))  # (1, 1, L)
        unseen = torch.ones(ds.n_items, dtype=torch.bool)
        unseen[torch.as_tensor(seen, dtype=torch.long)] = False
        score = float(scores[item])
        rank = 1 + int(((scores > score) & unseen).sum()) if unseen[item] else None
        contributions: list[Contribution] = []
        if weights is not None:
            hist, w = batch.hist_item[0], weights[0, 0]
            length = hist.shape[0]
            for pos in range(length):
                if int(hist[pos]) > 0:
                    m = rec.movie(int(hist[pos]) - 1)
                    contributions.append(
                        Contribution(m.movie_id, m.title, length - pos, round(float(w[pos]), 6))
                    )
            contributions.sort(key=lambda c: (-c.weight, c.watches_ago))
        info = rec.movie(item)
        method = rec.model.explanation if weights is not None else ""
        return Explanation(
            info.movie_id,
            info.title,
            score,
            rank,
            int(unseen.sum()),
            user_id,
            rec.model.task,
            method,
            tuple(contributions),
        )

    # ------------------------------------------------------------ export
    def export_onnx(self, path: str | Path, *, check: bool = True):
        """Write the full-catalogue scorer as ONNX to ``path`` and its input spec to
        ``path``.json (see ``bstrec.export_onnx``); with ``check``, ONNX Runtime must
        reproduce PyTorch's scores within 1e-4 first. Needs the ``onnx`` extra.
        Returns an ``OnnxExport`` (paths, max score difference, size)."""
        from bstrec.export_onnx import export_onnx

        return export_onnx(self.loaded, Path(path), check=check)


# ---------------------------------------------------------------- helpers
def _quiet(_msg: str) -> None:
    pass


def _load(source: str) -> Dataset:
    from bstrec import load_dataset

    return load_dataset(source)


def _who(user, history) -> str:
    if (user is None) == (history is None):
        raise ArgumentError("give exactly one of user= or history=")
    return "user" if user is not None else "history"


def _check_candidates(candidates) -> None:
    if candidates is not None and (
        isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 0
    ):
        raise ArgumentError(f"candidates must be a whole number >= 0, not {candidates!r}")


def _check_k(k) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ArgumentError(f"k must be a whole number >= 1, not {k!r}")


def _id_list(history) -> list:
    if isinstance(history, str | bytes):
        raise ArgumentError("history: a list of movie ids, e.g. [1193, 661, 914], not a string")
    ids = [plain(i) for i in history]
    if not ids:
        raise ArgumentError("history: give at least one movie id")
    return ids


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: missing; is this a complete run folder?") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (what mkdir -p would
    create), or None when ``path`` exists."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def _remove_if_empty_run(created: Path, out: Path) -> None:
    """Remove ``created`` (made by this call) unless training got as far as writing a
    model or a checkpoint into ``out``."""
    import shutil

    from bstrec.checkpoint import checkpoint_dir

    out = out.absolute()
    if not created.exists():
        return
    if (out / "model.safetensors").exists() or any(checkpoint_dir(out).glob("*.pt")):
        return
    shutil.rmtree(created, ignore_errors=True)
