"""The traced serving pass: the same answers as the eager one, bit for bit, through
the graph once a shape is traced, and eager again for a shape whose trace differs."""

import logging

import numpy as np
import torch

from bstrec.recommend import Recommender
from bstrec.run_dir import load_run


def _queries(rec, ds, n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        hist = rng.choice(ds.n_items, size=int(rng.integers(1, 8)), replace=False)
        out.append(rec.history_query([int(ds.item_ids[i]) for i in hist], 4))
    return out


def _answers(rec, ranked):
    return [
        (r.items.tolist(), r.scores.tolist(), r.reason_items.tolist(), r.reason_weights.tolist())
        for r in ranked
    ]


def test_traced_answers_equal_eager_ones_in_every_stack(bst_run):
    out, ds = bst_run
    traced = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    eager = Recommender(load_run(out), candidates=6, keep_top=4, trace=False)
    assert traced.traced is not None and eager.traced is None
    for size in (1, 3, 8):
        for seed in range(3):  # the first stack of a size traces it, the rest use it
            qs = _queries(traced, ds, size, seed)
            assert _answers(traced, traced.rank(qs)) == _answers(eager, eager.rank(qs))
    graphs = traced.traced.graphs
    assert {rows for rows, _, _ in graphs} == {1, 3, 8}
    assert all(g is not None for g in graphs.values())  # every trace kept: exact here


def test_a_traced_shape_runs_the_graph_not_the_python(bst_run, monkeypatch):
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    rec.rank(_queries(rec, ds, 2))  # traces the 2-row shape
    calls = []
    real = rec.model.encode_history
    monkeypatch.setattr(rec.model, "encode_history", lambda *a: calls.append(1) or real(*a))
    rec.rank(_queries(rec, ds, 2, seed=1))
    assert calls == []  # the history was encoded inside the graph
    rec.rank(_queries(rec, ds, 4, seed=1))  # a new shape: checked against the eager pass
    assert len(calls) >= 1


def test_a_trace_that_changes_the_bits_is_dropped_for_its_shape(bst_run, monkeypatch, caplog):
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    eager = Recommender(load_run(out), candidates=6, keep_top=4, trace=False)
    real_trace = torch.jit.trace

    def off_by_one_ulp(module, args, **kw):
        graph = real_trace(module, args, **kw)

        def run(*a):
            scores, *rest = graph(*a)
            return (torch.nextafter(scores, torch.full_like(scores, np.inf)), *rest)

        return run

    monkeypatch.setattr(torch.jit, "trace", off_by_one_ulp)
    with caplog.at_level(logging.WARNING, logger="bstrec.traced_pass"):
        for seed in range(2):
            qs = _queries(rec, ds, 3, seed)
            assert _answers(rec, rec.rank(qs)) == _answers(eager, eager.rank(qs))
    # the 3-row shape, and the 1-row one its stack check ranked alone, both dropped
    assert rec.traced.graphs == {(3, 6, 4): None, (1, 6, 4): None}
    assert "changed the answers in the last bits" in caplog.text


def test_warm_up_traces_every_stack_size_once(bst_run):
    from bstrec.recommend import STACK_MAX

    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=12, trace=True)
    steps = 0
    while rec.warm_one():
        steps += 1
    assert steps == STACK_MAX
    assert sorted(rec.traced.graphs) == [(rows, 12, 12) for rows in range(1, STACK_MAX + 1)]
    assert all(g is not None for g in rec.traced.graphs.values())
    assert not rec.warm_one()
    # a typed history for any k up to keep_top finds its shapes traced: no trace in its
    # way, and its answer is the first k of those picks
    for k in (1, 4, 12):
        (q,) = _queries(rec, ds, 1)
        q = rec.history_query([int(ds.item_ids[i]) for i in q.seen], k)
        assert q.depth == 12
        rec.rank([q])
    assert len(rec.traced.graphs) == STACK_MAX
    assert not Recommender(load_run(out), candidates=6, keep_top=4, trace=False).warm_one()


def test_the_pass_explains_each_pick_as_a_separate_explanation_would(bst_run, monkeypatch):
    """The reasons' attention rows come from the ranking pass: each pick's must be its own
    row (the same weights as ``explain``'s own attention pass, up to float rounding)."""
    from bstrec.data.batches import Batch
    from bstrec.traced_pass import serving_pass

    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4)
    # this dense tiny data set gives every pick co-occurrence pairs: take them away from
    # the first three rows, whose reasons are then their attention rows
    real = rec.model.wide.contributions

    def fewer_pairs(hist_item, cands):
        pairs = real(hist_item, cands)
        pairs[:3] = 0
        return pairs

    monkeypatch.setattr(rec.model.wide, "contributions", fewer_pairs)
    qs = _queries(rec, ds, 6, seed=3)
    batch = Batch.stack([q.batch for q in qs])
    seen = torch.zeros(len(qs), ds.n_items, dtype=torch.bool)
    for i, q in enumerate(qs):
        seen[i, torch.as_tensor(q.seen)] = True
    with torch.inference_mode():
        _, items, _, reason_items, reason_weights = serving_pass(rec.model, batch, seen, 6, 4, 3)
        weights = rec.model.explain(batch, items + 1)  # (B, 4, L), a pass of its own
        pairs = rec.model.wide.contributions(batch.hist_item, items + 1).sum(-1)
    assert (pairs[:3] <= 0).all() and (pairs[3:] > 0).all()
    top_w, top_pos = weights.topk(3, dim=-1)
    tok = batch.hist_item.gather(1, top_pos.flatten(1)).view_as(top_pos)
    valid = (tok > 0) & (top_w > 0)
    assert torch.equal(reason_items, torch.where(valid, tok - 1, -1))
    torch.testing.assert_close(reason_weights, torch.where(valid, top_w, 0.0))


def test_a_sparse_co_occurrence_part_is_not_traced(bst_run, monkeypatch):
    """Above DENSE_MAX_ITEMS movies the wide part gathers as many pairs as the history's
    rows hold: a size that depends on the data, which a trace would fix."""
    from bstrec.models import item_pairs

    out, ds = bst_run
    monkeypatch.setattr(item_pairs, "DENSE_MAX_ITEMS", ds.n_items - 1)
    rec = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    assert rec.model.wide.counts.dense() is None
    assert rec.traced is None
    eager = Recommender(load_run(out), candidates=6, keep_top=4, trace=False)
    qs = _queries(rec, ds, 3)
    assert _answers(rec, rec.rank(qs)) == _answers(eager, eager.rank(qs))


def test_a_graph_that_fails_on_a_later_input_gives_way_to_the_eager_pass(
    bst_run, monkeypatch, caplog
):
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    eager = Recommender(load_run(out), candidates=6, keep_top=4, trace=False)
    real_trace = torch.jit.trace

    def first_input_only(module, args, **kw):
        graph, calls = real_trace(module, args, **kw), []

        def run(*a):
            calls.append(1)
            if len(calls) > 1:  # the exactness check was the first
                raise RuntimeError("The size of tensor a (167) must match the size of tensor b")
            return graph(*a)

        return run

    monkeypatch.setattr(torch.jit, "trace", first_input_only)
    with caplog.at_level(logging.ERROR, logger="bstrec.traced_pass"):
        for seed in range(3):
            (q,) = _queries(rec, ds, 1, seed)
            assert _answers(rec, rec.rank([q])) == _answers(eager, eager.rank([q]))
    assert rec.traced.graphs == {(1, 6, 4): None}
    assert "failed on an input its first one did not prepare it for" in caplog.text
