"""Property tests (hypothesis) for the splits and the batch builder.

Data sets are small and random, with few distinct timestamps so that ties are common,
and every claim is checked against a plain-Python reference.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.interactions import ItemTable, build_dataset
from bstrec.data.splits import leave_one_out, seed_windows, time_cutoff

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def datasets(draw, max_rows: int = 60):
    n = draw(st.integers(1, max_rows))
    users = draw(st.lists(st.integers(1, 6), min_size=n, max_size=n))
    items = draw(st.lists(st.integers(1, 12), min_size=n, max_size=n))
    times = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))  # many ties
    stars = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
    raw_u, raw_i = np.asarray(users), np.asarray(items)
    ds = build_dataset(
        "h", raw_u, raw_i, np.asarray(stars, dtype=float), np.asarray(times),
        ItemTable.placeholder(raw_i),
    )  # fmt: skip
    return ds, (users, items, times)


def reference_order(users, times) -> list[int]:
    """File rows grouped by user id, by time, ties in file order."""
    return sorted(range(len(users)), key=lambda r: (users[r], times[r], r))


@SETTINGS
@given(datasets())
def test_rows_sorted_by_user_then_time_ties_in_file_order(data):
    ds, (users, items, times) = data
    order = reference_order(users, times)
    assert ds.user_ids[ds.user].tolist() == [users[r] for r in order]
    assert ds.item_ids[ds.item].tolist() == [items[r] for r in order]
    assert ds.timestamp.tolist() == [times[r] for r in order]


@SETTINGS
@given(datasets())
def test_leave_one_out_targets(data):
    ds, _ = data
    split = leave_one_out(ds)
    for u in range(ds.n_users):
        lo, hi = int(ds.user_offsets[u]), int(ds.user_offsets[u + 1])
        if hi - lo >= 3:
            assert split.test_target[u] == hi - 1 and split.val_target[u] == hi - 2
            assert split.train_end[u] == hi - 2
        else:
            assert split.test_target[u] == -1 and split.val_target[u] == -1
            assert split.train_end[u] == hi
    n_eval = int((ds.seq_lengths() >= 3).sum())
    assert len(split.targets("val")) == len(split.targets("test")) == n_eval
    assert len(np.unique(ds.user[split.targets("test")])) == n_eval  # one per user


def expected_history(ds, row: int, max_len: int) -> list[int]:
    u = int(ds.user[row])
    lo = max(int(ds.user_offsets[u]), row - max_len)
    return list(range(lo, row))


def check_batch(ds, store, rows: np.ndarray, max_len: int, limit_rows=None):
    batch = store.batch_for_targets(torch.as_tensor(rows), max_len)
    for k, t in enumerate(rows.tolist()):
        hist = expected_history(ds, t, max_len)
        want = [0] * (max_len - len(hist)) + [int(ds.item[h]) + 1 for h in hist]
        assert batch.hist_item[k].tolist() == want
        assert batch.target[k].item() == int(ds.item[t]) + 1
        assert batch.user[k].item() == int(ds.user[t]) + 1
        # each history token carries its own watch's rating, never the target's
        want_r = [0] * (max_len - len(hist)) + [int(round(2 * ds.rating[h])) for h in hist]
        assert batch.hist_rating[k].tolist() == want_r
        # "now" is the last input watch (protocol R); gaps are measured back from it
        now = int(ds.timestamp[hist[-1]]) if hist else int(ds.timestamp[t])
        assert batch.time[k].item() == now
        want_g = [0] * (max_len - len(hist)) + [
            1 + int(math.floor(2 * math.log2(1 + now - int(ds.timestamp[h])))) for h in hist
        ]
        assert batch.hist_gap[k].tolist() == want_g
        if limit_rows is not None:
            assert all(h < limit_rows[int(ds.user[t])] for h in hist)
    return batch


@SETTINGS
@given(datasets(), st.integers(1, 8))
def test_training_examples_never_see_validation_or_test(data, max_len):
    ds, _ = data
    split = leave_one_out(ds)
    store = SequenceStore(ds)
    rows = training_rows(ds, split.train_end)
    # the first row of the validation target of each user; users without: no limit
    first_eval = np.where(split.val_target >= 0, split.val_target, ds.user_offsets[1:])
    if len(rows):
        check_batch(ds, store, rows, max_len, limit_rows=first_eval)
        assert (rows < first_eval[ds.user[rows]]).all()  # targets are training rows too
    # every training row that has an earlier training row is an example, nothing else
    want = [r for u in range(ds.n_users)
            for r in range(int(ds.user_offsets[u]) + 1, int(split.train_end[u]))]  # fmt: skip
    assert rows.tolist() == want


@SETTINGS
@given(datasets(), st.integers(1, 8))
def test_eval_histories(data, max_len):
    ds, _ = data
    split = leave_one_out(ds)
    store = SequenceStore(ds)
    val, test = split.targets("val"), split.targets("test")
    if len(val):
        # validation reads the training part only; test adds the validation item
        check_batch(ds, store, val, max_len, limit_rows=np.maximum(split.val_target, 0))
        check_batch(ds, store, test, max_len, limit_rows=np.maximum(split.test_target, 0))


@SETTINGS
@given(datasets(), st.integers(0, 6), st.integers(0, 6))
def test_time_cutoff(data, a, b):
    ds, _ = data
    val_time, test_time = min(a, b), max(a, b)
    split = time_cutoff(ds, val_time=val_time, test_time=test_time)
    ts = ds.timestamp
    train = split.train_rows(ds.user_offsets)
    assert (ts[train] < val_time).all()
    assert len(train) == int((ts < val_time).sum())
    for u in range(ds.n_users):
        lo, hi = int(ds.user_offsets[u]), int(ds.user_offsets[u + 1])
        rows = list(range(lo, hi))
        has_train = any(ts[r] < val_time for r in rows)
        in_val = [r for r in rows if val_time <= ts[r] < test_time]
        in_test = [r for r in rows if ts[r] >= test_time]
        assert split.val_target[u] == (in_val[0] if has_train and in_val else -1)
        assert split.test_target[u] == (in_test[0] if has_train and in_test else -1)


@SETTINGS
@given(datasets(), st.integers(2, 5), st.integers(1, 3), st.integers(0, 3))
def test_seed_windows(data, window, step, seed):
    ds, _ = data
    ws = seed_windows(ds, window=window, step=step, seed=seed)
    assert ws.leaky
    allw = np.concatenate([ws.train_windows, ws.test_windows]).reshape(-1, window)
    n = ds.seq_lengths()
    assert len(allw) == int(np.where(n >= window, (n - window) // step + 1, 0).sum())
    if len(allw):
        assert (np.diff(allw, axis=1) == 1).all()  # consecutive rows
        assert (ds.user[allw] == ds.user[allw[:, :1]]).all()  # of one user
        assert len({tuple(w) for w in allw.tolist()}) == len(allw)
    again = seed_windows(ds, window=window, step=step, seed=seed)
    np.testing.assert_array_equal(again.test_windows, ws.test_windows)


@SETTINGS
@given(st.lists(st.integers(-(10**6), 2**40), min_size=1, max_size=20))
def test_plain_python_gap_tokens_equal_the_training_buckets(gaps):
    from bstrec.data.batches import gap_bucket, gap_thresholds, gap_tokens

    # around every threshold too, where an off-by-one would show
    edges = [t + d for t in gap_thresholds() for d in (-1, 0, 1)]
    for chunk in (gaps, edges):
        assert gap_tokens(chunk) == gap_bucket(torch.tensor(chunk)).tolist()


def test_a_typed_history_batch_matches_the_tensor_built_one():
    from bstrec.data.batches import gap_bucket, history_batch

    times = [1_000, 1_060, 90_000, 5_000_000]
    b = history_batch([5, 7, 9, 11], 6, 2, user_feats=[1, 2], times=times, now=5_000_100)
    expected = gap_bucket(torch.tensor([5_000_100 - t for t in times]))
    assert b.hist_gap.tolist() == [[0, 0, *expected.tolist()]]
    assert b.hist_item.tolist() == [[0, 0, 5, 7, 9, 11]]
    for name in ("user", "user_feats", "hist_item", "hist_rating", "hist_gap", "target", "time"):
        assert getattr(b, name).dtype == torch.long, name
    assert b.label.dtype == torch.float32 and math.isnan(b.label.item())
