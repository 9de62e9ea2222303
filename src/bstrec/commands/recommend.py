"""`bstrec recommend`: top-k unseen movies for a user or a list of watched movies."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from bstrec.commands.common import Command, UsageError, emit_json, fail_cleanly
from bstrec.results import Recommendations


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(recommend)


def recommend(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bstrec train`"),
    user: str = typer.Option(None, "--user", help="Raw user id from the data set"),
    history: str = typer.Option(
        None, "--history", help="Raw movie ids, comma-separated, newest last"
    ),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="How many movies"),
    candidates: int = typer.Option(
        None,
        "--candidates",
        min=0,
        help="retrieve this many movies with the model's cheap stage and rank only those "
        "(0: the whole catalogue; default: 200 above 2,000 movies, else 0)",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Recommend unseen movies, each with the watched movies that drove it."""
    from bstrec.api import load_run

    with fail_cleanly((ValueError,)):
        if (user is None) == (history is None):
            raise UsageError("give exactly one of --user or --history")
        ids = None if history is None else parse_id_list(history, "--history")
        run = load_run(run_dir)
        if ids is None:
            out = run.recommend(user=user, k=k, candidates=candidates)
        else:
            if run.dataset.item_ids.dtype.kind in "iu":  # the data set's movie ids are numbers
                check_whole_numbers(ids, "--history")
            out = run.recommend(history=ids, k=k, candidates=candidates)
    if json_out:
        emit_json(out.to_dict())
        return
    print_recommendations(out)


def parse_id_list(text: str, option: str) -> list[str]:
    """'1193, 661,914' -> ['1193', '661', '914']; an empty item is a usage error."""
    items = [t.strip() for t in text.split(",")]
    for i, item in enumerate(items, 1):
        if not item:
            raise UsageError(
                f"{option} {text!r}: item {i} is empty; give ids separated by "
                "single commas, e.g. 1193,661,914"
            )
    return items


def check_whole_numbers(ids: list[str], option: str) -> None:
    for i, item in enumerate(ids, 1):
        if not re.fullmatch(r"-?[0-9]+", item):
            raise UsageError(
                f"{option}: item {i}, {item!r}, is not a movie id (this run's "
                "movie ids are whole numbers)"
            )


def print_recommendations(out: Recommendations) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    who = f"user {out.user_id}" if out.user_id is not None else "this history"
    recent = Table(title=f"Recently watched by {who} (newest first)")
    for col in ("movie", "title", "genres", "rating"):
        recent.add_column(col)
    for w in out.history:
        recent.add_row(
            str(w.movie_id),
            w.title,
            ", ".join(w.genres),
            "" if w.rating is None else f"{w.rating:g}",
        )
    console.print(recent)
    label = "predicted stars" if out.task == "rating" else "score"
    picks = Table(title=f"Recommended for {who}")
    for col in ("#", "movie", "title", "genres", label, "because you watched"):
        picks.add_column(col)
    for i, p in enumerate(out, 1):
        because = "; ".join(b.title for b in p.because)
        picks.add_row(
            str(i), str(p.movie_id), p.title, ", ".join(p.genres), f"{p.score:.3f}", because
        )
    console.print(picks)
