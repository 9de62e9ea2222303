"""EASE (Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data").

With ``X`` the binary user x item matrix of the training rows,

    G = X^T X + lambda I,   P = G^-1,   B = -P / diag(P) (column-wise),   diag(B) = 0,

and a user's scores are ``x_u @ B``. Here ``x_u`` is the binary vector of the movies in
the model's input history (``hist_item``, all L positions): what serving can build for
any person, known or not. A tiny popularity term orders candidates whose scores tie
(an empty history), as in cooccurrence.py.

``B`` is dense: (n_items + 1)^2 float32 (row and column 0, the padding token, stay
zero), and fitting inverts an n_items x n_items matrix. Both grow with the square and
cube of the catalogue, so the model refuses catalogues above ``max_items`` (20,000 by
default: 1.6 GB for B); for a larger catalogue one would restrict EASE to the top-N
most watched movies and score the rest by another model.

``tune_ease`` picks lambda on validation targets. One Cholesky inverse per lambda
(float64) beats one eigendecomposition ``G = V diag(w) V^T`` reused by every lambda:
on 3,615 movies with 1 thread the Cholesky inverse took 1.7 s, the eigendecomposition
10.7 s plus 2.1 s per lambda to rebuild ``V diag(1 / (w + lambda)) V^T``.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel
from bstrec.models.item_pairs import tie_break, training_popularity
from bstrec.models.itemknn import binary_pairs, gram_blocks

MAX_ITEMS = 20_000


def _check_size(n_items: int, max_items: int) -> None:
    if n_items > max_items:
        raise ValueError(
            f"EASE keeps a dense {n_items + 1}^2 item-item matrix and inverts one; "
            f"{n_items} items exceed its limit of max_items={max_items}: restrict the "
            f"catalogue to the top-{max_items} movies or raise max_items"
        )


class EASE(ScoringModel):
    """EASE behind the model contract; ``B`` and the popularity are buffers."""

    def __init__(self, n_items: int, lam: float = 500.0, max_items: int = MAX_ITEMS):
        super().__init__()
        _check_size(n_items, max_items)
        self.n_items = n_items
        self.size = n_items + 1
        self.register_buffer("B", torch.zeros(self.size, self.size))
        self.register_buffer("popularity", torch.zeros(self.size))
        self.register_buffer("lam", torch.tensor(float(lam), dtype=torch.float64))
        self.fit_seconds = float("nan")

    def set_weights(self, b: torch.Tensor, popularity: np.ndarray, lam: float) -> None:
        """``b``: (n_items, n_items) over item indexes."""
        dev = self.B.device
        self.B.zero_()
        self.B[1:, 1:] = b.to(dev, torch.float32)
        self.popularity = torch.from_numpy(popularity.astype(np.float32)).to(dev)
        self.lam = torch.tensor(float(lam), dtype=torch.float64, device=dev)

    @staticmethod
    def _distinct(hist_item: torch.Tensor) -> torch.Tensor:
        """History tokens with repeats (and padding) set to 0: x_u is binary."""
        h = hist_item
        later = torch.triu(
            torch.ones(h.shape[1], h.shape[1], dtype=torch.bool, device=h.device), diagonal=1
        )
        repeated = ((h[:, :, None] == h[:, None, :]) & later).any(2)  # seen again later
        return torch.where(repeated, 0, h)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        c = candidates[None].expand(len(batch), -1) if candidates.dim() == 1 else candidates
        h = self._distinct(batch.hist_item)
        raw = self.B[h[:, :, None], c[:, None, :]].sum(1)  # (B, C); row 0 is zero
        return raw + tie_break(self.popularity[c], self.popularity)

    def score_all(self, batch: Batch) -> torch.Tensor:
        h = self._distinct(batch.hist_item)
        b, n = h.shape
        rows = torch.arange(b, device=h.device).repeat_interleave(n)
        x = torch.sparse_coo_tensor(
            torch.stack([rows, h.reshape(-1)]),
            torch.ones(b * n, device=h.device),
            (b, self.size),
            check_invariants=False,
        )
        raw = torch.sparse.mm(x, self.B)  # padding and repeats land on the zero row 0
        return (raw + tie_break(self.popularity, self.popularity))[:, 1:]


def item_gram(
    item: np.ndarray, user: np.ndarray, train_rows: np.ndarray, n_items: int
) -> torch.Tensor:
    """``X^T X`` of the binary training matrix: (n_items, n_items) float64."""
    items, users, n_users = binary_pairs(item, user, train_rows)
    g = torch.zeros(n_items, n_items, dtype=torch.float64)
    for lo, hi, block in gram_blocks(items, users, n_users, n_items):
        g[:, lo:hi] = block
    return g


def ease_weights(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """``B`` from ``X^T X`` (float64): ``-P / diag(P)`` with a zero diagonal."""
    a = gram.clone()
    a.diagonal().add_(lam)
    p = torch.cholesky_inverse(torch.linalg.cholesky(a))
    b = p / (-p.diagonal())[None, :]
    b.diagonal().zero_()
    return b


def fit_ease(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    lam: float = 500.0,
    max_items: int = MAX_ITEMS,
) -> EASE:
    _check_size(n_items, max_items)
    t0 = time.perf_counter()
    b = ease_weights(item_gram(item, user, train_rows, n_items), lam)
    model = EASE(n_items, lam, max_items)
    model.set_weights(b, training_popularity(item, train_rows, n_items), lam)
    model.fit_seconds = time.perf_counter() - t0
    return model


LAMBDAS = (50.0, 200.0, 500.0, 1000.0, 3000.0)


def tune_ease(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    evaluate,
    log=None,
    max_items: int = MAX_ITEMS,
) -> tuple[EASE, list[dict]]:
    """Pick lambda by validation NDCG@10 (``evaluate(model) -> float``); ``X^T X`` is
    computed once. The returned model's ``fit_seconds`` covers X^T X and its own inverse;
    each trial records its ``fit_seconds`` (inverse) and ``seconds`` (evaluation)."""
    _check_size(n_items, max_items)
    t0 = time.perf_counter()
    gram = item_gram(item, user, train_rows, n_items)
    pop = training_popularity(item, train_rows, n_items)
    gram_seconds = time.perf_counter() - t0
    model = EASE(n_items, max_items=max_items)
    best, best_lam, best_b, best_fit = -1.0, None, None, float("nan")
    trials: list[dict] = []
    for lam in LAMBDAS:
        t1 = time.perf_counter()
        b = ease_weights(gram, lam)
        model.set_weights(b, pop, lam)
        fit_s = time.perf_counter() - t1
        t2 = time.perf_counter()
        score = evaluate(model)
        trials.append(
            {
                "lam": lam,
                "val_NDCG@10": score,
                "fit_seconds": fit_s,
                "seconds": time.perf_counter() - t2,
            }
        )
        if log:
            log(f"ease lambda={lam:g}: val NDCG@10 {score:.4f} (fit {fit_s:.1f} s)")
        if score > best:
            best, best_lam, best_b, best_fit = score, lam, b.float(), fit_s
    assert best_b is not None and best_lam is not None
    model.set_weights(best_b, pop, best_lam)
    model.fit_seconds = gram_seconds + best_fit
    return model, trials
