"""The model in a process of its own: ``ModelWorkers`` behind a pipe.

Why: a model thread and the event loop share one GIL. Every time the model thread
hands the GIL over (each torch call made from Python does, and so does the traced
pass), it waits to get it back for as long as the event loop keeps it busy parsing,
validating and rendering other requests: up to the switch interval (5 ms) and more,
per hand-over. Under load the two threads took turns instead of sharing the 2 cores:
serving a typed history cost the event loop 0.9 ms and the model thread 1.0 ms of CPU,
and the app answered one every 1.9 ms, their sum. In a process of its own the model
runs beside the event loop, not in turns with it.

How: the app process keeps the ``Recommender`` for everything but the model (lookups,
queries, kept answers, rendering). ``start`` forks a child that has the same loaded
run and runs the usual ``ModelWorkers`` (model threads, stacking, warm-up, background
precompute) on it. Queries go to the child as numpy arrays over a pipe; answers
(``Ranked``), kept answers of known users, progress lines and statistics come back, and
the server's event loop (``attach``; a thread of ours until then) hands each answer to
its job's future. With one model thread (the default) the child runs its turns on its
only thread, reading the pipe between turns: a reader thread beside the model thread
cost a wake-up and a GIL hand-over a turn, and on a busy machine the history p50 read
17-19.5 ms against 13.4-14.9 without them. Answers are the child's
``Recommender.rank``, so they are the same bits as in one process.

Forking a process that uses torch is safe here the way it is for torch's DataLoader
workers: the child sets its torch threads before its first torch call, and the server
forks before it starts any thread of its own (``bstrec serve``: one intra-op thread).
If the child dies, every waiting request and every later one fails with an error, and
the log says so.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import pickle
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace

import numpy as np

from bstrec.data.batches import Batch
from bstrec.recommend import STACK_MAX, Query, Recommender
from bstrec.serve.worker import POLL_S, Job, ModelWorkers, Progress, WorkerSettings

log = logging.getLogger("bstrec.serve")

READY_TIMEOUT_S = 300  # the child's warm-up; past this, start() fails
# queries sent and not answered yet, at most (``_send_backlog``): a typed history's is
# about 0.6 kB, a known user's about 1 kB plus 8 bytes a rating; the pipe (a Unix
# socket pair) buffers about 200 kB
IN_FLIGHT_BYTES = 64 * 1024


def available() -> bool:
    """Whether the model process is used here: Linux only. Windows cannot fork, and on
    macOS a forked child that touches system frameworks may crash (why Python spawns
    there by default); untested on both, they keep the one-process server."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


class ModelProcess:
    """``ModelWorkers``' interface (start, stop, submit, progress, stats), with the model
    threads in a forked child process."""

    def __init__(
        self,
        rec: Recommender,
        settings: WorkerSettings = WorkerSettings(),
        say: Callable[[str], None] | None = None,
    ):
        self.rec = rec
        self.settings = settings
        self.say = say or log.info
        self._jobs: dict[int, Job] = {}
        self._next_id = 0
        self._backlog: deque[tuple[int, bytes]] = deque()  # queries not sent yet
        self._in_flight: dict[int, int] = {}  # sent, not answered: job id -> bytes
        self._in_flight_bytes = 0
        self.max_in_flight = 0  # the most queries in the pipe at once (a statistic)
        self._lock = threading.Lock()  # the job table, the pipe's sending end, the stats
        self._progress = Progress(
            enabled=settings.precompute, total=rec.ds.n_users if settings.precompute else 0
        )
        self._stats: dict[str, int] = {}  # the child's, from its "ready" on
        self._proc: mp.process.BaseProcess | None = None
        self._conn = None
        self._receiver: threading.Thread | None = None
        self._handover = threading.Event()  # the receiver thread leaves the pipe to a loop
        self._loop = None  # the event loop reading the answers, once ``attach``ed
        self._ready = threading.Event()
        self._dead: str | None = None
        self._t0 = time.perf_counter()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> ModelProcess:
        if self._proc is not None:
            return self
        ctx = mp.get_context("fork")
        here, there = ctx.Pipe()
        self._conn, self._dead = here, None
        self._ready.clear()
        self._t0 = time.perf_counter()
        self._proc = ctx.Process(
            target=_child_main,
            args=(self.rec, self.settings, there, here),
            name="bstrec-model",
            daemon=True,
        )
        self._proc.start()
        there.close()  # the child's end: EOF here when the child exits
        self._handover.clear()
        self._receiver = threading.Thread(
            target=self._receive, name="bstrec-model-answers", daemon=True
        )
        self._receiver.start()
        # like ModelWorkers.start: the warm-up is done before the first request
        if not self._ready.wait(READY_TIMEOUT_S) and self._dead is None:
            self.stop()
            raise RuntimeError(f"the model process was not ready in {READY_TIMEOUT_S} s")
        if self._dead is not None:
            raise RuntimeError(f"the model process failed to start: {self._dead}")
        return self

    def attach(self, loop) -> None:
        """Read the answers on ``loop``, the server's event loop (call it there), instead
        of on a thread of our own: a thread would have to win the GIL from that busy
        loop before each answer, one more hand-over a turn."""
        if self._proc is None or self._loop is not None:
            return
        self._handover.set()  # the receiver finishes the message in hand, then leaves
        if self._receiver is not None:
            self._receiver.join()
            self._receiver = None
        if self._dead is None:
            self._loop = loop
            loop.add_reader(self._conn.fileno(), self._drain)

    def detach(self) -> None:
        """Stop reading on the loop (call it on the loop, before ``stop``)."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.remove_reader(self._conn.fileno())

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self._loop is not None:
            try:
                self.detach()
            except RuntimeError:  # its loop is closed: nothing reads there any more
                self._loop = None
        try:
            with self._lock:
                self._conn.send(("stop",))
        except (OSError, ValueError):  # the child is gone already
            pass
        proc.join(timeout)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout)
        if self._receiver is not None:
            self._receiver.join(timeout)
            self._receiver = None
        self._fail_all("stopped")  # answers that did not come back (none, normally)
        self._conn.close()

    @property
    def failure(self) -> str | None:
        """Why the model process is gone while the server runs ("exited (code -9)"), or
        None while it serves (and before start, and after stop)."""
        return self._dead if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def progress(self) -> Progress:
        """The child's last report, with the known users kept here so far."""
        with self._lock:
            p = replace(self._progress)
        if p.enabled and not p.complete:
            p.done = min(self.rec.n_kept, p.total)
            p.seconds = time.perf_counter() - self._t0
        return p

    def stats(self) -> dict[str, int]:
        """The child's statistics (``ModelWorkers.stats``), as of its last message."""
        with self._lock:
            return dict(self._stats)

    # ---------------------------------------------------------------- requests
    def submit(self, query: Query) -> Job:
        """Send a query to the child; ``job.future`` gets its answer or its error."""
        if self._proc is None:
            raise RuntimeError("the model process is not running (ModelProcess.start)")
        job = Job(query)
        wire = _query_wire(query)
        with self._lock:
            if self._dead is not None:
                job.future.set_exception(RuntimeError(f"the model process {self._dead}"))
                return job
            job_id = self._next_id
            self._next_id += 1
            self._jobs[job_id] = job
            self._backlog.append((job_id, pickle.dumps(("job", job_id, wire), protocol=5)))
            self._send_backlog()
        return job

    def _send_backlog(self) -> None:
        """Send waiting queries while the pipe holds at most ``IN_FLIGHT_BYTES`` of
        queries not answered yet (one, whatever its size, when none is). Why: a send
        into a full pipe would block the event loop, the one reader of the answers, and
        the child, blocked in turn sending answers nobody reads, would never read the
        pipe again. Below the budget, far under the pipe's buffer, a send never blocks
        for longer than the child's turn. Call it holding the lock."""
        while self._backlog:
            job_id, msg = self._backlog[0]
            if self._in_flight and self._in_flight_bytes + len(msg) > IN_FLIGHT_BYTES:
                return
            self._backlog.popleft()
            if job_id not in self._jobs:  # failed meanwhile
                continue
            self._conn.send_bytes(msg)
            self._in_flight[job_id] = len(msg)
            self._in_flight_bytes += len(msg)
            self.max_in_flight = max(self.max_in_flight, len(self._in_flight))  # a statistic

    # ---------------------------------------------------------------- answers
    def _receive(self) -> None:
        """The answers, on a thread of our own, until ``attach`` hands the pipe over."""
        conn = self._conn
        while not self._handover.is_set():
            try:
                if not conn.poll(0.05):
                    continue
                msg = conn.recv()
            except (EOFError, OSError):
                self._exited()
                return
            self._handle_safely(msg)

    def _drain(self) -> None:
        """The answers waiting in the pipe, on the attached event loop."""
        conn = self._conn
        try:
            while conn.poll(0):
                self._handle_safely(conn.recv())
        except (EOFError, OSError):
            self.detach()
            self._exited()

    def _exited(self) -> None:
        code = None if self._proc is None else self._proc.exitcode
        self._fail_all("exited" if code is None else f"exited (code {code})")

    def _handle_safely(self, msg: tuple) -> None:
        try:
            self._handle(msg)
        except Exception:  # a bug here must not leave requests waiting forever
            log.exception("model process: could not handle a %r message", msg[0])

    def _handle(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "done":
            _, job_id, ranked, started, finished, stats = msg
            job = self._finish(job_id, stats)
            if job is not None:
                # perf_counter is CLOCK_MONOTONIC, one clock for both processes
                job.started, job.finished = started, finished
                job.future.set_result(ranked)
        elif kind == "error":
            _, job_id, error, stats = msg
            job = self._finish(job_id, stats)
            if job is not None:
                job.started = job.finished = time.perf_counter()
                job.future.set_exception(error)
        elif kind == "kept":
            for u, ranked in msg[1]:
                self.rec.keep(u, ranked)
        elif kind == "progress":
            with self._lock:
                self._progress = msg[1]
        elif kind == "say":
            self.say(msg[1])
        elif kind == "ready":
            with self._lock:
                self._stats = msg[1]
            self._ready.set()
        elif kind == "failed":
            self._dead = f"failed: {msg[1]}"
            self._ready.set()

    def _finish(self, job_id: int, stats: dict) -> Job | None:
        with self._lock:
            self._stats = stats
            self._in_flight_bytes -= self._in_flight.pop(job_id, 0)
            if self._backlog and self._dead is None:
                self._send_backlog()
            return self._jobs.pop(job_id, None)

    def _fail_all(self, why: str) -> None:
        with self._lock:
            if self._dead is None:
                self._dead = why
            jobs, self._jobs = list(self._jobs.values()), {}
            self._backlog.clear()
            self._in_flight.clear()
            self._in_flight_bytes = 0
        self._ready.set()
        if self._proc is not None or jobs:  # not a stop(): say so
            log.error("the model process %s; %d waiting requests fail", why, len(jobs))
        for job in jobs:
            job.future.set_exception(RuntimeError(f"the model process {why}"))


def _query_wire(q: Query) -> tuple:
    """A Query as numpy arrays and plain values (torch tensors pickle slowly)."""
    return (
        [t.numpy() for t in q.batch.tensors()],
        np.asarray(q.seen),
        q.depth,
        q.user,
        q.keep,
    )


def _query_from_wire(wire: tuple) -> Query:
    import torch

    arrays, seen, depth, user, keep = wire
    batch = Batch.from_tensors([torch.from_numpy(a) for a in arrays])
    return Query(batch, seen, depth, user, keep)


# ---------------------------------------------------------------- the child
def _child_main(rec: Recommender, settings: WorkerSettings, conn, parent_end) -> None:
    """The model process: ModelWorkers on the inherited Recommender, fed by the pipe."""
    import gc

    import torch

    # what the fork inherited stays shared with the app's process: a collection would
    # write to every object's header, copying the pages that hold them
    gc.freeze()
    # Ctrl+C reaches the whole process group: the server shuts down and stops us
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent_end.close()  # ours is `conn`; holding the app's end would hide its EOF
    torch.set_num_threads(settings.torch_threads)
    send_lock = threading.Lock()

    def send(msg: tuple) -> None:
        with send_lock:
            conn.send(msg)

    def say(line: str) -> None:  # the precompute's progress lines, and the warm-up's
        send(("progress", workers.progress))
        send(("say", line))

    # kept answers go to the app, which answers known users from them and keeps them:
    # here they are only counted
    rec.on_kept = lambda kept: send(("kept", kept))
    rec.store_kept = False
    workers = ModelWorkers(rec, settings, say=say)
    inline = settings.threads == 1
    try:
        workers.prepare() if inline else workers.start()
    except Exception as e:  # noqa: BLE001 - reported to the app, which fails start()
        send(("failed", repr(e)))
        return
    send(("progress", workers.progress))
    send(("ready", workers.stats()))

    def answer(job_id: int, job: Job) -> Callable[[Future], None]:
        def done(future: Future) -> None:
            stats = workers.stats()
            error = future.exception()
            if error is None:
                send(("done", job_id, future.result(), job.started, job.finished, stats))
            else:
                send(("error", job_id, _picklable(error), stats))

        return done

    def job(msg: tuple, make: Callable[[Query], Job]) -> Job | None:
        _, job_id, wire = msg
        try:
            j = make(_query_from_wire(wire))
        except Exception as e:  # noqa: BLE001 - the request fails, the server goes on
            send(("error", job_id, _picklable(e), workers.stats()))
            return None
        j.future.add_done_callback(answer(job_id, j))
        return j

    if inline:
        _turns(workers, conn, lambda msg: job(msg, Job))
    else:  # several model threads: this thread feeds their queue
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the app is gone
                break
            if msg[0] == "stop":
                break
            job(msg, workers.submit)
    workers.stop()
    conn.close()


def _turns(workers: ModelWorkers, conn, job: Callable[[tuple], Job | None]) -> None:
    """One model thread's turns, on this process's only thread: everything that came down
    the pipe (up to ``STACK_MAX``) in one turn, else the precompute's next stack. A reader
    thread beside a model thread cost a thread wake-up and a GIL hand-over a turn."""
    waiting: deque[Job] = deque()
    idle = False  # no precompute work left: wait on the pipe
    while True:
        try:
            timeout = POLL_S if idle and not waiting else 0
            while conn.poll(timeout):
                timeout = 0
                msg = conn.recv()
                if msg[0] == "stop":
                    return
                j = job(msg)
                if j is not None:
                    waiting.append(j)
        except (EOFError, OSError):  # the app is gone
            return
        if waiting:
            workers.serve([waiting.popleft() for _ in range(min(STACK_MAX, len(waiting)))])
        elif not idle:
            idle = not workers.precompute_one()


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - any error the pickle raises
        return RuntimeError(f"{type(error).__name__}: {error}")
