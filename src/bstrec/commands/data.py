"""`bstrec data ...`: get, import, describe and generate data sets."""

from __future__ import annotations

import typer

from bstrec.commands.common import emit_json, fail_cleanly

app = typer.Typer(help="Get, import, describe and generate data sets.", no_args_is_help=True)


@app.command()
def info(
    path_or_name: str = typer.Argument(..., help="Data folder, interactions file, or name"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Users, movies, interactions, time range, ratings histogram, sequence lengths."""
    from bstrec import load_dataset
    from bstrec.data.stats import describe

    with fail_cleanly():
        stats = describe(load_dataset(path_or_name))
    if json_out:
        emit_json(stats)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data set {stats['name']}", show_header=False)
    for k, v in stats.items():
        table.add_row(k, str(v))
    Console().print(table)
