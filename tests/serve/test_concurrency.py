"""Many requests at once over a real socket: the same answers as one at a time, and
never two forward passes through the model at the same moment."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx


def _requests():
    reqs = []
    for i in range(48):
        if i % 2:
            reqs.append(("GET", f"/users/{1 + i % 40}/recommendations", {"k": 1 + i % 12}, None))
        else:
            hist = [10 + (i + j) % 40 for j in range(1 + i % 7)]
            reqs.append(("POST", "/recommendations", None, {"history": hist, "k": 5}))
    reqs.append(("GET", "/users/9999/recommendations", None, None))  # errors too
    reqs.append(("POST", "/recommendations", None, {"history": [1, 2]}))
    return reqs


def test_concurrent_answers_equal_sequential_ones(live_server, recommender, monkeypatch):
    model = recommender.model
    inside, most, guard = 0, 0, threading.Lock()
    score_all = model.score_all

    def counting_score_all(batch):
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        try:
            return score_all(batch)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(model, "score_all", counting_score_all)
    reqs = _requests()
    with httpx.Client(base_url=live_server, timeout=30) as http:

        def send(req):
            method, path, params, body = req
            r = http.request(method, path, params=params, json=body)
            return r.status_code, r.json()

        sequential = [send(r) for r in reqs]
        with ThreadPoolExecutor(max_workers=8) as pool:
            concurrent = list(pool.map(send, reqs * 2))

    assert concurrent == sequential * 2
    assert [s for s, _ in sequential].count(200) == 48
    assert sequential[-2][0] == 404 and sequential[-1][0] == 422
    assert most == 1, "inference is serialized by the service's lock"
