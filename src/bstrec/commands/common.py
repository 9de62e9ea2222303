"""Helpers every command shares: JSON output and clean failures."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import contextmanager

import typer

from bstrec.data.interactions import DataError


def emit_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=2, default=_default))


def _default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


@contextmanager
def fail_cleanly(extra: tuple[type[BaseException], ...] = ()):
    """Known errors print one line to stderr and exit 1, without a traceback."""
    try:
        yield
    except (DataError, FileNotFoundError, *extra) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from None


def die(msg: str, code: int = 1) -> None:
    print(f"error: {msg}", file=sys.stderr)
    raise typer.Exit(code)


Handler = Callable[..., None]
