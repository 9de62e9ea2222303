"""EASE: B against a brute-force numpy inverse, scores from the input history, the
size limit, checkpoints, tuning on validation, and training rows only."""

import io

import numpy as np
import pytest
import torch

from bstrec.config import ModelConfig, RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.models.ease import EASE, LAMBDAS, fit_ease, tune_ease
from bstrec.models.factory import build_model, catalog_features, fit_baseline
from tests.factories import counting_validator, tiny_dataset


def brute_b(ds, rows, lam):
    x = np.zeros((ds.n_users, ds.n_items))
    x[ds.user[rows], ds.item[rows]] = 1.0
    p = np.linalg.inv(x.T @ x + lam * np.eye(ds.n_items))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


@pytest.mark.parametrize("lam", [0.5, 10.0])
def test_weights_equal_a_brute_force_inverse(lam):
    ds = tiny_dataset(n_users=15, n_items=12, per_user=8)
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    ds.item[rows[1::6]] = ds.item[rows[0::6]][: len(rows[1::6])]  # re-watches: X is binary
    model = fit_ease(ds.item, ds.user, rows, ds.n_items, lam)
    want = brute_b(ds, rows, lam)
    np.testing.assert_allclose(model.B[1:, 1:].numpy(), want, rtol=1e-4, atol=1e-6)
    assert not model.B[0].any() and not model.B[:, 0].any()  # padding
    assert model.fit_seconds >= 0


def test_scores_come_from_the_binary_input_history():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    model = fit_ease(ds.item, ds.user, rows, ds.n_items, 5.0)
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("test")), 6)
    batch.hist_item[0, :3] = batch.hist_item[0, 5]  # a repeated movie counts once
    full = model.score_all(batch)
    cands = torch.arange(1, ds.n_items + 1)
    torch.testing.assert_close(model.score(batch, cands), full)
    per_row = cands[None].expand(len(batch), -1).flip(1)  # (B, C) candidates
    torch.testing.assert_close(model.score(batch, per_row), full.flip(1))
    b = brute_b(ds, rows, 5.0)
    pop = np.bincount(ds.item[rows] + 1, minlength=ds.n_items + 1)
    for i in (0, 3, 7):
        x = np.zeros(ds.n_items)
        h = batch.hist_item[i].numpy()
        x[h[h > 0] - 1] = 1.0
        want = x @ b + 1e-6 * pop[1:] / pop.max()
        np.testing.assert_allclose(full[i].numpy(), want, rtol=1e-4, atol=1e-6)


def test_refuses_catalogues_above_the_limit():
    with pytest.raises(ValueError, match="max_items=10"):
        EASE(11, max_items=10)
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    with pytest.raises(ValueError, match="max_items=20"):
        fit_ease(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, max_items=20)


def test_checkpoint_round_trip_into_a_freshly_built_model():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    model = fit_ease(ds.item, ds.user, sp.train_rows(ds.user_offsets), ds.n_items, 3.0)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    fresh = build_model(RunConfig(model=ModelConfig(name="ease")), catalog_features(ds, []))
    assert isinstance(fresh, EASE) and not fresh.B.any()
    fresh.load_state_dict(torch.load(buf))
    assert fresh.lam.item() == 3.0
    batch = SequenceStore(ds).batch_for_targets(torch.from_numpy(sp.targets("val")), 6)
    assert torch.equal(fresh.score_all(batch), model.score_all(batch))


def test_tuning_keeps_the_lambda_with_the_best_validation_score():
    ds = tiny_dataset(n_users=40)
    sp = leave_one_out(ds)
    val_ndcg, calls = counting_validator(ds, sp)

    rows = sp.train_rows(ds.user_offsets)
    model, trials = tune_ease(ds.item, ds.user, rows, ds.n_items, val_ndcg)
    assert len(trials) == len(calls) == len(LAMBDAS)
    best = max(trials, key=lambda t: t["val_NDCG@10"])
    assert model.lam.item() == best["lam"]
    assert val_ndcg(model) == pytest.approx(best["val_NDCG@10"])
    assert len({t["val_NDCG@10"] for t in trials}) > 1  # the grid is not flat here
    assert best is not trials[-1]  # else "keep the last fitted" would pass too
    # the factory tunes the same way
    cfg = RunConfig(model=ModelConfig(name="ease"))
    assert fit_baseline(cfg, ds, rows, val_ndcg)[0].lam.item() == best["lam"]
    with pytest.raises(ValueError, match="validate"):
        fit_baseline(cfg, ds, rows)


def test_only_training_rows_are_counted():
    ds = tiny_dataset()
    sp = leave_one_out(ds)
    rows = sp.train_rows(ds.user_offsets)
    before = fit_ease(ds.item, ds.user, rows, ds.n_items, 5.0)
    item = ds.item.copy()
    held_out = np.concatenate([sp.targets("val"), sp.targets("test")])
    item[held_out] = (item[held_out] + 7) % ds.n_items
    after = fit_ease(item, ds.user, rows, ds.n_items, 5.0)
    assert torch.equal(before.B, after.B)
    assert torch.equal(before.popularity, after.popularity)
