"""`bstrec train`: train BST or fit a baseline into a run folder.

The same command runs one rank of a distributed run under torchrun
(``torchrun --nproc_per_node=N -m bstrec train ...``); only rank 0 prints and writes.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.commands.common import emit_json, fail_cleanly


def register(app: typer.Typer) -> None:
    app.command()(train)


def train(
    data: str = typer.Option(None, "--data", help="Data folder, interactions file or name "
                             "[default: ml-1m]"),
    task: str = typer.Option(None, "--task", help="ranking | rating [default: ranking]"),
    out: Path = typer.Option(None, "--out", help="Run folder to write"),
    model: str = typer.Option(None, "--model", help="bst | popularity | transitions | "
                              "global-mean | user-mean | bias [default: bst]"),
    config: Path = typer.Option(None, "--config", help="YAML config file"),
    set_: list[str] = typer.Option([], "--set", help="Override, e.g. train.lr=0.001"),
    seed: int = typer.Option(None, "--seed", help="Random seed (train.seed)"),
    device: str = typer.Option(None, "--device", help="auto | cpu | cuda"),
    resume: Path = typer.Option(None, "--resume", help="Continue the run in this folder "
                                "from its last checkpoint (its config.yaml; --set may "
                                "change epochs, patience, max_minutes, ...)"),
    json_out: bool = typer.Option(False, "--json", help="Print the best metrics as JSON"),
) -> None:
    """Train a model and keep the best checkpoint (by validation) in OUT."""
    from bstrec import load_dataset
    from bstrec.checkpoint import CheckpointError
    from bstrec.config import RunConfig
    from bstrec.distributed import torchrun_world
    from bstrec.train import TrainingError
    from bstrec.train import train as run_training

    with fail_cleanly((ValueError, TrainingError, CheckpointError)):
        if resume is not None:
            given = [n for n, v in (("--data", data), ("--task", task), ("--model", model),
                                    ("--config", config)) if v is not None]
            if given:
                raise ValueError(f"--resume takes its settings from {resume / 'config.yaml'}"
                                 f"; drop {', '.join(given)} (use --set for what may change)")
            if out is not None and out.resolve() != resume.resolve():
                raise ValueError("--resume RUN_DIR continues in RUN_DIR; drop --out or make "
                                 "them the same")
            if not (resume / "config.yaml").is_file():
                raise ValueError(f"{resume}: not a run folder (no config.yaml); nothing to "
                                 "resume")
            out = resume
            cfg = RunConfig.load(resume / "config.yaml")
        else:
            if out is None:
                raise ValueError("--out RUN_DIR is required (or --resume RUN_DIR)")
            cfg = RunConfig.load(config) if config else RunConfig()
            # options given on the command line win over the config file's values
            if model is not None:
                cfg.model.name = model
            if task is not None:
                cfg.model.task = task
            if data is not None:
                cfg.data.source = data
        if seed is not None:
            cfg.train.seed = seed
        if device is not None:
            cfg.train.device = device
        cfg.override(set_)
        ds = load_dataset(cfg.data.source)
        log = (lambda _msg: None) if json_out else typer.echo
        if json_out:
            cfg.train.progress = False
        result = run_training(cfg, ds, out, log=log, resume=resume is not None)
    if torchrun_world()[0] != 0:
        return  # rank 0 reports for the whole run
    if json_out:
        emit_json({"run_dir": str(out), "best_val": result.best,
                   "train_seconds": result.train_seconds})
    else:
        typer.echo(f"run folder: {out}")
