"""The HTTP API on a tiny trained run: answers, raw ids, and every kind of bad input."""

from __future__ import annotations

import json
import re

import pytest

KNOWN_USER = 3  # tiny_dataset raw user ids are 1..n_users
MOVIES = list(range(10, 50))  # rated movies; 50..52 are listed but never rated


def as_json(recs) -> dict:
    """The body the HTTP API answers with for the library's ``Recommendations``: their
    ``to_dict()`` (whose tuples JSON writes as lists)."""
    return json.loads(json.dumps(recs.to_dict()))


def test_health_names_model_and_sizes(client):
    r = client.get("/health")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["model"] == "bst" and h["task"] == "ranking"
    assert h["data_set"] == "tiny" and h["n_users"] == 40 and h["n_movies"] == 40
    assert h["user_features"] == {"age": ["0", "1", "2"], "gender": ["F", "M"]}
    assert h["candidates"] == 0  # 40 movies: the head ranks them all
    # whole-catalogue queries are ranked one at a time: nothing stacked, nothing checked
    assert h["stacking"] == {
        "max_queries": 1,
        "shapes_checked": 0,
        "shapes_exact": 0,
        "stacked_answers": 0,
        "turns": 0,
        "requests_served": 0,
    }


def test_health_says_how_many_candidates_a_retrieving_server_ranks(tiny_run):
    from fastapi.testclient import TestClient

    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run
    from bstrec.serve.app import create_app

    with TestClient(create_app(Recommender(load_run(tiny_run), candidates=7))) as c:
        assert c.get("/health").json()["candidates"] == 7
        r = c.post("/recommendations", json={"history": [20, 21, 22], "k": 9})
        assert r.status_code == 200, r.text
        assert len(r.json()["picks"]) == 9  # the stage retrieves at least k


def test_page_and_static_files_are_served(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    assert "http" not in r.text.replace("http-equiv", ""), "the page must not load from a CDN"


def test_openapi_documents_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for p in (
        "/health",
        "/movies",
        "/movies/{movie_id}",
        "/users/{user_id}",
        "/users/{user_id}/recommendations",
        "/recommendations",
    ):
        assert p in paths, p
    schemas = spec["components"]["schemas"]
    # the records of bstrec.results, the Python API's own
    assert {
        "HistoryRequest",
        "RecommendationsOut",
        "Recommendation",
        "Reason",
        "Watched",
        "ErrorOut",
    } <= set(schemas)


@pytest.mark.parametrize(
    "q, expected",
    [
        ("movie 12", 12),
        ("MOVIE 12", 12),
        ("móvíe 12", 12),
        ("  movie   12 ", 12),
        ("(2002)", 12),
    ],
)
def test_search_is_case_and_accent_insensitive(client, q, expected):
    r = client.get("/movies", params={"q": q, "limit": 5})
    assert r.status_code == 200
    ids = [m["movie_id"] for m in r.json()["movies"]]
    assert expected in ids, (q, ids)


def test_search_limit_and_empty_query(client):
    r = client.get("/movies", params={"limit": 3}).json()
    assert len(r["movies"]) == 3 and r["total"] == 40
    counts = [m["n_ratings"] for m in r["movies"]]
    assert counts == sorted(counts, reverse=True), "empty query lists the most rated first"
    assert client.get("/movies", params={"q": "no such film"}).json()["movies"] == []


def test_fold_handles_real_titles():
    from bstrec.serve.app import fold

    assert (
        fold("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)")
        == "amelie fabuleux destin d amelie poulain le 2001"
    )
    assert fold("Matrix, The (1999)") == "matrix the 1999"


def test_movie_by_raw_id(client):
    m = client.get("/movies/12").json()
    assert m["movie_id"] == 12 and m["title"] == "Movie 12 (2002)" and m["year"] == 2002
    assert isinstance(m["genres"], list) and m["n_ratings"] > 0


def test_known_user_recommendations(client, recommender):
    r = client.get(f"/users/{KNOWN_USER}/recommendations", params={"k": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["user_id"] == KNOWN_USER and len(body["picks"]) == 7
    watched = {
        w["movie_id"] for w in client.get(f"/users/{KNOWN_USER}?limit=200").json()["history"]
    }
    picks = [p["movie_id"] for p in body["picks"]]
    assert not watched & set(picks), "recommends only unwatched movies"
    assert all(p in MOVIES for p in picks), "raw ids, not indexes"
    scores = [p["score"] for p in body["picks"]]
    assert scores == sorted(scores, reverse=True)
    assert any(p["because"] for p in body["picks"])
    for p in body["picks"]:
        assert {b["movie_id"] for b in p["because"]} <= watched
    # the same answer as the library gives
    assert body == as_json(recommender.for_user(KNOWN_USER, 7))


def test_recommendations_say_how_long_the_model_took(client):
    import re

    for r in (
        client.get(f"/users/{KNOWN_USER}/recommendations"),
        client.post("/recommendations", json={"history": [10, 11]}),
    ):
        timing = r.headers["server-timing"]
        assert re.fullmatch(r"queue;dur=[0-9.]+, model;dur=[0-9.]+", timing), timing


def test_known_user_details(client):
    u = client.get(f"/users/{KNOWN_USER}", params={"limit": 4}).json()
    assert u["user_id"] == KNOWN_USER and u["n_ratings"] == 12
    assert set(u["features"]) == {"age", "gender"} and len(u["history"]) == 4
    times = [w["time"] for w in u["history"]]
    assert times == sorted(times, reverse=True), "newest first"


def test_history_recommendations(client, recommender):
    req = {"history": [20, 21, 22], "k": 5, "user": {"gender": "F", "age": 1}}
    r = client.post("/recommendations", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] is None and len(body["picks"]) == 5
    assert [w["movie_id"] for w in body["history"]] == [22, 21, 20]
    assert not {20, 21, 22} & {p["movie_id"] for p in body["picks"]}
    assert body == as_json(recommender.for_history([20, 21, 22], 5, {"gender": "F", "age": "1"}))
    # ids as strings name the same movies
    same = client.post("/recommendations", json={**req, "history": ["20", "21", "22"]}).json()
    assert same["picks"] == body["picks"]


def test_history_ratings_reach_the_model(client, recommender):
    req = {"history": [20, 21, 22], "k": 5, "ratings": [5, None, 1.5]}
    r = client.post("/recommendations", json=req)
    assert r.status_code == 200, r.text
    want = recommender.for_history([20, 21, 22], 5, ratings=[5, None, 1.5])
    assert r.json() == as_json(want)
    q = recommender.history_query([20, 21, 22], 5, ratings=[5, None, 1.5])
    assert q.batch.hist_rating[0, -3:].tolist() == [10, 0, 3]


def test_ratings_of_the_wrong_length_say_so(client):
    body = _error(client.post("/recommendations", json={"history": [10, 11], "ratings": [4]}), 422)
    assert body["detail"] == "ratings: 1 given for 2 movies; give one per movie (null: not rated)"


def test_history_of_the_whole_catalogue_leaves_nothing(client):
    r = client.post("/recommendations", json={"history": MOVIES, "k": 10})
    assert r.status_code == 200 and r.json()["picks"] == []


def test_default_k_is_10(client):
    assert len(client.post("/recommendations", json={"history": [10]}).json()["picks"]) == 10
    assert len(client.get(f"/users/{KNOWN_USER}/recommendations").json()["picks"]) == 10


# ------------------------------------------------------------------ bad input
def _error(r, status, field=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in r.text
    if field is not None:
        assert body["field"] == field, body
    return body


def test_unknown_user_is_404_naming_it(client):
    for path, ids in (
        ("/users/99999/recommendations", [99999]),
        ("/users/99999", [99999]),
        ("/users/abc/recommendations", ["abc"]),
    ):
        body = _error(client.get(path), 404, "user_id")
        assert path.split("/")[2] in body["detail"] and body["ids"] == ids


def test_unknown_movie_in_path_is_404(client):
    body = _error(client.get("/movies/4242"), 404, "movie_id")
    assert "4242" in body["detail"] and body["ids"] == [4242]


def test_unknown_movies_in_history_are_422_naming_them(client):
    body = _error(
        client.post("/recommendations", json={"history": [10, 777, 11, "zz", 777]}), 422, "history"
    )
    assert body["ids"] == [777, "zz"]
    assert "777" in body["detail"] and "zz" in body["detail"]
    # ids that are numbers come back as numbers, however they were sent
    body = _error(client.post("/recommendations", json={"history": ["777", 778]}), 422)
    assert body["ids"] == [777, 778]


def test_listed_but_unrated_movie_says_so(client):
    body = _error(client.post("/recommendations", json={"history": [50]}), 422, "history")
    assert "never rated" in body["detail"]


@pytest.mark.parametrize("k", [0, -1, 101, 10**9, "ten", 2.5, ""])
def test_k_out_of_range_or_not_an_int_is_422(client, k):
    _error(client.get(f"/users/{KNOWN_USER}/recommendations", params={"k": k}), 422, "k")
    _error(client.post("/recommendations", json={"history": [10], "k": k}), 422, "k")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"history": []}, "history"),
        ({"history": list(range(10, 50)) * 6}, "history"),  # 240 > 200
        ({"history": 10}, "history"),
        ({"history": [10, None]}, "history.1"),
        ({"history": [10, 1.5]}, "history.1"),
        ({"history": [10, [11]]}, "history.1"),
        ({}, "history"),
        ({"history": [10], "extra": 1}, "extra"),
        ({"history": [10], "user": "F"}, "user"),
        ({"history": [10], "user": {"gender": "X"}}, "user.gender"),
        ({"history": [10], "user": {"age": 7}}, "user.age"),
        ({"history": [10], "user": {"occupation": 3}}, "user.occupation"),  # not in this model
        ({"history": [10], "user": {"shoe_size": 44}}, "user.shoe_size"),
        ({"history": [10], "user": {"gender": 1.5}}, "user.gender"),
        ({"history": [10], "user": {"zip": {"a": 1}}}, "user.zip"),
        ({"history": [10, 11], "ratings": [4]}, "ratings"),
        ({"history": [10, 11], "ratings": [4, 6]}, "ratings.1"),
        ({"history": [10, 11], "ratings": [0, 4]}, "ratings.0"),
        ({"history": [10, 11], "ratings": [4, "x"]}, "ratings.1"),
        ([10, 11], "body"),
        ("history", "body"),
        (None, "body"),
    ],
)
def test_bad_history_request_is_422_with_the_field(client, body, field):
    _error(client.post("/recommendations", json=body), 422, field)


@pytest.mark.parametrize(
    "raw", [b"{bad json", b"", b'{"history": [10,]}', b"\xff\xfe", b"\xa3\n]<0\xff\xf0"]
)
def test_malformed_json_is_422(client, raw):
    r = client.post("/recommendations", content=raw, headers={"content-type": "application/json"})
    _error(r, 422, "body")


@pytest.mark.parametrize(
    "params, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"q": "x" * 201}, "q"),
    ],
)
def test_bad_search_is_422(client, params, field):
    _error(client.get("/movies", params=params), 422, field)


def test_unknown_route_and_method_are_json(client):
    _error(client.get("/nope"), 404)
    _error(client.delete("/recommendations"), 405)


def test_an_internal_error_is_a_generic_500(recommender, monkeypatch, caplog):
    from fastapi.testclient import TestClient

    from bstrec.serve.app import create_app

    app = create_app(recommender)
    svc = app.state.service

    def boom(*_a, **_k):
        raise RuntimeError("secret internals /home/x/model.py line 1")

    # the model fails on its own thread; the request that waits for it answers 500
    monkeypatch.setattr(svc.rec, "rank", boom)
    with TestClient(app, raise_server_exceptions=False) as c:
        for r in (
            c.post("/recommendations", json={"history": [10, 11]}),
            c.get(f"/users/{KNOWN_USER}/recommendations", params={"now": "2030-01-01"}),
        ):
            assert r.status_code == 500
            assert r.json() == {"detail": "internal server error", "field": None}
            assert "secret" not in r.text
    assert "secret internals" in caplog.text, "the cause is logged on the server"


def test_serve_command_is_registered_and_binds_loopback_by_default():
    from typer.testing import CliRunner

    from bstrec.cli import app
    from bstrec.commands.serve import _is_loopback

    out = CliRunner().invoke(app, ["serve", "--help"])
    assert out.exit_code == 0 and "127.0.0.1" in out.output
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("localhost")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("example.org")


def test_serve_command_defaults_match_the_library():
    """`--keep-top` repeats recommend.KEEP_TOP as a literal (importing it would load
    torch for every command); the two must not drift apart."""
    import inspect

    from bstrec.commands.serve import serve
    from bstrec.recommend import KEEP_TOP
    from bstrec.serve.worker import WorkerSettings

    params = inspect.signature(serve).parameters
    assert params["keep_top"].default.default == KEEP_TOP
    assert params["model_threads"].default.default == WorkerSettings().threads


def test_serve_command_fails_cleanly_without_a_run(tmp_path):
    from typer.testing import CliRunner

    from bstrec.cli import app

    out = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert out.exit_code == 1 and "not a run folder" in out.output


# ------------------------------------------------------------------ issue 11 and 9
def test_health_lists_features_by_name_and_the_precompute(client):
    h = client.get("/health").json()
    assert h["user_feature_choices"] == [
        {
            "name": "age",
            "label": "Age",
            "choices": [{"value": v, "label": v} for v in ("0", "1", "2")],
        },
        {
            "name": "gender",
            "label": "Gender",
            "choices": [{"value": "F", "label": "female"}, {"value": "M", "label": "male"}],
        },
    ]
    p = h["precompute"]  # this app was made without the background precompute
    assert p["enabled"] is False and p["complete"] is False
    assert p["users_total"] == 40 and p["keep_top"] == 50


def test_movielens_features_read_as_names_in_their_order():
    from bstrec.serve.labels import choices, feature_label

    ages = ["18-24", "25-34", "35-44", "45-49", "50-55", "56+", "Under 18"]  # as stored
    assert [c["value"] for c in choices("age", ages, "ml-1m-u2999")] == [
        "Under 18",
        "18-24",
        "25-34",
        "35-44",
        "45-49",
        "50-55",
        "56+",
    ]
    codes = sorted(str(i) for i in range(21))  # '0', '1', '10', ... as text
    occ = choices("occupation", codes, "ml-1m-u2999")
    assert [c["value"] for c in occ] == [str(i) for i in range(21)]
    assert occ[0]["label"] == "other or not specified" and occ[12]["label"] == "programmer"
    assert occ[20]["label"] == "writer"
    # ML-100K names its occupations itself; codes of other data sets stay as they are
    assert choices("occupation", ["writer", "artist"], "ml-100k")[0]["label"] == "artist"
    assert choices("occupation", ["3"], "tiny") == [{"value": "3", "label": "3"}]
    assert feature_label("zip1") == "ZIP code starts with"


def test_a_request_may_give_its_own_time(client, recommender):
    base = {"history": [20, 21, 22], "k": 5}
    default = client.post("/recommendations", json=base).json()
    same = client.post("/recommendations", json={**base, "now": recommender.last_time}).json()
    assert same == default, "the default time is the data set's last rating"
    later = client.post("/recommendations", json={**base, "now": "2031-05-01T12:00:00Z"})
    assert later.status_code == 200
    assert later.json() == as_json(recommender.for_history([20, 21, 22], 5, now=1_935_489_600))
    r = client.get(f"/users/{KNOWN_USER}/recommendations", params={"now": "2031-05-01"})
    assert r.status_code == 200 and r.headers["server-timing"] != "queue;dur=0.00, model;dur=0.00"
    _error(
        client.get(f"/users/{KNOWN_USER}/recommendations", params={"now": "1970-01-02"}), 422, "now"
    )
    _error(client.get(f"/users/{KNOWN_USER}/recommendations", params={"now": "soon"}), 422, "now")
    _error(client.post("/recommendations", json={**base, "now": "soon"}), 422, "now")


def test_more_picks_than_kept_are_computed_on_demand(client, recommender):
    kept = client.get("/users/7/recommendations", params={"k": 50})
    deeper = client.get("/users/7/recommendations", params={"k": 60})
    assert kept.status_code == deeper.status_code == 200
    assert deeper.headers["server-timing"] != "queue;dur=0.00, model;dur=0.00"
    a, b = kept.json()["picks"], deeper.json()["picks"]
    n = min(len(a), len(b))  # the tiny catalogue runs out first
    assert [p["movie_id"] for p in a[:n]] == [p["movie_id"] for p in b[:n]]
    again = client.get("/users/7/recommendations", params={"k": 50})
    assert again.headers["server-timing"] == "queue;dur=0.00, model;dur=0.00", "kept"


def test_server_answers_while_known_users_are_ranked_in_the_background(tiny_run, recommender):
    """Instant start: /health is answered while the precompute is busy, and a request
    for a user it has not reached goes before it and is computed on demand, with the
    same answer. One model thread, held inside the precompute's first user."""
    import threading
    import time

    from fastapi.testclient import TestClient

    from bstrec.recommend import STACK_MAX, Recommender
    from bstrec.run_dir import load_run
    from bstrec.serve.app import create_app
    from bstrec.serve.worker import WorkerSettings

    rec = Recommender(load_run(tiny_run))
    gate, held_at_0 = threading.Event(), threading.Event()
    kept_when_asked: list[int] = []
    rank = rec.rank

    def held(queries):
        if queries[0].user == 0 and not gate.is_set():
            held_at_0.set()
            gate.wait(10)
        if queries[0].user == 39:
            kept_when_asked.append(rec.n_kept)
        return rank(queries)

    rec.rank = held
    lines: list[str] = []
    app = create_app(rec, WorkerSettings(threads=1, precompute=True), say=lines.append)
    workers = app.state.service.workers
    with TestClient(app) as c:
        assert held_at_0.wait(10)
        p = c.get("/health").json()["precompute"]  # the model thread is busy meanwhile
        assert p["enabled"] and not p["complete"] and p["users_done"] == 0
        answer = {}
        asking = threading.Thread(
            target=lambda: answer.update(r=c.get("/users/40/recommendations", params={"k": 7}))
        )  # index 39
        asking.start()
        for _ in range(200):
            if workers.requests.qsize():
                break
            time.sleep(0.01)
        gate.set()
        asking.join(10)
        assert answer["r"].status_code == 200
        assert answer["r"].json() == as_json(recommender.for_user(40, 7))
        # the precompute ranks a stack of users a turn: the first stack was kept, and
        # the request went before the second
        assert kept_when_asked == [STACK_MAX], "asked before the precompute's second stack"
        for _ in range(200):
            if c.get("/health").json()["precompute"]["complete"]:
                break
            time.sleep(0.05)
        p = c.get("/health").json()["precompute"]
    assert p["complete"] and p["users_done"] == 40 and rec.n_kept == 40
    assert lines[0].startswith("precompute: ranking 40 known users in the background")
    done = [re.match(r"precompute: (\d+)/40 known users \((\d+)%\) in ", line) for line in lines]
    done = [(int(m[1]), int(m[2])) for m in done if m]
    assert len(done) >= 3 and done == sorted(set(done)), lines  # progress as it goes
    assert all(pct == round(100 * n / 40) for n, pct in done) and done[-1][0] <= 40
    assert lines[-1].startswith("precompute complete: 40 known users, top 50 each")
