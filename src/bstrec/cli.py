"""The ``bstrec`` command: one sub-command module per job, assembled here."""

from __future__ import annotations

import typer

from bstrec.commands import data as data_cmd
from bstrec.commands.common import Group

app = typer.Typer(
    name="bstrec",
    help="Behavior Sequence Transformer recommender for MovieLens.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
app.add_typer(data_cmd.app, name="data")

# Sub-commands that live in their own modules register themselves on `app`, with
# `app.command(cls=Command)` (commands/common.py: plain flags in --help).
for _module in ("train", "evaluate", "recommend", "export", "quickstart", "serve"):
    __import__(f"bstrec.commands.{_module}", fromlist=["register"]).register(app)
