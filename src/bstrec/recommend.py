"""Top-k unseen movies for a known user or for any list of watched movies, explained.

Recommendation time ("now", from which the model's time-gap feature is measured): for a
known user, the moment of their last watch, unless the caller passes its own (the model
learnt time gaps from data that ends years ago; real wall-clock time would put every
watch in the "years ago" bucket). A typed history is read as watched one after another,
a minute apart, the last one at "now", which defaults to the data set's last timestamp.

Every model call goes through ``Recommender.rank``: a list of one-row ``Query``s in, one
compact ``Ranked`` (top picks and the reasons for them) per query out. Serving
(serve/worker.py) hands it the requests that queued up while the model was busy; a
query's answer is the same bits whatever else was queued with it (see ``rank``).
"""

from __future__ import annotations

import copy
import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from bstrec.data.batches import Batch, SequenceStore, history_batch
from bstrec.data.interactions import DataError
from bstrec.results import Movie, Reason, Recommendation, Recommendations, Watched
from bstrec.retrieval import SERVE_MIN_ITEMS, retrieval_size, retrieve_then_rank
from bstrec.run_dir import LoadedRun
from bstrec.traced_pass import TracedPasses, serving_pass, traceable
from bstrec.values import iso_time, plain, plain_id

log = logging.getLogger(__name__)

SPACING_SECONDS = 60
# Known users' answers are kept to this depth (top picks, their scores and reasons, a
# few kB per user whatever the catalogue size). A request for more is computed on
# demand and not kept. 50 is the deepest list the web page offers.
KEEP_TOP = 50
# At most this many queries share a forward pass (Recommender.rank). Per query, with
# 200 retrieved candidates: 2.1 ms alone, 1.0 ms in a stack of 4, 0.83 ms of 8, 0.79 ms
# of 16 (benchmarks/batch_forward.py): little left to gain past 8, and every query of a
# stack waits for the whole stack
STACK_MAX = 8
M = TypeVar("M", bound=Movie)


class UnknownIdError(DataError):
    """A raw user or movie id that the run does not know."""

    def __init__(self, kind: str, ids: list):
        self.kind, self.ids = kind, [plain_id(i) for i in ids]
        shown = ", ".join(str(i) for i in ids[:10])
        super().__init__(f"unknown {kind} id{'s' if len(ids) > 1 else ''}: {shown}")


@dataclass(frozen=True)
class Query:
    """One request for the model: a one-row batch and what to leave out of the picks."""

    batch: Batch
    seen: np.ndarray  # item indexes never recommended (the history)
    depth: int  # how many picks to rank and explain
    user: int | None = None  # known user's index; None for a typed history
    keep: bool = False  # a known user's default answer, to keep (Recommender.rank)


@dataclass(frozen=True)
class Ranked:
    """A query's top picks, best first, in a compact form (what the known-user cache
    holds): item indexes and scores, and per pick the item indexes (-1: none) and
    weights (the model's ``explain``) of the watched movies that weighed most."""

    items: np.ndarray  # (n,) int32
    scores: np.ndarray  # (n,) float32
    reason_items: np.ndarray  # (n, E) int32
    reason_weights: np.ndarray  # (n, E) float32

    @property
    def nbytes(self) -> int:
        return sum(
            a.nbytes for a in (self.items, self.scores, self.reason_items, self.reason_weights)
        )


class Recommender:
    """Loaded once, answers many requests.

    ``rank`` only reads the model (in eval mode, its inference cache built here) and
    each call scores its own queries, so several threads may call it at once with the
    same answers as one at a time (tests/serve/test_concurrency.py); serving confines
    it to its model threads (serve/worker.py). Lookups, ``*_query``, ``cached`` and
    ``answer_*`` never touch the model.
    """

    def __init__(
        self,
        run: LoadedRun,
        explain_top: int = 3,
        keep_top: int = KEEP_TOP,
        candidates: int | None = None,
        trace: bool = False,
    ):
        """``candidates``: retrieve-then-rank with that many candidates per request (0:
        score the whole catalogue; None: 200 above ``retrieval.SERVE_MIN_ITEMS``, 2,000
        movies, where the model has a cheap stage). ``trace``: run that pass as a traced
        graph where it reproduces the eager one bit for bit (traced_pass.py); the
        server turns it on, and traces at start-up (a trace costs ~0.1 s, more than a
        few one-off calls save)."""
        if keep_top < 1:
            raise ValueError(f"keep_top must be at least 1, not {keep_top}")
        self.run = run
        # a shallow copy: the same weights, but the serving settings below (the frozen
        # catalogue, rows one at a time) are this Recommender's, not the run's model's,
        # which may go on to evaluate or export in the same process
        self.model = copy.copy(run.model).eval()
        self.candidates = retrieval_size(self.model, candidates, SERVE_MIN_ITEMS)
        if self.candidates and not self.model.retrieves:  # say so now, not per request
            raise ValueError(
                f"candidates={self.candidates}: {type(self.model).__name__} has no retrieval "
                "stage; it ranks the whole catalogue (use candidates=0)"
            )
        if hasattr(self.model, "freeze_catalog"):
            self.model.freeze_catalog()  # the candidate side is the same for every request
        if hasattr(self.model, "exact_rows"):
            self.model.exact_rows = True  # a row's bits must not depend on its stack (rank)
        use_trace = trace and self.candidates and traceable(self.model)
        self.traced = TracedPasses(self.model, explain_top) if use_trace else None
        ds = run.dataset
        self.ds = ds
        self.max_len = run.config.data.max_len
        self.store = SequenceStore(ds, run.user_feature_names)
        self.user_pos = {str(u): i for i, u in enumerate(ds.user_ids.tolist())}
        self.item_pos = {str(m): i for i, m in enumerate(ds.item_ids.tolist())}
        self.explain_top = explain_top
        self.keep_top = keep_top
        self._kept: dict[int, Ranked] = {}  # known user index -> top keep_top picks
        self.store_kept = True  # off: count them only (``keep``)
        self._ranked_only: set[int] = set()
        self._ranked_only_bytes = 0
        # (queries, retrieved, ranked) -> whether a stack of that shape gives every query
        # its own answer bit for bit (checked on its first stack; see ``rank``)
        self.exact: dict[tuple[int, int, int], bool] = {}
        self.stacked = 0  # answers that came from a stack of several queries
        self.last_time = int(ds.timestamp.max()) if len(ds.timestamp) else 0
        # every answer names 10 to 50 movies: each is looked up once, then shared by
        # every answer that names it (the records are frozen)
        self._movies: list[Movie | None] = [None] * ds.n_items
        # called with [(user, Ranked)] after ``rank`` keeps answers (serve/model_process.py
        # sends them from the model's process to the app's)
        self.on_kept: Callable[[list[tuple[int, Ranked]]], None] | None = None

    # ---------------------------------------------------------------- lookups
    def movie(self, idx: int) -> Movie:
        movie = self._movies[idx]
        if movie is None:
            ds = self.ds
            movie = self._movies[idx] = Movie(
                movie_id=plain(ds.item_ids[idx]),
                title=str(ds.item_titles[idx]),
                year=int(ds.item_year[idx]) or None,
                genres=tuple(
                    g for g, on in zip(ds.genre_names, ds.item_genres[idx], strict=True) if on
                ),
            )
        return movie

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
            raise DataError(
                f"user: unknown feature(s) {sorted(features)}; known: {self.run.user_feature_names}"
            )
        return codes

    def last_watch(self, u: int) -> int:
        return int(self.ds.timestamp[int(self.ds.user_offsets[u + 1]) - 1])

    # ---------------------------------------------------------------- queries
    def _seen(self, u: int) -> np.ndarray:
        return self.ds.item[int(self.ds.user_offsets[u]) : int(self.ds.user_offsets[u + 1])]

    def user_query(self, u: int, k: int, now: int | None = None) -> Query:
        """A known user's query: ranked to ``keep_top`` (and then kept) when k fits and
        "now" is the default, else to k, computed for this request only."""
        if now is not None and now < self.last_watch(u):
            raise DataError(
                f"now: {iso_time(now)} is before this user's last watch "
                f"({iso_time(self.last_watch(u))})"
            )
        keep = now is None and k <= self.keep_top
        time = None if now is None else torch.tensor([now], dtype=torch.long)
        batch = self.store.batch_for_users(torch.tensor([u]), self.max_len, time)
        return Query(batch, self._seen(u), self.keep_top if keep else self._depth(k), u, keep)

    def history_query(
        self,
        raw_items: list,
        k: int,
        user_features: dict[str, str] | None = None,
        now: int | None = None,
        ratings: list | None = None,
    ) -> Query:
        """A typed history's query (oldest first), with optional stars per movie (None:
        not rated); raises on unknown ids or values."""
        if not raw_items:
            raise DataError("history: give at least one movie id")
        idx = self.item_indexes(raw_items)
        n = len(idx)
        now = self.last_time if now is None else int(now)
        times = [now - SPACING_SECONDS * (n - 1 - i) for i in range(n)]
        batch = history_batch(
            [i + 1 for i in idx],
            self.max_len,
            len(self.run.user_feature_names),
            user_feats=self.user_feature_codes(user_features),
            times=times,
            now=now,
            ratings=history_stars(ratings, n),
        )
        return Query(batch, np.asarray(idx, dtype=np.int64), self._depth(k))

    def user_queries(self, users: list[int]) -> list[Query]:
        """The queries whose answers are kept: for precomputing known users."""
        return [self.user_query(u, self.keep_top) for u in users]

    # ---------------------------------------------------------------- the model
    @torch.inference_mode()  # no autograd bookkeeping at all: 4-5% off a query
    def rank(self, queries: list[Query]) -> list[Ranked]:
        """Score, rank and explain queries: the one place the model runs.

        With retrieve-then-rank (``candidates``), queries of one depth are stacked, up
        to ``STACK_MAX``, into one forward pass: on a 200-candidate query most of the
        model's time is per-call overhead on small tensors, which a stack shares (8
        rows: 0.83 ms a query instead of 2.1, benchmarks/batch_forward.py). A query's
        answer must not depend on what it was stacked with, and BLAS may pick other
        kernels for other shapes, so each stack shape is checked once, on its first
        stack: ranked together and one at a time, compared bit for bit (``exact``).
        A shape that changes any answer is ranked one query at a time from then on.
        Kernels depend on shapes, not values, so one check stands for the shape. BST's
        pass (``traced_pass.serving_pass``) has no step that depends on the values: a
        pick's reasons read its attention row from the ranking pass itself. Elsewhere
        (``_rank_stack_apart``) the reasons' attention pass runs row by row
        (``BST.explain``), and so do the per-user products whose kernel does change
        with the number of rows (``BST.exact_rows``, set here). Whole-catalogue
        queries are scored one at a time: a row is already a catalogue-sized product,
        and stacks of them cost more per row, not less (same benchmark).
        A kept query's answer is remembered for ``cached``.
        """
        out: list[Ranked | None] = [None] * len(queries)
        groups: dict[tuple | None, list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault(self._stack_key(q), []).append(i)
        for key, members in groups.items():
            for s in range(0, len(members), STACK_MAX):
                part = members[s : s + STACK_MAX]
                ranked_part = self._rank_group(key, [queries[i] for i in part])
                for i, ranked in zip(part, ranked_part, strict=True):
                    out[i] = ranked
        kept = [
            (q.user, r) for q, r in zip(queries, out, strict=True) if q.keep and q.user is not None
        ]
        for u, ranked in kept:
            self.keep(u, ranked)
        if kept and self.on_kept is not None:
            self.on_kept(kept)
        return out  # type: ignore[return-value]

    def warm_one(self) -> bool:
        """Trace the next stack size (1 to ``STACK_MAX`` rows) not traced yet, by ranking
        that many known users (their answers are kept); False when there is none. The
        server runs these at start-up (``ModelWorkers.prepare``), so that no request
        waits for a trace (~0.1 s each). Every query to ``keep_top`` picks uses these
        shapes (``_depth``)."""
        if self.traced is None:
            return False
        retrieved = max(self.candidates, self.keep_top)
        for rows in range(1, min(STACK_MAX, self.ds.n_users) + 1):
            if (rows, retrieved, self.keep_top) not in self.traced.graphs:
                self.rank(self.user_queries(list(range(rows))))
                return True
        return False

    def _depth(self, k: int) -> int:
        """How many picks to rank and explain for a request of k: with retrieve-then-
        rank, ``keep_top`` for any k up to it, so that every such query shares one stack
        shape (and its traced pass) with the known users' (about 5% more model time a
        query at 50 than at 10); the answer is the first k."""
        return self.keep_top if self.candidates and k <= self.keep_top else k

    def _stack_key(self, q: Query) -> tuple[int, int] | None:
        """Queries with the same key may share a forward pass (None: never)."""
        if not self.candidates:
            return None
        return (max(self.candidates, q.depth), q.depth)  # (retrieved, ranked) per row

    def _rank_group(self, key: tuple[int, int] | None, qs: list[Query]) -> list[Ranked]:
        if key is None:
            return [self._rank_whole(q) for q in qs]
        if len(qs) == 1:
            return self._rank_stack(qs)
        shape = (len(qs), *key)
        exact = self.exact.get(shape)
        if exact is False:
            return [self._rank_stack([q])[0] for q in qs]
        together = self._rank_stack(qs)
        if exact is None:  # the first stack of this shape: check it (kept either way)
            alone = [self._rank_stack([q])[0] for q in qs]
            exact = self.exact[shape] = all(map(_same, together, alone))
            if not exact:
                log.warning(
                    "a stack of %d queries (%d candidates, top %d) changed an answer in the "
                    "last bits on this machine: such stacks are ranked one query at a time",
                    *shape,
                )
                return alone
        self.stacked += len(qs)
        return together

    @torch.inference_mode()
    def _rank_stack(self, qs: list[Query]) -> list[Ranked]:
        """Retrieve, rank and explain queries of one stack key in one forward pass."""
        batch = Batch.stack([q.batch for q in qs])
        seen = torch.zeros(len(qs), self.ds.n_items, dtype=torch.bool)
        for i, q in enumerate(qs):
            seen[i, torch.as_tensor(q.seen, dtype=torch.long)] = True
        m, depth = self._stack_key(qs[0])  # type: ignore[misc]
        if not hasattr(self.model, "score_and_attention"):
            return self._rank_stack_apart(qs, batch, seen, m, depth)
        if self.traced is not None:  # one graph: the GIL given up once (traced_pass.py)
            out = self.traced.run(batch, seen, m, depth)
        else:
            out = serving_pass(self.model, batch, seen, m, depth, self.explain_top)
        values, items, unseen, reason_items, reason_weights = (t.numpy() for t in out)
        if (unseen < depth).any():  # fewer unseen movies than the depth (tiny catalogues)
            return self._rank_stack_apart(qs, batch, seen, m, depth)
        e = self.explain_top
        r_items = np.full((*reason_items.shape[:2], e), -1, dtype=np.int32)
        r_weights = np.zeros((*reason_items.shape[:2], e), dtype=np.float32)
        r_items[..., : reason_items.shape[2]] = reason_items
        r_weights[..., : reason_items.shape[2]] = reason_weights
        return [
            Ranked(
                items[i].astype(np.int32),
                values[i].astype(np.float32),
                r_items[i].copy(),  # copies: a kept answer must not hold the stack's arrays
                r_weights[i].copy(),
            )
            for i in range(len(qs))
        ]

    def _rank_stack_apart(
        self, qs: list[Query], batch: Batch, seen: torch.Tensor, m: int, depth: int
    ) -> list[Ranked]:
        """The pass of models without ``score_and_attention``, and of rows with fewer
        unseen movies than the depth: ranked together, explained apart."""
        side = self.model.user_side(batch)  # shared by retrieval, ranking, reasons
        scores = retrieve_then_rank(self.model, batch, m, seen, side)[0]
        scores = scores.masked_fill(seen, float("-inf"))
        # every row's top at once; a row with fewer unseen movies keeps only those
        top = scores.topk(min(depth, scores.shape[1]), dim=1)
        unseen = torch.isfinite(scores).sum(1).tolist()
        tops = [
            (top.indices[i, : min(depth, n)], top.values[i, : min(depth, n)])
            for i, n in enumerate(unseen)
        ]
        if depth and all(len(idx) == depth for idx, _ in tops):
            picks = torch.stack([idx for idx, _ in tops])  # (B, depth)
            w = self.model.explain(batch, picks + 1, side=side)
            weights = [None] * len(qs) if w is None else list(w)
        else:  # fewer unseen movies than the depth (tiny catalogues): as if alone
            weights = [
                _first(self.model.explain(q.batch, idx[None] + 1)) if len(idx) else None
                for q, (idx, _) in zip(qs, tops, strict=True)
            ]
        return [
            self._ranked(batch.hist_item[i], idx, values, w)
            for i, ((idx, values), w) in enumerate(zip(tops, weights, strict=True))
        ]

    @torch.inference_mode()
    def _rank_whole(self, q: Query) -> Ranked:
        """One query over the whole catalogue."""
        scores = self.model.score_all(q.batch)[0]
        indices, values = self._top(scores, q.seen, q.depth)
        weights = self.model.explain(q.batch, indices + 1) if len(indices) else None
        return self._ranked(q.batch.hist_item[0], indices, values, _first(weights))

    def _top(self, scores: torch.Tensor, seen: np.ndarray, k: int):
        scores = scores.clone()
        scores[torch.as_tensor(seen, dtype=torch.long)] = float("-inf")
        k = min(k, int(torch.isfinite(scores).sum()))
        top = torch.topk(scores, k)
        return top.indices, top.values

    def _ranked(
        self,
        hist_item: torch.Tensor,
        indices: torch.Tensor,
        values: torch.Tensor,
        weights: torch.Tensor | None,
    ) -> Ranked:
        """A query's picks with the ``explain_top`` watched movies that weighed most for
        each: ``hist_item`` (L,), ``weights`` (n, L) the model's ``explain``."""
        n, e = len(indices), self.explain_top
        reason_items = np.full((n, e), -1, dtype=np.int32)
        reason_weights = np.zeros((n, e), dtype=np.float32)
        if weights is not None:
            top_w, top_pos = weights.topk(min(e, weights.shape[-1]), dim=-1)  # (n, e')
            tok = hist_item[top_pos]
            valid = (tok > 0) & (top_w > 0)
            cols = top_w.shape[1]
            reason_items[:, :cols] = torch.where(valid, tok - 1, -1).numpy()
            reason_weights[:, :cols] = torch.where(valid, top_w, 0.0).numpy()
        return Ranked(
            indices.numpy().astype(np.int32),
            values.numpy().astype(np.float32),
            reason_items,
            reason_weights,
        )

    # ---------------------------------------------------------------- known users
    def keep(self, u: int, ranked: Ranked) -> None:
        """Keep known user ``u``'s default answer (ranked to ``keep_top``). With
        ``store_kept`` off, only that it was ranked, and its size: the model process
        sends its answers to the server, which keeps them (serve/model_process.py), and
        two copies would cost twice the memory (about 3 kB a user; 2 GB at ML-32M)."""
        if self.store_kept:
            self._kept[u] = ranked  # one dict store: safe for readers
        elif u not in self._ranked_only:
            self._ranked_only.add(u)
            self._ranked_only_bytes += ranked.nbytes

    def is_kept(self, u: int) -> bool:
        """Whether known user ``u``'s default answer was ranked (and kept, or sent)."""
        return u in self._kept or u in self._ranked_only

    def cached(self, u: int, k: int) -> Ranked | None:
        """A known user's kept answer, if computed and deep enough for k."""
        ranked = self._kept.get(u)
        return ranked if ranked is not None and k <= self.keep_top else None

    @property
    def n_kept(self) -> int:
        return len(self._kept) + len(self._ranked_only)

    def kept_bytes(self) -> int:
        return sum(r.nbytes for r in list(self._kept.values())) + self._ranked_only_bytes

    def precompute(
        self, users: list[int] | None = None, batch_size: int = 8, progress=None
    ) -> None:
        """Rank and explain ahead of requests for known users (their default "now"),
        keeping the top ``keep_top`` of each. A run is immutable while it is served, so
        a kept answer never goes stale. ``progress(done, total)`` after each batch."""
        todo = [
            u for u in (range(self.ds.n_users) if users is None else users) if u not in self._kept
        ]
        for s in range(0, len(todo), batch_size):
            self.rank(self.user_queries(todo[s : s + batch_size]))
            if progress is not None:
                progress(min(s + batch_size, len(todo)), len(todo))

    # ---------------------------------------------------------------- answers
    def picks(self, ranked: Ranked, k: int) -> list[Recommendation]:
        out = []
        for i in range(min(k, len(ranked.items))):
            because = tuple(
                self.record(Reason, m, weight=round(w, 4))
                for m, w in zip(
                    ranked.reason_items[i].tolist(), ranked.reason_weights[i].tolist(), strict=True
                )
                if m >= 0
            )
            out.append(
                self.record(
                    Recommendation,
                    int(ranked.items[i]),
                    score=round(float(ranked.scores[i].item()), 4),
                    because=because,
                )
            )
        return out

    def answer_user(
        self, u: int, ranked: Ranked, k: int, history_shown: int = 10
    ) -> Recommendations:
        return Recommendations(
            self.picks(ranked, k),
            user_id=plain(self.ds.user_ids[u]),
            history=self.history(u, history_shown),
            task=self.model.task,
        )

    def answer_history(self, query: Query, ranked: Ranked, k: int) -> Recommendations:
        hist = [self.record(Watched, int(i)) for i in reversed(query.seen.tolist())]
        return Recommendations(
            self.picks(ranked, k), user_id=None, history=hist, task=self.model.task
        )

    def history(self, u: int, shown: int) -> list[Watched]:
        """A known user's ``shown`` latest watches, newest first."""
        lo, hi = int(self.ds.user_offsets[u]), int(self.ds.user_offsets[u + 1])
        return [
            self.record(
                Watched,
                int(self.ds.item[r]),
                rating=_rating(self.ds.rating[r]),
                time=iso_time(self.ds.timestamp[r]),
            )
            for r in range(hi - 1, max(lo, hi - shown) - 1, -1)
        ]

    def record(self, kind: type[M], idx: int, **more) -> M:
        """A ``Movie`` subclass's record of movie ``idx``, with its own fields ``more``."""
        m = self.movie(idx)
        return kind(m.movie_id, m.title, m.year, m.genres, **more)

    # ---------------------------------------------------------------- one at a time
    def for_user(
        self, raw_user, k: int = 10, history_shown: int = 10, now: int | None = None
    ) -> Recommendations:
        """Library use, single-threaded: the kept answer or one computed now."""
        u = self.user_index(raw_user)
        ranked = self.cached(u, k) if now is None else None
        if ranked is None:
            ranked = self.rank([self.user_query(u, k, now)])[0]
        return self.answer_user(u, ranked, k, history_shown)

    def for_history(
        self,
        raw_items: list,
        k: int = 10,
        user_features: dict[str, str] | None = None,
        now: int | None = None,
        ratings: list | None = None,
    ) -> Recommendations:
        query = self.history_query(raw_items, k, user_features, now, ratings)
        return self.answer_history(query, self.rank([query])[0], k)


def history_stars(ratings: list | None, n: int) -> list[float] | None:
    """A typed history's stars as ``history_batch`` takes them (0: not rated), checked:
    one per movie, each None or 0.5 to 5."""
    if ratings is None:
        return None
    ratings = list(ratings)
    if len(ratings) != n:
        raise DataError(f"ratings: {len(ratings)} given for {n} movies; give one per movie")
    stars = []
    for r in ratings:
        number = isinstance(r, numbers.Real) and not isinstance(r, bool)
        ok = r is None or (number and 0.5 <= float(r) <= 5)
        if not ok:
            raise DataError(f"ratings: {r!r} is not a star rating from 0.5 to 5 (or null)")
        stars.append(0.0 if r is None else float(r))
    return stars


def _first(weights: torch.Tensor | None) -> torch.Tensor | None:
    """A one-row ``explain`` answer's row (None: the model has no reasons)."""
    return None if weights is None else weights[0]


def _same(a: Ranked, b: Ranked) -> bool:
    """The same answer, bit for bit."""
    return all(
        x.dtype == y.dtype and np.array_equal(x.view(np.uint8), y.view(np.uint8))
        for x, y in (
            (a.items, b.items),
            (a.scores, b.scores),
            (a.reason_items, b.reason_items),
            (a.reason_weights, b.reason_weights),
        )
    )


def _rating(r) -> float | None:
    return None if np.isnan(r) else float(r)
