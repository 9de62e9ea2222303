"""What a run's checkpoint carries and how a resume is checked: the loop's position,
the random states of every rank, and the settings that may change on resume."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bstrec import checkpoint
from bstrec.config import RunConfig
from bstrec.data.interactions import Dataset
from bstrec.distributed import DistContext
from bstrec.models.base import ScoringModel

# Settings a resumed run may change; anything else must match the checkpoint, since
# it changes what the saved position, optimizer state or weights mean.
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.stop_after_epochs",
    "train.patience",
    "train.patience_from",
    "train.max_minutes",
    "train.checkpoint_every_steps",
    "train.device",
    "train.threads",
    "train.progress",
    "train.eval_every",
    "train.lr",
    "train.weight_decay",
    "train.precision",
    "train.keep_freed_memory",
}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume state)."""


@dataclass
class TrainResult:
    run_dir: Path
    model: ScoringModel
    best: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    rank: int = 0  # under torchrun every rank returns; only rank 0 wrote the run folder
    # of train_seconds, fitting and tuning the wide part before the first step (0 when
    # resumed: it was fitted before the checkpoint)
    setup_seconds: float = 0.0


@dataclass
class LoopState:
    """Where training stands: everything of the loop that a checkpoint must carry."""

    epoch: int = 0
    batch: int = 0  # next batch of `epoch` to train on
    step: int = 0  # optimizer steps since the start
    trained_targets: int = 0
    train_time: float = 0.0
    loss_sum: float = 0.0  # this epoch's training loss so far, summed over targets
    loss_n: int = 0
    best_score: float = -math.inf
    best: dict = field(default_factory=dict)
    bad_evals: int = 0
    history: list[dict] = field(default_factory=list)
    stop_reason: str = ""  # "", "patience" or "time"

    def to_dict(self) -> dict:
        return {
            "progress": {
                k: getattr(self, k)
                for k in (
                    "epoch",
                    "batch",
                    "step",
                    "trained_targets",
                    "train_time",
                    "loss_sum",
                    "loss_n",
                    "stop_reason",
                )
            },
            "best": {"score": self.best_score, "record": self.best, "bad_evals": self.bad_evals},
            "history": self.history,
        }

    @classmethod
    def from_dict(cls, ck: dict) -> LoopState:
        p, b = ck["progress"], ck["best"]
        return cls(
            epoch=int(p["epoch"]),
            batch=int(p["batch"]),
            step=int(p["step"]),
            trained_targets=int(p["trained_targets"]),
            train_time=float(p["train_time"]),
            loss_sum=float(p["loss_sum"]),
            loss_n=int(p["loss_n"]),
            stop_reason=str(p["stop_reason"]),
            best_score=float(b["score"]),
            best=dict(b["record"]),
            bad_evals=int(b["bad_evals"]),
            history=list(ck["history"]),
        )


def rank_seed(seed: int, rank: int) -> int:
    return seed + 7919 * rank


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def to_cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def rng_states(ctx: DistContext, gen: torch.Generator) -> dict:
    """All random states as tensors and numbers (loadable with weights_only=True).

    The sampler's generator, numpy and python are the same on every rank; torch's
    global generator (dropout) differs per rank, so each rank's is kept.
    """
    cuda = ctx.device.type == "cuda"
    mine = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(ctx.device) if cuda else None,
    }
    per_rank = ctx.all_gather_object(mine)
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": [p["torch"] for p in per_rank],
        "cuda": [p["cuda"] for p in per_rank] if cuda else None,
        "generator": gen.get_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {
            "version": py_version,
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }


def restore_rng(
    ctx: DistContext, gen: torch.Generator, rng: dict, saved_world: int, seed: int, log
) -> None:
    gen.set_state(rng["generator"])
    n = rng["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if saved_world == ctx.world:
        torch.set_rng_state(rng["torch"][ctx.rank])
        if ctx.device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state(rng["cuda"][ctx.rank], ctx.device)
    else:
        # Batches and negatives do not depend on the number of ranks; only dropout
        # masks do, and those cannot carry over to a different number of ranks.
        log(
            f"note: checkpoint written by {saved_world} rank(s), resuming on {ctx.world}: "
            "dropout masks will differ from an uninterrupted run"
        )
        if ctx.rank == 0:
            torch.set_rng_state(rng["torch"][0])
        else:
            torch.manual_seed(rank_seed(seed, ctx.rank))


def load_checkpoint(out: Path, log) -> dict:
    if not (out / "config.yaml").is_file():
        return {"error": f"{out}: not a run folder (no config.yaml); nothing to resume"}
    try:
        ck, _path = checkpoint.load(out, log)
    except checkpoint.CheckpointError as e:
        return {"error": str(e)}
    return ck


def check_resumable(ck: dict, cfg: RunConfig, ds: Dataset, out: Path) -> None:
    if ck.get("data_checksum") and ck["data_checksum"] != ds.checksum:
        raise TrainingError(
            f"{out} was trained on other data (checksum {ck['data_checksum']}"
            f", now {ds.checksum}); --resume needs the same data set"
        )
    saved, now = _flatten(ck.get("config", {})), _flatten(cfg.to_dict())
    changed = sorted(
        k
        for k in saved.keys() | now.keys()
        if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES
    )
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(
            f"{out}: cannot resume with changed settings ({diffs}); only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change"
        )


def _flatten(d: dict) -> dict:
    return {f"{s}.{k}": v for s, sub in d.items() for k, v in (sub or {}).items()}


def kept_note(out: Path) -> str:
    last, best = checkpoint.checkpoint_dir(out) / "last.pt", out / "model.safetensors"
    if not last.exists():
        return "No checkpoint had been written yet; try a lower train.lr"
    kept = f"The last good checkpoint {last} is kept"
    if best.exists():
        kept = f"The last good checkpoint {last} and the best weights so far {best} are kept"
    return (
        f"{kept}: resume with `bstrec train --resume {out} "
        f"--set train.lr=...` and a lower learning rate"
    )
