"""`bstrec evaluate`: protocol R (ranking) or T (rating) metrics of a run."""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import Command, UsageError, emit_json, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(evaluate)


def evaluate(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bstrec train`"),
    split: str = typer.Option("val", "--split", help="val | test (read test once, at the end)"),
    users: int = typer.Option(
        0,
        "--users",
        min=0,
        help="Evaluate a fixed, seeded sample of "
        "this many users (0: all); the standard error is reported",
    ),
    paper: bool = typer.Option(
        False,
        "--paper",
        help="R-paper: the gap feature measured "
        "from the target's own time (the BST paper's offline "
        "choice), not from the last input watch (protocol R)",
    ),
    candidates: int = typer.Option(
        None,
        "--candidates",
        min=0,
        help="Retrieve this many "
        "movies per user with the model's cheap stage and rank "
        "only those (0: rank the whole catalogue; default: 200 "
        "above 5,000 movies, else 0)",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Full-catalogue ranking metrics (protocol R) or rating errors (protocol T)."""
    from bstrec.api import load_run

    with fail_cleanly((ValueError,)):
        if split not in ("val", "test"):
            raise UsageError(f"--split must be val or test, not {split!r}")
        metrics = load_run(run_dir).evaluate(split, users=users, paper=paper, candidates=candidates)
    if json_out:
        emit_json(metrics)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{metrics['model']} on {metrics['data']} ({split}, protocol {metrics['protocol']})"
    )
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    Console().print(table)
