"""`bstrec export`: a run's full-catalogue scorer in a format that leaves PyTorch."""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import Command, UsageError, emit_json, fail_cleanly

FORMATS = ("onnx",)


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(export)


def export(
    run_dir: Path = typer.Argument(..., help="Run folder written by `bstrec train`"),
    format_: str = typer.Option("onnx", "--format", help="onnx (the only one so far)"),
    out: Path = typer.Option(
        ...,
        "--out",
        help="File to write, e.g. model.onnx; the input spec goes beside it as OUT.json",
    ),
    check: bool = typer.Option(
        True,
        "--check/--no-check",
        help="Check that ONNX Runtime reproduces PyTorch's scores (within 1e-4) before writing",
    ),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Export the full-catalogue scorer: histories in, every movie's score out."""
    from bstrec.api import load_run
    from bstrec.export_onnx import ExportError

    with fail_cleanly((ValueError, ExportError)):
        if format_ not in FORMATS:
            raise UsageError(f"--format must be one of {', '.join(FORMATS)}, not {format_!r}")
        res = load_run(run_dir).export_onnx(out, check=check)
    body = {
        "path": str(res.path),
        "sidecar": str(res.sidecar),
        "size_bytes": res.size_bytes,
        "max_abs_diff": res.max_abs_diff,
        "parity_rows": res.parity_rows,
        "export_seconds": round(res.export_seconds, 2),
    }
    if json_out:
        emit_json(body)
        return
    checked = (
        f"ONNX Runtime matches PyTorch to {res.max_abs_diff:.2g} on {res.parity_rows} histories"
        if res.max_abs_diff is not None
        else "not checked"
    )
    typer.echo(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB) and {res.sidecar}; {checked}")
