"""Training and evaluation batches by index arithmetic on the per-user arrays.

A target is a row ``t`` of the Dataset; its history is the same user's rows
``[max(start_u, t - L), t)``: strictly earlier in time order, never another user's.
Histories are left-padded to length L (newest last) with token 0, and every lookup is
a single gather on the ``(B, L)`` index matrix: no per-row Python, no ``explode``.

Token conventions shared with the models: item token = item index + 1 (0 = padding),
user token = user index + 1 (0 = unknown person), rating token = round(2 * stars)
(0 = padding or no rating), time-gap token = log-scale bucket of
``now - t(watch)`` (0 = padding), where "now" is the recommendation time.

"Now" is the same everywhere (../shared/PROTOCOL.md, protocol R): the time of the last
interaction of the input history, the earliest moment at which a live request with
that history could be made. Training, evaluation and serving of a known user all use
it; a serving request may pass its own time. ``now="target"`` (the BST paper's offline
choice, "R-paper") uses the target's own timestamp and exists only to be reported
beside R.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, fields

import numpy as np
import torch

from bstrec.data.interactions import Dataset

GAP_BUCKETS = 64  # tokens 1..63 for gaps, 0 for padding


def gap_bucket(gap_seconds: torch.Tensor) -> torch.Tensor:
    """Half-octave log buckets: 0 s -> 1, 1 s -> 3, 1 hour -> 24, 1 year -> 50."""
    g = gap_seconds.clamp(min=0).to(torch.float64)
    b = 1 + torch.floor(2 * torch.log2(1 + g)).to(torch.long)
    return b.clamp(max=GAP_BUCKETS - 1)


@functools.cache
def gap_thresholds() -> tuple[int, ...]:
    """Seconds at which each gap token starts: a gap ``g`` >= 0 has token
    ``1 + #{t in thresholds: g >= t}`` (0 is padding). The smallest ``g`` with
    ``gap_bucket(g) >= b`` for b = 2..GAP_BUCKETS-1, by binary search on the
    training code's own function, so the two agree by construction."""
    out = []
    for b in range(2, GAP_BUCKETS):
        lo, hi = 0, 1 << 62
        while lo < hi:
            mid = (lo + hi) // 2
            if int(gap_bucket(torch.tensor([mid]))[0]) >= b:
                hi = mid
            else:
                lo = mid + 1
        out.append(lo)
    return tuple(out)


def gap_tokens(gap_seconds: list[int]) -> list[int]:
    """``gap_bucket`` of a few whole-second gaps, in plain Python: a serving thread that
    builds a request's batch this way runs no torch operation (each of which would hand
    the GIL to the model thread and wait to get it back)."""
    thresholds = gap_thresholds()
    return [1 + bisect.bisect_right(thresholds, max(int(g), 0)) for g in gap_seconds]


def rating_token(rating: np.ndarray) -> np.ndarray:
    r = np.nan_to_num(rating, nan=0.0)
    return np.clip(np.rint(2 * r), 0, 10).astype(np.int64)


@dataclass
class Batch:
    user: torch.Tensor  # (B,) user token
    user_feats: torch.Tensor  # (B, F) categorical codes, 0 = unknown
    hist_item: torch.Tensor  # (B, L) item tokens, 0 = padding, newest last
    hist_rating: torch.Tensor  # (B, L) rating tokens
    hist_gap: torch.Tensor  # (B, L) time-gap tokens
    target: torch.Tensor  # (B,) item token of the target (0 when unknown, e.g. serving)
    label: torch.Tensor  # (B,) float: stars of the target (rating task), NaN if none
    time: torch.Tensor  # (B,) int64 recommendation time "now" (see the module docstring)

    @property
    def hist_mask(self) -> torch.Tensor:
        return self.hist_item > 0  # (B, L) True = real watch

    def __len__(self) -> int:
        return self.user.shape[0]

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The fields in order, as a flat tuple (what a trace or a pipe carries)."""
        return tuple(getattr(self, name) for name in _BATCH_FIELDS)

    @staticmethod
    def from_tensors(tensors) -> Batch:
        """The inverse of ``tensors``."""
        return Batch(**dict(zip(_BATCH_FIELDS, tensors, strict=True)))

    def to(self, device) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def index(self, idx) -> Batch:
        return Batch(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def stack(batches: list[Batch]) -> Batch:
        """Rows of several batches (of one history length) as one batch, in order."""
        if len(batches) == 1:
            return batches[0]
        return Batch(
            **{f.name: torch.cat([getattr(b, f.name) for b in batches]) for f in fields(Batch)}
        )


_BATCH_FIELDS = tuple(f.name for f in fields(Batch))


class SequenceStore:
    """The Dataset's arrays as torch tensors, ready for batched history gathers."""

    def __init__(self, ds: Dataset, user_feature_names: list[str] | None = None):
        self.n_items = ds.n_items
        self.n_users = ds.n_users
        self.item_tok = torch.from_numpy(ds.item.astype(np.int64) + 1)
        self.rating_tok = torch.from_numpy(rating_token(ds.rating))
        self.rating = torch.from_numpy(ds.rating.astype(np.float32))
        self.time = torch.from_numpy(ds.timestamp.astype(np.int64))
        self.row_user = torch.from_numpy(ds.user.astype(np.int64))
        self.offsets = torch.from_numpy(ds.user_offsets.astype(np.int64))
        names = sorted(ds.user_features) if user_feature_names is None else user_feature_names
        self.user_feature_names = names
        if names:
            feats = np.stack([ds.user_features[n] for n in names], axis=1).astype(np.int64)
        else:
            feats = np.zeros((ds.n_users, 0), dtype=np.int64)
        self.user_feats = torch.from_numpy(feats)  # (n_users, F)

    def batch_for_targets(
        self,
        rows: torch.Tensor,
        max_len: int,
        hist_limit: torch.Tensor | None = None,
        now: str = "last-input",
    ) -> Batch:
        """Batch whose targets are dataset rows ``rows``; history = the rows before.

        ``hist_limit`` (B,) optionally caps how far back history may reach (absolute
        row index, inclusive lower bound), e.g. the first row of a protocol-S window.
        ``now``: "last-input" (protocol R: the last history row's time) or "target"
        (R-paper: the target's own time).
        """
        rows = rows.to(torch.long)
        user = self.row_user[rows]
        lo = self.offsets[user]
        if hist_limit is not None:
            lo = torch.maximum(lo, hist_limit)
        if now == "target":
            time = self.time[rows]
        elif now == "last-input":
            # no history: nothing to measure a gap to, the target's time is as good as any
            time = torch.where(rows > lo, self.time[(rows - 1).clamp(min=0)], self.time[rows])
        else:
            raise ValueError(f"now must be last-input or target, not {now!r}")
        return self._gather(user, lo, rows, time, max_len, target_rows=rows)

    def batch_for_users(
        self, users: torch.Tensor, max_len: int, time: torch.Tensor | None = None
    ) -> Batch:
        """Batch for recommending to known users now: history = their latest rows."""
        users = users.to(torch.long)
        end = self.offsets[users + 1]
        if time is None:
            time = self.time[end - 1]  # offline: as of the user's last watch
        return self._gather(users, self.offsets[users], end, time, max_len, target_rows=None)

    def _gather(self, user, lo, end, time, max_len, target_rows) -> Batch:
        pos = end[:, None] - max_len + torch.arange(max_len)[None, :]  # (B, L)
        valid = pos >= lo[:, None]
        pos = pos.clamp(min=0)
        hist_item = torch.where(valid, self.item_tok[pos], 0)
        hist_rating = torch.where(valid, self.rating_tok[pos], 0)
        gap = gap_bucket(time[:, None] - self.time[pos])
        hist_gap = torch.where(valid, gap, 0)
        b = user.shape[0]
        if target_rows is not None:
            target = self.item_tok[target_rows]
            label = self.rating[target_rows]
        else:
            target = torch.zeros(b, dtype=torch.long)
            label = torch.full((b,), float("nan"))
        return Batch(
            user=user + 1,
            user_feats=self.user_feats[user],
            hist_item=hist_item,
            hist_rating=hist_rating,
            hist_gap=hist_gap,
            target=target,
            label=label,
            time=time,
        )


def history_batch(
    item_tokens: list[int],
    max_len: int,
    n_user_feats: int,
    user_feats: list[int] | None = None,
    times: list[int] | None = None,
    now: int | None = None,
    ratings: list[float] | None = None,
) -> Batch:
    """A one-row batch for a person who is not in the data: a list of watched items.

    Without timestamps every watch counts as "just now" (gap bucket 1), which is
    what a person typing their favourites means.
    """
    # Lists first, then one torch.tensor per field: serving builds this on its event
    # loop, where every torch operation would wait its turn for the GIL.
    toks = item_tokens[-max_len:]
    pad = max_len - len(toks)
    if times is not None and now is not None:
        gaps = gap_tokens([now - t for t in times[-max_len:]])
    else:
        gaps = [1] * len(toks)
    if ratings is not None:
        rt = rating_token(np.asarray(ratings[-max_len:], dtype=np.float32)).tolist()
    else:
        rt = [0] * len(toks)
    feats = user_feats if user_feats is not None else [0] * n_user_feats
    return Batch(
        user=torch.tensor([0]),
        user_feats=torch.tensor([feats], dtype=torch.long),
        hist_item=torch.tensor([[0] * pad + toks], dtype=torch.long),
        hist_rating=torch.tensor([[0] * pad + rt], dtype=torch.long),
        hist_gap=torch.tensor([[0] * pad + gaps], dtype=torch.long),
        target=torch.tensor([0]),
        label=torch.tensor([float("nan")]),
        time=torch.tensor([now or 0], dtype=torch.long),
    )


def training_rows(ds: Dataset, train_end: np.ndarray, stride: int = 1) -> np.ndarray:
    """Every training row that has at least one earlier training row as history.

    ``stride`` > 1 keeps every stride-th of them, counted back from each user's last
    training row: for models that learn from every position of a window.
    """
    from bstrec.data.splits import ranges

    starts = ds.user_offsets[:-1] + 1
    lengths = np.maximum(train_end - starts, 0)
    rows = ranges(starts, lengths)
    if stride > 1:
        rows = rows[(train_end[ds.user[rows]] - 1 - rows) % stride == 0]
    return rows
