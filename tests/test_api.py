"""The public Python API: fit, load_run, Run.evaluate / recommend / explain, and that the
command line answers exactly what the API does (one code path)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

import bstrec
from bstrec import ArgumentError, DataError
from bstrec.cli import app
from bstrec.config import RunConfig
from tests.factories import tiny_dataset

TINY = {
    "model__dim": 16,
    "model__heads": 2,
    "model__mlp": [16, 8],
    "data__max_len": 5,
    "train__epochs": 2,
    "train__batch_size": 64,
    "train__negatives": 8,
    "train__eval_every": 1.0,
}


@pytest.fixture(scope="module")
def ds():
    return tiny_dataset()


@pytest.fixture(scope="module")
def run(ds, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "bst"
    return bstrec.fit(ds, out=out, log=None, progress=False, **TINY)


def _seen(ds, u: int) -> set:
    return set(ds.item_ids[ds.item[ds.user_offsets[u] : ds.user_offsets[u + 1]]].tolist())


def test_fit_writes_a_run_that_load_run_reads(run):
    assert (run.path / "model.safetensors").is_file()
    assert (run.path / "curves.png").stat().st_size > 1000  # drawn without pyplot
    assert run.model_name == "bst" and run.task == "ranking"
    assert run.config.model.dim == 16 and run.config.train.epochs == 2
    curve = run.learning_curve
    assert [r["epoch"] for r in curve] == [0, 1]  # eval_every 1: once per epoch
    best = max(curve, key=lambda r: r["NDCG@10"])
    assert run.summary["best_val"]["NDCG@10"] == pytest.approx(best["NDCG@10"])
    again = bstrec.load_run(run.path)
    assert again.config.to_dict() == run.config.to_dict()
    assert repr(again) == f"Run({str(run.path)!r})"


def test_evaluate_names_its_protocol_and_equals_the_command(run):
    m = run.evaluate("val")
    assert m["protocol"] == "R" and m["split"] == "val" and m["users"] == 30
    assert 0 <= m["NDCG@10"] <= 1
    r = CliRunner().invoke(app, ["evaluate", str(run.path), "--split", "val", "--json"])
    assert r.exit_code == 0, r.output
    cli = json.loads(r.output)
    drop = ("eval_seconds",)  # wall time: the only figure allowed to differ
    assert {k: v for k, v in cli.items() if k not in drop} == {
        k: v for k, v in m.items() if k not in drop
    }
    # a fixed, seeded sample of users, and R-paper labelled as such
    assert run.evaluate("test", users=10)["users"] == 10
    assert run.evaluate("test", paper=True)["protocol"] == "R-paper"


def test_recommend_for_a_user_unseen_sorted_with_reasons(run, ds):
    u = 3
    recs = run.recommend(user=int(ds.user_ids[u]), k=5)
    assert isinstance(recs, bstrec.Recommendations) and len(recs) == 5
    assert all(isinstance(p, bstrec.Recommendation) for p in recs)
    seen = _seen(ds, u)
    assert not seen & {p.movie_id for p in recs}
    scores = [p.score for p in recs]
    assert scores == sorted(scores, reverse=True)
    assert all(p.because and {b.movie_id for b in p.because} <= seen for p in recs)
    assert recs.user_id == int(ds.user_ids[u])
    assert recs.history[0].rating is not None  # a known user's watches, newest first
    # the command prints the same records
    r = CliRunner().invoke(
        app, ["recommend", str(run.path), "--user", str(ds.user_ids[u]), "-k", "5", "--json"]
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.output) == json.loads(json.dumps(recs.to_dict()))


def test_recommendations_as_a_table(run, ds):
    pd = pytest.importorskip("pandas", reason="to_pandas needs pandas (the dev extra)")
    recs = run.recommend(user=int(ds.user_ids[0]), k=4)
    df = recs.to_pandas()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["rank", "movie_id", "title", "year", "genres", "score", "because"]
    assert df["rank"].tolist() == [1, 2, 3, 4]
    assert df["title"].tolist() == [p.title for p in recs]
    assert df["because"].iloc[0] == "; ".join(b.title for b in recs[0].because)


def test_history_recommendations_and_explanations_agree(run, ds):
    hist = [int(x) for x in ds.item_ids[:4]]
    recs = run.recommend(history=hist, k=6, user_features={"gender": "F"})
    assert len(recs) == 6 and not set(hist) & {p.movie_id for p in recs}
    assert recs.user_id is None and [w.movie_id for w in recs.history] == hist[::-1]
    for rank, pick in enumerate(recs[:3], 1):
        ex = run.explain(history=hist, movie=pick.movie_id, user_features={"gender": "F"})
        # the same batch and the same scorer as recommend: the same score and rank
        assert ex.score == pytest.approx(pick.score, abs=1e-4)
        assert ex.rank == rank and ex.candidates == ds.n_items - len(hist)
        assert sorted(c.movie_id for c in ex.contributions) == sorted(hist)
        assert sum(c.weight for c in ex.contributions) <= 1 + 1e-6
        top = [c.movie_id for c in ex.contributions[: len(pick.because)]]
        assert top == [b.movie_id for b in pick.because]


def test_explain_for_a_user(run, ds):
    u = 5
    raw = int(ds.user_ids[u])
    top = run.recommend(user=raw, k=1)[0]
    ex = run.explain(user=raw, movie=top.movie_id)
    assert ex.rank == 1 and ex.user_id == raw and ex.task == "ranking"
    assert ex.score == pytest.approx(top.score, abs=1e-4)
    assert "co-occurrence" in ex.method  # the default BST has the wide part
    assert len(ex.contributions) == 5
    weights = [c.weight for c in ex.contributions]
    assert weights == sorted(weights, reverse=True) and all(w >= 0 for w in weights)
    assert {c.watches_ago for c in ex.contributions} <= set(range(1, 6))
    # a movie the user watched is never recommended: no rank
    watched = int(ds.item_ids[ds.item[ds.user_offsets[u]]])
    assert run.explain(user=raw, movie=watched).rank is None
    assert json.loads(json.dumps(ex.to_dict()))["movie_id"] == top.movie_id


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda r: r.recommend(), "exactly one of user= or history="),
        (lambda r: r.recommend(user=1, history=[10]), "exactly one of"),
        (lambda r: r.recommend(user=1, k=0), "k must be a whole number >= 1"),
        (lambda r: r.recommend(history="10,11"), "not a string"),
        (lambda r: r.recommend(history=[]), "at least one movie id"),
        (lambda r: r.recommend(user=1, user_features={"gender": "F"}), "go with a history"),
        (lambda r: r.evaluate("train"), "split must be 'val' or 'test'"),
        (lambda r: r.evaluate("val", users=-1), "users must be"),
    ],
)
def test_bad_calls_raise_argument_errors(run, call, match):
    with pytest.raises(ArgumentError, match=match):
        call(run)


def test_unknown_ids_and_folders_raise_data_errors(run, tmp_path):
    with pytest.raises(DataError, match="unknown user id: 999999"):
        run.recommend(user=999999)
    with pytest.raises(DataError, match="unknown movie ids: 7777, 8888"):
        run.recommend(history=[10, 7777, 8888])
    with pytest.raises(DataError, match="unknown movie id: 7777"):
        run.explain(user=1, movie=7777)
    with pytest.raises(DataError, match="not a run folder"):
        bstrec.load_run(tmp_path)


def test_fit_config_precedence_and_bad_keys(ds, tmp_path):
    cfg = RunConfig()
    cfg.model.name = "popularity"
    run = bstrec.fit(ds, out=tmp_path / "pop", config=cfg, log=None, train__seed=7)
    assert run.config.train.seed == 7 and cfg.train.seed == 0  # the caller's is untouched
    assert run.model_name == "popularity"
    # a baseline has no attention: an explanation with a score and rank, no weights
    ex = run.explain(user=1, movie=int(ds.item_ids[-1]))
    assert ex.method == "" and ex.contributions == () and math.isfinite(ex.score)
    yaml_cfg = tmp_path / "c.yaml"
    yaml_cfg.write_text("model:\n  name: cooccurrence\n")
    for bad, match in [
        ({"epochs": 1}, "section__name"),
        ({"model__dim": "wide"}, "'model.dim'"),
        ({"train__nope": 1}, "unknown field"),
        ({"model": "nonsense"}, "unknown model 'nonsense'; choose from bst"),
        ({"task": "clicks"}, "task must be ranking or rating"),
        ({"config": tmp_path / "missing.yaml"}, "no such file"),
    ]:
        with pytest.raises(ArgumentError, match=match):
            bstrec.fit(ds, out=tmp_path / "never", log=None, **bad)
    assert not (tmp_path / "never").exists()
    with pytest.raises(ArgumentError, match="resume=True"):
        bstrec.fit(ds, resume=True)
    from bstrec.api import build_config

    assert build_config(yaml_cfg, overrides={"train.lr": 1}).train.lr == 1.0
    assert build_config(yaml_cfg).model.name == "cooccurrence"
    assert build_config({"model": {"dim": 8}}, model="sasrec").model.dim == 8


def test_describe_is_public(ds):
    d = bstrec.describe(ds)
    assert d["users"] == ds.n_users and d["movies"] == ds.n_items


def test_fit_without_out_trains_into_a_temporary_folder(ds, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # not the real /tmp
    run = bstrec.fit(ds, model="popularity", log=None)
    assert run.path.parent == tmp_path and run.path.name.startswith("bstrec-run-")
    assert (run.path / "model.safetensors").is_file()
    assert run.recommend(user=1, k=3)


def test_recommend_can_retrieve_and_says_so_when_asked_wrongly(run, ds):
    hist = [int(x) for x in ds.item_ids[:4]]
    full = run.recommend(history=hist, k=5, candidates=0)
    # retrieving every movie leaves the head's ranking as it is; 3 candidates still
    # rank k (the stage retrieves at least k)
    assert run.recommend(history=hist, k=5, candidates=ds.n_items).to_dict() == full.to_dict()
    assert len(run.recommend(history=hist, k=5, candidates=3)) == 5
    with pytest.raises(ArgumentError, match="candidates must be a whole number >= 0"):
        run.recommend(history=hist, candidates=-1)
    # one Recommender per settings, built once: not rebuilt on every call
    assert run.recommender(candidates=3) is run.recommender(candidates=3)
    assert run.recommender(candidates=3) is not run.recommender()
    assert run.recommender(candidates=3).candidates == 3


def test_a_rating_model_reads_a_typed_history_s_ratings(ds, tmp_path):
    rating = bstrec.fit(
        ds,
        out=tmp_path / "rating",
        log=None,
        progress=False,
        **{**TINY, "model__task": "rating", "model__rating_factors": 4},
    )
    hist = [int(x) for x in ds.item_ids[:4]]
    plain_picks = rating.recommend(history=hist, k=5)
    loved = rating.recommend(history=hist, k=5, ratings=[5, 5, None, 4.5])
    hated = rating.recommend(history=hist, k=5, ratings=[1, 1, None, 0.5])
    # the fold-in reads the stars: a taste for high ratings lifts every prediction
    assert loved[0].score > plain_picks[0].score > hated[0].score
    ex = rating.explain(history=hist, movie=loved[0].movie_id, ratings=[5, 5, None, 4.5])
    assert ex.score == pytest.approx(loved[0].score, abs=1e-4)
    user = ds.user_ids[0].item()
    with pytest.raises(bstrec.ArgumentError, match="ratings go with a history"):
        rating.recommend(user=user, ratings=[5])
    for bad, match in (
        ([5], "1 given for 4 movies"),
        ([5, 5, 5, 6], "6"),
        ([5, 5, 5, True], "True"),
    ):
        with pytest.raises(bstrec.DataError, match=match):
            rating.recommend(history=hist, ratings=bad)
