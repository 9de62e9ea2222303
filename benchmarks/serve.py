"""Serving latency, throughput and start-up of `bstrec serve` over loopback HTTP.

Starts the server (`python -m bstrec serve RUN_DIR`) in a subprocess on 127.0.0.1 and
measures, in this order:

1. **start-up**: from launch to the first `/health` 200;
2. **known users during the precompute**: 8 clients ask for users the background
   precompute has mostly not reached yet (computed on demand); each answer is checked
   against the same request once the precompute is complete;
3. **ready**: from launch to `/health` reporting the precompute complete;
4. **known users** (GET /users/{id}/recommendations), **histories** (POST
   /recommendations with 1 to 8 real recent watches of another user) and **mixed**
   (half each, interleaved), each from 1 client (the service time) and from N
   concurrent clients (closed loop: each sends its next request when the last one is
   answered).

Prints JSON lines: one per phase and run with p50/p90/p99/max latency in ms, requests
per second, the server's queue and model time, and the error count (each N-client
phase runs --repeat times, then a line with the medians); then one line per target of
issue 11 with its figure, and a summary.

    python benchmarks/serve.py RUN_DIR [--clients 8] [--requests 400] [--model-threads 1]
        [--client raw|httpx]

The clients run in this process, on the same cores as the server: on a 2-core machine
their CPU time is part of the cost measured, and each line says how much
(`client_cpu_ms`, this process's CPU a request). By default they are keep-alive
sockets in one event loop (`loadgen.py`, about 0.15 ms a request); `--client httpx`
is the generator of before 2026-11-30, one httpx client a thread (about 1 to 1.5 ms a
request, and a GIL shared by 8 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# issue 11: (phase, statistic, at most), for 8 clients, 0 errors
TARGETS = [
    ("history", "p50_ms", 20.0),
    ("history", "p99_ms", 100.0),
    ("known-user", "p50_ms", 10.0),
    ("known-user", "p99_ms", 50.0),
    ("mixed", "p99_ms", 100.0),
    ("start-up", "time_to_health_s", 5.0),
    ("known-user-during-precompute", "p99_ms", 200.0),
]
TIME_LIMIT_S = 900  # the whole benchmark (precompute included) stops by itself after this


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q / 100 * len(sorted_ms)) - 1))
    return sorted_ms[i]


def is_default_run(run: Path) -> tuple[bool, str]:
    """Whether RUN_DIR holds the default BST on ml-1m-u2999 (what the target is for)."""
    import yaml

    from bstrec.config import RunConfig

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    data_name = json.loads((run / "data.json").read_text()).get("name", "?")
    model, data = cfg.get("model", {}), cfg.get("data", {})
    # the defaults as a run resolves them (data.max_len 0 means the task's own: 20)
    default = RunConfig().resolve()
    defaults = default.model.__dict__
    differs = sorted(k for k, v in defaults.items() if k in model and model[k] != v)
    if data.get("max_len") != default.data.max_len:
        differs.append("data.max_len")
    notes = []
    if differs:
        notes.append(f"model settings differ from the defaults: {', '.join(differs)}")
    if "u2999" not in str(data_name) and "u2999" not in str(data.get("source", "")):
        notes.append(f"data set is {data_name}, not ml-1m-u2999")
    return not notes, "; ".join(notes) or "default BST on ml-1m-u2999"


def start_server(
    run: Path,
    port: int,
    threads: int,
    precompute: bool,
    model_threads: int,
    candidates: int | None = None,
    trace: bool = True,
    model_process: bool = True,
) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "bstrec",
        "serve",
        str(run),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
        "--precompute" if precompute else "--no-precompute",
        "--model-threads",
        str(model_threads),
        *(["--candidates", str(candidates)] if candidates is not None else []),
        "--trace" if trace else "--no-trace",
        "--model-process" if model_process else "--no-model-process",
    ]
    # this checkout's code, whatever copy of bstrec the environment has installed
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def wait_ready(http, proc: subprocess.Popen, timeout: float = 600) -> dict:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode}: {proc.stderr.read()[-2000:]}"
            )
        try:
            r = http.get("/health")
            if r.status_code == 200:
                return r.json()
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server not ready after {timeout:.0f} s")


def run_load(
    base: str,
    requests: list[tuple],
    clients: int,
    deadline: float,
    answers: dict | None = None,
    client: str = "raw",
) -> dict:
    """Send `requests` from `clients` connections, closed loop; latencies in ms. With
    `answers`, each 200 answer's JSON is stored under its request. `client`: "raw"
    (keep-alive sockets in one event loop, loadgen.py) or "httpx" (a client a thread).
    The CPU this process spent a request is reported as `client_cpu_ms`: on a 2-core
    machine it is taken from the server."""
    send = _send_raw if client == "raw" else _send_httpx
    # done: [(request, ms, JSON, error, Server-Timing)]; CPU from the start signal on
    done, wall, client_cpu = send(base, requests, clients, deadline)
    lat: list[float] = []
    server: dict[str, list[float]] = {"queue": [], "model": []}  # Server-Timing, ms
    errors: list[str] = []
    for req, ms, body, err, timing in done:
        lat.append(ms)
        if err is None and not (body or {}).get("picks"):
            err = f"no picks: {str(body)[:200]}"
        if err:
            errors.append(err)
            continue
        if answers is not None:
            answers[_key(req)] = body
        for name, dur in timing.items():
            server.setdefault(name, []).append(dur)
    lat.sort()
    return {
        "requests": len(lat),
        "errors": len(errors) + (len(requests) - len(lat)),
        "p50_ms": round(percentile(lat, 50), 2),
        "p90_ms": round(percentile(lat, 90), 2),
        "p99_ms": round(percentile(lat, 99), 2),
        "max_ms": round(lat[-1], 2) if lat else None,
        "rps": round(len(lat) / wall, 1),
        "wall_s": round(wall, 2),
        # where the time went, server side: waiting for the model, and in it
        "queue_p50_ms": _p50(server["queue"]),
        "model_p50_ms": _p50(server["model"]),
        "client": client,
        "client_cpu_ms": round(1e3 * client_cpu / max(len(lat), 1), 3),
        "first_error": errors[0] if errors else None,
    }


def _send_raw(base: str, requests: list[tuple], clients: int, deadline: float):
    if str(HERE) not in sys.path:  # imported as benchmarks.serve
        sys.path.insert(0, str(HERE))
    from loadgen import Load

    host, port = base.removeprefix("http://").split(":")
    cpu0 = time.process_time()
    load = Load(host, int(port), clients, deadline).run(requests)
    cpu = time.process_time() - cpu0
    done = []
    for o in load.outcomes:
        if o.error is not None:
            done.append((o.request, o.ms, None, o.error, {}))
            continue
        a = o.answer
        if a.status != 200:
            done.append((o.request, o.ms, None, f"{a.status} {a.body[:200]!r}", {}))
            continue
        timing = parse_server_timing(a.headers.get("server-timing", ""))
        done.append((o.request, o.ms, a.json(), None, timing))
    return done, load.wall_s, cpu


def _send_httpx(base: str, requests: list[tuple], clients: int, deadline: float):
    from contextlib import closing

    import httpx

    done = []
    lock = threading.Lock()
    todo = iter(requests)
    # Clients are made and connected before the clock starts: making an httpx client
    # costs ~33 ms of CPU (its TLS context), which would otherwise be spent on the
    # server's 2 cores, and under the clients' GIL, inside the measured run.
    https = [httpx.Client(base_url=base, timeout=30) for _ in range(clients)]
    for http in https:
        http.get("/health")
    go = threading.Barrier(clients + 1)

    def client(http) -> None:
        go.wait()
        with closing(http):  # opened already (connected above): closed at the end
            while time.monotonic() < deadline:
                with lock:
                    req = next(todo, None)
                if req is None:
                    return
                method, path, body = req
                t = time.perf_counter()
                try:
                    r = http.request(method, path, json=body)
                    ms = (time.perf_counter() - t) * 1e3
                    if r.status_code == 200:
                        # parsed after the run, as the raw path does: thousands of kept
                        # answers' objects would make the clients' GC pause inside it
                        out = (req, ms, r.content, None, r.headers.get("server-timing", ""))
                    else:
                        out = (req, ms, None, f"{r.status_code} {r.text[:200]}", {})
                except httpx.HTTPError as e:
                    ms = (time.perf_counter() - t) * 1e3
                    out = (req, ms, None, f"{type(e).__name__}: {e}", {})
                with lock:
                    done.append(out)

    threads = [threading.Thread(target=client, args=(http,)) for http in https]
    for th in threads:
        th.start()
    go.wait()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for th in threads:
        th.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    done = [
        (req, ms, json.loads(body), None, parse_server_timing(timing))
        if err is None
        else (req, ms, body, err, timing)
        for req, ms, body, err, timing in done
    ]
    return done, wall, cpu


def _key(req: tuple) -> str:
    return json.dumps(req, sort_keys=True)


def _p50(values: list[float]) -> float | None:
    return round(percentile(sorted(values), 50), 2) if values else None


def parse_server_timing(header: str) -> dict[str, float]:
    """'queue;dur=0.12, model;dur=9.5' -> {'queue': 0.12, 'model': 9.5}"""
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        if dur:
            out[name] = float(dur)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="run folder written by `bstrec train`")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400, help="per kind, concurrent phase")
    ap.add_argument("--single", type=int, default=100, help="per kind, 1-client phase")
    ap.add_argument("--threads", type=int, default=1, help="server's torch threads")
    ap.add_argument(
        "--model-threads", type=int, default=1, help="server's model threads (its default)"
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each N-client phase; targets are judged on the median "
        "(a shared 2-core machine swings 2x from run to run)",
    )
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument(
        "--candidates",
        type=int,
        default=None,
        help="the server's --candidates (retrieve-then-rank)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--no-trace",
        action="store_true",
        help="the server's --no-trace: its pass run eagerly, as before 2026-11-30",
    )
    ap.add_argument(
        "--no-model-process",
        action="store_true",
        help="the server's --no-model-process: the model threads in the server's own "
        "process, taking turns with its event loop for the GIL (before 2026-11-30 evening)",
    )
    ap.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="load generator: keep-alive sockets in one event loop (loadgen.py), or one "
        "httpx client a thread (before 2026-11-30; about 1 ms of CPU a request more)",
    )
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import httpx

    run = args.run_dir
    if not (run / "model.safetensors").is_file():
        emit(
            bench="serve",
            error=f"{run}: no trained run here (no model.safetensors). "
            "Train the default model first: bstrec train --data ../shared/data/ml-1m-u2999 "
            f"--out {run}",
        )
        return 2
    default, note = is_default_run(run)
    if not default:
        emit(bench="serve", warning=f"not the default model the targets are for: {note}")
    deadline = time.monotonic() + TIME_LIMIT_S
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    users = json.loads((run / "data.json").read_text())["user_ids"]
    rng = random.Random(args.seed)
    load_before = [round(x, 2) for x in os.getloadavg()]
    launched = time.perf_counter()
    proc = start_server(
        run,
        port,
        args.threads,
        True,
        args.model_threads,
        args.candidates,
        not args.no_trace,
        not args.no_model_process,
    )
    results: dict[str, dict] = {}
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            health = wait_ready(http, proc)
            to_health = time.perf_counter() - launched
            emit(
                bench="serve",
                run=str(run),
                model=health["model"],
                data_set=health["data_set"],
                n_movies=health["n_movies"],
                n_users=health["n_users"],
                default_model=default,
                note=note,
                server_threads=args.threads,
                model_threads=args.model_threads,
                traced_pass=not args.no_trace,
                model_process=not args.no_model_process,
                keep_top=health["precompute"]["keep_top"],
                clients=args.clients,
                time_to_health_s=round(to_health, 2),
                users_precomputed_at_health=health["precompute"]["users_done"],
                cpus=os.cpu_count(),
                load_avg_before=load_before,
                python=platform.python_version(),
            )
            results["start-up"] = {"time_to_health_s": round(to_health, 2), "errors": 0}

            # known users while the precompute runs: mostly computed on demand. The
            # users are drawn from the far end of the precompute's order (it goes by
            # index), so most are not ranked yet when asked for.
            n_during = min(len(users) // 2, args.requests)
            late = users[len(users) // 2 :]
            during_users = rng.sample(late, min(len(late), n_during))
            during = [("GET", f"/users/{u}/recommendations?k={args.k}", None) for u in during_users]
            first: dict = {}
            res = run_load(base, during, args.clients, deadline, first, args.client)
            done = http.get("/health").json()["precompute"]
            res["users_precomputed_after"] = done["users_done"]
            results["known-user-during-precompute"] = res
            emit(bench="serve", kind="known-user-during-precompute", clients=args.clients, **res)

            ready = wait_precompute(http, proc, deadline)
            to_ready = time.perf_counter() - launched
            emit(
                bench="serve",
                kind="ready",
                time_to_ready_s=round(to_ready, 2),
                precompute_s=ready["seconds"],
                users=ready["users_done"],
            )

            # the same requests again, now from the kept answers: the same JSON?
            again: dict = {}
            run_load(base, during, args.clients, deadline, again, args.client)
            mismatched = sum(first[k] != again.get(k) for k in first)
            results["known-user-during-precompute"]["answers_differ"] = mismatched
            results["known-user-during-precompute"]["errors"] += mismatched
            emit(
                bench="serve",
                kind="known-user-during-precompute-check",
                compared=len(first),
                answers_differ=mismatched,
            )

            n_need = args.requests + args.single + 2 * args.clients  # per kind
            picked = rng.sample(users, min(len(users), n_need))
            picked += rng.choices(users, k=n_need - len(picked))
            user_reqs = [("GET", f"/users/{u}/recommendations?k={args.k}", None) for u in picked]
            # histories: 1 to 8 real recent watches of other users, oldest first
            hist_reqs = []
            for u in rng.choices(users, k=n_need):
                n = rng.randint(1, 8)
                watched = http.get(f"/users/{u}", params={"limit": n}).json()["history"]
                body = {"history": [w["movie_id"] for w in reversed(watched)], "k": args.k}
                hist_reqs.append(("POST", "/recommendations", body))
        mixed_reqs = [r for pair in zip(user_reqs, hist_reqs, strict=True) for r in pair]
        for kind, reqs in (
            ("known-user", user_reqs),
            ("history", hist_reqs),
            ("mixed", mixed_reqs[::-1]),
        ):
            warm, rest = reqs[: 2 * args.clients], reqs[2 * args.clients :]
            run_load(
                base, warm, args.clients, deadline, client=args.client
            )  # connections, first-call costs
            batch, rest = rest[: args.single], rest[args.single :]
            emit(
                bench="serve",
                kind=kind,
                clients=1,
                **run_load(base, batch, 1, deadline, client=args.client),
            )
            runs = []
            for i in range(args.repeat):  # the same requests each time
                res = run_load(
                    base, rest[: args.requests], args.clients, deadline, client=args.client
                )
                runs.append(res)
                emit(bench="serve", kind=kind, clients=args.clients, run=i + 1, **res)
            results[kind] = median_of(runs)
            emit(bench="serve", kind=kind, clients=args.clients, run="median", **results[kind])
        met_all = True
        for phase, stat, limit in TARGETS:
            res = results.get(phase, {})
            value = res.get(stat)
            met = value is not None and value <= limit and res.get("errors", 1) == 0
            met_all &= met
            emit(
                bench="serve",
                kind="target",
                phase=phase,
                clients=args.clients,
                statistic=stat,
                target=limit,
                measured=value,
                errors=res.get("errors"),
                met=met,
            )
        errors = sum(r.get("errors", 0) for r in results.values())
        emit(
            bench="serve",
            kind="summary",
            clients=args.clients,
            model_threads=args.model_threads,
            targets_met=met_all,
            default_model=default,
            errors=errors,
            load_avg_after=[round(x, 2) for x in os.getloadavg()],
        )
        return 0 if errors == 0 else 1
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def median_of(runs: list[dict]) -> dict:
    """Per statistic, the median over runs; errors add up."""
    out = {}
    for key in (
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "max_ms",
        "rps",
        "queue_p50_ms",
        "model_p50_ms",
        "client_cpu_ms",
    ):
        values = sorted(r[key] for r in runs if r.get(key) is not None)
        out[key] = values[len(values) // 2] if values else None
    out["errors"] = sum(r["errors"] for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    return out


def wait_precompute(http, proc: subprocess.Popen, deadline: float) -> dict:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        p = http.get("/health").json()["precompute"]
        if p["complete"]:
            return p
        time.sleep(0.2)
    raise RuntimeError("the precompute did not finish within the time limit")


if __name__ == "__main__":
    sys.exit(main())
