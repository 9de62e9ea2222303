"""Co-occurrence: which movies are watched close to the user's last movies.

``C[a, b]`` counts training pairs where ``b`` was watched within ``window`` positions
after ``a`` by the same user (``symmetric``: before or after), a pair k positions apart
weighted ``pair_decay ** (k - 1)``. A candidate's score sums
its counts from the user's last ``last_n`` movies, the j-th newest weighted
``decay**j / popularity(that movie) ** history_alpha``, divided by
``popularity(candidate) ** alpha`` (both 0: raw counts), plus a tiny popularity term
that orders candidates without any co-occurrence. ``history_alpha`` keeps a blockbuster
in the history from outvoting the rarer, more telling movies beside it.

The counts live in an ``ItemPairs`` matrix (item_pairs.py, shared with item-kNN),
sparse, so the model fits any catalogue size.

``CooccurrenceScorer`` is the fitted statistic; BST uses the same scorer as a "wide"
input of its head (see bst.py), ``Cooccurrence`` wraps it behind the model contract.
``tune_cooccurrence`` picks the hyper-parameters on validation targets, counting the
training pairs once by distance (``PairsByDistance``) for its whole grid.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from bstrec.data.batches import Batch
from bstrec.models.base import ScoringModel
from bstrec.models.item_pairs import ItemPairs, recent, tie_break, training_popularity


@dataclass(frozen=True)
class CooccurrenceParams:
    window: int = 5
    symmetric: bool = False
    pair_decay: float = 1.0
    last_n: int = 5
    decay: float = 0.6
    alpha: float = 0.0
    history_alpha: float = 0.0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor(
            [
                self.window,
                float(self.symmetric),
                self.pair_decay,
                self.last_n,
                self.decay,
                self.alpha,
                self.history_alpha,
            ],
            dtype=torch.float64,
        )

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> CooccurrenceParams:
        w, s, pd, n, d, a, h = t.tolist()
        return cls(int(w), bool(s), float(pd), int(n), float(d), float(a), float(h))


def count_pairs(
    item_tok: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    size: int,
    window: int,
    symmetric: bool,
    pair_decay: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse pair counts over training rows: sorted keys ``a * size + b`` and counts.

    Each pair of one user's training rows k <= ``window`` apart counts
    ``pair_decay ** (k - 1)`` (in both directions if ``symmetric``); a movie paired with
    itself does not count. ``item_tok`` holds
    item tokens (index + 1).
    """
    rows, in_train = _training_mask(train_rows, len(item_tok), window)
    keys, counts = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    for k in range(1, window + 1):
        new, n = _pairs_at(item_tok, user, rows, in_train, size, k)
        if symmetric:
            new, n = _both_directions(new, n, size)
        # merged one distance at a time: on 32M ratings all distances' raw pairs at once
        # would need tens of GB, their distinct keys a few
        keys, inv = np.unique(np.concatenate([keys, new]), return_inverse=True)
        counts = np.bincount(
            inv, weights=np.concatenate([counts, n * _distance_weight(pair_decay, k)])
        ).astype(np.float32)
    return keys, counts


def _distance_weight(pair_decay: float, k: int) -> np.float64:
    """The weight of a pair k rows apart, rounded through float32 as counts have always
    been: ``PairsByDistance.combine`` must reproduce ``count_pairs`` to the bit, or a
    tuned BST trains on other numbers."""
    return np.float64(np.float32(pair_decay ** (k - 1)))


def _training_mask(train_rows, n_rows: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.asarray(train_rows, dtype=np.int64)
    in_train = np.zeros(n_rows + window + 1, dtype=bool)
    in_train[rows] = True
    return rows, in_train


def _pairs_at(item_tok, user, rows, in_train, size: int, k: int):
    """Directed pairs of one user's training rows exactly k apart: sorted distinct keys
    and how often each occurs (float32)."""
    nxt = rows + k
    ok = in_train[nxt] & (user[np.minimum(nxt, len(user) - 1)] == user[rows])
    a, b = item_tok[rows[ok]].astype(np.int64), item_tok[nxt[ok]].astype(np.int64)
    a, b = a[a != b], b[a != b]  # a re-watch says nothing about what comes next
    keys, n = np.unique(a * size + b, return_counts=True)
    return keys, n.astype(np.float32)


def _both_directions(keys: np.ndarray, counts: np.ndarray, size: int):
    """Directed counts -> symmetric ones: b after a also counts as a after b."""
    a, b = np.divmod(keys, size)
    keys, inv = np.unique(np.concatenate([keys, b * size + a]), return_inverse=True)
    return keys, np.bincount(inv, weights=np.concatenate([counts, counts])).astype(np.float32)


@dataclass
class PairsByDistance:
    """The directed pair counts of some training rows, one column per distance 1..W.

    Counted once, every (window, direction, pair decay) of the tuning grid is a
    weighted sum of columns (``combine``) instead of a recount of the rows, which was
    most of the grid's time. Dense in W x (distinct pairs): meant for the tuning rows
    (at most ``TUNE_MAX_ROWS``), not for a refit on 32M ratings, which ``count_pairs``
    merges one distance at a time.
    """

    keys: np.ndarray  # (K,) sorted a * size + b, over every distance
    # (W, K) float32: row k - 1 counts pairs k rows apart (distance-major, so that the
    # first ``window`` rows are one contiguous block and no float64 copy is made)
    per_distance: np.ndarray
    size: int
    _both: tuple | None = None  # both directions' keys, made once when first asked

    @classmethod
    def count(cls, item_tok, user, train_rows, size: int, window: int) -> PairsByDistance:
        rows, in_train = _training_mask(train_rows, len(item_tok), window)
        per_k = [_pairs_at(item_tok, user, rows, in_train, size, k) for k in range(1, window + 1)]
        keys = np.unique(np.concatenate([k for k, _ in per_k]))
        table = np.zeros((window, len(keys)), dtype=np.float32)
        for d, (k, n) in enumerate(per_k):
            table[d, np.searchsorted(keys, k)] = n
        return cls(keys, table, size)

    def combine(
        self, window: int, symmetric: bool, pair_decay: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exactly what ``count_pairs`` gives for these settings: the same sums in the
        same order (distance by distance, each step in float64 and rounded to float32)."""
        if window > len(self.per_distance):
            raise ValueError(f"pairs counted up to {len(self.per_distance)} apart, not {window}")
        rows = self.per_distance[:window]
        keys = self.keys
        if symmetric:  # one distance at a time, both directions (integer sums: exact)
            keys, inv = self._symmetric_keys()
            rows = (
                np.bincount(inv, np.concatenate([r, r]), len(keys)).astype(np.float32) for r in rows
            )
        counts = np.zeros(len(keys), dtype=np.float32)
        seen = np.zeros(len(keys), dtype=bool)  # pairs within the window (a zero weight too)
        for k, r in enumerate(rows, 1):
            step = counts.astype(np.float64) + r * _distance_weight(pair_decay, k)
            counts = step.astype(np.float32)
            seen |= r > 0
        return keys[seen], counts[seen]

    def _symmetric_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """Keys of both directions, and where each directed key and its transpose land.
        Rows are merged per call, one distance at a time, rather than kept: at 2M
        tuning rows a kept both-directions table raised the 32M probe's peak by 0.9 GB."""
        if self._both is None:
            a, b = np.divmod(self.keys, self.size)
            self._both = np.unique(
                np.concatenate([self.keys, b * self.size + a]), return_inverse=True
            )
        return self._both


class CooccurrenceScorer(nn.Module):
    """Fitted co-occurrence statistics; every tensor is a buffer, so it saves and loads."""

    def __init__(self, n_items: int, params: CooccurrenceParams | None = None):
        super().__init__()
        self.n_items = n_items
        self.counts = ItemPairs(n_items)
        self.register_buffer("popularity", torch.zeros(n_items + 1))
        self.register_buffer("params", (params or CooccurrenceParams()).as_tensor())
        self._p: CooccurrenceParams | None = None
        self._norm: tuple | None = None  # (key, popularity ** history_alpha)

    @property
    def p(self) -> CooccurrenceParams:
        if self._p is None:
            self._p = CooccurrenceParams.from_tensor(self.params)
        return self._p

    def set_counts(
        self,
        keys: np.ndarray,
        values: np.ndarray,
        popularity: np.ndarray,
        params: CooccurrenceParams,
    ) -> None:
        self.counts.set(torch.from_numpy(keys), torch.from_numpy(values))
        self.popularity = torch.from_numpy(popularity.astype(np.float32)).to(self.popularity.device)
        self.set_params(params)

    def set_params(self, params: CooccurrenceParams) -> None:
        self.params = params.as_tensor().to(self.params.device)
        self._p, self._norm = params, None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._p, self._norm = None, None  # read the loaded params and popularity again
        old = state_dict.get(prefix + "params")
        if old is not None and old.numel() == 6:  # saved before history_alpha existed
            state_dict[prefix + "params"] = torch.cat([old, old.new_zeros(1)])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _weights(self, hist_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        last, w = recent(hist_item, self.p.last_n, self.p.decay)  # (B, n) each
        if self.p.history_alpha:
            w = w / self._history_norm()[last]
        return last, w

    def _history_norm(self) -> torch.Tensor:
        """popularity ** history_alpha of every token, computed once over the whole
        vocabulary: a power over the gathered (B, n) tokens gave some tokens other last
        bits when more rows were stacked (vectorised and scalar pow differ), so a
        stacked request's reasons differed from its answer alone."""
        key = (self.p.history_alpha, self.popularity.data_ptr(), self.popularity.device)
        if self._norm is None or self._norm[0] != key:
            self._norm = (key, self.popularity.clamp(min=1.0) ** self.p.history_alpha)
        return self._norm[1]

    def contributions(self, hist_item: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """What each history position adds to each candidate's raw count: (B, C, L),
        zero outside the last ``last_n`` watches. ``cands`` (B, C) item tokens."""
        last, w = self._weights(hist_item)  # (B, n) newest first
        per = self.counts.lookup(last, cands) * w[:, :, None]  # (B, n, C)
        b, seq_len = hist_item.shape
        out = per.new_zeros(b, seq_len, cands.shape[1])
        out[:, seq_len - per.shape[1] :] = per.flip(1)  # back to history order
        return out.transpose(1, 2)

    def self_count(self, hist_item: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B,) weight that a training target's own pairs added to its score.

        A training target at position p formed one counted pair with each history
        movie within ``window`` before it; training on the raw count would teach the
        model to trust a statistic that, for validation and test targets, lacks that
        pair. Subtracting it gives each training target its leave-this-event-out score.
        """
        last, w = self._weights(hist_item)  # (B, n)
        every = hist_item.flip(1)  # (B, L) newest first: position k is k + 1 rows back
        k = torch.arange(every.shape[1], device=every.device)
        own = torch.where(k < self.p.window, self.p.pair_decay ** k.float(), 0.0)  # (L,)
        # a movie seen twice in the history shares its count with both positions; the
        # target itself in the history formed no counted pair with it
        real = (every > 0) & (every != target[:, None])  # (B, L)
        same = (last[:, :, None] == every[:, None, :]) & real[:, None, :]  # (B, n, L)
        return (w[:, :, None] * same * own[None, None, :]).sum((1, 2))

    def raw(self, hist_item: torch.Tensor, cands: torch.Tensor) -> torch.Tensor:
        """Decay-weighted counts of candidates ``cands`` (B, C) from the history (B, C)."""
        return self.counts.weighted(*self._weights(hist_item), cands)

    def raw_all(self, hist_item: torch.Tensor) -> torch.Tensor:
        """Decay-weighted counts of every token 0..n_items: (B, n_items + 1)."""
        return self.counts.weighted_rows(*self._weights(hist_item))

    def normalise(self, raw: torch.Tensor, cands: torch.Tensor | None = None) -> torch.Tensor:
        """Raw counts divided by popularity ** alpha; ``cands`` None: every token."""
        if not self.p.alpha:
            return raw
        pop = self.popularity if cands is None else self.popularity[cands]
        return raw / pop.clamp(min=1.0) ** self.p.alpha

    def finish(self, raw: torch.Tensor, cands: torch.Tensor | None = None) -> torch.Tensor:
        """Raw counts -> scores: popularity normalisation and the tie-breaking term."""
        pop = self.popularity if cands is None else self.popularity[cands]
        return self.normalise(raw, cands) + tie_break(pop, self.popularity)


class Cooccurrence(ScoringModel):
    """The co-occurrence baseline behind the model contract."""

    def __init__(self, n_items: int, params: CooccurrenceParams | None = None):
        super().__init__()
        self.n_items = n_items
        self.scorer = CooccurrenceScorer(n_items, params)

    def score(self, batch: Batch, candidates: torch.Tensor) -> torch.Tensor:
        c = candidates[None].expand(len(batch), -1) if candidates.dim() == 1 else candidates
        return self.scorer.finish(self.scorer.raw(batch.hist_item, c), c)

    def score_all(self, batch: Batch) -> torch.Tensor:
        return self.scorer.finish(self.scorer.raw_all(batch.hist_item))[:, 1:]


def fit_cooccurrence(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    params: CooccurrenceParams,
    counted: PairsByDistance | None = None,
) -> Cooccurrence:
    """``counted``: the pairs of ``train_rows`` by distance, counted already (tuning)."""
    if counted is not None:
        keys, values = counted.combine(params.window, params.symmetric, params.pair_decay)
    else:
        keys, values = count_pairs(
            item.astype(np.int64) + 1,
            user,
            train_rows,
            n_items + 1,
            params.window,
            params.symmetric,
            params.pair_decay,
        )
    model = Cooccurrence(n_items, params)
    model.scorer.set_counts(keys, values, training_popularity(item, train_rows, n_items), params)
    return model


# Above this many training rows the grid is searched on a subset of users' rows: on
# 32M ratings its 14 refits would take most of an hour on 2 cores
TUNE_MAX_ROWS = 2_000_000

# The grid `tune` searches: windows and directions need a refit, the rest do not.
GRID_FIT = {"window": (1, 3, 5, 10), "symmetric": (False, True), "pair_decay": (1.0, 0.7)}
GRID_SCORE = {"last_n": (1, 5, 10, 20), "decay": (0.6, 0.7, 0.8), "alpha": (0.0, 0.25, 0.5)}
# searched last, jointly with alpha: the two popularity exponents trade against each other
GRID_HISTORY_ALPHA = (0.0, 0.25, 0.5, 0.75, 1.0)  # 0 first


def tuning_rows(
    user: np.ndarray, train_rows: np.ndarray, max_rows: int, seed: int = 0
) -> np.ndarray:
    """The training rows of a seeded random subset of users, about ``max_rows`` of them
    (all rows when there are no more than that)."""
    if len(train_rows) <= max_rows:
        return train_rows
    users = np.unique(user[train_rows])
    keep = np.random.default_rng(seed).permutation(users)
    share = max(1, int(len(users) * max_rows / len(train_rows)))
    return train_rows[np.isin(user[train_rows], keep[:share])]


def tune_cooccurrence(
    item: np.ndarray,
    user: np.ndarray,
    train_rows: np.ndarray,
    n_items: int,
    evaluate,
    log=None,
    max_rows: int = TUNE_MAX_ROWS,
) -> tuple[Cooccurrence, list[dict]]:
    """Pick window, direction, last_n, decay, alpha and history_alpha by validation NDCG@10.

    ``evaluate(model) -> float`` scores a fitted model on the validation targets. The
    counting settings are searched with the scoring ones at their defaults, then the
    scoring settings on the best counts, then the two popularity exponents together (a
    coordinate search: 14 + 30 + 12 evaluations instead of the full product's 2,520).
    Above ``max_rows`` training rows the grid runs on the rows of a random subset of
    users, then the best setting is fitted on all.
    """
    trials: list[dict] = []
    all_rows, train_rows = train_rows, tuning_rows(user, train_rows, max_rows)

    def trial(model: Cooccurrence, params: CooccurrenceParams) -> float:
        t0 = time.perf_counter()
        model.scorer.set_params(params)
        score = evaluate(model)
        trials.append({**asdict(params), "val_NDCG@10": score, "seconds": time.perf_counter() - t0})
        if log:
            log(f"cooccurrence {asdict(params)}: val NDCG@10 {score:.4f}")
        return score

    best, best_params, best_model = -1.0, None, None
    # every pair is counted once; each setting of the grid then weighs the distances
    counted = PairsByDistance.count(
        item.astype(np.int64) + 1, user, train_rows, n_items + 1, max(GRID_FIT["window"])
    )
    for window, symmetric, pair_decay in itertools.product(*GRID_FIT.values()):
        if window == 1 and pair_decay != 1.0:
            continue  # one distance only
        params = CooccurrenceParams(window=window, symmetric=symmetric, pair_decay=pair_decay)
        model = fit_cooccurrence(item, user, train_rows, n_items, params, counted)
        s = trial(model, params)
        if s > best:
            best, best_params, best_model = s, params, model
    assert best_model is not None and best_params is not None
    for last_n, decay, alpha in itertools.product(*GRID_SCORE.values()):
        if last_n == 1 and decay != GRID_SCORE["decay"][0]:
            continue  # decay does not matter for one movie
        params = CooccurrenceParams(
            best_params.window, best_params.symmetric, best_params.pair_decay, last_n, decay, alpha
        )
        s = trial(best_model, params)
        if s > best:
            best, best_params = s, params
    # history_alpha 0 was the grid above; with one history movie its weight cannot
    # change the ranking
    history_alphas = () if best_params.last_n == 1 else GRID_HISTORY_ALPHA[1:]
    for alpha, history_alpha in itertools.product(GRID_SCORE["alpha"], history_alphas):
        params = replace(best_params, alpha=alpha, history_alpha=history_alpha)
        s = trial(best_model, params)
        if s > best:
            best, best_params = s, params
    if len(train_rows) < len(all_rows):
        if log:
            log(
                f"cooccurrence: tuned on {len(train_rows):,} of {len(all_rows):,} training "
                "rows; fitting the best setting on all"
            )
        best_model = fit_cooccurrence(item, user, all_rows, n_items, best_params)
    best_model.scorer.set_params(best_params)
    return best_model, trials
