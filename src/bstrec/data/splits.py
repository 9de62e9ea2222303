"""Evaluation splits (../shared/PROTOCOL.md).

A :class:`Split` says, per user, where the training part ends and which interaction
(absolute row index into the Dataset arrays) is the validation and the test target.
Because each user's rows are time-ordered, the history of a target is always the
contiguous block of that user's rows before it, so no split can leak later rows
into a history: "before the target" is literally "lower row index".

``seed_windows`` reproduces the reference notebook's random split of overlapping
windows (protocol S). It leaks later ratings into training and exists only to set
our numbers beside the notebook's like for like.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bstrec.data.interactions import Dataset


@dataclass(frozen=True)
class Split:
    name: str
    train_end: np.ndarray  # (n_users,) int64 row index one past the user's training part
    val_target: np.ndarray  # (n_users,) int64 row index of the validation target, -1 if none
    test_target: np.ndarray  # (n_users,) int64 row index of the test target, -1 if none

    def train_rows(self, offsets: np.ndarray) -> np.ndarray:
        """Row indexes of every training interaction, in user-then-time order."""
        starts = offsets[:-1]
        lengths = np.maximum(self.train_end - starts, 0)
        return ranges(starts, lengths)

    def targets(self, which: str) -> np.ndarray:
        rows = {"val": self.val_target, "test": self.test_target}[which]
        return rows[rows >= 0]


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate arange(s, s + n) for each (s, n) without a Python loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    # position within its range = global position - start of its range in the output
    rep_starts = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return rep_starts + np.arange(total, dtype=np.int64)


def make_split(ds: Dataset, name: str) -> Split:
    """The split a config names: ``leave-one-out`` (protocols R and T) or ``time-cutoff``."""
    if name == "leave-one-out":
        return leave_one_out(ds)
    if name == "time-cutoff":
        return time_cutoff(ds)
    raise ValueError(f"data.split must be leave-one-out or time-cutoff, not {name!r}")


def leave_one_out(ds: Dataset) -> Split:
    """Last interaction = test, the one before = validation, the rest = training.

    Users with fewer than 3 interactions keep everything for training and get no
    targets (they cannot have a non-empty training part and both targets).
    """
    starts, ends = ds.user_offsets[:-1], ds.user_offsets[1:]
    n = ends - starts
    has = n >= 3
    return Split(
        name="leave-one-out",
        train_end=np.where(has, ends - 2, ends),
        val_target=np.where(has, ends - 2, -1),
        test_target=np.where(has, ends - 1, -1),
    )


def time_cutoff(
    ds: Dataset,
    val_time: int | None = None,
    test_time: int | None = None,
    val_quantile: float = 0.8,
    test_quantile: float = 0.9,
) -> Split:
    """Global time split: training is everything before ``val_time``.

    A user's validation target is their first interaction in [val_time, test_time), the
    test target their first at or after ``test_time``; both need a non-empty training
    part. Cut-offs default to quantiles of all timestamps.
    """
    ts = ds.timestamp
    if val_time is None:
        val_time = int(np.quantile(ts, val_quantile))
    if test_time is None:
        test_time = int(np.quantile(ts, test_quantile))
    if val_time > test_time:
        raise ValueError(f"val_time {val_time} is after test_time {test_time}")
    starts, ends = ds.user_offsets[:-1], ds.user_offsets[1:]
    user = ds.user.astype(np.int64)
    # first row of each user at or after a time, via per-user counts of earlier rows
    before_val = np.bincount(user[ts < val_time], minlength=ds.n_users)
    before_test = np.bincount(user[ts < test_time], minlength=ds.n_users)
    train_end = starts + before_val
    has_train = before_val > 0
    val_row = starts + before_val
    val_ok = has_train & (val_row < ends) & (before_test > before_val)
    test_row = starts + before_test
    test_ok = has_train & (test_row < ends)
    return Split(
        name=f"time-cutoff({val_time},{test_time})",
        train_end=train_end,
        val_target=np.where(val_ok, val_row, -1),
        test_target=np.where(test_ok, test_row, -1),
    )


@dataclass(frozen=True)
class WindowSplit:
    """Protocol S: rows of each window (W consecutive interactions of one user)."""

    train_windows: np.ndarray  # (n_train, W) row indexes
    test_windows: np.ndarray  # (n_test, W) row indexes
    leaky: bool = True


def seed_windows(
    ds: Dataset, window: int = 4, step: int = 2, test_fraction: float = 0.15, seed: int = 0
) -> WindowSplit:
    """The reference notebook's split. LEAKY: windows of one user land on both sides."""
    starts, n = ds.user_offsets[:-1], np.diff(ds.user_offsets)
    per_user = np.where(n >= window, (n - window) // step + 1, 0)
    first = np.repeat(starts, per_user) + ranges(np.zeros_like(per_user), per_user) * step
    windows = first[:, None] + np.arange(window)[None, :]
    rng = np.random.default_rng(seed)
    is_test = rng.random(len(windows)) < test_fraction
    return WindowSplit(train_windows=windows[~is_test], test_windows=windows[is_test])
