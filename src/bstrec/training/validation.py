"""Validation during training: protocol R or T, on a fixed sample, over all ranks."""

from __future__ import annotations

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import Split
from bstrec.distributed import DistContext, merge_shard_metrics, shard_bounds
from bstrec.evaluate import evaluate_ranking, evaluate_rating, sample_targets
from bstrec.models.base import ScoringModel
from bstrec.retrieval import retrieval_size


def validate(
    model: ScoringModel,
    store: SequenceStore,
    split: Split,
    max_len: int,
    which: str = "val",
    device="cpu",
    ctx: DistContext | None = None,
    now: str = "last-input",
    max_users: int = 0,
) -> dict:
    """Validation metrics; with several ranks each scores its share and the means merge.

    ``max_users`` > 0 scores a fixed sample of that many users (seeded, the same in
    every call), so that large data sets validate in bounded time.
    """
    rows = sample_targets(split.targets(which), max_users)
    if ctx is not None and ctx.enabled:
        rows = rows[shard_bounds(len(rows), ctx.rank, ctx.world)]
    if model.task == "rating":
        m = evaluate_rating(model, store, rows, max_len, device=device)
    else:  # big catalogues: retrieve-then-rank, as evaluation and serving do
        m = evaluate_ranking(
            model,
            store,
            rows,
            max_len,
            device=device,
            now=now,
            candidates=retrieval_size(model, None),
        )
    if ctx is not None and ctx.enabled:
        m = merge_shard_metrics(ctx.all_gather_object(m))
    return m


def primary(metrics: dict) -> float:
    """Higher is better: NDCG@10 for ranking, -RMSE for rating."""
    return metrics["NDCG@10"] if "NDCG@10" in metrics else -metrics["RMSE"]
