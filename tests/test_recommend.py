"""Recommendations from a saved run: unseen movies, titles, explanations, bad ids."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bstrec.cli import app
from bstrec.data.interactions import DataError
from bstrec.recommend import Recommender, UnknownIdError
from bstrec.run_dir import load_run


def test_known_user_gets_unseen_movies_with_titles_and_reasons(bst_run):
    out, ds = bst_run
    rec = Recommender(load_run(out))
    raw_user = int(ds.user_ids[3])
    res = rec.for_user(raw_user, k=5)
    u = 3
    seen = set(ds.item_ids[ds.item[ds.user_offsets[u] : ds.user_offsets[u + 1]]].tolist())
    assert len(res) == 5
    assert not seen & {p.movie_id for p in res}
    assert all(p.title.startswith("Movie ") for p in res)
    scores = [p.score for p in res]
    assert scores == sorted(scores, reverse=True)
    for p in res:
        assert 1 <= len(p.because) <= 3
        assert {b.movie_id for b in p.because} <= seen
    assert res.history[0].movie_id == int(ds.item_ids[ds.item[ds.user_offsets[u + 1] - 1]])


def test_history_recommendations_exclude_the_history(bst_run):
    out, ds = bst_run
    rec = Recommender(load_run(out))
    hist = [int(x) for x in ds.item_ids[:4]]
    res = rec.for_history(hist, k=7, user_features={"gender": "F"})
    assert len(res) == 7
    assert not set(hist) & {p.movie_id for p in res}
    assert [h.movie_id for h in res.history] == hist[::-1]


def test_unknown_ids_are_clear_errors(bst_run):
    out, ds = bst_run
    rec = Recommender(load_run(out))
    with pytest.raises(UnknownIdError, match="unknown user id: 999999"):
        rec.for_user(999999)
    with pytest.raises(UnknownIdError, match="unknown movie ids: 7777, 8888"):
        rec.for_history([int(ds.item_ids[0]), 7777, 8888])
    # ids as the API's JSON errors list them: numbers where they are numbers
    with pytest.raises(UnknownIdError) as e:
        rec.for_history([str(ds.item_ids[0]), "7777", "zz"])
    assert e.value.ids == [7777, "zz"]
    with pytest.raises(UnknownIdError) as e:
        rec.for_user("999999")
    assert e.value.ids == [999999]
    with pytest.raises(DataError, match="user.gender"):
        rec.for_history([int(ds.item_ids[0])], user_features={"gender": "X"})


def test_recommend_cli_json_and_errors(bst_run):
    out, ds = bst_run
    runner = CliRunner()
    r = runner.invoke(
        app, ["recommend", str(out), "--user", str(ds.user_ids[0]), "-k", "3", "--json"]
    )
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert len(body["picks"]) == 3 and body["picks"][0]["title"]
    r = runner.invoke(app, ["recommend", str(out), "--history", "10,99999"])
    assert r.exit_code == 1 and "unknown movie id: 99999" in r.output
    r = runner.invoke(app, ["recommend", str(out)])
    assert r.exit_code == 2


def test_evaluate_cli_labels_its_protocol(bst_run):
    out, _ = bst_run
    r = CliRunner().invoke(app, ["evaluate", str(out), "--split", "val", "--json"])
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert body["protocol"] == "R" and body["users"] == 30 and 0 <= body["NDCG@10"] <= 1


def test_precomputed_rankings_match_on_demand_ones(bst_run):
    out, ds = bst_run
    fresh = Recommender(load_run(out))
    batched = Recommender(load_run(out))
    batched.precompute(batch_size=7)
    assert batched.n_kept == ds.n_users
    assert batched.kept_bytes() < 2_000 * ds.n_users, "a few kB per user, not whole rankings"
    shallow = Recommender(load_run(out), keep_top=4)  # k > keep_top: computed per request
    for u in (0, 5, 17):
        raw = int(ds.user_ids[u])
        a, b, c = (r.for_user(raw, k=6).to_dict() for r in (fresh, batched, shallow))
        assert a == b, "a batch of 7 users answers exactly as one user alone"
        assert [p["movie_id"] for p in a["picks"]] == [p["movie_id"] for p in c["picks"]]
        for pa, pc in zip(a["picks"], c["picks"], strict=True):
            assert pa["score"] == pc["score"] and pa["because"] == pc["because"]
    assert shallow.n_kept == 0, "answers deeper than keep_top are not kept"
    shallow.for_user(int(ds.user_ids[0]), k=4)
    assert shallow.n_kept == 1


def _same(a, b) -> bool:
    return all(
        np.array_equal(getattr(a, f), getattr(b, f))
        for f in ("items", "scores", "reason_items", "reason_weights")
    )


# candidates 6: retrieve-then-rank, whose queries of one depth share a forward pass
@pytest.mark.parametrize("candidates", [0, 6])
def test_a_query_ranks_the_same_in_any_batch(bst_run, candidates):
    """Serving's guarantee: the bits of one query's answer do not depend on the
    queries handled with it, nor on its place among them."""
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=candidates)
    ids = [int(x) for x in ds.item_ids[:40]]
    queries = []
    for i in range(9):
        if i % 3:
            queries.append(rec.user_query(i, k=1 + i))
        else:
            hist = ids[i : i + 1 + i % 5]
            queries.append(rec.history_query(hist, k=2 + i, user_features={"gender": "F"}))
    alone = [rec.rank([q])[0] for q in queries]
    for size in (2, 3, 5, 9):
        for start in range(0, len(queries), size):
            chunk = list(range(start, min(start + size, len(queries))))
            for i, got in zip(chunk, rec.rank([queries[i] for i in chunk]), strict=True):
                assert _same(got, alone[i]), (size, i)
    together = rec.rank(queries[::-1])[::-1]
    assert all(_same(a, b) for a, b in zip(together, alone, strict=True))
    unseen = [ds.n_items - len(set(q.seen.tolist())) for q in queries]
    assert [len(r.items) for r in alone] == [
        min(q.depth, n) for q, n in zip(queries, unseen, strict=True)
    ]
    assert any((r.reason_items >= 0).any() for r in alone), "reasons are kept"
    if candidates:
        # stacks of several queries were formed and checked; where the check found them
        # exact, their answers were served from the stack
        assert rec.exact and all(n > 1 for n, _, _ in rec.exact)
        assert (rec.stacked > 0) == any(rec.exact.values())


def _stackable(rec, ds, n=6, k=4):
    ids = [int(x) for x in ds.item_ids[:40]]
    return [rec.history_query(ids[i : i + 1 + i % 4], k=k) for i in range(n)]


def test_a_stack_computes_each_query_s_own_answer(bst_run):
    """Ranked together, each query gets its own picks and reasons (its scores to the
    last bits or not: that is what the shape check decides)."""
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4)
    queries = _stackable(rec, ds)
    alone = [rec._rank_stack([q])[0] for q in queries]
    together = rec._rank_stack(queries)
    for a, b in zip(alone, together, strict=True):
        assert np.array_equal(a.items, b.items) and np.array_equal(a.reason_items, b.reason_items)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a.reason_weights, b.reason_weights, rtol=1e-5, atol=1e-6)
    assert len({tuple(r.items) for r in alone}) > 1, "different histories, different picks"
    exact = all(_same(a, b) for a, b in zip(alone, together, strict=True))
    rec.rank(queries)
    assert rec.exact == {(len(queries), 6, 4): exact}, "the check saw what is so"


def test_a_stack_shape_that_changes_an_answer_is_ranked_one_query_at_a_time(
    bst_run, monkeypatch, caplog
):
    out, ds = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4)
    queries = _stackable(rec, ds)
    alone = [rec.rank([q])[0] for q in queries]
    real, stacks = rec._rank_stack, []

    def off_by_an_ulp(qs):  # what other kernels for another shape may do
        stacks.append(len(qs))
        got = real(qs)
        if len(qs) > 1:
            got[0].scores[0] = np.nextafter(got[0].scores[0], np.float32(np.inf))
        return got

    monkeypatch.setattr(rec, "_rank_stack", off_by_an_ulp)
    for _ in range(2):
        assert all(_same(a, b) for a, b in zip(rec.rank(queries), alone, strict=True))
    assert rec.exact == {(len(queries), 6, 4): False} and rec.stacked == 0
    assert "a stack of 6 queries (6 candidates, top 4) changed an answer" in caplog.text
    # checked once: the second time, the shape went straight to one query at a time
    assert stacks == [len(queries)] + [1] * len(queries) * 2


def test_request_time_moves_the_answer_and_is_checked(bst_run):
    out, ds = bst_run
    rec = Recommender(load_run(out))
    hist = [int(x) for x in ds.item_ids[:3]]
    default = rec.for_history(hist, k=5).to_dict()
    assert rec.for_history(hist, k=5, now=rec.last_time).to_dict() == default
    raw = int(ds.user_ids[2])
    later = rec.for_user(raw, k=5, now=rec.last_watch(2) + 3 * 365 * 86400)
    assert rec.n_kept == 0, "an answer for another time is not the user's kept one"
    assert [p.score for p in later] != [p.score for p in rec.for_user(raw, k=5)]
    with pytest.raises(DataError, match="before this user's last watch"):
        rec.for_user(raw, k=5, now=rec.last_watch(2) - 1)


def test_a_retrieving_query_encodes_its_history_once(bst_run, monkeypatch):
    out, ds = bst_run
    rec = Recommender(
        load_run(out), candidates=6, keep_top=4, trace=False
    )  # traced: one graph call
    expected = rec.for_history([int(ds.item_ids[i]) for i in (1, 4, 2)], k=4)
    calls = []
    real = rec.model.encode_history
    monkeypatch.setattr(
        rec.model, "encode_history", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    got = rec.for_history([int(ds.item_ids[i]) for i in (1, 4, 2)], k=4)
    assert got.to_dict() == expected.to_dict()
    # retrieval, the head's ranking and the reasons read one encoding of the history
    assert len(calls) == 1


def test_recommendations_retrieve_above_the_serving_threshold(bst_run, monkeypatch):
    import bstrec.recommend as recommend_module
    from bstrec.retrieval import DEFAULT_CANDIDATES

    out, ds = bst_run
    run = load_run(out)
    assert Recommender(run).candidates == 0  # a tiny catalogue: ranked whole
    monkeypatch.setattr(recommend_module, "SERVE_MIN_ITEMS", ds.n_items - 1)
    assert Recommender(run).candidates == DEFAULT_CANDIDATES
    assert Recommender(run, candidates=0).candidates == 0


def test_a_recommender_that_does_not_store_kept_answers_still_counts_them(bst_run):
    """The model process's Recommender: it sends kept answers to the server and keeps
    only their count and size, so that the answers are not held twice."""
    out, _ = bst_run
    rec = Recommender(load_run(out), candidates=6, keep_top=4)
    rec.store_kept = False
    sent = []
    rec.on_kept = sent.extend
    rec.rank(rec.user_queries([1, 2]))
    assert [u for u, _ in sent] == [1, 2]
    assert rec.cached(1, 4) is None and rec.is_kept(1) and not rec.is_kept(3)
    assert rec.n_kept == 2 and rec.kept_bytes() == sum(r.nbytes for _, r in sent)
    rec.rank(rec.user_queries([1]))  # ranked again: counted once
    assert rec.n_kept == 2
