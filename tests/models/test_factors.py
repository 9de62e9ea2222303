"""Fold-in rating factors: the ridge solve per history, masking, and that ALS finds a
planted low-rank structure."""

import numpy as np
import pytest
import torch

from bstrec.config import ModelConfig
from bstrec.data.batches import Batch, SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.models.bst import BST
from bstrec.models.factors import (
    FOLD_IN_DECAY,
    FOLD_IN_RIDGE,
    USER_BIAS_SHRINK,
    Biases,
    RatingFactors,
    fit_item_factors,
    predicted_stars,
)
from bstrec.models.factory import catalog_features
from tests.factories import tiny_dataset


def _batch(hist_item, hist_rating, user=None):
    b, L = hist_item.shape
    zeros = torch.zeros(b, dtype=torch.long)
    return Batch(
        user=zeros if user is None else user,
        user_feats=torch.zeros(b, 2, dtype=torch.long),
        hist_item=hist_item,
        hist_rating=hist_rating,
        hist_gap=torch.zeros(b, L, dtype=torch.long),
        target=zeros,
        label=torch.full((b,), float("nan")),
        time=zeros,
    )


def _random_model(n_items=12, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    m = RatingFactors(n_items, k)
    with torch.no_grad():
        m.mean.fill_(3.4)
        m.item_bias[1:] = torch.randn(n_items, generator=g) * 0.5
        m.item_factors[1:] = torch.randn(n_items, k, generator=g)
    return m


def test_fold_in_is_the_ridge_solution_of_the_rated_history():
    m = _random_model()
    # padding first (item 0), one watch without a rating (token 0), then rated watches
    items = torch.tensor([[0, 0, 3, 5, 7, 2], [4, 9, 1, 6, 11, 8]])
    toks = torch.tensor([[0, 0, 8, 0, 4, 10], [2, 6, 9, 7, 3, 10]])
    got = m.score_all(_batch(items, toks))  # (2, 12)
    mean, bias, q = 3.4, m.item_bias.double().numpy(), m.item_factors.double().numpy()
    for b in range(2):
        # (item, stars, weight) of each rated watch; the newest (last) weighs 1
        rated = [
            (int(i), int(t) / 2, FOLD_IN_DECAY ** (5 - pos))
            for pos, (i, t) in enumerate(zip(items[b], toks[b], strict=True))
            if t > 0
        ]
        w = np.array([x[2] for x in rated])
        resid = np.array([r - mean - bias[i] for i, r, _ in rated])
        ub = (w * resid).sum() / (w.sum() + USER_BIAS_SHRINK)
        qh = q[[i for i, _, _ in rated]]
        gram = (qh * w[:, None]).T @ qh + FOLD_IN_RIDGE * np.eye(3)
        vec = np.linalg.solve(gram, (qh * w[:, None]).T @ (resid - ub))
        want = mean + ub + bias[1:] + q[1:] @ vec
        np.testing.assert_allclose(got[b].numpy(), want, rtol=1e-4, atol=1e-4)


def test_unrated_and_padded_positions_carry_no_weight_and_user_ids_none():
    m = _random_model()
    items = torch.tensor([[0, 0, 3, 5, 7, 2]])
    toks = torch.tensor([[0, 0, 8, 0, 4, 10]])
    base = m.score_all(_batch(items, toks))
    other = items.clone()
    other[0, :2] = torch.tensor([9, 11])  # content under padding
    other[0, 3] = 6  # the unrated watch
    again = m.score_all(_batch(other, toks, user=torch.tensor([17])))
    torch.testing.assert_close(again, base)
    # candidates given as (C,) and (B, C) agree with the whole catalogue
    cands = torch.tensor([4, 1, 12])
    torch.testing.assert_close(m.score(_batch(items, toks), cands), base[:, cands - 1])
    torch.testing.assert_close(m.score(_batch(items, toks), cands[None]), base[:, cands - 1])


def test_als_and_fold_in_find_a_planted_low_rank_structure():
    rng = np.random.default_rng(0)
    n_users, n_items, k, per_user = 300, 60, 2, 40
    p, q = rng.normal(size=(n_users, k)), rng.normal(size=(n_items, k))
    user = np.repeat(np.arange(n_users), per_user)
    item = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    rating = 3.0 + 0.5 * (p[user] * q[item]).sum(1) + rng.normal(0, 0.1, len(user))
    train = np.nonzero(np.arange(len(user)) % per_user < per_user - 1)[0]  # last one out
    test = np.nonzero(np.arange(len(user)) % per_user == per_user - 1)[0]
    mean = float(rating[train].mean())
    zero_u, zero_i = np.zeros(n_users), np.zeros(n_items)
    factors = fit_item_factors(
        user, item, rating, train, Biases(mean, zero_u, zero_i), n_users, n_items, k=k
    )
    m = RatingFactors(n_items, k)
    m.load_fitted(mean, zero_i, factors)
    none = RatingFactors(n_items, k)
    none.load_fitted(mean, zero_i, np.zeros_like(factors))
    # each held-out rating, from its user's training ratings as the history
    hist = torch.from_numpy(item[train].reshape(n_users, -1) + 1)
    toks = torch.from_numpy(np.round(rating[train] * 2).clip(1, 10).astype(np.int64))
    batch = _batch(hist, toks.reshape(n_users, -1))
    cands = torch.from_numpy(item[test] + 1)[:, None]
    err = {}
    for name, model in (("factors", m), ("bias only", none)):
        pred = model.score(batch, cands)[:, 0].numpy()
        err[name] = np.sqrt(np.mean((pred - rating[test]) ** 2))
    assert err["factors"] < 0.5 * err["bias only"], err


def test_untrained_bst_rating_head_predicts_the_factors_baseline():
    ds = tiny_dataset()
    store = SequenceStore(ds)
    cfg = ModelConfig(task="rating", dim=16, heads=4, mlp=[16, 8], rating_factors=4)
    torch.manual_seed(0)
    bst = BST(cfg, catalog_features(ds, store.user_feature_names), 6).eval()
    rows = leave_one_out(ds).train_rows(ds.user_offsets)
    peer = RatingFactors.fit(ds.user, ds.item, ds.rating, rows, ds.n_users, ds.n_items, k=4)
    peer.fold_ridge.fill_(2.0)
    bst.rating_wide.load_state_dict(peer.state_dict())  # as the trainer fits it
    assert peer.item_factors[1:].abs().sum() > 0
    batch = store.batch_for_targets(torch.from_numpy(rows[5:40]), 6)
    cands = torch.arange(1, ds.n_items + 1)
    torch.testing.assert_close(bst.score(batch, cands), peer.score(batch, cands))
    torch.testing.assert_close(
        predicted_stars(batch, None, peer.mean, peer.item_bias, None),
        predicted_stars(batch, None, peer.mean, peer.item_bias, peer.item_factors * 0),
    )


@pytest.mark.parametrize("k", [0, -1])
def test_factors_baseline_needs_a_width(k):
    from bstrec.config import RunConfig
    from bstrec.models.factory import build_model

    cfg = RunConfig()
    cfg.model.name, cfg.model.task, cfg.model.rating_factors = "factors", "rating", k
    ds = tiny_dataset()
    with pytest.raises(ValueError, match="rating_factors"):
        build_model(cfg, catalog_features(ds, SequenceStore(ds).user_feature_names))


def test_tuner_keeps_the_lowest_validation_rmse_and_factory_agrees():
    from bstrec.config import RunConfig
    from bstrec.evaluate import evaluate_rating
    from bstrec.models.factors import ALS_RIDGES, FOLD_IN_RIDGES, tune_rating_factors
    from bstrec.models.factory import fit_baseline

    ds = tiny_dataset(n_users=60, per_user=20)
    sp = leave_one_out(ds)
    store, rows, calls = SequenceStore(ds), sp.train_rows(ds.user_offsets), []

    def val_rmse(model) -> float:
        calls.append(1)
        return evaluate_rating(model, store, sp.targets("val"), 6)["RMSE"]

    args = (ds.user, ds.item, ds.rating, rows, ds.n_users, ds.n_items, 4)
    model, trials = tune_rating_factors(*args, val_rmse)
    assert len(trials) == len(calls) == len(ALS_RIDGES) * len(FOLD_IN_RIDGES)
    best = min(trials, key=lambda t: t["RMSE"])
    assert val_rmse(model) == pytest.approx(best["RMSE"])
    assert model.fold_ridge.item() == best["fold_ridge"]
    assert len({round(t["RMSE"], 9) for t in trials}) > 1  # the grid changes something
    cfg = RunConfig()
    cfg.model.name, cfg.model.task, cfg.model.rating_factors = "factors", "rating", 4
    again, _ = fit_baseline(cfg, ds, rows, val_rmse)
    torch.testing.assert_close(again.item_factors, model.item_factors)


def test_factors_run_trains_saves_and_loads(tmp_path):
    from bstrec.config import RunConfig
    from bstrec.run_dir import load_run
    from bstrec.train import train

    cfg = RunConfig()
    cfg.model.name, cfg.model.task, cfg.model.rating_factors = "factors", "rating", 4
    cfg.train.progress = False
    ds = tiny_dataset(n_users=60, per_user=20)
    result = train(cfg, ds, tmp_path / "run", log=lambda _m: None)
    loaded = load_run(tmp_path / "run")
    assert isinstance(loaded.model, RatingFactors)
    torch.testing.assert_close(loaded.model.item_factors, result.model.item_factors)
    assert loaded.model.item_factors.abs().sum() > 0


def test_the_exportable_solve_equals_torch_solve():
    from bstrec.models.factors import gauss_jordan

    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 20, 5, generator=g)
    a = x.transpose(1, 2) @ x + 2.0 * torch.eye(5)  # (7, 5, 5) as fold_in builds them
    b = torch.randn(7, 5, 1, generator=g)
    torch.testing.assert_close(gauss_jordan(a, b), torch.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_width_zero_is_the_bias_part_alone():
    """model.rating_factors=0: no factors fitted, the fold-in reads only the history's bias."""
    ds = tiny_dataset()
    store = SequenceStore(ds)
    rows = leave_one_out(ds).train_rows(ds.user_offsets)
    args = (ds.user, ds.item, ds.rating, rows, ds.n_users, ds.n_items)
    bias_only = RatingFactors.fit(*args, k=0)
    full = RatingFactors.fit(*args, k=4)
    assert bias_only.item_factors is None and "item_factors" not in bias_only.state_dict()
    batch = store.batch_for_targets(torch.from_numpy(rows[5:40]), 6)
    torch.testing.assert_close(bias_only.item_bias, full.item_bias)
    torch.testing.assert_close(
        bias_only.score_all(batch),
        predicted_stars(batch, None, full.mean, full.item_bias, None),
    )
