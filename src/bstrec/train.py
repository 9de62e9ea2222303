"""The training loop: epochs, validation, early stopping, checkpoints, resume.

Every training row with at least one earlier training row is a target whose history
is the L rows before it (no random windows). Ranking uses sampled negatives; rating
uses MSE on stars. Validation (protocol R or T on the validation targets) picks the
best epoch; the test targets are never touched here.

Under ``torchrun`` the same loop runs as DistributedDataParallel (see
``distributed.py``): each rank trains on its part of every global batch, evaluates
its part of the validation targets, and only rank 0 writes files. A checkpoint
(``checkpoint.py``) at every epoch end, and every ``train.checkpoint_every_steps``
steps, lets ``train(..., resume=True)`` continue exactly where a killed run stopped.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bstrec import checkpoint
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.interactions import Dataset
from bstrec.data.splits import Split, make_split
from bstrec.distributed import DistContext, pick_device
from bstrec.distributed import setup as setup_distributed
from bstrec.models.factory import TRAINED, catalog_features, task_of
from bstrec.run_dir import atomic_write_text, save_model, write_data_files
from bstrec.training.baselines import fit_baseline_run
from bstrec.training.memory import keep_freed_memory
from bstrec.training.report import (
    append_jsonl,
    describe,
    plot_curves,
    progress_bar,
    write_summary,
)
from bstrec.training.state import (
    LoopState,
    TrainingError,
    TrainResult,
    check_resumable,
    kept_note,
    load_checkpoint,
    seed_everything,
)
from bstrec.training.step import Trainer, use_bf16
from bstrec.training.validation import primary, validate

__all__ = [
    "TrainResult",
    "Trainer",
    "TrainingError",
    "pick_device",
    "primary",
    "train",
    "use_bf16",
    "validate",
]


def train(
    cfg: RunConfig, ds: Dataset, out: Path, log=print, *, resume: bool = False
) -> TrainResult:
    """Train (or fit) the configured model on ``ds`` into run folder ``out``.

    Under torchrun (or inside a process group the caller set up) this is one rank of
    a DistributedDataParallel run. ``resume=True`` continues from ``out``'s checkpoint.
    """
    ctx = setup_distributed(cfg.train.device)
    if cfg.train.threads or ctx.device.type == "cpu":
        torch.set_num_threads(cfg.train.threads or 1)
    if ctx.device.type == "cpu" and cfg.train.keep_freed_memory:
        keep_freed_memory()
    try:
        return _train(cfg, ds, Path(out), log if ctx.is_main else _quiet, ctx, resume)
    finally:
        ctx.close()


def _quiet(_msg: str) -> None:
    pass


def _train(
    cfg: RunConfig, ds: Dataset, out: Path, log, ctx: DistContext, resume: bool
) -> TrainResult:
    cfg.model.task = task_of(cfg.model.name, cfg.model.task)
    cfg.resolve()
    if cfg.model.task == "rating" and not ds.has_ratings:
        raise ValueError(f"task rating needs ratings; data set {ds.name} has none")
    seed_everything(cfg.train.seed)
    split = make_split(ds, cfg.data.split)
    names = SequenceStore(ds).user_feature_names if cfg.model.use_user_features else []
    store = SequenceStore(ds, names)
    cat = catalog_features(ds, names)
    ck = _checkpoint_to_resume(cfg, ds, out, log, ctx) if resume else None
    if ctx.is_main:
        _prepare_folder(cfg, ds, out, names, fresh=ck is None)
    if cfg.model.name not in TRAINED:
        return fit_baseline_run(cfg, ds, out, split, store, cat, ctx, log)
    tr = Trainer(cfg, ds, store, split, ctx, cat, fit_wide_part=ck is None, log=log)
    loop = _Loop(cfg, out, log, ctx, tr, store, split, cat)
    st = loop.start(ck)
    loop.run(st)
    setup = tr.setup_seconds if ck is None else 0.0
    result = TrainResult(out, tr.model, st.best, st.history, st.train_time, ctx.rank, setup)
    if ctx.is_main:
        write_summary(out, cfg, ds, result)
        plot_curves(out, st.history)
    return result


def _checkpoint_to_resume(cfg: RunConfig, ds: Dataset, out: Path, log, ctx: DistContext):
    """The checkpoint in ``out``, the same on every rank, checked against ``cfg``."""
    if cfg.model.name not in TRAINED:
        return None
    # rank 0 reads and verifies, every rank gets the same state (nodes need not share
    # a file system for the checkpoint)
    ck = ctx.broadcast_object(load_checkpoint(out, log) if ctx.is_main else None)
    if "error" in ck:  # rank 0 could not load: every rank stops with its message
        raise TrainingError(ck["error"])
    check_resumable(ck, cfg, ds, out)
    return ck


def _prepare_folder(cfg: RunConfig, ds: Dataset, out: Path, names, fresh: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cfg.save(out / "config.yaml")
    write_data_files(out, ds, names)
    if fresh:
        (out / "metrics.jsonl").unlink(missing_ok=True)
        # a stale checkpoint of an earlier run in this folder must never be resumed
        for stale in ("last.pt", "previous.pt"):
            (checkpoint.checkpoint_dir(out) / stale).unlink(missing_ok=True)


@dataclass
class _Loop:
    """The epochs of one rank: steps, validation at its interval, checkpoints, stops."""

    cfg: RunConfig
    out: Path
    log: Callable[[str], None]
    ctx: DistContext
    tr: Trainer
    store: SequenceStore
    split: Split
    cat: object
    progress: object = None

    @property
    def steps_per_epoch(self) -> int:
        return len(self.tr.shards)

    def start(self, ck) -> LoopState:
        """A fresh loop state, or the checkpoint's (its metrics and best model rewritten)."""
        tr, out = self.tr, self.out
        # fitting the wide part is part of training: it counts in the training time
        if ck is None:
            return LoopState(train_time=tr.setup_seconds)
        st = tr.restore(ck, self.log)
        if self.ctx.is_main:
            rows = "".join(json.dumps(r) + "\n" for r in st.history)
            atomic_write_text(out / "metrics.jsonl", rows)
            if tr.best_state is not None:
                tr.save_best(out)
        self.log(f"resuming {out} at epoch {st.epoch} batch {st.batch} (step {st.step})")
        return st

    @property
    def train_epochs(self) -> int:
        """Epochs this run trains: the schedule's, or fewer with ``stop_after_epochs``."""
        t = self.cfg.train
        return min(t.epochs, t.stop_after_epochs) if t.stop_after_epochs > 0 else t.epochs

    def patience_armed(self, st: LoopState) -> bool:
        """Whether a validation without improvement counts towards patience yet
        (``train.patience_from``)."""
        t = self.cfg.train
        return st.step >= t.patience_from * t.epochs * self.steps_per_epoch

    def run(self, st: LoopState) -> None:
        cfg = self.cfg
        n_epochs = self.train_epochs
        finished = st.stop_reason == "patience" or st.epoch >= n_epochs
        if finished:
            self.log(f"{self.out}: training had already finished; nothing to resume")
        self.progress = progress_bar(
            cfg.train.progress and self.ctx.is_main and not finished,
            total=self.steps_per_epoch * n_epochs,
            initial=st.step,
        )
        st.stop_reason = ""
        for epoch in range(st.epoch, n_epochs if not finished else 0):
            self.epoch(st, epoch)
            if st.stop_reason:
                break
        self.progress.close()

    def epoch(self, st: LoopState, epoch: int) -> None:
        """Train ``epoch`` from the state's batch on; validate and checkpoint on the way."""
        cfg, tr, n = self.cfg, self.tr, self.steps_per_epoch
        eval_steps = max(1, int(round(cfg.train.eval_every * n)))
        every = cfg.train.checkpoint_every_steps
        tr.shards.set_epoch(epoch)
        tr.model.train()
        first = st.batch if epoch == st.epoch else 0
        if first == 0:
            st.loss_sum, st.loss_n = 0.0, 0
        t_mark = time.perf_counter()
        for k in range(first, n):
            elapsed = st.train_time + time.perf_counter() - t_mark
            over = cfg.train.max_minutes > 0 and elapsed > 60 * cfg.train.max_minutes
            s = tr.step(k, flag=float(over))
            if s.nonfinite:
                raise TrainingError(
                    f"non-finite loss at epoch {epoch} step {st.step + 1}; "
                    f"stopped before applying it. {kept_note(self.out)}"
                )
            over = s.flag > 0  # any rank over time stops them all together
            st.step += 1
            st.trained_targets += s.n
            st.loss_sum += s.loss_sum
            st.loss_n += s.n
            self.progress.update(1)
            self.progress.set_postfix(loss=f"{st.loss_sum / st.loss_n:.4f}", epoch=epoch)
            end_of_epoch = k + 1 == n
            last = end_of_epoch and epoch + 1 == self.train_epochs
            if (
                st.step % eval_steps == 0
                or over
                or last
                or (end_of_epoch and cfg.train.eval_every <= 1)
            ):
                st.train_time += time.perf_counter() - t_mark
                self.validate(st, epoch)
                if st.bad_evals >= cfg.train.patience:
                    st.stop_reason = "patience"
                elif over:
                    st.stop_reason = "time"
                t_mark = time.perf_counter()
            if end_of_epoch or st.stop_reason or (every > 0 and st.step % every == 0):
                st.train_time += time.perf_counter() - t_mark
                st.epoch, st.batch = (epoch + 1, 0) if end_of_epoch else (epoch, k + 1)
                tr.save_checkpoint(self.out, st)
                t_mark = time.perf_counter()
            if st.stop_reason:
                return

    def validate(self, st: LoopState, epoch: int) -> None:
        """One validation pass: logged, appended to metrics.jsonl, best model kept."""
        cfg, tr, ctx = self.cfg, self.tr, self.ctx
        self.progress.set_description("validating")  # not a silent pause
        m = validate(
            tr.model,
            self.store,
            self.split,
            cfg.data.max_len,
            device=tr.device,
            ctx=ctx,
            now=cfg.data.now,
            max_users=cfg.train.val_users,
        )
        rec = {
            "epoch": epoch,
            "step": st.step,
            "fraction": st.step / self.steps_per_epoch,
            "split": "val",
            "train_loss": st.loss_sum / max(st.loss_n, 1),
            **m,
            "train_seconds": st.train_time,
            "targets_per_second": st.trained_targets / max(st.train_time, 1e-9),
        }
        st.history.append(rec)
        if ctx.is_main:
            append_jsonl(self.out / "metrics.jsonl", rec)
        score = primary(m)
        improved = score > st.best_score
        if improved:
            st.best_score, st.best, st.bad_evals = score, rec, 0
            tr.keep_best()
            if ctx.is_main:
                save_model(self.out, tr.model, cfg, self.cat)
        elif self.patience_armed(st):  # only validations from patience_from on count
            st.bad_evals += 1
        self.log(describe(rec, improved))
        self.progress.set_description("training")
        tr.model.train()
