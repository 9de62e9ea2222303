"""`bstrec data ...`: get, import, describe and generate data sets."""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import Command, Group, emit_json, fail_cleanly

app = typer.Typer(
    help="Get, import, describe and generate data sets.", no_args_is_help=True, cls=Group
)

DATA_DIR_HELP = "Data folder (default: $BSTREC_DATA_DIR, else the user cache folder)"


@app.command(cls=Command)
def download(
    name: str = typer.Argument(
        ..., help="ml-100k, ml-1m, ml-20m, ml-25m, ml-32m or ml-latest-small"
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    url: str | None = typer.Option(None, help="Download from this URL instead (a mirror)"),
    md5: str | None = typer.Option(None, help="Expected md5 instead of the published one"),
    size: int | None = typer.Option(None, help="Expected size in bytes (with --md5)"),
    timeout: float = typer.Option(10.0, help="Seconds to wait for the server"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Download a MovieLens archive from GroupLens, verify it and unpack it.

    Offline? Fetch the zip by hand and use `bstrec data import`.
    """
    from bstrec.data.download import DownloadOptions
    from bstrec.data.download import download as run

    with fail_cleanly():
        res = run(
            name,
            DownloadOptions(
                data_dir=data_dir, url=url, md5=md5, size=size, timeout=timeout,
                progress=not json_out,
            ),
        )  # fmt: skip
    out = {
        "name": res.name,
        "path": str(res.path),
        "cached": res.cached,
        "downloaded_bytes": res.downloaded_bytes,
        "resumed_from": res.resumed_from,
    }
    if json_out:
        emit_json(out)
    elif res.cached and not res.downloaded_bytes:
        typer.echo(f"{name}: already in {res.path}")
    else:
        resumed = f" (resumed at {res.resumed_from:,} bytes)" if res.resumed_from else ""
        typer.echo(f"{name}: downloaded and verified{resumed}, unpacked to {res.path}")


@app.command("import", cls=Command)
def import_(
    path: Path = typer.Argument(..., help="A MovieLens .zip or an unpacked folder"),
    name: str | None = typer.Option(None, help="Name to load it by (default: from PATH)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Copy a MovieLens zip or folder into the data folder (checked by reading it)."""
    from bstrec.data.download import import_dataset

    with fail_cleanly():
        dest = import_dataset(path, name=name, data_dir=data_dir)
    if json_out:
        emit_json({"name": dest.name, "path": str(dest)})
    else:
        typer.echo(f"imported {path} as {dest.name} ({dest}); load it with `{dest.name}`")


@app.command(cls=Command)
def info(
    path_or_name: str = typer.Argument(..., help="Data folder, interactions file, or name"),
    items: Path | None = typer.Option(None, help="Item features file (interactions file only)"),
    users: Path | None = typer.Option(None, help="User features file (interactions file only)"),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=DATA_DIR_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Parse the files, skip the cache"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Users, movies, interactions, time range, ratings histogram, sequence lengths."""
    from bstrec import describe, load_dataset

    with fail_cleanly():
        ds = load_dataset(path_or_name, data_dir, items=items, users=users, cache=not no_cache)
        stats = describe(ds)
    if json_out:
        emit_json(stats)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"data set {stats['name']}", show_header=False)
    for k, v in stats.items():
        table.add_row(k, str(v))
    Console().print(table)


@app.command(cls=Command)
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write ratings.dat, movies.dat, users.dat"),
    users: int = typer.Option(500, min=1, help="Number of users"),
    movies: int = typer.Option(300, min=2, help="Number of movies"),
    seed: int = typer.Option(0, help="Random seed (same seed, same files)"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Write a synthetic data set in ML-1M format with planted sequential structure."""
    from bstrec.data.synth import synthesize

    res = synthesize(out_dir, users, movies, seed)
    out = {"path": str(res.out_dir), "users": res.n_users, "movies": res.n_movies,
           "ratings": res.n_ratings, "seed": seed}  # fmt: skip
    if json_out:
        emit_json(out)
    else:
        typer.echo(
            f"wrote {res.n_ratings:,} ratings of {res.n_users} users on {res.n_movies} movies "
            f"to {res.out_dir}"
        )
