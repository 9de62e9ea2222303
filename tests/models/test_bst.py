"""BST correctness: per-example attention, masking, and cheap scoring == plain scoring."""

import pytest
import torch

from bstrec.config import ModelConfig, RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.models.bst import BST
from bstrec.models.factors import FOLD_IN_DECAY, USER_BIAS_SHRINK
from bstrec.models.factory import catalog_features
from tests.factories import tiny_dataset


def make(task="ranking", output="target", blocks=1, max_len=6, **kw):
    ds = tiny_dataset()
    store = SequenceStore(ds)
    cfg = ModelConfig(
        task=task,
        output=output,
        blocks=blocks,
        dim=16,
        heads=4,
        mlp=[16, 8],
        use_user_id=True,
        **kw,
    )
    torch.manual_seed(0)
    model = BST(cfg, catalog_features(ds, store.user_feature_names), max_len).eval()
    # random weights everywhere so no path is trivially zero
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    rows = torch.tensor([ds.user_offsets[u] + k for u, k in [(0, 1), (1, 5), (2, 9), (3, 11)]])
    batch = store.batch_for_targets(rows, max_len)
    return model, batch, ds


@pytest.mark.parametrize("output", ["target", "concat"])
def test_score_of_an_example_ignores_the_rest_of_its_batch(output):
    model, batch, ds = make(output=output)
    cands = torch.arange(1, ds.n_items + 1)
    full = model.score(batch, cands)
    # alone
    for i in range(len(batch)):
        alone = model.score(batch.index(slice(i, i + 1)), cands)
        torch.testing.assert_close(alone[0], full[i], rtol=1e-5, atol=1e-5)
    # reordered
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(
        model.score(batch.index(perm), cands), full[perm], rtol=1e-5, atol=1e-5
    )
    # other examples replaced by different users' histories
    other = batch.index(torch.tensor([0, 3, 3, 3]))
    other.hist_item[1:] = torch.randint(1, ds.n_items + 1, other.hist_item[1:].shape)
    torch.testing.assert_close(model.score(other, cands)[0], full[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["target", "concat"])
def test_padding_content_does_not_change_scores(output):
    model, batch, ds = make(output=output)
    assert (~batch.hist_mask).any(), "test needs a padded history"
    cands = torch.arange(1, ds.n_items + 1)
    before = model.score(batch, cands)
    noisy = batch.index(slice(None))
    pad = ~noisy.hist_mask
    # padding positions keep token 0 (that is what marks them) but their other
    # features are garbage: they must be masked, never read
    noisy.hist_rating = torch.where(pad, torch.randint(1, 10, pad.shape), noisy.hist_rating)
    noisy.hist_gap = torch.where(pad, torch.randint(1, 60, pad.shape), noisy.hist_gap)
    torch.testing.assert_close(model.score(noisy, cands), before, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["target", "concat"])
def test_the_batch_check_catches_attention_that_mixes_users(monkeypatch, output):
    """Guard the guard: plant the reference notebook's fault in bstrec's own attention
    (keys and values read across the batch axis, as batch_first=False does on
    (B, L, D) tensors) and the batch-independence check above must fail."""
    import bstrec.models.bst as bst_module

    model, batch, ds = make(output=output)
    cands = torch.arange(1, ds.n_items + 1)
    real = bst_module.attend

    def mixed(q, k, v, allow, self_k=None, self_v=None):
        return real(q, k.roll(1, 0), v.roll(1, 0), allow, self_k, self_v)

    monkeypatch.setattr(bst_module, "attend", mixed)
    full = model.score(batch, cands)
    alone = model.score(batch.index(slice(0, 1)), cands)
    assert not torch.allclose(alone[0], full[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("task", ["ranking", "rating"])
@pytest.mark.parametrize("blocks", [1, 2])
def test_cached_scoring_equals_plain(task, blocks):
    model, batch, ds = make(task=task, blocks=blocks)
    cands = torch.arange(1, ds.n_items + 1)
    cached, att_c = model.score_cached(batch, cands, want_attention=True)
    plain, att_p = model.score_plain(batch, cands, want_attention=True)
    torch.testing.assert_close(cached, plain, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(att_c, att_p, rtol=1e-4, atol=1e-6)
    per_user = torch.randint(1, ds.n_items + 1, (len(batch), 7))
    torch.testing.assert_close(
        model.score_cached(batch, per_user)[0],
        model.score_plain(batch, per_user)[0],
        rtol=1e-4,
        atol=1e-5,
    )


def test_empty_history_scores_are_finite():
    model, batch, ds = make()
    empty = batch.index(slice(0, 2))
    empty.hist_item = torch.zeros_like(empty.hist_item)
    assert torch.isfinite(model.score(empty, torch.arange(1, ds.n_items + 1))).all()


def test_explanations_are_distributions_over_real_history():
    model, batch, ds = make()
    att = model.explain(batch, torch.tensor([1, 2, 3]))  # (B, C, L)
    assert att.shape == (len(batch), 3, batch.hist_item.shape[1])
    assert (att[~batch.hist_mask[:, None, :].expand_as(att)] == 0).all()
    assert (att.sum(-1) <= 1 + 1e-5).all()
    # every candidate of a user with a history gets weight on some watch
    has_history = batch.hist_mask.any(1)
    assert has_history.any() and (att.sum(-1)[has_history] > 1e-3).all()


def test_training_reduces_loss_on_a_learnable_chain():
    from bstrec.train import train

    ds = tiny_dataset(n_users=60, per_user=15)
    cfg = RunConfig()
    cfg.model.dim, cfg.model.heads, cfg.model.mlp = 16, 2, [16, 8]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.negatives = 20, 64, 16
    cfg.train.progress, cfg.train.patience, cfg.train.lr = False, 10, 1e-2
    cfg.train.threads = 1  # tiny tensors: a second thread only adds contention
    cfg.train.schedule, cfg.train.warmup_steps = "constant", 1  # learning, not the schedule
    cfg.data.max_len = 5
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        result = train(cfg, ds, d, log=lambda _m: None)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.7, losses
    # a chain is far easier than chance (1/43 hit rate at 1)
    assert result.best["HR@10"] > 0.5, result.best


def test_frozen_catalogue_gives_the_same_scores_and_is_dropped_for_training():
    model, batch, ds = make()
    cands = torch.arange(1, ds.n_items + 1)
    plain = model.score(batch, cands)
    model.freeze_catalog()
    assert model.catalog_cache is not None
    torch.testing.assert_close(model.score(batch, cands), plain, rtol=1e-5, atol=1e-6)
    model.train()
    assert model.catalog_cache is None


def test_untrained_bst_ranks_as_its_wide_part_and_learns_from_there():
    """Wide & Deep: the MLP's last layer and the dot term start at zero, so before any
    step BST's full-catalogue ranking is the co-occurrence model's."""
    from bstrec.data.splits import leave_one_out
    from bstrec.models.cooccurrence import CooccurrenceParams, fit_cooccurrence

    ds = tiny_dataset()
    store = SequenceStore(ds)
    sp = leave_one_out(ds)
    cfg = ModelConfig(dim=16, heads=4, mlp=[16, 8])
    torch.manual_seed(0)
    model = BST(cfg, catalog_features(ds, store.user_feature_names), 6).eval()
    cooc = fit_cooccurrence(
        ds.item,
        ds.user,
        sp.train_rows(ds.user_offsets),
        ds.n_items,
        CooccurrenceParams(window=2, last_n=3, decay=0.5, alpha=0.25, history_alpha=0.5),
    )
    model.wide.load_state_dict(cooc.scorer.state_dict())
    batch = store.batch_for_targets(torch.from_numpy(sp.targets("test")), 6)
    bst, base = model.score_all(batch), cooc.score_all(batch)
    # the same order (the baseline's popularity tie-break aside): compare where it is strict
    i, j = torch.randint(0, ds.n_items, (2, 2000))
    strict = (
        base.gather(1, i.view(1, -1).expand(len(batch), -1))
        - base.gather(1, j.view(1, -1).expand(len(batch), -1))
    ).abs() > 1e-4
    sb = torch.sign(bst[:, i] - bst[:, j])[strict]
    assert torch.equal(sb, torch.sign(base[:, i] - base[:, j])[strict])
    assert model.tower is not None and model.wide is not None


def test_rating_starts_at_the_bias_baseline_read_from_the_history():
    model, batch, ds = make(task="rating")
    with torch.no_grad():
        model.rating_wide.mean.fill_(3.0)
        model.rating_wide.item_bias.normal_(0, 0.5)
        model.mlp_rest[-1].weight.zero_()
        model.mlp_rest[-1].bias.zero_()
    got = model.score(batch, batch.target[:, None])[:, 0]
    for i in range(len(batch)):
        hist, toks = batch.hist_item[i], batch.hist_rating[i]
        last = len(hist) - 1
        rated = [
            (int(h), int(r) / 2, FOLD_IN_DECAY ** (last - pos))
            for pos, (h, r) in enumerate(zip(hist, toks, strict=True))
            if r > 0
        ]
        bias = model.rating_wide.item_bias
        resid = sum(w * (r - 3.0 - bias[h].item()) for h, r, w in rated)
        user = resid / (sum(w for _, _, w in rated) + USER_BIAS_SHRINK)
        want = 3.0 + user + bias[batch.target[i]].item()
        assert got[i].item() == pytest.approx(want, abs=1e-5)


def _with_fitted_wide():
    from bstrec.data.splits import leave_one_out
    from bstrec.models.cooccurrence import CooccurrenceParams, fit_cooccurrence

    model, batch, ds = make()
    sp = leave_one_out(ds)
    cooc = fit_cooccurrence(
        ds.item,
        ds.user,
        sp.train_rows(ds.user_offsets),
        ds.n_items,
        CooccurrenceParams(window=3, last_n=4, decay=0.7, alpha=0.25),
    )
    model.wide.load_state_dict(cooc.scorer.state_dict())
    return model, batch, ds


def test_wide_feature_is_the_same_by_row_scatter_or_pair_lookup(monkeypatch):
    import bstrec.models.bst as bst_module

    model, batch, ds = _with_fitted_wide()
    cands = torch.randperm(ds.n_items)[:20] + 1
    lookup = model.wide_feature(batch, cands)
    assert lookup.abs().sum() > 0, "test needs non-zero counts"
    monkeypatch.setattr(bst_module, "WIDE_LOOKUP_MAX", 4)
    torch.testing.assert_close(model.wide_feature(batch, cands), lookup)


def test_big_catalogues_train_the_softmaxes_on_a_shared_sample(monkeypatch):
    import bstrec.models.sasrec as sasrec_module

    model, batch, ds = _with_fitted_wide()
    full = model.full_softmax_loss(batch, model.user_side(batch), model.own_pairs(batch))
    monkeypatch.setattr(sasrec_module, "FULL_SOFTMAX_MAX_ITEMS", 10)
    monkeypatch.setattr(sasrec_module, "SAMPLED_CANDIDATES", 8)
    monkeypatch.setattr(sasrec_module, "SAMPLED_POSITIONS", 5)
    labels = torch.tensor([[5, 7], [7, 40]])
    cands, cols = sasrec_module.softmax_candidates(ds.n_items, labels)
    assert torch.equal(cands[cols], labels) and len(cands) <= 3 + 8
    assert bool((cands[1:] > cands[:-1]).all())
    sampled = model.full_softmax_loss(batch, model.user_side(batch), model.own_pairs(batch))
    assert torch.isfinite(sampled) and sampled < full  # fewer competitors, smaller loss
    sampled.backward()
    assert model.tower.item_emb.weight.grad.abs().sum() > 0


def test_explanations_follow_the_candidate():
    model, batch, ds = _with_fitted_wide()
    cands = torch.arange(1, ds.n_items + 1)
    per = batch.hist_item.shape[0], ds.n_items
    contrib = model.wide.contributions(batch.hist_item, cands[None].expand(*per))
    # the per-watch shares add up to the count the wide part scores with
    torch.testing.assert_close(
        contrib.sum(-1), model.wide.raw(batch.hist_item, cands[None].expand(*per))
    )
    weights = model.explain(batch, cands)  # (B, C, L)
    with_pairs = contrib.sum(-1) > 0
    assert with_pairs.any() and (~with_pairs).any(), "test needs both kinds of candidate"
    top = weights.argmax(-1)  # (B, C) the first reason of each candidate
    # where the candidate co-occurs with the history, its first reason is a watch it
    # co-occurs with; different candidates of one user get different first reasons
    assert (contrib.gather(2, top[..., None])[..., 0] > 0)[with_pairs].all()
    firsts = [set(top[b][with_pairs[b]].tolist()) for b in range(len(batch))]
    assert max(len(f) for f in firsts) > 1
    # without pair evidence the candidate's own attention row speaks
    att = model.attention(batch, cands)
    torch.testing.assert_close(weights[~with_pairs], att[~with_pairs])


def test_explain_skips_the_attention_pass_only_when_no_candidate_needs_it(monkeypatch):
    model, batch, ds = _with_fitted_wide()
    cands = torch.arange(1, ds.n_items + 1)
    per = batch.hist_item.shape[0], ds.n_items
    has_pairs = model.wide.contributions(batch.hist_item, cands[None].expand(*per)).sum(-1) > 0
    b = int(has_pairs.sum(1).argmax())  # the row with the most co-occurring candidates
    row = batch.index(torch.tensor([b]))
    paired = cands[has_pairs[b]][None]  # (1, C) every candidate has pairs
    expected = model.explain(row, paired)
    calls = []
    real = model.attention
    monkeypatch.setattr(model, "attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.testing.assert_close(model.explain(row, paired), expected)
    assert calls == []
    mixed = cands[None]  # some candidates without pairs: their attention rows are needed
    assert (~has_pairs[b]).any()
    model.explain(row, mixed)
    assert calls == [1]


def test_a_shared_user_side_gives_the_same_scores_and_reasons():
    from bstrec.retrieval import retrieve_then_rank

    model, batch, ds = _with_fitted_wide()
    model.freeze_catalog()
    cands = torch.arange(1, ds.n_items + 1)
    # inference, as callers run it (with autograd on, torch takes other kernels for the
    # tower, which move the last bits)
    with torch.no_grad():
        side = model.user_side(batch)
        assert torch.equal(model.score(batch, cands, side=side), model.score(batch, cands))
        assert torch.equal(model.retrieval_scores(batch, side), model.retrieval_scores(batch))
        assert torch.equal(model.explain(batch, cands, side), model.explain(batch, cands))
        with_side = retrieve_then_rank(model, batch, 7, side=model.user_side(batch))
        without = retrieve_then_rank(model, batch, 7)
    for a, b in zip(with_side, without, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("per_user", [False, True])
def test_a_frozen_catalogue_scores_candidates_from_its_cache(monkeypatch, per_user):
    model, batch, ds = _with_fitted_wide()
    g = torch.Generator().manual_seed(0)
    if per_user:  # (B, C): each user's own candidates, as retrieve-then-rank asks
        cands = torch.stack([torch.randperm(ds.n_items, generator=g)[:9] for _ in batch.user]) + 1
    else:
        cands = torch.randperm(ds.n_items, generator=g)[:9] + 1
    plain = model.score(batch, cands)
    model.freeze_catalog()

    def recomputed(*_a, **_k):
        raise AssertionError("the candidates' tokens were computed again")

    monkeypatch.setattr(model, "target_tokens", recomputed)
    torch.testing.assert_close(model.score(batch, cands), plain, rtol=1e-5, atol=1e-5)


def test_retrieve_then_rank_computes_the_cheap_terms_once(monkeypatch):
    from bstrec.retrieval import retrieve_then_rank

    model, batch, ds = _with_fitted_wide()
    model.freeze_catalog()
    expected_scores, expected_picked = retrieve_then_rank(model, batch, 7)
    calls = {"wide_feature": 0, "dot_term": 0}
    for name in calls:
        real = getattr(model, name)

        def counted(*a, _real=real, _name=name, **k):
            calls[_name] += 1
            return _real(*a, **k)

        monkeypatch.setattr(model, name, counted)
    scores, picked = retrieve_then_rank(model, batch, 7)
    assert calls == {"wide_feature": 1, "dot_term": 1}  # the head reads retrieval's
    assert torch.equal(picked, expected_picked) and torch.equal(scores, expected_scores)
    # and they are the same terms the head computes for those candidates itself
    model.catalog_cache = None
    torch.testing.assert_close(
        scores.gather(1, picked), model.score(batch, picked + 1), rtol=1e-5, atol=1e-5
    )


def test_exact_rows_makes_the_per_user_products_independent_of_the_batch():
    """Serving stacks requests (Recommender.rank): with ``exact_rows`` a user's tower
    dot product and user part are the bits of that user alone."""
    model, batch, ds = _with_fitted_wide()
    model.exact_rows = True
    cands = torch.arange(1, ds.n_items + 1)
    with torch.inference_mode():
        side = model.user_side(batch)
        stacked = (model.dot_term(side, None), model.dot_term(side, cands), model._user_part(batch))
        for i in range(len(batch)):
            row = batch.index(slice(i, i + 1))
            one = model.user_side(row)
            alone = (model.dot_term(one, None), model.dot_term(one, cands), model._user_part(row))
            for s, a in zip(stacked, alone, strict=True):
                assert torch.equal(s[i : i + 1], a)


def test_explain_runs_the_attention_pass_row_by_row_for_the_rows_that_need_it(monkeypatch):
    """A row's reasons must not depend on the rows stacked with it: the attention
    pass, when a row needs it, sees that row alone."""
    model, batch, ds = _with_fitted_wide()
    cands = torch.arange(1, ds.n_items + 1)[None].expand(len(batch), -1)
    has_pairs = model.wide.contributions(batch.hist_item, cands).sum(-1) > 0  # (B, C)
    needs = (~has_pairs).any(1)
    assert needs.any() and len(batch) > 1
    expected = [model.explain(batch.index(slice(i, i + 1)), cands[i : i + 1])[0] for i in range(4)]
    sizes = []
    real = model.attention
    monkeypatch.setattr(
        model, "attention", lambda b, *a, **k: sizes.append(len(b)) or real(b, *a, **k)
    )
    got = model.explain(batch, cands)
    assert sizes == [1] * int(needs.sum())
    for i in range(len(batch)):
        torch.testing.assert_close(got[i], expected[i], rtol=0, atol=0)
