"""Evaluate a saved run folder on its own data (no source files needed)."""

from __future__ import annotations

from pathlib import Path

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import make_split
from bstrec.evaluate import evaluate_ranking, evaluate_rating, sample_targets
from bstrec.retrieval import retrieval_size
from bstrec.run_dir import LoadedRun, load_run


def evaluate_run(
    run: Path | str | LoadedRun,
    split: str = "val",
    users: int = 0,
    now: str = "last-input",
    candidates: int | None = None,
) -> dict:
    """Protocol R or T of a run folder (or a run already loaded); ``users`` > 0: the
    fixed sample of that many users that training validates on; ``now="target"``:
    R-paper, labelled so; ``candidates``: retrieve-then-rank
    (``bstrec.retrieval.retrieval_size``)."""
    if not isinstance(run, LoadedRun):
        run = load_run(run)
    ds = run.dataset
    sp = make_split(ds, run.config.data.split)
    store = SequenceStore(ds, run.user_feature_names)
    rows = sample_targets(sp.targets(split), users)
    max_len = run.config.data.max_len
    if run.model.task == "rating":
        m = evaluate_rating(run.model, store, rows, max_len)
    else:
        m = evaluate_ranking(
            run.model,
            store,
            rows,
            max_len,
            now=now,
            candidates=retrieval_size(run.model, candidates),
        )
    return {
        "model": run.config.model.name,
        "task": run.model.task,
        "data": ds.name,
        "split": split,
        **m,
    }
