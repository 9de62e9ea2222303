"""The model's own threads: requests queue for them, known users are ranked when idle.

Only these threads call the model (``Recommender.rank``); the app builds a request's
query, awaits its answer and turns it into JSON (serve/app.py), so the Python work of
a request (validation, lookups, rendering) runs beside the model, not inside its turn.

- **Requests first.** A request goes to a queue; a free model thread takes the oldest.
  The start-up precompute of known users runs one stack of users per turn, only when
  the queue is empty, so a request waits for at most one stack's ranking before the
  model is its own; the stack is sized so that a turn takes about 10 ms at most (8
  users, about 7 ms, for the default model on ml-1m-u2999; fewer on big catalogues).
- **What queued up, in one turn.** A model thread takes every query waiting, up to
  ``STACK_MAX``, and ``Recommender.rank`` stacks those it can into one forward pass
  (retrieve-then-rank; 2.5x less model time a query at 8 rows). No collection window:
  a lone request is ranked at once, and stacks form only while the model is busy, that
  is under load. A query's answer is the same bits whatever it is stacked with
  (``Recommender.rank`` checks each stack shape once), so answers under load are
  exactly the answers one at a time. Several model threads (``threads``) may use
  several cores: each runs torch with one intra-op thread, on its own queries.
- **Progress in the log**, at every tenth of the precompute and at its end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field, replace

from bstrec.recommend import STACK_MAX, Query, Recommender

log = logging.getLogger("bstrec.serve")

POLL_S = 0.5  # how often an idle model thread looks up from its queue to see a stop
# a precompute turn's length to aim for (``ModelWorkers._size_precompute``)
PRECOMPUTE_TURN_S = 0.010


@dataclass(frozen=True)
class WorkerSettings:
    threads: int = 1  # model threads, each scoring its own queries
    torch_threads: int = 1  # torch's intra-op threads (process-wide)
    precompute: bool = False  # rank every known user in the background from the start
    # run the model threads in a process of their own (serve/model_process.py)
    process: bool = False

    def __post_init__(self):
        for name in ("threads", "torch_threads"):
            if not 1 <= getattr(self, name) <= 64:
                raise ValueError(f"{name} must be 1..64, not {getattr(self, name)}")


@dataclass
class Job:
    """One request's query, its answer to come, and when it was queued and served."""

    query: Query
    future: Future = field(default_factory=Future)  # -> Ranked
    queued: float = field(default_factory=time.perf_counter)
    started: float = 0.0
    finished: float = 0.0

    def server_timing(self) -> str:
        """The Server-Timing value: waiting for a model thread, and in it (ms)."""
        return (
            f"queue;dur={(self.started - self.queued) * 1e3:.2f}, "
            f"model;dur={(self.finished - self.started) * 1e3:.2f}"
        )


@dataclass
class Progress:
    """Where the background precompute stands (for /health and the log)."""

    enabled: bool
    total: int
    done: int = 0
    complete: bool = False
    seconds: float = 0.0


class ModelWorkers:
    """The model threads, their request queue and the background precompute.

    The precompute's plan and progress are this object's own, behind its lock; others
    read ``progress`` (a consistent copy). Kept answers are the Recommender's
    (``cached``, ``n_kept``)."""

    def __init__(
        self,
        rec: Recommender,
        settings: WorkerSettings = WorkerSettings(),
        say: Callable[[str], None] | None = None,
    ):
        self.rec = rec
        self.settings = settings
        self.say = say or log.info
        self.requests: queue.Queue[Job | None] = queue.Queue()
        self.max_waiting = 0  # the longest queue seen (tests/serve/test_concurrency.py)
        self.largest_turn = 0  # the most requests served in one turn (a statistic)
        self.turns = self.served = 0  # turns that served requests, and the requests
        self._plan_lock = threading.Lock()
        self._plan: Iterator[int] | None = None
        self._in_flight = 0  # precompute users being ranked right now
        n_users = rec.ds.n_users
        self._progress = Progress(
            enabled=settings.precompute, total=n_users if settings.precompute else 0
        )
        self._next_report = 1
        self._precompute_rows = STACK_MAX  # known users a precompute turn (adapts)
        self._t0 = time.perf_counter()  # the precompute's clock starts with the server
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        if settings.precompute:
            self._plan = iter(range(n_users))

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> ModelWorkers:
        if self._threads:
            return self
        self._stop.clear()
        self.prepare()
        for i in range(self.settings.threads):
            t = threading.Thread(target=self._run, name=f"bstrec-model-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def prepare(self) -> None:
        """Before the first request: the warm-up, and the precompute's first line."""
        # the traced passes are made before the first request, not in its way (~0.1 s a
        # stack size; Recommender.warm_one)
        t0, steps = time.perf_counter(), 0
        warm = getattr(self.rec, "warm_one", None)
        try:
            while warm is not None and warm():
                steps += 1
        except Exception:  # the traced pass is an optimisation: serve without the rest
            log.exception("warm-up failed after %d stack sizes; serving goes on", steps)
        if steps:
            self.say(
                f"warm-up: traced the model's pass for {steps} stack sizes in "
                f"{time.perf_counter() - t0:.1f} s"
            )
        if self.settings.precompute and self._plan is not None and not self.progress.done:
            self.say(
                f"precompute: ranking {self.progress.total:,} known users in the "
                f"background, top {self.rec.keep_top} each; requests go first"
            )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for _ in self._threads:
            self.requests.put(None)  # wakes a thread waiting for work: it sees the stop
        for t in self._threads:
            t.join(timeout)
        self._threads = []

    # the model process's interface too (serve/model_process.py): here the answers come
    # through the jobs' futures, from threads that do not die on their own
    def attach(self, loop) -> None:
        """Nothing to read on the server's event loop."""

    def detach(self) -> None:
        """Nothing to stop reading."""

    failure: str | None = None  # why the model is gone (never, for threads)

    @property
    def progress(self) -> Progress:
        """Where the background precompute stands (a copy, taken under the lock)."""
        with self._plan_lock:
            return replace(self._progress)

    def stats(self) -> dict[str, int]:
        """How requests shared the model's passes (/health's ``stacking``)."""
        exact = dict(self.rec.exact)  # a copy: model threads may add a shape meanwhile
        return {
            "shapes_checked": len(exact),
            "shapes_exact": sum(exact.values()),
            "stacked_answers": self.rec.stacked,
            "turns": self.turns,
            "requests_served": self.served,
        }

    # ---------------------------------------------------------------- requests
    def submit(self, query: Query) -> Job:
        """Queue a query; ``job.future`` gets its answer (a Ranked) or its error."""
        if not self._threads:
            raise RuntimeError("the model threads are not running (ModelWorkers.start)")
        job = Job(query)
        self.requests.put(job)
        self.max_waiting = max(self.max_waiting, self.requests.qsize())  # a statistic
        return job

    # ---------------------------------------------------------------- the loop
    def _run(self) -> None:
        import torch

        # one intra-op thread (the default) per model thread: several model threads use
        # several cores without torch's idle workers spinning against the HTTP threads
        torch.set_num_threads(self.settings.torch_threads)
        while not self._stop.is_set():
            try:
                job = self.requests.get_nowait()
            except queue.Empty:
                if self.precompute_one():
                    continue
                try:
                    job = self.requests.get(timeout=POLL_S)
                except queue.Empty:
                    continue
            if job is not None:  # None: stop() woke this thread
                self.serve(self._more(job))

    def _more(self, job: Job) -> list[Job]:
        """``job`` and what else is waiting, up to STACK_MAX in all."""
        jobs = [job]
        while len(jobs) < STACK_MAX:
            try:
                nxt = self.requests.get_nowait()
            except queue.Empty:
                break
            if nxt is None:  # a stop: leave it for the loop to see
                self.requests.put(None)
                break
            jobs.append(nxt)
        return jobs

    def serve(self, jobs: list[Job]) -> None:
        """One turn: rank these jobs together and answer each, on the caller's thread (a
        model thread's, or the model process's: serve/model_process.py)."""
        self.largest_turn = max(self.largest_turn, len(jobs))  # statistics
        self.turns += 1
        self.served += len(jobs)
        started = time.perf_counter()
        for job in jobs:
            job.started = started
        try:
            answers = self.rec.rank([job.query for job in jobs])
        except BaseException:  # one bad query must not fail the others: each alone
            answers = None
        for i, job in enumerate(jobs):
            if answers is None:
                try:
                    ranked = self.rec.rank([job.query])[0]
                except BaseException as e:  # the request thread re-raises it (a logged 500)
                    job.finished = time.perf_counter()
                    job.future.set_exception(e)
                    continue
            else:
                ranked = answers[i]
            job.finished = time.perf_counter()
            job.future.set_result(ranked)

    def precompute_one(self) -> bool:
        """Rank the next stack of known users not yet kept, on the caller's thread; False
        when there is none."""
        with self._plan_lock:
            if self._plan is None:
                return False
            users = []
            for u in self._plan:
                if not self.rec.is_kept(u):
                    users.append(u)
                    if len(users) == self._precompute_rows:
                        break
            if not users:
                self._plan = None
                last = self._in_flight == 0
            else:
                self._in_flight += 1
        if not users:
            if last:
                self._finish()
            return False
        try:
            t0 = time.perf_counter()
            self.rec.rank(self.rec.user_queries(users))
            self._size_precompute(len(users), time.perf_counter() - t0)
        except Exception:  # a bug: say so, and let requests compute these users on demand
            log.exception("precompute: ranking user indexes %s failed", users)
        finally:
            with self._plan_lock:
                self._in_flight -= 1
                last = self._plan is None and self._in_flight == 0
        if last:  # another model thread ran out of users while this one was busy
            self._finish()
        self._report()
        return True

    def _size_precompute(self, rows: int, seconds: float) -> None:
        """Fewer users a precompute turn when a turn takes longer than
        ``PRECOMPUTE_TURN_S``, more (up to ``STACK_MAX``) when one more would still fit:
        a request arriving mid-turn waits for the turn to end. On ml-1m-u2999 a turn of
        8 takes about 7 ms; on 87,000 movies about 20, and requests waited 6 to 10 ms."""
        if seconds > PRECOMPUTE_TURN_S and rows > 1:
            self._precompute_rows = max(1, rows // 2)
        elif seconds * (rows + 1) / rows < 0.7 * PRECOMPUTE_TURN_S and rows < STACK_MAX:
            self._precompute_rows = rows + 1

    def _report(self) -> None:
        with self._plan_lock:
            p = self._progress
            p.done = min(self.rec.n_kept, p.total)
            p.seconds = time.perf_counter() - self._t0
            due = p.done * 10 >= self._next_report * p.total and not p.complete
            if due:
                self._next_report = p.done * 10 // p.total + 1
            p = replace(p)
        if due:
            self.say(
                f"precompute: {p.done:,}/{p.total:,} known users "
                f"({100 * p.done / p.total:.0f}%) in {p.seconds:.1f} s"
            )

    def _finish(self) -> None:
        with self._plan_lock:
            p = self._progress
            if p.complete:
                return
            p.done, p.complete = min(self.rec.n_kept, p.total), True
            p.seconds = time.perf_counter() - self._t0
            p = replace(p)
        self.say(
            f"precompute complete: {p.done:,} known users, top {self.rec.keep_top} "
            f"each ({self.rec.kept_bytes() / 2**20:.1f} MiB) in {p.seconds:.1f} s"
        )
