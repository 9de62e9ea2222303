"""Many requests at once over a real socket: the same answers as one at a time, from
servers whose known users are being ranked in the background meanwhile (with
retrieve-then-rank, several requests share a forward pass), and never more model
calls at once than the server has model threads.

Every entry into the model (``score_all``, ``score``, ``explain``, and retrieval's
``retrieval_scores``) is counted, on the
history path, on the known-user path and in the precompute alike; each counted call
lingers a little, so that a path that skipped the model threads would overlap another.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.serve.conftest import running

ENTRIES = ("score_all", "score", "explain", "retrieval_scores")


def _requests():
    reqs = []
    for i in range(48):
        if i % 2:
            params = {"k": 1 + i % 12}
            if i % 8 == 3:
                params["k"] = 51 + i % 49  # deeper than keep_top: never kept, computed each time
            if i % 8 == 5:
                params["now"] = "2030-01-01T00:00:00Z"  # another time: never kept
            reqs.append(("GET", f"/users/{1 + i % 40}/recommendations", params, None))
        else:
            hist = [10 + (i + j) % 40 for j in range(1 + i % 7)]
            body = {"history": hist, "k": 5}
            if i % 6 == 0:
                body["now"] = 2_000_000_000
            reqs.append(("POST", "/recommendations", None, body))
    reqs.append(("GET", "/users/9999/recommendations", None, None))  # errors too
    reqs.append(("POST", "/recommendations", None, {"history": [1, 2]}))
    reqs.append(("GET", "/users/3/recommendations", {"now": "1970-01-02"}, None))
    return reqs


class Counter:
    """Counts model calls in flight on one model; the most at once, and the total."""

    def __init__(self, model, monkeypatch, linger_s: float = 0.002):
        self.inside = self.most = self.calls = 0
        self.guard = threading.Lock()
        for name in ENTRIES:
            monkeypatch.setattr(model, name, self.wrap(getattr(model, name), linger_s))

    def wrap(self, fn, linger_s):
        def counted(*args, **kwargs):
            with self.guard:
                self.inside += 1
                self.calls += 1
                self.most = max(self.most, self.inside)
            try:
                time.sleep(linger_s)
                return fn(*args, **kwargs)
            finally:
                with self.guard:
                    self.inside -= 1

        return counted


def _send_all(base: str, reqs: list, clients: int):
    with httpx.Client(base_url=base, timeout=60) as http:

        def send(req):
            method, path, params, body = req
            r = http.request(method, path, params=params, json=body)
            return r.status_code, r.json()

        if clients == 1:
            return [send(r) for r in reqs]
        with ThreadPoolExecutor(max_workers=clients) as pool:
            return list(pool.map(send, reqs))


def _fresh(tiny_run, monkeypatch, candidates=0, **settings):
    """A server of its own: a new Recommender (nothing kept yet), counted."""
    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run
    from bstrec.serve.app import create_app
    from bstrec.serve.worker import WorkerSettings

    # keep_top 20: picks to that depth leave every row of this 40-movie catalogue enough
    # unseen movies for the stacked pass (with fewer, a row is explained apart)
    rec = Recommender(load_run(tiny_run), candidates=candidates, keep_top=20, trace=True)
    counter = Counter(rec.model, monkeypatch)
    app = create_app(rec, WorkerSettings(**settings), say=lambda _line: None)
    return app, rec, counter


# candidates 6: retrieve-then-rank, what catalogues above 2,000 movies get by default
@pytest.mark.parametrize("threads, candidates", [(1, 0), (2, 0), (2, 6)])
def test_concurrent_answers_equal_sequential_ones(tiny_run, monkeypatch, threads, candidates):
    reqs = _requests()
    # one at a time, nothing precomputed: the reference answers
    app, _, counter = _fresh(tiny_run, monkeypatch, candidates)
    with running(app) as base:
        sequential = _send_all(base, reqs, clients=1)
    assert [s for s, _ in sequential].count(200) == 48
    assert [s for s, _ in sequential[-3:]] == [404, 422, 422]
    assert counter.most == 1

    # 8 clients at once, while every known user is ranked in the background
    app, rec, counter = _fresh(tiny_run, monkeypatch, candidates, threads=threads, precompute=True)
    workers = app.state.service.workers
    with running(app) as base:
        concurrent = _send_all(base, reqs, clients=8)
        for _ in range(200):  # let the precompute finish, then ask again from the cache
            if workers.progress.complete:
                break
            time.sleep(0.05)
        assert workers.progress.complete and rec.n_kept == 40
        again = _send_all(base, reqs, clients=8)
        stacking = httpx.get(base + "/health").json()["stacking"]

    assert concurrent == sequential
    assert again == sequential
    assert counter.most <= threads, "only the model threads call the model"
    assert counter.most == threads or threads == 1
    assert workers.max_waiting > 1, "requests did queue for the model at the same time"
    assert workers.largest_turn > 1, "a model thread took several of them in one turn"
    if candidates:
        # retrieve-then-rank stacks them into one forward pass: every shape was checked
        # once against one query at a time, and the exact ones answered from the stack
        assert rec.exact and (rec.stacked > 0) == any(rec.exact.values())
        # and /health says so
        assert stacking == {
            "max_queries": 8,
            "shapes_checked": len(rec.exact),
            "shapes_exact": sum(rec.exact.values()),
            "stacked_answers": rec.stacked,
            "turns": workers.turns,
            "requests_served": workers.served,
        }
    assert 0 < workers.turns < workers.served  # some turns served several requests
