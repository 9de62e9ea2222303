"""`bstrec train`: train BST or fit a baseline into a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import emit_json, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command()(train)


def train(
    data: str = typer.Option("ml-1m", "--data", help="Data folder, interactions file or name"),
    task: str = typer.Option("ranking", "--task", help="ranking | rating"),
    out: Path = typer.Option(..., "--out", help="Run folder to write"),
    model: str = typer.Option("bst", "--model", help="bst | popularity | transitions | "
                              "global-mean | user-mean | bias"),
    config: Path = typer.Option(None, "--config", help="YAML config file"),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. train.lr=0.001"),
    seed: int = typer.Option(None, "--seed", help="Random seed (train.seed)"),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda"),
    json_out: bool = typer.Option(False, "--json", help="Print the best metrics as JSON"),
) -> None:
    """Train a model and keep the best checkpoint (by validation) in OUT."""
    from bstrec import load_dataset
    from bstrec.config import RunConfig
    from bstrec.train import TrainingError
    from bstrec.train import train as run_training

    with fail_cleanly((ValueError, TrainingError)):
        cfg = RunConfig.load(config) if config else RunConfig()
        cfg.model.name, cfg.model.task, cfg.data.source = model, task, data
        if seed is not None:
            cfg.train.seed = seed
        if device is not None:
            cfg.train.device = device
        cfg.override(set_)
        ds = load_dataset(cfg.data.source)
        log = (lambda _msg: None) if json_out else typer.echo
        if json_out:
            cfg.train.progress = False
        result = run_training(cfg, ds, out, log=log)
    if json_out:
        emit_json({"run_dir": str(out), "best_val": result.best,
                   "train_seconds": result.train_seconds})
    else:
        typer.echo(f"run folder: {out}")
