"""`bstrec quickstart`: data, training, evaluation table and recommendations in one go."""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import Command, emit_json, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(quickstart)


def quickstart(
    data: str = typer.Option(
        "ml-1m", "--data", help="Data folder or name (default: cached/downloaded ml-1m)"
    ),
    out: Path = typer.Option(Path("runs/quickstart"), "--out", help="Where the runs go"),
    epochs: int = typer.Option(
        None,
        "--epochs",
        min=1,
        help="BST trains the first N epochs of its default schedule [default: 12 of 20]",
    ),
    user: str = typer.Option(None, "--user", help="Whose recommendations to show"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Describe the data, train BST and baselines, compare them, recommend for one user."""
    from bstrec import load_dataset
    from bstrec.data.download import download, known_archives
    from bstrec.data.loaders import find_named
    from bstrec.quickstart import quickstart as run

    with fail_cleanly((ValueError,)):
        if not Path(data).exists() and data in known_archives() and not find_named(data, None):
            download(data)  # offline, this fails fast and says how to import the zip by hand
        ds = load_dataset(data)
        log = (lambda _m: None) if json_out else typer.echo
        result = run(ds, out, epochs=epochs, user=user, log=log, progress=not json_out)
    if json_out:
        emit_json(
            {
                "data": result.data,
                "test_protocol_R": result.table,
                "run_dir": result.run_dir,
                "example": result.example.to_dict(),
            }
        )
        return
    from rich.console import Console
    from rich.table import Table

    from bstrec.commands.recommend import print_recommendations

    console = Console()
    d = result.data
    console.print(
        f"[bold]{d['name']}[/bold]: {d['users']:,} users, {d['movies']:,} movies, "
        f"{d['interactions']:,} interactions"
    )
    table = Table(title="Next-movie ranking, protocol R (test, full catalogue)")
    cols = ("model", "HR@1", "HR@10", "HR@20", "NDCG@10", "MRR", "users", "train_seconds")
    for c in cols:
        table.add_column(c, justify="left" if c == "model" else "right")
    for row in result.table:
        table.add_row(
            *[
                f"{row[c]:.4f}"
                if isinstance(row[c], float) and c != "train_seconds"
                else f"{row[c]:.0f}"
                if c == "train_seconds"
                else str(row[c])
                for c in cols
            ]
        )
    console.print(table)
    print_recommendations(result.example)
    console.print(
        f"run folder: {result.run_dir}  (try: bstrec recommend {result.run_dir} "
        f"--user {result.example.user_id})"
    )
