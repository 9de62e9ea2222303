"""The model threads' turns, with a stand-in for the Recommender: what queued up is
ranked in one call, and one bad query does not fail the queries stacked with it."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from bstrec.recommend import STACK_MAX
from bstrec.serve.worker import ModelWorkers, WorkerSettings


class Stand:
    """Ranks string queries; a stack with "bad" in it fails, as does "bad" alone. The
    query "hold" keeps the model thread busy until ``go`` is set."""

    ds = SimpleNamespace(n_users=0)
    keep_top = 1

    def __init__(self):
        self.calls: list[list[str]] = []
        self.holding, self.go = threading.Event(), threading.Event()

    def rank(self, queries):
        if queries == ["hold"]:
            self.holding.set()
            self.go.wait(10)
            return ["held"]
        self.calls.append(list(queries))
        if "bad" in queries:
            raise ValueError("a bad query")
        return [f"answer to {q}" for q in queries]


def _answers(jobs):
    out = []
    for job in jobs:
        try:
            out.append(job.future.result(timeout=10))
        except ValueError as e:
            out.append(f"error: {e}")
    return out


def test_a_turn_takes_what_queued_up_and_one_bad_query_fails_alone():
    rec = Stand()
    workers = ModelWorkers(rec, WorkerSettings(), say=lambda _line: None).start()
    try:
        held = workers.submit("hold")
        assert rec.holding.wait(10)  # the model thread is busy: the rest queue up
        jobs = [workers.submit(q) for q in ("a", "bad", "c")]
        more = [workers.submit(f"q{i}") for i in range(STACK_MAX + 2)]
        rec.go.set()
        answers = _answers(jobs + more)
        assert held.future.result(timeout=10) == "held"
    finally:
        workers.stop()
    assert answers[:3] == ["answer to a", "error: a bad query", "answer to c"]
    assert answers[3:] == [f"answer to q{i}" for i in range(STACK_MAX + 2)]
    # the first turn: the first STACK_MAX queries in one call, which failed, then each
    # alone; the next turn: the rest, in one call
    first = ["a", "bad", "c", *[f"q{i}" for i in range(STACK_MAX - 3)]]
    assert rec.calls[0] == first
    assert rec.calls[1 : 1 + STACK_MAX] == [[q] for q in first]
    assert rec.calls[1 + STACK_MAX :] == [[f"q{i}" for i in range(STACK_MAX - 3, STACK_MAX + 2)]]
    assert workers.largest_turn == STACK_MAX
    # the held one's turn, the full turn and the rest's: 3 turns for every request
    assert (workers.turns, workers.served) == (3, 1 + 3 + STACK_MAX + 2)


@pytest.mark.parametrize("n", [1, 3])
def test_a_lone_request_is_not_held_back_for_others(n):
    rec = Stand()
    workers = ModelWorkers(rec, WorkerSettings(), say=lambda _line: None).start()
    try:
        for i in range(n):
            assert workers.submit(f"q{i}").future.result(timeout=10) == f"answer to q{i}"
    finally:
        workers.stop()
    assert rec.calls == [[f"q{i}"] for i in range(n)]  # one at a time: nothing waited
    assert (workers.turns, workers.served) == (n, n)


def test_the_model_warms_up_before_the_first_request_until_there_is_nothing_left():
    rec = Stand()
    warmed = []
    rec.warm_one = lambda: warmed.append(1) or len(warmed) < 3  # 2 steps, then done
    said = []
    workers = ModelWorkers(rec, WorkerSettings(), say=said.append).start()
    assert len(warmed) == 3  # done in start(), before any request is taken
    assert said[0].startswith("warm-up: traced the model's pass for 2 stack sizes")
    try:
        assert workers.submit("q").future.result(timeout=10) == "answer to q"
        time.sleep(0.1)  # idle turns: no more warm-up calls
    finally:
        workers.stop()
    assert len(warmed) == 3


def test_a_failing_warm_up_is_logged_and_serving_goes_on(caplog):
    rec = Stand()

    def broken():
        raise RuntimeError("no tracer here")

    rec.warm_one = broken
    with caplog.at_level("ERROR", logger="bstrec.serve"):
        workers = ModelWorkers(rec, WorkerSettings(), say=lambda _line: None).start()
    try:
        assert workers.submit("q").future.result(timeout=10) == "answer to q"
    finally:
        workers.stop()
    assert "warm-up failed after 0 stack sizes" in caplog.text


class Slow(Stand):
    """Ranks known users at ``per_user`` seconds each (a big catalogue's turns)."""

    def __init__(self, n_users: int, per_user: float):
        super().__init__()
        self.ds = SimpleNamespace(n_users=n_users)
        self.per_user = per_user
        self.kept: set[int] = set()
        self.turn_sizes: list[int] = []

    def user_queries(self, users):
        return list(users)

    def is_kept(self, u):
        return u in self.kept

    @property
    def n_kept(self):
        return len(self.kept)

    def kept_bytes(self):
        return 0

    def rank(self, users):
        self.turn_sizes.append(len(users))
        time.sleep(self.per_user * len(users))
        self.kept.update(users)
        return list(users)


@pytest.mark.parametrize("per_user, most", [(0.0001, STACK_MAX), (0.004, 2)])
def test_precompute_turns_are_sized_to_keep_a_request_s_wait_short(per_user, most):
    from bstrec.serve.worker import PRECOMPUTE_TURN_S

    rec = Slow(n_users=120, per_user=per_user)
    workers = ModelWorkers(rec, WorkerSettings(precompute=True), say=lambda _line: None)
    while workers.precompute_one():
        pass
    assert rec.kept == set(range(120))
    assert rec.turn_sizes[0] == STACK_MAX  # it starts at a full stack
    settled = rec.turn_sizes[5:-1]
    assert max(settled) <= most
    assert all(n * per_user <= 2 * PRECOMPUTE_TURN_S for n in settled)
