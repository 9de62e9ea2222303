"""Item-KNN: movies whose audiences overlap with those of the user's last movies.

``X`` is the binary user x item matrix of the training rows (a movie a user watched
twice counts once). The similarity of items ``a`` and ``b`` is the shrunk cosine

    sim(a, b) = (X^T X)[a, b] / (|X_a| |X_b| + shrink),

an item is never its own neighbour, and each item keeps only its ``neighbors`` most
similar items. A candidate's score sums its similarities to the user's last ``last_n``
movies, the j-th newest weighted ``decay**j``, plus a tiny popularity term that orders
candidates similar to none of them (as in cooccurrence.py).

The kept similarities live in an ``ItemPairs`` matrix (item_pairs.py, shared with
co-occurrence), so the model saves and loads through its state_dict. ``X^T X`` is
computed a block of item columns at a time (sparse ``X^T`` times a dense block of
``X``), so memory stays at one ``n_items x block`` slab. ``tune_itemknn`` picks the
settings on validation targets.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel
from bstrec.models.item_pairs import ItemPairs, recent, tie_break, training_popularity


@dataclass(frozen=True)
class ItemKNNParams:
    neighbors: int = 200
    shrink: float = 0.0
    last_n: int = 5
    decay: float = 0.7

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [self.neighbors, self.shrink, self.last_n, self.decay], dtype=torch.float64
        )

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> ItemKNNParams:
        k, s, n, d = t.tolist()
        return cls(int(k), float(s), int(n), float(d))


def binary_pairs(
    item: np.ndarray, user: np.ndarray, train_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """The distinct (item index, user) pairs of the training rows, sorted by item, with
    users renumbered 0..n_users-1 (only users with training rows)."""
    rows = np.asarray(train_rows, dtype=np.int64)
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    users, u = np.unique(user[rows], return_inverse=True)
    it = item[rows].astype(np.int64)
    keys = np.unique(it * len(users) + u)  # sorted by item, then user
    return keys // len(users), keys % len(users), len(users)


def gram_blocks(
    items: np.ndarray, users: np.ndarray, n_users: int, n_items: int, block: int = 1024
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """``(lo, hi, G[:, lo:hi])`` for ``G = X^T X`` (float32 counts, n_items x (hi - lo))
    from the sorted binary pairs of ``binary_pairs``."""
    ptr = np.searchsorted(items, np.arange(n_items + 1))
    xt = torch.sparse_coo_tensor(
        torch.from_numpy(np.stack([items, users])),
        torch.ones(len(items)),
        (n_items, n_users),
        check_invariants=False,
    ).coalesce()
    for lo in range(0, n_items, block):
        hi = min(lo + block, n_items)
        a, b = ptr[lo], ptr[hi]
        dense = torch.zeros(n_users, hi - lo)
        dense[torch.from_numpy(users[a:b]), torch.from_numpy(items[a:b] - lo)] = 1.0
        yield lo, hi, torch.sparse.mm(xt, dense)


def top_similarities(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    shrinks: tuple[float, ...],
    k: int,
) -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """For each shrink, every item's ``k`` most similar items: ``(idx, sim)``, both
    (n_items, k) over item indexes, most similar first; zero similarities included
    (``fit`` drops them). One pass over ``X^T X`` serves all shrinks."""
    items, users, n_users = binary_pairs(item, user, train_rows)
    norm = torch.from_numpy(np.bincount(items, minlength=n_items).astype(np.float32)).sqrt()
    k = max(min(k, n_items - 1), 0)
    out = {s: ([], []) for s in shrinks}
    for lo, hi, g in gram_blocks(items, users, n_users, n_items):
        cols = torch.arange(lo, hi)
        g[cols, cols - lo] = 0.0  # never one's own neighbour
        denom = norm[:, None] * norm[None, lo:hi]
        for s in shrinks:
            d = denom + s
            sim = torch.where(d > 0, g / d.clamp(min=1e-12), 0.0)
            vals, idx = torch.topk(sim, k, dim=0)  # (k, hi - lo): neighbours of lo..hi
            out[s][0].append(idx.T)
            out[s][1].append(vals.T)
    return {
        s: (
            torch.cat(i) if i else torch.zeros(0, k, dtype=torch.long),
            torch.cat(v) if v else torch.zeros(0, k),
        )
        for s, (i, v) in out.items()
    }


class ItemKNN(ScoringModel):
    """Item-KNN behind the model contract; every tensor is a buffer."""

    def __init__(self, n_items: int, params: ItemKNNParams | None = None):
        super().__init__()
        self.n_items = n_items
        self.sims = ItemPairs(n_items)
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        self.register_buffer("params", (params or ItemKNNParams()).as_tensor())
        self._p: ItemKNNParams | None = None

    @property
    def p(self) -> ItemKNNParams:
        if self._p is None:
            self._p = ItemKNNParams.from_tensor(self.params)
        return self._p

    def set_neighbors(
        self, idx: torch.Tensor, sim: torch.Tensor, popularity: np.ndarray, params: ItemKNNParams
    ) -> None:
        """Keep the first ``params.neighbors`` columns of ``top_similarities``' output."""
        idx, sim = idx[:, : params.neighbors], sim[:, : params.neighbors]
        rows = torch.arange(len(idx))[:, None].expand_as(idx)
        keep = sim > 0
        keys = (rows[keep] + 1) * self.sims.size + idx[keep] + 1  # item tokens
        order = torch.argsort(keys)
        self.sims.set(keys[order], sim[keep][order])
        self.popularity = torch.from_numpy(popularity.astype(np.float32)).to(self.popularity.device)
        self.set_params(params)

    def set_params(self, params: ItemKNNParams) -> None:
        """Change the scoring settings (last_n, decay); neighbours/shrink need a refit."""
        self.params = params.as_tensor().to(self.params.device)
        self._p = params

    def _load_from_state_dict(self, *args, **kwargs):
        self._p = None  # read the loaded params again
        super()._load_from_state_dict(*args, **kwargs)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        c = candidates[None].expand(len(batch), -1) if candidates.dim() == 1 else candidates
        last, w = recent(batch.hist_item, self.p.last_n, self.p.decay)
        return self.sims.weighted(last, w, c) + tie_break(self.popularity[c], self.popularity)

    def score_all(self, batch: Batch) -> torch.Tensor:
        last, w = recent(batch.hist_item, self.p.last_n, self.p.decay)
        out = self.sims.weighted_rows(last, w)
        return (out + tie_break(self.popularity, self.popularity))[:, 1:]


def fit_itemknn(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    params: ItemKNNParams | None = None,
) -> ItemKNN:
    params = params or ItemKNNParams()
    ((idx, sim),) = top_similarities(
        item, user, train_rows, n_items, (params.shrink,), params.neighbors
    ).values()
    model = ItemKNN(n_items, params)
    model.set_neighbors(idx, sim, training_popularity(item, train_rows, n_items), params)
    return model


# The grid `tune_itemknn` searches: neighbours and shrink change the stored
# similarities, last_n and decay only the scoring.
GRID_FIT = {"neighbors": (50, 200), "shrink": (0.0, 10.0)}
GRID_SCORE = {"last_n": (1, 5, 20), "decay": (0.7, 1.0)}


def tune_itemknn(
    item: np.ndarray, user: np.ndarray, train_rows: np.ndarray, n_items: int, evaluate, log=None
) -> tuple[ItemKNN, list[dict]]:
    """Pick neighbors, shrink, last_n and decay by validation NDCG@10 (``evaluate(model)
    -> float``), over the whole grid: one ``X^T X`` pass gives every shrink's top lists,
    fewer neighbours are a prefix of them, so the 20 trials cost one fit."""
    t0 = time.perf_counter()
    tops = top_similarities(
        item, user, train_rows, n_items, GRID_FIT["shrink"], max(GRID_FIT["neighbors"])
    )
    pop = training_popularity(item, train_rows, n_items)
    fit_seconds = time.perf_counter() - t0
    trials: list[dict] = []
    best, best_params, best_model = -1.0, None, None
    for neighbors, shrink in itertools.product(*GRID_FIT.values()):
        model = ItemKNN(n_items)
        model.set_neighbors(*tops[shrink], pop, ItemKNNParams(neighbors, shrink))
        model_best, model_params = -1.0, None
        for last_n, decay in itertools.product(*GRID_SCORE.values()):
            if last_n == 1 and decay != GRID_SCORE["decay"][0]:
                continue  # decay does not matter for one movie
            params = ItemKNNParams(neighbors, shrink, last_n, decay)
            t1 = time.perf_counter()
            model.set_params(params)
            score = evaluate(model)
            trials.append(
                {**asdict(params), "val_NDCG@10": score, "seconds": time.perf_counter() - t1}
            )
            if log:
                log(f"itemknn {asdict(params)}: val NDCG@10 {score:.4f}")
            if score > model_best:
                model_best, model_params = score, params
        if model_params is not None and model_best > best:
            model.set_params(model_params)
            best, best_params, best_model = model_best, model_params, model
    assert best_model is not None and best_params is not None
    best_model.fit_seconds = fit_seconds
    return best_model, trials
