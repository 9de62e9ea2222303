"""Movie factors for star ratings, read from a history by fold-in (no user ids).

The rating task's strongest cheap signal is a low-rank user x movie interaction on top
of the bias baseline (matrix factorisation). A user vector tied to a user id would not
serve a typed-in history, so the movie factors are fitted by ALS on the training
ratings' bias residuals, and a user's vector is solved afresh from whatever history a
batch carries: the ridge regression of its residuals on its movies' factors ("fold-in",
the same least-squares step ALS itself takes for users). A known user and an anonymous
history with the same ratings get the same prediction.

On ml-1m-u2999 (protocol T validation, fold-in from the last 20 ratings) this took the
bias baseline's RMSE from 0.9355 to 0.892 on users 1-1500 (where the settings were
chosen) and from 0.9441 to 0.917 on users 1501-2999 (docs/experiments.md, round 7).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel

USER_BIAS_SHRINK = 5.0  # a history's bias, as if it had 5 more ratings at the movies' means
FOLD_IN_RIDGE = 3.0  # ridge of a history's vector, before tuning
# A history's ratings weigh decay^age (age 0 = the newest): recent ratings say more
# about the next one. Users 1-1500 (fold-in from the last 20): RMSE 0.8925 -> 0.8867 at
# 0.95; users 1501-2999, untouched: 0.9169 -> 0.9144 (docs/experiments.md, round 7)
FOLD_IN_DECAY = 0.95
ALS_ITERS = 4  # 8 gave the same validation RMSE at twice the time
# The grid ``tune_rating_factors`` searches on validation RMSE: the ALS ridge per rating
# of a movie or user (ALS-WR) and the fold-in ridge. On users 1-1500 of ml-1m-u2999 the
# ALS ridge mattered most (0.05 / 0.1 / 0.2: RMSE 0.893 / 0.892 / 0.911 at k 32), and
# the best setting there was not the best on users 1501-2999, so each data set picks its own.
ALS_RIDGES = (0.05, 0.1, 0.2)
FOLD_IN_RIDGES = (2.0, 3.0, 5.0)


@dataclass(frozen=True)
class Biases:
    mean: float
    user: np.ndarray  # (n_users,) fitted on the training ratings
    item: np.ndarray  # (n_items,)


def _gram_solve(
    idx: torch.Tensor, other: torch.Tensor, resid: torch.Tensor, n: int, ridge: float
) -> torch.Tensor:
    """Row ``j`` of the result solves (sum o o^T + ridge * count_j I) x = sum o r over
    the ratings whose ``idx`` is j: one side's least-squares step of ALS. (n, k)"""
    k = other.shape[1]
    gram = torch.zeros(n, k, k)
    rhs = torch.zeros(n, k)
    chunk = max(1, (1 << 24) // (k * k))  # bounds the (chunk, k, k) outer products
    for s in range(0, len(idx), chunk):
        o, at = other[s : s + chunk], idx[s : s + chunk]
        gram.index_add_(0, at, o[:, :, None] * o[:, None, :])
        rhs.index_add_(0, at, o * resid[s : s + chunk, None])
    count = torch.bincount(idx, minlength=n).float()
    # + a tiny constant: rows without ratings solve to 0 instead of failing
    gram += (ridge * count + 1e-4)[:, None, None] * torch.eye(k)
    return torch.linalg.solve(gram, rhs)


def fit_item_factors(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    train_rows: np.ndarray,
    biases: Biases,
    n_users: int,
    n_items: int,
    k: int = 32,
    ridge: float = 0.1,
    iters: int = ALS_ITERS,
    seed: int = 0,
) -> np.ndarray:
    """(n_items, k) movie factors: ALS-WR on the bias residuals of ``train_rows``."""
    u = torch.from_numpy(user[train_rows].astype(np.int64))
    i = torch.from_numpy(item[train_rows].astype(np.int64))
    r = rating[train_rows].astype(np.float64)
    resid = r - biases.mean - biases.user[user[train_rows]] - biases.item[item[train_rows]]
    resid_t = torch.from_numpy(resid.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(n_items, k, generator=gen) * 0.1
    for _ in range(iters):
        p = _gram_solve(u, q[i], resid_t, n_users, ridge)
        q = _gram_solve(i, p[u], resid_t, n_items, ridge)
    return q.numpy()


def fold_in(
    batch: Batch,
    mean: torch.Tensor,
    item_bias: torch.Tensor,
    factors: torch.Tensor | None,
    ridge: torch.Tensor | float = FOLD_IN_RIDGE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A history's user bias (B,) and vector (B, k) from its own ratings.

    ``item_bias`` (n_items + 1,) and ``factors`` (n_items + 1, k) are indexed by item
    token (row 0: padding). Unrated and padded positions carry no weight.
    """
    stars = batch.hist_rating.float() / 2  # (B, L), 0 = no rating
    rated = (batch.hist_rating > 0).float()
    # weights by age among the history's positions (newest last), 0 where unrated
    seq_len = rated.shape[1]
    age = torch.arange(seq_len - 1, -1, -1, device=rated.device, dtype=rated.dtype)
    w = rated * FOLD_IN_DECAY**age  # (B, L): every sum below is weighted by it
    resid = stars - mean - item_bias[batch.hist_item]  # (B, L)
    user_bias = (w * resid).sum(1) / (w.sum(1) + USER_BIAS_SHRINK)  # (B,)
    if factors is None:
        return user_bias, None
    q = factors[batch.hist_item]  # (B, L, k)
    k = q.shape[-1]
    qw = q * w[..., None]  # zero where unrated: the Gram matrix and rhs skip those
    gram = qw.transpose(1, 2) @ q + ridge * torch.eye(k, device=q.device)  # (B, k, k)
    rhs = qw.transpose(1, 2) @ (resid - user_bias[:, None])[..., None]  # (B, k, 1)
    return user_bias, spd_solve(gram, rhs).squeeze(-1)  # (B,), (B, k)


def spd_solve(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """x with a @ x = b for symmetric positive definite ``a`` (B, k, k), ``b`` (B, k, m).

    ONNX has no solve operator, so while exporting this runs Gauss-Jordan elimination
    unrolled over the k columns (no pivoting needed: a ridge-regularised Gram matrix is
    positive definite); otherwise ``torch.linalg.solve``. A test checks they agree.
    """
    if not torch.onnx.is_in_onnx_export():
        return torch.linalg.solve(a, b)
    return gauss_jordan(a, b)


def gauss_jordan(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    k = a.shape[-1]
    aug = torch.cat([a, b], -1)  # (B, k, k + m)
    rows = torch.arange(k, device=a.device)[None, :, None]  # (1, k, 1)
    for i in range(k):
        pivot = aug[:, i : i + 1, :] / aug[:, i : i + 1, i : i + 1]  # (B, 1, k + m)
        aug = aug - aug[:, :, i : i + 1] * pivot  # column i cleared in every row ...
        aug = torch.where(rows == i, pivot, aug)  # ... and row i is the scaled pivot row
    return aug[:, :, k:]


def predicted_stars(
    batch: Batch,
    candidates: torch.Tensor | None,
    mean: torch.Tensor,
    item_bias: torch.Tensor,
    factors: torch.Tensor | None,
    ridge: torch.Tensor | float = FOLD_IN_RIDGE,
) -> torch.Tensor:
    """mean + the history's bias + movie bias (+ history vector . movie factors) of each
    candidate: (B, C) for ``candidates`` (C,) or (B, C), (B, n_items) for None."""
    user_bias, vec = fold_in(batch, mean, item_bias, factors, ridge)
    # the whole catalogue is a slice (row 0 is padding), not a gather
    pick = (lambda t: t[1:]) if candidates is None else (lambda t: t[candidates])
    stars = mean + user_bias[:, None] + pick(item_bias)  # (B, C), broadcast
    if vec is not None:
        q = pick(factors)  # (C, k) or (B, C, k)
        dot = vec @ q.T if q.dim() == 2 else (q @ vec[..., None]).squeeze(-1)  # (B, C)
        stars = stars + dot
    return stars


class RatingFactors(ScoringModel):
    """Bias baseline + fold-in matrix factorisation: the rating task's strongest
    closed-form peer, and the base BST's rating head adds to."""

    task = "rating"

    def __init__(self, n_items: int, k: int = 32):
        super().__init__()
        self.n_items, self.k = n_items, k
        self.register_buffer("mean", torch.tensor(0.0))
        self.register_buffer("item_bias", torch.zeros(n_items + 1))
        # k = 0: the bias baseline read from the history (BST's rating_factors=0)
        self.register_buffer("item_factors", torch.zeros(n_items + 1, k) if k else None)
        self.register_buffer("fold_ridge", torch.tensor(FOLD_IN_RIDGE))

    @classmethod
    def fit(
        cls,
        user: np.ndarray,
        item: np.ndarray,
        rating: np.ndarray,
        train_rows: np.ndarray,
        n_users: int,
        n_items: int,
        k: int = 32,
        als_ridge: float = 0.1,
    ) -> RatingFactors:
        model = cls(n_items, k)
        biases = fit_biases(user, item, rating, train_rows, n_users, n_items)
        factors = None
        if k:
            factors = fit_item_factors(
                user, item, rating, train_rows, biases, n_users, n_items, k, als_ridge
            )
        model.load_fitted(biases.mean, biases.item, factors)
        return model

    def load_fitted(
        self,
        mean: float,
        item_bias: np.ndarray,
        factors: np.ndarray | None,
        fold_ridge: float = FOLD_IN_RIDGE,
    ) -> None:
        with torch.no_grad():
            self.mean.fill_(mean)
            self.item_bias[1:] = torch.from_numpy(item_bias.astype(np.float32))
            if factors is not None:
                self.item_factors[1:] = torch.from_numpy(factors.astype(np.float32))
            self.fold_ridge.fill_(fold_ridge)

    def stars(self, batch: Batch, candidates: torch.Tensor | None) -> torch.Tensor:
        """``predicted_stars`` with this model's parts: (B, C), (B, n_items) for None."""
        return predicted_stars(
            batch, candidates, self.mean, self.item_bias, self.item_factors, self.fold_ridge
        )

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        return self.stars(batch, candidates)

    def score_all(self, batch: Batch) -> torch.Tensor:
        return self.stars(batch, None)


def fit_biases(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    train_rows: np.ndarray,
    n_users: int,
    n_items: int,
) -> Biases:
    from bstrec.models.baselines import RatingBaseline

    base = RatingBaseline.fit("bias", user, item, rating, train_rows, n_users, n_items)
    return Biases(
        float(base.mean), base.user_bias[1:].double().numpy(), base.item_bias[1:].double().numpy()
    )


def tune_rating_factors(
    user: np.ndarray,
    item: np.ndarray,
    rating: np.ndarray,
    train_rows: np.ndarray,
    n_users: int,
    n_items: int,
    k: int,
    validate: Callable[[ScoringModel], float],
    log: Callable[[str], None] | None = None,
) -> tuple[RatingFactors, list[dict]]:
    """The factors peer with the ALS and fold-in ridges of the lowest ``validate``
    (validation RMSE), and the grid's trials."""
    biases = fit_biases(user, item, rating, train_rows, n_users, n_items)
    best, best_rmse, trials = None, float("inf"), []
    for als_ridge in ALS_RIDGES:
        t0 = time.perf_counter()
        factors = fit_item_factors(
            user, item, rating, train_rows, biases, n_users, n_items, k, als_ridge
        )
        fit_s = time.perf_counter() - t0
        for fold_ridge in FOLD_IN_RIDGES:
            model = RatingFactors(n_items, k)
            model.load_fitted(biases.mean, biases.item, factors, fold_ridge)
            rmse = float(validate(model))
            trial = {"als_ridge": als_ridge, "fold_ridge": fold_ridge, "k": k, "RMSE": rmse}
            trials.append({**trial, "fit_seconds": fit_s})
            if log:
                log(f"factors {trial}")
            if rmse < best_rmse:
                best, best_rmse = model, rmse
    assert best is not None
    return best, trials
