"""Top-k unseen movies for a known user or for any list of watched movies, explained.

Recommendation time: for a known user, "now" is the moment of their last watch (the
model learnt time gaps from data that ends years ago; real wall-clock time would put
every watch in the "years ago" bucket). A typed history without times is read as
watched one after another, a minute apart, the last one just now.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

import numpy as np
import torch

from bstrec.data.batches import Batch, SequenceStore, history_batch
from bstrec.data.interactions import DataError
from bstrec.run_dir import LoadedRun

SPACING_SECONDS = 60


class UnknownIdError(DataError):
    """A raw user or movie id that the run does not know."""

    def __init__(self, kind: str, ids: list):
        self.kind, self.ids = kind, [plain_id(i) for i in ids]
        shown = ", ".join(str(i) for i in ids[:10])
        super().__init__(f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}")


@dataclass
class MovieInfo:
    movie_id: int | str
    title: str
    year: int | None
    genres: list[str]


@dataclass
class Because(MovieInfo):
    weight: float = 0.0


@dataclass
class Pick(MovieInfo):
    score: float = 0.0
    because: list[Because] = field(default_factory=list)


@dataclass
class Watched(MovieInfo):
    rating: float | None = None
    time: str | None = None


@dataclass
class Recommendations:
    user_id: int | str | None
    picks: list[Pick]
    history: list[Watched]
    task: str

    def to_dict(self) -> dict:
        return asdict(self)


class Recommender:
    """Loaded once, answers many requests. Inference is serialized by the caller
    (torch modules are not guaranteed thread-safe across concurrent forward passes)."""

    def __init__(self, run: LoadedRun, explain_top: int = 3, cache_k: int = 100):
        self.run = run
        self.model = run.model.eval()
        if hasattr(self.model, "freeze_catalog"):
            self.model.freeze_catalog()  # the candidate side is the same for every request
        ds = run.dataset
        self.ds = ds
        self.max_len = run.config.data.max_len
        self.store = SequenceStore(ds, run.user_feature_names)
        self.user_pos = {str(u): i for i, u in enumerate(ds.user_ids.tolist())}
        self.item_pos = {str(m): i for i, m in enumerate(ds.item_ids.tolist())}
        self.explain_top = explain_top
        self.cache_k = cache_k  # known users' rankings are kept to this depth
        self._ranked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._explained: dict[int, list[list[Because]]] = {}  # per user, per ranked pick
        self.all_items = torch.arange(1, ds.n_items + 1)

    # ---------------------------------------------------------------- lookups
    def movie(self, idx: int) -> MovieInfo:
        ds = self.ds
        year = int(ds.item_year[idx])
        return MovieInfo(
            movie_id=_raw(ds.item_ids[idx]),
            title=str(ds.item_titles[idx]),
            year=year or None,
            genres=[g for g, on in zip(ds.genre_names, ds.item_genres[idx], strict=True) if on],
        )

    def user_index(self, raw_user) -> int:
        idx = self.user_pos.get(str(raw_user))
        if idx is None:
            raise UnknownIdError("user", [raw_user])
        return idx

    def item_indexes(self, raw_items: list) -> list[int]:
        missing = [m for m in raw_items if str(m) not in self.item_pos]
        if missing:
            raise UnknownIdError("movie", missing)
        return [self.item_pos[str(m)] for m in raw_items]

    def user_feature_codes(self, features: dict[str, str] | None) -> list[int]:
        """Codes for optional demographics of a new person; unknown values -> error."""
        codes = []
        features = dict(features or {})
        for name in self.run.user_feature_names:
            value = features.pop(name, None)
            vocab = self.ds.user_vocab[name]
            if value is None:
                codes.append(0)
            elif str(value) in vocab:
                codes.append(vocab.index(str(value)))
            else:
                raise DataError(f"user.{name}: unknown value {value!r}; one of {vocab[1:]}")
        if features:
            raise DataError(f"user: unknown feature(s) {sorted(features)}; "
                            f"known: {self.run.user_feature_names}")
        return codes

    # ---------------------------------------------------------------- recommend
    def _seen(self, u: int) -> np.ndarray:
        return self.ds.item[int(self.ds.user_offsets[u]) : int(self.ds.user_offsets[u + 1])]

    @torch.no_grad()
    def precompute(self, users: list[int] | None = None, batch_size: int = 64,
                   progress=None) -> None:
        """Rank and explain the catalogue for known users ahead of requests.

        A run is immutable while it is served, so a known user's ranking and the
        reasons for it never change: computing them once in batches (several users per
        forward pass) is cheaper than per request, and a request for a precomputed user
        needs no model call at all (``cached_for_user``).
        """
        todo = [u for u in (range(self.ds.n_users) if users is None else users)
                if u not in self._explained]
        for s in range(0, len(todo), batch_size):
            chunk = todo[s : s + batch_size]
            batch = self.store.batch_for_users(torch.tensor(chunk), self.max_len)
            scores = self.model.score_all(batch)  # (B, n_items)
            ranked = [self._rank(scores[row], self._seen(u)) for row, u in enumerate(chunk)]
            for u, r in zip(chunk, ranked, strict=True):
                self._ranked[u] = r
            k = min(len(idx) for idx, _ in ranked)
            if k == 0:
                continue
            cands = torch.stack([idx[:k] for idx, _ in ranked]) + 1  # (B, k)
            weights = self.model.explain(batch, cands)  # (B, k, L) or None
            for row, u in enumerate(chunk):
                w = None if weights is None else weights[row]
                self._explained[u] = self._reasons(w, batch.hist_item[row])
            if progress is not None:
                progress(min(s + batch_size, len(todo)), len(todo))

    def _rank(self, scores: torch.Tensor, seen: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        scores = scores.clone()
        scores[torch.as_tensor(seen, dtype=torch.long)] = float("-inf")
        k = min(self.cache_k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        return top.indices, top.values

    def _reasons(self, weights: torch.Tensor | None, hist_item: torch.Tensor) -> list[list]:
        """Per pick, the (up to explain_top) watched movies that weighed most: Because."""
        if weights is None:
            return [[] for _ in range(self.cache_k)]
        top_w, top_pos = weights.topk(min(self.explain_top, weights.shape[-1]), dim=-1)
        out = []
        for ws, ps in zip(top_w.tolist(), top_pos.tolist(), strict=True):
            because = []
            for w, pos in zip(ws, ps, strict=True):
                tok = int(hist_item[pos])
                if tok > 0 and w > 0:
                    because.append(Because(**asdict(self.movie(tok - 1)), weight=round(w, 4)))
            out.append(because)
        return out

    def _history(self, u: int, shown: int) -> list[Watched]:
        lo, hi = int(self.ds.user_offsets[u]), int(self.ds.user_offsets[u + 1])
        return [
            Watched(**asdict(self.movie(int(self.ds.item[r]))),
                    rating=_rating(self.ds.rating[r]), time=_iso(self.ds.timestamp[r]))
            for r in range(hi - 1, max(lo, hi - shown) - 1, -1)
        ]

    def cached_for_user(self, raw_user, k: int = 10,
                        history_shown: int = 10) -> Recommendations | None:
        """A precomputed user's answer without touching the model; None if not cached."""
        u = self.user_index(raw_user)
        reasons = self._explained.get(u)
        if reasons is None or k > len(reasons):
            return None
        idx, vals = self._ranked[u]
        picks = [Pick(**asdict(self.movie(i)), score=round(v, 4), because=list(b))
                 for i, v, b in zip(idx[:k].tolist(), vals[:k].tolist(), reasons[:k],
                                    strict=False)]
        return Recommendations(_raw(self.ds.user_ids[u]), picks, self._history(u, history_shown),
                               self.model.task)

    @torch.no_grad()
    def for_user(self, raw_user, k: int = 10, history_shown: int = 10) -> Recommendations:
        cached = self.cached_for_user(raw_user, k, history_shown)
        if cached is not None:
            return cached
        u = self.user_index(raw_user)
        batch = self.store.batch_for_users(torch.tensor([u]), self.max_len)
        if u not in self._ranked:
            self._ranked[u] = self._rank(self.model.score_all(batch)[0], self._seen(u))
        if k <= self.cache_k:
            idx, vals = self._ranked[u]
            picks = self._picks(batch, idx[:k], vals[:k])
        else:
            picks = self._top_k(batch, self._seen(u), k)
        return Recommendations(_raw(self.ds.user_ids[u]), picks, self._history(u, history_shown),
                               self.model.task)

    @torch.no_grad()
    def for_history(self, raw_items: list, k: int = 10,
                    user_features: dict[str, str] | None = None) -> Recommendations:
        if not raw_items:
            raise DataError("history: give at least one movie id")
        idx = self.item_indexes(raw_items)
        n = len(idx)
        now = int(self.ds.timestamp.max()) if len(self.ds.timestamp) else 0
        times = [now - SPACING_SECONDS * (n - 1 - i) for i in range(n)]
        batch = history_batch([i + 1 for i in idx], self.max_len,
                              len(self.run.user_feature_names),
                              user_feats=self.user_feature_codes(user_features),
                              times=times, now=now)
        picks = self._top_k(batch, np.asarray(idx), k)
        hist = [Watched(**asdict(self.movie(i))) for i in reversed(idx)]
        return Recommendations(None, picks, hist, self.model.task)

    def _top_k(self, batch: Batch, seen: np.ndarray, k: int) -> list[Pick]:
        scores = self.model.score_all(batch)[0].clone()  # (n_items,)
        scores[torch.as_tensor(seen, dtype=torch.long)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        return self._picks(batch, top.indices, top.values)

    def _picks(self, batch: Batch, indices: torch.Tensor, values: torch.Tensor) -> list[Pick]:
        weights = self.model.explain(batch, indices + 1)  # (1, k, L) or None
        reasons = self._reasons(None if weights is None else weights[0], batch.hist_item[0])
        return [Pick(**asdict(self.movie(i)), score=round(v, 4), because=b)
                for i, v, b in zip(indices.tolist(), values.tolist(), reasons, strict=False)]


def plain_id(raw):
    """A raw id as JSON should show it: a number when it is one ('42' and np.int64(42)
    -> 42), else the text as given ('zz')."""
    raw = raw.item() if hasattr(raw, "item") else raw
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]+", raw) and str(int(raw)) == raw:
        return int(raw)
    return raw


def _raw(v):
    v = v.item() if hasattr(v, "item") else v
    return v


def _rating(r) -> float | None:
    return None if np.isnan(r) else float(r)


def _iso(ts) -> str:
    return datetime.fromtimestamp(int(ts), tz=UTC).isoformat()
