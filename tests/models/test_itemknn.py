"""Item-KNN: similarities against a brute-force numpy recount, pair lookups against
full rows, checkpoints, tuning on validation, and training rows only."""

import io
from dataclasses import asdict

import numpy as np
import pytest
import torch

from bstrec.config import ModelConfig, RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.models.factory import build_model, catalog_features, fit_baseline
from bstrec.models.itemknn import ItemKNN, ItemKNNParams, fit_itemknn, tune_itemknn
from tests.factories import counting_validator, tiny_dataset


def brute_similarity(ds, rows, shrink):
    """Shrunk cosine of the binary user x item training matrix, zero diagonal."""
    x = np.zeros((ds.n_users, ds.n_items))
    x[ds.user[rows], ds.item[rows]] = 1.0
    dot = x.T @ x
    norm = np.sqrt(np.diag(dot))
    denom = np.outer(norm, norm) + shrink
    sim = np.divide(dot, denom, out=np.zeros_like(dot), where=denom > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def stored(model):
    size = model.sims.size
    return {
        (int(k) // size, int(k) % size): float(v)
        for k, v in zip(model.sims.keys, model.sims.values, strict=True)
    }


def fitted(ds, params, item=None):
    sp = leave_one_out(ds)
    item = ds.item if item is None else item
    return fit_itemknn(item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, params)


@pytest.mark.parametrize("shrink", [0.0, 3.0])
def test_similarities_equal_a_brute_force_cosine(shrink):
    ds = tiny_dataset(n_users=15, n_items=12, per_user=8)
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    ds.item[rows[1::6]] = ds.item[rows[0::6]][: len(rows[1::6])]  # re-watches: X is binary
    sim = brute_similarity(ds, rows, shrink)
    # every neighbour kept: the stored pairs are exactly the non-zero similarities
    model = fit_itemknn(ds.item, ds.user, rows, ds.n_items, ItemKNNParams(100, shrink))
    got = stored(model)
    want = {(a + 1, b + 1): sim[a, b] for a, b in zip(*np.nonzero(sim), strict=True)}
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5)
    # 3 neighbours: each row keeps its 3 largest similarities (ties may pick either)
    model = fit_itemknn(ds.item, ds.user, rows, ds.n_items, ItemKNNParams(3, shrink))
    got = stored(model)
    for a in range(ds.n_items):
        kept = {b - 1: v for (r, b), v in got.items() if r == a + 1}
        assert all(v == pytest.approx(sim[a, b], rel=1e-5) for b, v in kept.items())
        top = sorted(sim[a][sim[a] > 0], reverse=True)[:3]
        assert sorted(kept.values(), reverse=True) == pytest.approx(top, rel=1e-5)


def test_scores_follow_the_definition_and_lookups_match_full_rows():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    params = ItemKNNParams(neighbors=5, shrink=2.0, last_n=4, decay=0.6)
    model = fit_itemknn(ds.item, ds.user, rows, ds.n_items, params)
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("test")), 6)
    full = model.score_all(batch)
    cands = torch.arange(1, ds.n_items + 1)
    torch.testing.assert_close(model.score(batch, cands), full)
    per_row = cands[None].expand(len(batch), -1).flip(1)  # (B, C) candidates
    torch.testing.assert_close(model.score(batch, per_row), full.flip(1))
    # by hand for a few users and candidates
    pairs = stored(model)
    pop = np.bincount(ds.item[rows] + 1, minlength=ds.n_items + 1)
    for i in (0, 3, 7):
        hist = batch.hist_item[i].tolist()[::-1][:4]  # newest first
        for c in (1, 5, 9, 20):
            raw = sum(0.6**j * pairs.get((h, c), 0.0) for j, h in enumerate(hist) if h > 0)
            want = raw + 1e-6 * pop[c] / pop.max()
            assert full[i, c - 1].item() == pytest.approx(want, rel=1e-5, abs=1e-9)


def test_checkpoint_round_trip_into_a_freshly_built_model():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    model = fitted(ds, ItemKNNParams(neighbors=7, shrink=1.0, last_n=3, decay=0.8))
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_model(RunConfig(model=ModelConfig(name="itemknn")), catalog_features(ds, []))
    assert isinstance(fresh, ItemKNN) and len(fresh.sims.keys) == 0
    fresh.load_state_dict(torch.load(buf))
    assert fresh.p == model.p
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("val")), 6)
    assert torch.equal(fresh.score_all(batch), model.score_all(batch))


def test_tuning_keeps_the_trial_with_the_best_validation_score():
    ds = tiny_dataset(n_users=40)
    sp = leave_one_out(ds)
    val_ndcg, calls = counting_validator(ds, sp)

    rows = sp.train_rows(ds.user_offsets)
    model, trials = tune_itemknn(ds.item, ds.user, rows, ds.n_items, val_ndcg)
    assert len(trials) == len(calls) == 20
    best = max(trials, key=lambda t: t["val_NDCG@10"])
    assert asdict(model.p) == {k: best[k] for k in asdict(model.p)}
    assert val_ndcg(model) == pytest.approx(best["val_NDCG@10"])
    assert len({t["val_NDCG@10"] for t in trials}) > 1  # the grid is not flat here
    assert best is not trials[-1]  # else "keep the last fitted" would pass too
    # the factory tunes the same way
    cfg = RunConfig(model=ModelConfig(name="itemknn"))
    assert fit_baseline(cfg, ds, rows, val_ndcg)[0].p == model.p
    with pytest.raises(ValueError, match="validate"):
        fit_baseline(cfg, ds, rows)


def test_only_training_rows_are_counted():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    params = ItemKNNParams(neighbors=10, shrink=1.0)
    before = fitted(ds, params)
    item = ds.item.copy()
    held_out = np.concatenate([sp.targets("val"), sp.targets("test")])
    item[held_out] = (item[held_out] + 7) % ds.n_items
    after = fitted(ds, params, item)
    b, a = before.state_dict(), after.state_dict()
    for name in ("sims.keys", "sims.values", "sims.row_ptr", "popularity"):
        assert torch.equal(b[name], a[name]), name
