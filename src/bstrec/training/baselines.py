"""Closed-form models (the peers, and BST's wide part): fitted on the training part,
tuned on a validation sample, saved like a trained run."""

from __future__ import annotations

import json
import time

from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import Split
from bstrec.models.base import ScoringModel
from bstrec.models.factory import fit_baseline
from bstrec.run_dir import atomic_write_text, save_model
from bstrec.training.report import append_jsonl, write_summary
from bstrec.training.state import TrainResult
from bstrec.training.validation import validate

# A baseline's grid is dozens of full-catalogue validation passes: its validation
# sample holds about this many (user, movie) scores, at least TUNE_MIN_USERS users.
# ml-1m-u2999 (3,615 movies) keeps all 2,999 users; 87K movies get 1,000.
TUNE_SCORES = 12_000_000

TUNE_MIN_USERS = 1000


def val_ndcg(
    store: SequenceStore, split: Split, cfg: RunConfig, device="cpu", metric: str = "NDCG@10"
):
    """Validation NDCG@10 (or another ``metric``: RMSE for a rating model) of a fitted
    baseline, scored on ``device``, on a fixed sample of at most ``train.val_users``
    users, fewer on big catalogues (``TUNE_SCORES``)."""
    fits = max(TUNE_MIN_USERS, TUNE_SCORES // max(store.n_items, 1))
    users = min(cfg.train.val_users, fits) if cfg.train.val_users else fits

    def score(model: ScoringModel) -> float:
        return validate(
            model.to(device),
            store,
            split,
            cfg.data.max_len,
            device=device,
            now=cfg.data.now,
            max_users=users,
        )[metric]

    return score


def fit_baseline_run(cfg, ds, out, split, store, cat, ctx, log) -> TrainResult:
    t_start = time.perf_counter()
    metric = "RMSE" if cfg.model.task == "rating" else "NDCG@10"
    model, trials = fit_baseline(
        cfg, ds, split.train_rows(ds.user_offsets), val_ndcg(store, split, cfg, metric=metric)
    )
    m = validate(
        model, store, split, cfg.data.max_len, now=cfg.data.now, max_users=cfg.train.val_users
    )
    rec = {"epoch": 0, "split": "val", **m, "train_seconds": time.perf_counter() - t_start}
    result = TrainResult(out, model, rec, [rec], rec["train_seconds"], ctx.rank)
    if ctx.is_main:
        append_jsonl(out / "metrics.jsonl", rec)
        if trials:  # the hyper-parameter grid, each tried on the validation targets
            atomic_write_text(out / "tuning.jsonl", "".join(json.dumps(t) + "\n" for t in trials))
        save_model(out, model, cfg, cat)
        write_summary(out, cfg, ds, result)
    return result
