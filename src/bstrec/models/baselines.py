"""Simple baselines behind the same contract as BST.

All are fitted in closed form on the training rows only. Their statistics are stored
as buffers, so they save and load like any model.
"""

from __future__ import annotations

import numpy as np
import torch

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel


def _cands(batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
    return candidates[None].expand(len(batch), -1) if candidates.dim() == 1 else candidates


class Popularity(ScoringModel):
    """Training interactions per movie."""

    def __init__(self, n_items: int, counts: torch.Tensor | None = None):
        super().__init__()
        self.n_items = n_items
        self.register_buffer("counts", torch.zeros(n_items + 1) if counts is None else counts)

    @classmethod
    def fit(cls, item: np.ndarray, train_rows: np.ndarray, n_items: int) -> Popularity:
        counts = np.bincount(item[train_rows] + 1, minlength=n_items + 1).astype(np.float32)
        counts[0] = 0
        return cls(n_items, torch.from_numpy(counts))

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        return self.counts[_cands(batch, candidates)]


class Transitions(ScoringModel):
    """Which movies follow the user's last movies in training.

    ``counts[a, b]`` counts training pairs where ``b`` came within ``window`` watches
    after ``a`` (window 1: the very next movie). A candidate's score sums its counts
    from the last ``last_n`` history movies, the j-th newest weighted ``decay**j``,
    plus a tiny popularity term that breaks ties.
    """

    def __init__(
        self,
        n_items: int,
        window: int = 1,
        last_n: int = 1,
        decay: float = 0.5,
        counts: torch.Tensor | None = None,
        popularity: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_items = n_items
        self.window, self.last_n, self.decay = window, last_n, decay
        size = n_items + 1
        self.register_buffer("counts", torch.zeros(size, size) if counts is None else counts)
        self.register_buffer("popularity", torch.zeros(size) if popularity is None else popularity)

    @classmethod
    def fit(
        cls,
        item: np.ndarray,
        user: np.ndarray,
        train_rows: np.ndarray,
        n_items: int,
        window: int = 1,
        last_n: int = 1,
        decay: float = 0.5,
    ) -> Transitions:
        size = n_items + 1
        rows = np.asarray(train_rows)
        in_train = np.zeros(len(item) + window + 1, dtype=bool)
        in_train[rows] = True
        counts = np.zeros(size * size, dtype=np.float32)
        for k in range(1, window + 1):
            nxt = rows + k
            ok = in_train[nxt] & (user[np.minimum(nxt, len(user) - 1)] == user[rows])
            a, b = item[rows[ok]] + 1, item[nxt[ok]] + 1
            counts += np.bincount(a * size + b, minlength=size * size).astype(np.float32)
        pop = np.bincount(item[rows] + 1, minlength=size).astype(np.float32)
        pop[0] = 0
        return cls(
            n_items,
            window,
            last_n,
            decay,
            torch.from_numpy(counts.reshape(size, size)),
            torch.from_numpy(pop / max(pop.max(), 1.0) * 1e-3),
        )

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        cands = _cands(batch, candidates)  # (B, C)
        out = self.popularity[cands].clone()
        for j in range(min(self.last_n, batch.hist_item.shape[1])):
            last = batch.hist_item[:, -1 - j]  # (B,) 0 = padding: row 0 of counts is zeros
            out += (self.decay**j) * self.counts[last[:, None], cands]
        return out


class RatingBaseline(ScoringModel):
    """Predicted stars = global mean (+ user bias) (+ item bias), fitted on training."""

    task = "rating"

    def __init__(
        self,
        n_items: int,
        n_users: int,
        mean: float = 0.0,
        user_bias: torch.Tensor | None = None,
        item_bias: torch.Tensor | None = None,
    ):
        super().__init__()
        self.n_items = n_items
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer(
            "user_bias", torch.zeros(n_users + 1) if user_bias is None else user_bias
        )
        self.register_buffer(
            "item_bias", torch.zeros(n_items + 1) if item_bias is None else item_bias
        )

    @classmethod
    def fit(
        cls,
        kind: str,
        user: np.ndarray,
        item: np.ndarray,
        rating: np.ndarray,
        train_rows: np.ndarray,
        n_users: int,
        n_items: int,
        reg: float = 5.0,
        iters: int = 10,
    ) -> RatingBaseline:
        u, i, r = user[train_rows], item[train_rows], rating[train_rows].astype(np.float64)
        mu = float(r.mean())
        bu = np.zeros(n_users)
        bi = np.zeros(n_items)
        if kind == "user-mean":
            s = np.bincount(u, weights=r - mu, minlength=n_users)
            c = np.bincount(u, minlength=n_users)
            bu = np.where(c > 0, s / np.maximum(c, 1), 0.0)
        elif kind == "bias":
            # alternating regularised least squares for mu + b_u + b_i
            cu = np.bincount(u, minlength=n_users)
            ci = np.bincount(i, minlength=n_items)
            for _ in range(iters):
                bi = np.bincount(i, weights=r - mu - bu[u], minlength=n_items) / (ci + reg)
                bu = np.bincount(u, weights=r - mu - bi[i], minlength=n_users) / (cu + reg)
        elif kind != "global-mean":
            raise ValueError(f"unknown rating baseline {kind!r}")
        pad = np.zeros(1)
        return cls(
            n_items,
            n_users,
            mu,
            torch.from_numpy(np.concatenate([pad, bu]).astype(np.float32)),
            torch.from_numpy(np.concatenate([pad, bi]).astype(np.float32)),
        )

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        cands = _cands(batch, candidates)
        return self.mean + self.user_bias[batch.user][:, None] + self.item_bias[cands]
