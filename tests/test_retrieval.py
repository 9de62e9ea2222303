"""Retrieve-then-rank and chunked full-catalogue scoring."""

from __future__ import annotations

import pytest
import torch

from bstrec.data.batches import SequenceStore
from bstrec.data.splits import leave_one_out
from bstrec.evaluate import evaluate_ranking, target_ranks
from bstrec.models.baselines import Popularity
from bstrec.retrieval import (
    AUTO_MIN_ITEMS,
    DEFAULT_CANDIDATES,
    SERVE_MIN_ITEMS,
    retrieval_size,
    retrieve_then_rank,
)
from tests.models.test_bst import make


def test_chunked_score_all_equals_one_pass():
    model, batch, ds = make()
    model.freeze_catalog()
    whole = model.score_all(batch)
    model.score_chunk = 7  # 43 movies: 7 chunks, the last one short
    torch.testing.assert_close(model.score_all(batch), whole, rtol=1e-5, atol=1e-5)


def _val(model, ds, candidates):
    store, split = SequenceStore(ds), leave_one_out(ds)
    return evaluate_ranking(model, store, split.targets("val"), 6, candidates=candidates)


def test_retrieving_the_whole_catalogue_ranks_as_the_full_pass():
    model, _, ds = make()
    full, everything = _val(model, ds, 0), _val(model, ds, ds.n_items)
    for key in ("HR@1", "HR@10", "NDCG@10", "MRR"):
        assert everything[key] == pytest.approx(full[key]), key
    assert everything[f"retrieval_recall@{ds.n_items}"] == 1.0


def test_a_target_the_stage_misses_ranks_last_and_recall_counts_it():
    model, batch, ds = make()
    m = 3
    scores, picked = retrieve_then_rank(model, batch, m)
    target = batch.target - 1
    hit = (picked == target[:, None]).any(1)
    assert (~hit).any(), "test needs a missed target"
    none_b = torch.zeros(0, dtype=torch.long)
    ranks = target_ranks(scores, target, none_b, none_b)
    for b in range(len(batch)):
        if not hit[b]:  # tied with every other unreturned movie, ties counted above
            assert ranks[b] == ds.n_items - 1
        else:
            assert ranks[b] < m
    # the returned movies carry the model's own scores
    torch.testing.assert_close(scores.gather(1, picked), model.score(batch, picked + 1))


def test_seen_movies_are_never_retrieved():
    model, batch, ds = make()
    seen = torch.zeros(len(batch), ds.n_items, dtype=torch.bool)
    seen[:, :30] = True
    _, picked = retrieve_then_rank(model, batch, 5, seen)
    assert (picked >= 30).all()


def test_retrieval_is_on_by_default_only_for_big_catalogues():
    model, _, ds = make()
    assert retrieval_size(model, None) == 0
    assert retrieval_size(model, 50) == 50
    model.n_items = AUTO_MIN_ITEMS + 1
    assert retrieval_size(model, None) > 0
    assert retrieval_size(model, 0) == 0
    with pytest.raises(ValueError, match="candidates must be >= 0"):
        retrieval_size(model, -1)
    pop = Popularity(AUTO_MIN_ITEMS + 1)  # cheap itself: ranks everything
    assert retrieval_size(pop, None) == 0
    model.n_items = SERVE_MIN_ITEMS + 1  # recommendations retrieve from a smaller size
    assert retrieval_size(model, None) == 0
    assert retrieval_size(model, None, SERVE_MIN_ITEMS) == DEFAULT_CANDIDATES
    assert retrieval_size(model, 0, SERVE_MIN_ITEMS) == 0


def test_a_model_without_a_cheap_stage_says_so():
    _, batch, ds = make()
    pop = Popularity(ds.n_items)
    with pytest.raises(ValueError, match="has no retrieval stage"):
        retrieve_then_rank(pop, batch, 5)


def test_evaluate_command_retrieves_when_asked(tmp_path):
    import json

    from typer.testing import CliRunner

    from bstrec.cli import app
    from bstrec.config import RunConfig
    from bstrec.train import train
    from tests.factories import tiny_dataset
    from tests.test_train_precision import SMALL

    train(
        RunConfig().override([*SMALL, "train.epochs=1"]),
        tiny_dataset(),
        tmp_path / "r",
        log=lambda _m: None,
    )
    out = {}
    for args in ([], ["--candidates", "5"]):
        r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "r"), "--json", *args])
        assert r.exit_code == 0, r.output
        out[len(args)] = json.loads(r.output)
    assert "retrieval_recall@5" not in out[0]
    assert 0 <= out[2]["retrieval_recall@5"] <= 1
    assert out[2]["HR@10"] <= out[2]["retrieval_recall@5"] + 1e-9  # a miss ranks last
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path / "r"), "--candidates", "-1"])
    assert r.exit_code == 2


def test_recommender_retrieves_when_asked_and_keeps_the_top_picks(tmp_path):
    from bstrec.config import RunConfig
    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run
    from bstrec.train import train
    from tests.factories import tiny_dataset
    from tests.test_train_precision import SMALL

    ds = tiny_dataset()
    train(RunConfig().override([*SMALL, "train.epochs=1"]), ds, tmp_path / "r", log=lambda _m: None)
    full = Recommender(load_run(tmp_path / "r"))
    assert full.candidates == 0  # a small catalogue: the whole of it by default
    every = Recommender(load_run(tmp_path / "r"), candidates=ds.n_items)
    few = Recommender(load_run(tmp_path / "r"), candidates=3, keep_top=5)
    user = ds.user_ids[0].item()
    want = [p.movie_id for p in full.for_user(user, k=5)]
    assert [p.movie_id for p in every.for_user(user, k=5)] == want
    got = few.for_user(user, k=5)  # depth 5 > 3 candidates: 5 are retrieved
    assert len(got) == 5 and all(p.because for p in got[:1])
