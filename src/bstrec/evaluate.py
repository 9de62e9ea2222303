"""Protocol R (full-catalogue next-movie ranking) and T (next-rating) metrics.

Both call only the model contract (``score_all`` / ``score``), so BST and every
baseline are measured by the same code.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import ranges
from bstrec.models.base import ScoringModel
from bstrec.retrieval import retrieve_then_rank


def sample_targets(rows: np.ndarray, max_users: int, seed: int = 12345) -> np.ndarray:
    """A fixed, seeded sample of at most ``max_users`` target rows (0 = all), in order.

    The same sample every call, so that figures along a run are comparable; its
    standard error is reported beside each figure (``NDCG@10_se``).
    """
    if max_users <= 0 or max_users >= len(rows):
        return rows
    pick = np.random.default_rng(seed).choice(len(rows), max_users, replace=False)
    return rows[np.sort(pick)]


def target_ranks(
    scores: torch.Tensor, target_idx: torch.Tensor, seen_b: torch.Tensor, seen_i: torch.Tensor
) -> torch.Tensor:
    """0-based rank of each target among unseen items, ties counted above the target.

    scores (B, n_items); target_idx (B,) item index; (seen_b, seen_i) pairs of
    (row in batch, item index) to exclude: the movies of each user's input history.
    A non-finite score (NaN, inf) is never a hit: such a candidate counts above the
    target, and a target with a non-finite score ranks below every candidate.
    """
    competes = torch.ones_like(scores, dtype=torch.bool)
    competes[seen_b, seen_i] = False
    # a seen item may be the target itself (re-watch): the target still competes
    competes.scatter_(1, target_idx[:, None], False)
    target_score = scores.gather(1, target_idx[:, None])  # (B, 1)
    above = (scores >= target_score) | ~torch.isfinite(scores)  # ties count above
    ranks = (above & competes).sum(1)
    return torch.where(torch.isfinite(target_score[:, 0]), ranks, competes.sum(1))


def ranking_metrics(ranks: np.ndarray) -> dict[str, float]:
    ranks = np.asarray(ranks, dtype=np.float64)
    n = len(ranks)
    if n == 0:
        return {"users": 0}
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0)
    return {
        "HR@1": float((ranks < 1).mean()),
        "HR@10": float((ranks < 10).mean()),
        "HR@20": float((ranks < 20).mean()),
        "NDCG@10": float(ndcg.mean()),
        "MRR": float((1.0 / (ranks + 1)).mean()),
        "users": n,
        # standard error of NDCG@10 over users: how far a sample's figure may wander
        "NDCG@10_se": float(ndcg.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan"),
    }


@torch.no_grad()
def evaluate_ranking(
    model: ScoringModel,
    store: SequenceStore,
    target_rows: np.ndarray,
    max_len: int,
    batch_size: int | None = None,
    device="cpu",
    now: str = "last-input",
    candidates: int = 0,
) -> dict:
    """Protocol R (or R-paper with ``now="target"``) over the given target rows.

    ``candidates`` > 0: retrieve that many unseen movies per user with the model's
    cheap stage, rank only those (``bstrec.retrieval``), and report the stage's recall.

    Small batches: a (16, n_items, width) activation stays in cache, and on 2 CPU cores
    this scored 2.3x faster than batches of 64 (docs/experiments.md).
    """
    if batch_size is None:
        batch_size = 16 if torch.device(device).type == "cpu" else 256
    model.eval()
    if hasattr(model, "freeze_catalog"):
        model.freeze_catalog()  # dropped again when the model goes back to training
    t0 = time.perf_counter()
    rows = torch.as_tensor(target_rows, dtype=torch.long)
    all_ranks, found = [], 0
    for s in range(0, len(rows), batch_size):
        r = rows[s : s + batch_size]
        batch = store.batch_for_targets(r, max_len, now=now).to(device)
        # the whole input history (every earlier row, not just the last L) is excluded
        start = store.offsets[store.row_user[r]]
        lengths = (r - start).numpy()
        seen_rows = torch.from_numpy(ranges(start.numpy(), lengths))
        seen_b = torch.from_numpy(np.repeat(np.arange(len(r)), lengths)).to(device)
        seen_i = (store.item_tok[seen_rows] - 1).to(device)
        target = batch.target - 1
        if candidates > 0:
            seen = torch.zeros(len(r), model.n_items, dtype=torch.bool, device=device)
            seen[seen_b, seen_i] = True
            seen.scatter_(1, target[:, None], False)  # a re-watched target is no seen movie
            scores, picked = retrieve_then_rank(model, batch, candidates, seen)
            found += int((picked == target[:, None]).any(1).sum())
        else:
            scores = model.score_all(batch).float()  # (B, n_items)
        # ranked where scored: on a GPU only the ranks come back, not (B, n_items) scores
        all_ranks.append(target_ranks(scores, target, seen_b, seen_i).cpu())
    ranks = torch.cat(all_ranks).numpy() if all_ranks else np.zeros(0)
    out = {"protocol": "R" if now == "last-input" else "R-paper", **ranking_metrics(ranks)}
    if candidates > 0:
        out["retrieval_candidates"] = candidates
        out[f"retrieval_recall@{candidates}"] = found / max(len(ranks), 1)
    out["eval_seconds"] = time.perf_counter() - t0
    return out


@torch.no_grad()
def evaluate_rating(
    model: ScoringModel,
    store: SequenceStore,
    target_rows: np.ndarray,
    max_len: int,
    batch_size: int = 2048,
    device="cpu",
    hist_limit: np.ndarray | None = None,
    protocol: str = "T",
) -> dict:
    """Protocol T (or S with ``hist_limit``): RMSE and MAE in stars."""
    model.eval()
    t0 = time.perf_counter()
    rows = torch.as_tensor(target_rows, dtype=torch.long)
    limit = None if hist_limit is None else torch.as_tensor(hist_limit, dtype=torch.long)
    preds, labels = [], []
    for s in range(0, len(rows), batch_size):
        lim = None if limit is None else limit[s : s + batch_size]
        batch = store.batch_for_targets(rows[s : s + batch_size], max_len, hist_limit=lim)
        p = model.score(batch.to(device), batch.target[:, None].to(device))[:, 0]
        preds.append(p.float().cpu().clamp(1, 5))
        labels.append(batch.label)
    pred = torch.cat(preds).numpy() if preds else np.zeros(0)
    label = torch.cat(labels).numpy() if labels else np.zeros(0)
    err = pred - label
    return {
        "protocol": protocol,
        "RMSE": float(math.sqrt(np.mean(err**2))) if len(err) else float("nan"),
        "MAE": float(np.mean(np.abs(err))) if len(err) else float("nan"),
        "users" if protocol != "S" else "cases": int(len(err)),
        "eval_seconds": time.perf_counter() - t0,
    }
