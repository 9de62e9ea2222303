"""The model in a process of its own: the same answers as in one process, kept answers
and progress that reach the app, and errors (a bad query, a dead child) that reach
every waiting request instead of leaving it waiting."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from bstrec.recommend import Recommender
from bstrec.run_dir import load_run
from bstrec.serve.model_process import ModelProcess
from bstrec.serve.worker import WorkerSettings
from tests.serve.conftest import running


def _history_queries(rec, n, seed=0):
    rng = np.random.default_rng(seed)
    ds = rec.ds
    out = []
    for _ in range(n):
        hist = rng.choice(ds.n_items, size=int(rng.integers(1, 6)), replace=False)
        out.append(rec.history_query([int(ds.item_ids[i]) for i in hist], 4))
    return out


def _plain(ranked):
    return (
        ranked.items.tolist(),
        ranked.scores.tolist(),
        ranked.reason_items.tolist(),
        ranked.reason_weights.tolist(),
    )


@pytest.fixture
def quiet():
    return lambda _line: None


# one model thread: the child's only thread runs the turns; two: a reader feeds them
@pytest.mark.parametrize("candidates, threads", [(0, 1), (6, 1), (6, 2)])
def test_answers_from_the_model_process_equal_those_ranked_here(
    bst_run, quiet, candidates, threads
):
    out, _ = bst_run
    here = Recommender(load_run(out), candidates=candidates, keep_top=4)
    served = Recommender(load_run(out), candidates=candidates, keep_top=4, trace=True)
    qs = _history_queries(here, 24) + here.user_queries([3, 5, 7])
    want = [_plain(r) for q in qs for r in here.rank([q])]
    proc = ModelProcess(served, WorkerSettings(threads=threads), say=quiet).start()
    try:
        assert proc.pid is not None and proc.pid != os.getpid()
        jobs = [proc.submit(q) for q in qs]  # all at once: they stack in the child
        got = [_plain(job.future.result(timeout=60)) for job in jobs]
        stats = proc.stats()
    finally:
        proc.stop()
    assert got == want
    assert stats["requests_served"] == len(qs)
    assert proc.max_in_flight > 1  # the default budget holds many queries
    if candidates:
        assert stats["turns"] < len(qs), "queries that queued up shared a turn"
    # the known users' answers were kept, and sent back: the app answers them itself
    for u in (3, 5, 7):
        assert _plain(served.cached(u, 4)) == _plain(here.rank(here.user_queries([u]))[0])


def test_the_background_precompute_keeps_every_known_user_here(bst_run):
    out, ds = bst_run
    served = Recommender(load_run(out), candidates=6, keep_top=4, trace=True)
    said = []
    proc = ModelProcess(served, WorkerSettings(precompute=True), say=said.append).start()
    try:
        for _ in range(600):
            if proc.progress.complete:
                break
            time.sleep(0.05)
        p = proc.progress
    finally:
        proc.stop()
    assert p.enabled and p.complete and p.done == p.total == ds.n_users
    assert served.n_kept == ds.n_users
    assert any(line.startswith("precompute complete") for line in said)
    here = Recommender(load_run(out), candidates=6, keep_top=4)
    for u in (0, ds.n_users // 2, ds.n_users - 1):
        assert _plain(served.cached(u, 1)) == _plain(here.rank(here.user_queries([u]))[0])


def test_a_bad_query_fails_alone(bst_run, quiet):
    out, _ = bst_run
    served = Recommender(load_run(out), candidates=6, keep_top=4)
    good = _history_queries(served, 2)
    bad = good[0].__class__(good[0].batch, np.array([10**9]), 4)  # a seen index past the catalogue
    proc = ModelProcess(served, WorkerSettings(), say=quiet).start()
    try:
        jobs = [proc.submit(q) for q in (good[0], bad, good[1])]
        assert jobs[0].future.result(timeout=60).items.shape == (4,)
        with pytest.raises(IndexError):
            jobs[1].future.result(timeout=60)
        assert jobs[2].future.result(timeout=60).items.shape == (4,)
    finally:
        proc.stop()


def test_when_the_model_process_dies_waiting_and_later_requests_fail(bst_run, quiet, caplog):
    out, _ = bst_run
    served = Recommender(load_run(out), candidates=6, keep_top=4)
    proc = ModelProcess(served, WorkerSettings(), say=quiet).start()
    try:
        os.kill(proc.pid, signal.SIGSTOP)  # a query now waits in the pipe, unanswered
        waiting = proc.submit(_history_queries(served, 1)[0])
        os.kill(proc.pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match="model process exited"):
            waiting.future.result(timeout=30)
        later = proc.submit(_history_queries(served, 1)[0])
        with pytest.raises(RuntimeError, match="model process exited"):
            later.future.result(timeout=5)
    finally:
        proc.stop()
    assert "waiting requests fail" in caplog.text


def test_stop_ends_the_model_process(bst_run, quiet):
    out, _ = bst_run
    proc = ModelProcess(Recommender(load_run(out)), WorkerSettings(), say=quiet).start()
    pid = proc.pid
    proc.stop()
    assert proc.pid is None
    with pytest.raises(ProcessLookupError):  # reaped: no such process
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


def test_the_app_with_its_model_process_answers_as_one_process_does(tiny_run, quiet):
    from bstrec.serve.app import create_app

    ds = load_run(tiny_run).dataset
    users = [f"/users/{u}/recommendations?k=5" for u in ds.user_ids[::3].tolist()]
    movies = ds.item_ids.tolist()
    hists = [movies[:3], movies[7:8], [movies[i] for i in (5, 9, 11, 2)]]
    reqs = [("GET", u, None) for u in users] + [
        ("POST", "/recommendations", {"history": h, "k": 4}) for h in hists
    ]

    def ask(base):
        def one(req):
            method, path, body = req
            r = httpx.request(method, base + path, json=body, timeout=60)
            return r.status_code, r.json()

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, reqs * 3))

    app = create_app(Recommender(load_run(tiny_run), trace=True), WorkerSettings(), say=quiet)
    with running(app) as base:
        want = ask(base)
    settings = WorkerSettings(precompute=True, process=True)
    app = create_app(Recommender(load_run(tiny_run), trace=True), settings, say=quiet)
    assert isinstance(app.state.service.workers, ModelProcess)
    with running(app) as base:
        got = ask(base)
        health = httpx.get(base + "/health").json()
    assert [s for s, _ in want] == [200] * len(want)
    assert got == want
    assert health["stacking"]["requests_served"] > 0
    assert health["precompute"]["enabled"]


def test_once_the_model_process_is_gone_health_says_so(tiny_run, quiet):
    from bstrec.serve.app import create_app

    settings = WorkerSettings(process=True)
    app = create_app(Recommender(load_run(tiny_run)), settings, say=quiet)
    workers = app.state.service.workers
    with running(app) as base:
        assert httpx.get(base + "/health").status_code == 200
        os.kill(workers.pid, signal.SIGKILL)
        for _ in range(100):
            if workers.failure is not None:
                break
            time.sleep(0.05)
        health = httpx.get(base + "/health")
        user = httpx.get(base + "/users/1/recommendations?now=2030-01-01T00:00:00Z")
    assert health.status_code == 503
    assert "model process exited" in health.json()["detail"]
    assert user.status_code == 500  # a kept answer could still come, a new one cannot


def test_where_there_is_no_model_process_the_server_runs_the_model_itself(
    tiny_run, quiet, monkeypatch, caplog
):
    from bstrec.serve import model_process
    from bstrec.serve.app import create_app
    from bstrec.serve.worker import ModelWorkers

    monkeypatch.setattr(model_process, "available", lambda: False)  # not Linux
    app = create_app(Recommender(load_run(tiny_run)), WorkerSettings(process=True), say=quiet)
    workers = app.state.service.workers
    try:
        assert type(workers) is ModelWorkers
        assert "Linux-only" in caplog.text
    finally:
        workers.stop()


def test_ctrl_c_is_the_server_s_to_handle_not_the_model_process_s(bst_run, quiet):
    """Ctrl+C reaches the whole process group; the server shuts down and stops the model
    process, which must not die first with a traceback of its own."""
    out, _ = bst_run
    served = Recommender(load_run(out), candidates=6, keep_top=4)
    proc = ModelProcess(served, WorkerSettings(), say=quiet).start()
    try:
        os.kill(proc.pid, signal.SIGINT)
        job = proc.submit(_history_queries(served, 1)[0])
        assert job.future.result(timeout=60).items.shape == (4,)
        assert proc.failure is None
    finally:
        proc.stop()


def test_queries_past_the_in_flight_budget_wait_here_and_go_as_answers_come(
    bst_run, quiet, monkeypatch
):
    """A send into a full pipe would block the event loop, the reader of the answers:
    the server keeps at most IN_FLIGHT_BYTES of unanswered queries in the pipe."""
    from bstrec.serve import model_process

    monkeypatch.setattr(model_process, "IN_FLIGHT_BYTES", 1)  # one query at a time
    out, _ = bst_run
    here = Recommender(load_run(out), candidates=6, keep_top=4)
    served = Recommender(load_run(out), candidates=6, keep_top=4)
    qs = _history_queries(here, 12, seed=5)
    proc = ModelProcess(served, WorkerSettings(), say=quiet).start()
    try:
        jobs = [proc.submit(q) for q in qs]
        got = [_plain(job.future.result(timeout=60)) for job in jobs]
        stats = proc.stats()
    finally:
        proc.stop()
    assert got == [_plain(here.rank([q])[0]) for q in qs]
    assert proc.max_in_flight == 1
    assert stats["turns"] == len(qs), "the child saw them one at a time"
