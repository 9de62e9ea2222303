"""Helpers every command shares: JSON output, clean failures and the command classes.

Exit status: 0 on success, 2 for a usage error (a bad option value, a malformed id
list, an unknown model name, a bad ``--set`` or config file, or the public API's
``ArgumentError``), 1 for a data or runtime error. Either way one line ``error: ...``
goes to stderr, without a traceback. `fail_cleanly` is the one place that maps
exception types to these codes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from typer.core import TyperCommand, TyperGroup

from bstrec.data.interactions import DataError
from bstrec.errors import ArgumentError

USAGE_EXIT = 2
ERROR_EXIT = 1


class UsageError(Exception):
    """The command line asks for something that cannot be: exit status 2."""


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
def fail_cleanly(extra: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Known errors print one line to stderr and exit: 2 for usage errors (`UsageError`,
    the API's `ArgumentError` and the option parser's own), 1 for data and runtime
    errors (DataError, FileNotFoundError and the types in ``extra``)."""
    try:
        yield
    except (UsageError, ArgumentError) as e:
        _say(str(e))
        raise typer.Exit(USAGE_EXIT) from None
    except typer.TyperException as e:  # the option parser's: bad value, unknown option
        if type(e).__name__ == "NoArgsIsHelpError":
            raise  # typer prints the help for it
        ctx = getattr(e, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _say(e.format_message() + hint)
        raise typer.Exit(getattr(e, "exit_code", ERROR_EXIT)) from None
    except (DataError, FileNotFoundError, *extra) as e:
        _say(str(e))
        raise typer.Exit(ERROR_EXIT) from None


@contextmanager
def usage_errors() -> Iterator[None]:
    """A ValueError inside (config parsing, option checks) is a usage error; a DataError
    (also a ValueError) stays a data error."""
    try:
        yield
    except DataError:
        raise
    except ValueError as e:
        raise UsageError(str(e)) from None


def _say(msg: str) -> None:
    one_line = re.sub(r"\s*\n\s*", " ", msg.strip())
    typer.echo(f"error: {one_line}", err=True)


def _plain_flags(params: list) -> list:
    # This typer prints every option's type in --help, flags included ("--json
    # <bool>"); an empty metavar leaves a flag as just its name.
    for p in params:
        if getattr(p, "is_flag", False) and not getattr(p, "count", False) and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    """A sub-command: flags without a type in --help."""

    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose parse errors (bad option values, unknown options, missing
    arguments) are one `error:` line and exit status 2, like the commands' own."""

    def get_params(self, ctx):
        return _plain_flags(super().get_params(ctx))

    def make_context(self, *args, **kwargs):
        with fail_cleanly():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with fail_cleanly():
            return super().invoke(ctx)
