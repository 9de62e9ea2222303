"""`bstrec serve`: the HTTP API and web page for a trained run."""

from __future__ import annotations

import gc
import ipaddress
import sys
import time
from pathlib import Path

import typer

from bstrec.commands.common import Command, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(serve)


def serve(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bstrec train`"),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to bind; the default is this machine only"
    ),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    threads: int = typer.Option(
        1,
        "--threads",
        min=1,
        max=64,
        help="torch threads per forward pass (1 suits a small machine)",
    ),
    model_threads: int = typer.Option(
        1,
        "--model-threads",
        min=1,
        max=64,
        help="threads that run the model, each on its own request; more can help where "
        "cores are idle (on the busy 2-core machine 2 measured no better: README, Serving)",
    ),
    keep_top: int = typer.Option(
        50,  # recommend.KEEP_TOP, not imported: that would load torch for every command
        "--keep-top",
        min=1,
        max=10_000,
        help="picks kept per known user once computed; a request for more is computed on demand",
    ),
    candidates: int = typer.Option(
        None,
        "--candidates",
        min=0,
        help="retrieve this many movies per request with the model's cheap stage and rank "
        "only those (0: the whole catalogue; default: 200 above 2,000 movies, else 0)",
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
    trace: bool = typer.Option(
        True,
        "--trace/--no-trace",
        help="Run the retrieve-and-rank pass as a traced TorchScript graph where it gives "
        "the eager pass's scores bit for bit (faster under load; traced at start-up)",
    ),
    model_process: bool = typer.Option(
        True,
        "--model-process/--no-model-process",
        help="Run the model in a process of its own, beside the HTTP event loop instead "
        "of taking turns with it for Python's GIL (faster under load; README, Serving)",
    ),
    precompute: bool = typer.Option(
        True,
        "--precompute/--no-precompute",
        help="Rank every known user in the background from the start (requests are "
        "answered meanwhile, and go first)",
    ),
) -> None:
    """Serve recommendations over HTTP (JSON API, docs at /docs, web page at /)."""
    with fail_cleanly((RuntimeError,)):
        try:
            import uvicorn

            from bstrec.serve.app import create_app
        except ModuleNotFoundError as e:
            raise RuntimeError(
                f"serving needs the 'serve' extra ({e.name} is missing): pip install -e '.[serve]'"
            ) from None

    import torch

    # One intra-op thread by default. The model threads run one forward pass each
    # (serve/worker.py), and the other core is busy with HTTP, JSON and the clients;
    # torch's worker threads spin while they wait, and on a loaded 2-core machine a
    # 2-thread forward over the catalogue measured 570 ms against 17 ms with one thread.
    torch.set_num_threads(threads)
    # RuntimeError: weights that do not fit this version's model (torch's message says how)
    with fail_cleanly((ValueError, RuntimeError)):
        from bstrec.api import load_run
        from bstrec.serve.worker import WorkerSettings

        t0 = time.perf_counter()
        rec = load_run(run_dir).recommender(keep_top=keep_top, candidates=candidates, trace=trace)
        say(
            f"loaded {run_dir} in {time.perf_counter() - t0:.1f} s: {rec.ds.n_users:,} users, "
            f"{rec.ds.n_items:,} movies"
            + (
                f"; the model ranks the top {rec.candidates} its cheap stage retrieves"
                if rec.candidates
                else ""
            )
        )
        # the server answers from here on; known users are ranked in the background
        settings = WorkerSettings(
            threads=model_threads,
            torch_threads=threads,
            precompute=precompute,
            process=model_process,
        )
        app = create_app(rec, settings, say=say)
    # Everything loaded so far lives as long as the server: torch, pydantic and FastAPI
    # internals, the run. A full garbage collection walks all of it (about 200,000
    # objects, 110 ms), and it stopped every request in flight for as long: a p99 of
    # 135 ms for answers that take 10. Frozen, the collector leaves it alone.
    gc.freeze()
    if not _is_loopback(host):
        typer.echo(
            f"warning: binding {host}: the API is reachable from other machines, "
            "without authentication or TLS. Use --host 127.0.0.1 to keep it local.",
            err=True,
        )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"serving {run_dir} at http://{shown}:{port}/  (API docs: /docs)", err=True)
    # one process: the model is loaded once and requests share it (see serve/app.py)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def say(line: str) -> None:
    """A line on stderr at once (the precompute reports from its own thread)."""
    print(line, file=sys.stderr, flush=True)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
