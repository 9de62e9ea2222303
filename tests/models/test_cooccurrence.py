"""Co-occurrence: counts against a brute-force recount, lookups, the self-pair
correction BST's wide input relies on, and tuning on validation only."""

from collections import Counter

import numpy as np
import pytest
import torch

from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.splits import leave_one_out
from bstrec.models.cooccurrence import (
    CooccurrenceParams,
    count_pairs,
    fit_cooccurrence,
    tune_cooccurrence,
)
from tests.factories import counting_validator, tiny_dataset


def brute_counts(ds, train_end, window, symmetric, pair_decay, skip=None):
    """Pair weights by walking each user's training rows; ``skip`` leaves one row out
    of every pair it takes part in."""
    c = Counter()
    for u in range(ds.n_users):
        rows = list(range(ds.user_offsets[u], train_end[u]))
        for i, r in enumerate(rows):
            for k in range(1, window + 1):
                if i + k >= len(rows) or skip in (r, rows[i + k]):
                    continue
                a, b = int(ds.item[r]) + 1, int(ds.item[rows[i + k]]) + 1
                if a == b:
                    continue
                c[(a, b)] += pair_decay ** (k - 1)
                if symmetric:
                    c[(b, a)] += pair_decay ** (k - 1)
    return c


@pytest.mark.parametrize(
    "window,symmetric,pair_decay", [(1, False, 1.0), (3, True, 0.7), (4, False, 0.5)]
)
def test_counts_equal_a_brute_force_recount(window, symmetric, pair_decay):
    ds = tiny_dataset(n_users=12, n_items=15, per_user=9)
    sp = leave_one_out(ds)
    keys, vals = count_pairs(
        ds.item + 1,
        ds.user,
        sp.train_rows(ds.user_offsets),
        ds.n_items + 1,
        window,
        symmetric,
        pair_decay,
    )
    size = ds.n_items + 1
    got = {(int(k) // size, int(k) % size): float(v) for k, v in zip(keys, vals, strict=True)}
    want = brute_counts(ds, sp.train_end, window, symmetric, pair_decay)
    assert got.keys() == want.keys()  # never a pair across users or outside training
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-6)


def test_pair_lookup_and_full_rows_agree():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    params = CooccurrenceParams(
        window=3, symmetric=True, pair_decay=0.7, last_n=4, decay=0.6, alpha=0.25, history_alpha=0.5
    )
    model = fit_cooccurrence(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, params)
    store = SequenceStore(ds)
    batch = store.batch_for_targets(torch.from_numpy(sp.targets("test")), 6)
    cands = torch.arange(1, ds.n_items + 1)
    torch.testing.assert_close(model.score(batch, cands), model.score_all(batch))
    # and the scorer matches the definition on one user, by hand
    counts = brute_counts(ds, sp.train_end, 3, True, 0.7)
    hist = batch.hist_item[0].tolist()[::-1][:4]  # newest first
    pop = np.bincount(ds.item[sp.train_rows(ds.user_offsets)] + 1, minlength=ds.n_items + 1)
    for c in (1, 5, 9):
        raw = sum(
            0.6**j / max(pop[h], 1) ** 0.5 * counts.get((h, c), 0.0)
            for j, h in enumerate(hist)
            if h > 0
        )
        want = raw / max(pop[c], 1) ** 0.25 + 1e-6 * pop[c] / pop.max()
        assert model.score_all(batch)[0, c - 1].item() == pytest.approx(want, rel=1e-5)


def test_self_count_removes_exactly_the_training_targets_own_pairs():
    """What BST's wide input sees for a training target equals the count of a model fitted
    without that target's pairs: the statistic validation and test targets get."""
    ds = tiny_dataset(n_users=10, n_items=12, per_user=10)
    sp = leave_one_out(ds)
    params = CooccurrenceParams(
        window=3, symmetric=True, pair_decay=0.5, last_n=5, decay=0.7, history_alpha=0.75
    )
    model = fit_cooccurrence(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, params)
    pop = model.scorer.popularity
    store = SequenceStore(ds)
    rows = training_rows(ds, sp.train_end)
    batch = store.batch_for_targets(torch.from_numpy(rows), 8)
    raw = model.scorer.raw(batch.hist_item, batch.target[:, None])[:, 0]
    corrected = raw - model.scorer.self_count(batch.hist_item, batch.target)
    assert (batch.hist_mask.sum(1) >= 5).any()  # some histories reach past the window
    for i in range(len(rows)):
        r = int(rows[i])
        # pairs of the target row with the rows *before* it are its own; pairs with later
        # rows are other events of that user, which a validation target also keeps
        counts = brute_counts(ds, np.minimum(sp.train_end, r + 1), 3, True, 0.5)
        without = brute_counts(ds, np.minimum(sp.train_end, r + 1), 3, True, 0.5, skip=r)
        later = brute_counts(ds, sp.train_end, 3, True, 0.5)
        hist = [h for h in batch.hist_item[i].tolist()[::-1][:5]]
        t = int(batch.target[i])
        want = sum(
            0.7**j
            / max(pop[h].item(), 1) ** 0.75
            * (later.get((h, t), 0) - counts.get((h, t), 0) + without.get((h, t), 0))
            for j, h in enumerate(hist)
            if h > 0
        )
        assert corrected[i].item() == pytest.approx(want, abs=1e-5)


def test_tuning_reads_only_validation_and_keeps_the_best_trial():
    ds = tiny_dataset(n_users=40)
    sp = leave_one_out(ds)
    val_ndcg, seen = counting_validator(ds, sp)

    model, trials = tune_cooccurrence(
        ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, val_ndcg
    )
    assert len(trials) == len(seen) > 10
    best = max(trials, key=lambda t: t["val_NDCG@10"])
    assert val_ndcg(model) == pytest.approx(best["val_NDCG@10"])
    # on chains the directed next-movie signal beats popularity
    assert best["val_NDCG@10"] > 0.3


def test_dense_and_sparse_lookups_agree(monkeypatch):
    import bstrec.models.item_pairs as item_pairs

    ds = tiny_dataset()
    sp = leave_one_out(ds)
    params = CooccurrenceParams(window=2, symmetric=False, last_n=3, decay=0.5)
    model = fit_cooccurrence(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, params)
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("val")), 5)
    cands = torch.randint(1, ds.n_items + 1, (len(batch), 7))
    assert model.scorer.counts.dense() is not None
    dense = (model.scorer.raw(batch.hist_item, cands), model.score_all(batch))
    monkeypatch.setattr(item_pairs, "DENSE_MAX_ITEMS", 0)
    assert model.scorer.counts.dense() is None
    sparse = (model.scorer.raw(batch.hist_item, cands), model.score_all(batch))
    for a, b in zip(dense, sparse, strict=True):
        torch.testing.assert_close(a, b)


def test_big_data_tunes_on_a_user_sample_and_fits_the_best_on_all():
    from bstrec.models.cooccurrence import fit_cooccurrence, tune_cooccurrence, tuning_rows

    ds = tiny_dataset(n_users=40)
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    sample = tuning_rows(ds.user, rows, len(rows) // 4)
    users = np.unique(ds.user[sample])
    assert 0 < len(sample) <= len(rows) // 2 and 1 <= len(users) < 20
    # whole users: each sampled user keeps every one of their training rows
    assert len(sample) == np.isin(ds.user[rows], users).sum()
    val, _ = counting_validator(ds, sp)
    model, _ = tune_cooccurrence(ds.item, ds.user, rows, ds.n_items, val, max_rows=len(rows) // 4)
    full = fit_cooccurrence(ds.item, ds.user, rows, ds.n_items, model.scorer.p)
    torch.testing.assert_close(model.scorer.counts.values, full.scorer.counts.values)


def test_pairs_counted_once_by_distance_give_every_grid_settings_counts():
    from bstrec.models.cooccurrence import GRID_FIT, PairsByDistance

    ds = tiny_dataset(n_users=12, n_items=15, per_user=14)  # pairs up to 11 apart
    rows = leave_one_out(ds).train_rows(ds.user_offsets)
    tok, size = ds.item.astype(np.int64) + 1, ds.n_items + 1
    counted = PairsByDistance.count(tok, ds.user, rows, size, max(GRID_FIT["window"]))
    for window in (1, 2, 3, 7, 10):
        for symmetric in (False, True):
            for pair_decay in (1.0, 0.7):
                keys, vals = counted.combine(window, symmetric, pair_decay)
                want_keys, want_vals = count_pairs(
                    tok, ds.user, rows, size, window, symmetric, pair_decay
                )
                # to the bit: a tuned BST must train on the numbers count_pairs gives
                np.testing.assert_array_equal(keys, want_keys)
                np.testing.assert_array_equal(vals, want_vals)
    with pytest.raises(ValueError, match="counted up to 10 apart"):
        counted.combine(11, False, 1.0)


def test_a_scorer_saved_before_history_alpha_loads_with_it_off():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    params = CooccurrenceParams(window=2, last_n=3, decay=0.5, alpha=0.25)
    model = fit_cooccurrence(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, params)
    state = model.scorer.state_dict()
    state["params"] = state["params"][:6]  # the layout of checkpoints before history_alpha
    fresh = fit_cooccurrence(
        ds.item,
        ds.user,
        sp.train_rows(ds.user_offsets),
        ds.n_items,
        CooccurrenceParams(history_alpha=1.0),
    )
    fresh.scorer.load_state_dict(state)
    assert fresh.scorer.p == params
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("val")), 5)
    torch.testing.assert_close(fresh.score_all(batch), model.score_all(batch))


def test_history_weights_do_not_depend_on_the_rows_stacked_with_them():
    """A served request's reasons must be the same alone or in a stack: a power taken
    over the gathered (B, n) tokens gave some of them other last bits in a bigger
    batch (vectorised and scalar pow differ)."""
    from bstrec.models.cooccurrence import CooccurrenceScorer

    torch.manual_seed(0)
    n_items = 3000
    scorer = CooccurrenceScorer(n_items, CooccurrenceParams(last_n=20, history_alpha=0.75))
    scorer.popularity = torch.randint(1, 5000, (n_items + 1,)).float()
    hist = torch.randint(1, n_items + 1, (8, 20))
    last, w = scorer._weights(hist)
    for i in range(8):
        last_i, w_i = scorer._weights(hist[i : i + 1])
        assert torch.equal(w_i[0], w[i]), f"row {i}"
