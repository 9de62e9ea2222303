"""`bstrec train`: train BST or fit a baseline into a run folder.

The same command runs one rank of a distributed run under torchrun
(``torchrun --nproc_per_node=N -m bstrec train ...``); only rank 0 prints and writes.
"""

from __future__ import annotations

from pathlib import Path

import typer

from bstrec.api import check_model_name
from bstrec.commands.common import Command, emit_json, fail_cleanly, usage_errors
from bstrec.config import RunConfig
from bstrec.data.interactions import DataError


def register(app: typer.Typer) -> None:
    app.command(cls=Command)(train)


# Options left unset take their value from --config, else from the config's defaults;
# typer shows no default for them, so the help text says it ("\\[" is a literal "[" in
# typer's rich help).
_D = RunConfig()


def _default(value) -> str:
    return f"\\[default: {value}]"


def train(
    data: str = typer.Option(
        None,
        "--data",
        help=f"Data folder, interactions file or name (data.source) {_default(_D.data.source)}",
    ),
    task: str = typer.Option(
        None, "--task", help=f"ranking | rating (model.task) {_default(_D.model.task)}"
    ),
    out: Path = typer.Option(None, "--out", help="Run folder to write (required, unless --resume)"),
    # the full list is models/factory.py's MODELS, which imports torch: an unknown name's
    # error lists them, so `bstrec --help` stays fast
    model: str = typer.Option(
        None,
        "--model",
        help="bst, or a baseline: popularity, "
        "cooccurrence, global-mean, ... (an unknown name lists them "
        f"all) (model.name) {_default(_D.model.name)}",
    ),
    config: Path = typer.Option(
        None,
        "--config",
        exists=True,
        dir_okay=False,
        help="YAML config file (options given here win over it)",
    ),
    set_: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. train.lr=0.001 (repeatable)"
    ),
    seed: int = typer.Option(
        None, "--seed", help=f"Random seed (train.seed) {_default(_D.train.seed)}"
    ),
    device: str = typer.Option(
        None, "--device", help=f"auto | cpu | cuda (train.device) {_default(_D.train.device)}"
    ),
    resume: Path = typer.Option(
        None,
        "--resume",
        help="Continue the run in this folder "
        "from its last checkpoint (its config.yaml; --set may "
        "change epochs, patience, max_minutes, ...)",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the best metrics as JSON"),
) -> None:
    """Train a model and keep the best checkpoint (by validation) in OUT."""
    from bstrec.api import fit
    from bstrec.checkpoint import CheckpointError
    from bstrec.distributed import torchrun_world
    from bstrec.train import TrainingError

    rank = torchrun_world()[0]
    with fail_cleanly((ValueError, TrainingError, CheckpointError)):
        with usage_errors():  # the command line and config files: exit status 2
            cfg = _resolve_config(data, task, out, model, config, set_, seed, device, resume)
        if resume is not None:
            out = resume
        if json_out:
            cfg.train.progress = False
        # the public API's fit: reads the data, trains, and removes a folder it created
        # if training fails before that folder holds a model or a checkpoint
        run = fit(
            None,
            out=out,
            config=cfg,
            resume=resume is not None,
            log=None if json_out else typer.echo,
        )
    if rank != 0:
        return  # rank 0 reports for the whole run
    if json_out:
        summary = run.summary
        emit_json(
            {
                "run_dir": str(out),
                "best_val": summary["best_val"],
                "train_seconds": summary["train_seconds"],
            }
        )
    else:
        typer.echo(f"run folder: {out}")


def _resolve_config(data, task, out, model, config, set_, seed, device, resume) -> RunConfig:
    """The run's config from --resume's folder or --config and the options; ValueError
    (a usage error) for impossible combinations, bad values and unknown model names."""
    if resume is not None:
        given = [
            n
            for n, v in (
                ("--data", data),
                ("--task", task),
                ("--model", model),
                ("--config", config),
            )
            if v is not None
        ]
        if given:
            raise ValueError(
                f"--resume takes its settings from {resume / 'config.yaml'}"
                f"; drop {', '.join(given)} (use --set for what may change)"
            )
        if out is not None and out.resolve() != resume.resolve():
            raise ValueError(
                "--resume RUN_DIR continues in RUN_DIR; drop --out or make them the same"
            )
        if not (resume / "config.yaml").is_file():
            # the folder given is not what it should be: a data error (exit status 1)
            raise DataError(f"{resume}: not a run folder (no config.yaml); nothing to resume")
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
    check_model_name(cfg.model.name)  # before any data is read
    return cfg
