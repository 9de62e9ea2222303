"""Evaluate a saved run folder on its own data (no source files needed)."""

from __future__ import annotations

from pathlib import Path

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import make_split
from bstrec.evaluate import evaluate_ranking, evaluate_rating
from bstrec.run_dir import load_run


def evaluate_run(run_dir: Path, split: str = "val") -> dict:
    run = load_run(run_dir)
    ds = run.dataset
    sp = make_split(ds, run.config.data.split)
    store = SequenceStore(ds, run.user_feature_names)
    rows = sp.targets(split)
    max_len = run.config.data.max_len
    if run.model.task == "rating":
        m = evaluate_rating(run.model, store, rows, max_len)
    else:
        m = evaluate_ranking(run.model, store, rows, max_len)
    return {"model": run.config.model.name, "task": run.model.task, "data": ds.name,
            "split": split, **m}
