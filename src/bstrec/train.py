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

import inspect
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bstrec import checkpoint
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.interactions import Dataset
from bstrec.data.splits import Split, make_split
from bstrec.distributed import (
    DistContext,
    EpochShards,
    merge_shard_metrics,
    pick_device,
    shard_bounds,
)
from bstrec.distributed import setup as setup_distributed
from bstrec.evaluate import evaluate_ranking, evaluate_rating, sample_targets
from bstrec.models.base import Recommender
from bstrec.models.factory import (
    TRAINED,
    build_model,
    catalog_features,
    fit_baseline,
    fit_wide,
    task_of,
)
from bstrec.retrieval import retrieval_size
from bstrec.run_dir import atomic_write_text, save_model, write_data_files
from bstrec.sampling import NegativeSampler, training_loss

__all__ = ["TrainResult", "Trainer", "TrainingError", "pick_device", "primary",
           "train", "validate"]

# Settings a resumed run may change; anything else must match the checkpoint, since
# it changes what the saved position, optimizer state or weights mean.
RESUMABLE_CHANGES = {"train.epochs", "train.patience", "train.max_minutes",
                     "train.checkpoint_every_steps", "train.device", "train.threads",
                     "train.progress", "train.eval_every", "train.lr", "train.weight_decay",
                     "train.precision"}


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, bad resume state)."""


def validate(model: Recommender, store: SequenceStore, split: Split, max_len: int,
             which: str = "val", device="cpu", ctx: DistContext | None = None,
             now: str = "last-input", max_users: int = 0) -> dict:
    """Validation metrics; with several ranks each scores its share and the means merge.

    ``max_users`` > 0 scores a fixed sample of that many users (seeded, the same in
    every call), so that large data sets validate in bounded time.
    """
    rows = sample_targets(split.targets(which), max_users)
    if ctx is not None and ctx.enabled:
        rows = rows[shard_bounds(len(rows), ctx.rank, ctx.world)]
    if model.task == "rating":
        m = evaluate_rating(model, store, rows, max_len, device=device)
    else:  # big catalogues: retrieve-then-rank, as evaluation and serving do
        m = evaluate_ranking(model, store, rows, max_len, device=device, now=now,
                             candidates=retrieval_size(model, None))
    if ctx is not None and ctx.enabled:
        m = merge_shard_metrics(ctx.all_gather_object(m))
    return m


def primary(metrics: dict) -> float:
    """Higher is better: NDCG@10 for ranking, -RMSE for rating."""
    return metrics["NDCG@10"] if "NDCG@10" in metrics else -metrics["RMSE"]


@dataclass
class TrainResult:
    run_dir: Path
    model: Recommender
    best: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    rank: int = 0  # under torchrun every rank returns; only rank 0 wrote the run folder


def train(cfg: RunConfig, ds: Dataset, out: Path, log=print, *, resume: bool = False
          ) -> TrainResult:
    """Train (or fit) the configured model on ``ds`` into run folder ``out``.

    Under torchrun (or inside a process group the caller set up) this is one rank of
    a DistributedDataParallel run. ``resume=True`` continues from ``out``'s checkpoint.
    """
    ctx = setup_distributed(cfg.train.device)
    if cfg.train.threads or ctx.device.type == "cpu":
        torch.set_num_threads(cfg.train.threads or 1)
    try:
        return _train(cfg, ds, Path(out), log if ctx.is_main else _quiet, ctx, resume)
    finally:
        ctx.close()


def _quiet(_msg: str) -> None:
    pass


def _train(cfg: RunConfig, ds: Dataset, out: Path, log, ctx: DistContext,
           resume: bool) -> TrainResult:
    cfg.model.task = task_of(cfg.model.name, cfg.model.task)
    cfg.resolve()
    if cfg.model.task == "rating" and not ds.has_ratings:
        raise ValueError(f"task rating needs ratings; data set {ds.name} has none")
    _seed_everything(cfg.train.seed)
    split = make_split(ds, cfg.data.split)
    names = SequenceStore(ds).user_feature_names if cfg.model.use_user_features else []
    store = SequenceStore(ds, names)
    cat = catalog_features(ds, names)
    ck = None
    if resume and cfg.model.name in TRAINED:
        # rank 0 reads and verifies, every rank gets the same state (nodes need not
        # share a file system for the checkpoint)
        ck = _load_checkpoint(out, log) if ctx.is_main else None
        ck = ctx.broadcast_object(ck)
        if "error" in ck:  # rank 0 could not load: every rank stops with its message
            raise TrainingError(ck["error"])
        _check_resumable(ck, cfg, ds, out)
    metrics_path = out / "metrics.jsonl"
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.yaml")
        write_data_files(out, ds, names)
        if ck is None:
            metrics_path.unlink(missing_ok=True)
            # a stale checkpoint of an earlier run in this folder must never be resumed
            for stale in ("last.pt", "previous.pt"):
                (checkpoint.checkpoint_dir(out) / stale).unlink(missing_ok=True)

    if cfg.model.name not in TRAINED:
        return _fit_baseline(cfg, ds, out, split, store, cat, ctx, log)

    tr = Trainer(cfg, ds, store, split, ctx, cat, fit_wide_part=ck is None, log=log)
    # fitting the wide part is part of training: it counts in the training time
    st = _LoopState(train_time=tr.setup_seconds)
    if ck is not None:
        st = tr.restore(ck, log)
        if ctx.is_main:
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in st.history))
            if tr.best_state is not None:
                tr.save_best(out)
        log(f"resuming {out} at epoch {st.epoch} batch {st.batch} (step {st.step})")
    model, steps_per_epoch = tr.model, len(tr.shards)
    eval_steps = max(1, int(round(cfg.train.eval_every * steps_per_epoch)))
    every = cfg.train.checkpoint_every_steps
    finished = st.stop_reason == "patience" or st.epoch >= cfg.train.epochs
    if finished:
        log(f"{out}: training had already finished; nothing to resume")
    progress = _progress(cfg.train.progress and ctx.is_main and not finished,
                         total=steps_per_epoch * cfg.train.epochs, initial=st.step)
    st.stop_reason = ""
    for epoch in range(st.epoch, cfg.train.epochs if not finished else 0):
        tr.shards.set_epoch(epoch)
        model.train()
        first = st.batch if epoch == st.epoch else 0
        if first == 0:
            st.loss_sum, st.loss_n = 0.0, 0
        t_mark = time.perf_counter()
        for k in range(first, steps_per_epoch):
            elapsed = st.train_time + time.perf_counter() - t_mark
            over = cfg.train.max_minutes > 0 and elapsed > 60 * cfg.train.max_minutes
            s = tr.step(k, flag=float(over))
            if s.nonfinite:
                raise TrainingError(f"non-finite loss at epoch {epoch} step {st.step + 1}; "
                                    f"stopped before applying it. {_kept_note(out)}")
            over = s.flag > 0  # any rank over time stops them all together
            st.step += 1
            st.trained_targets += s.n
            st.loss_sum += s.loss_sum
            st.loss_n += s.n
            progress.update(1)
            progress.set_postfix(loss=f"{st.loss_sum / st.loss_n:.4f}", epoch=epoch)
            end_of_epoch = k + 1 == steps_per_epoch
            last = end_of_epoch and epoch + 1 == cfg.train.epochs
            if (st.step % eval_steps == 0 or over or last
                    or (end_of_epoch and cfg.train.eval_every <= 1)):
                st.train_time += time.perf_counter() - t_mark
                progress.set_description("validating")  # not a silent pause
                m = validate(model, store, split, cfg.data.max_len, device=tr.device, ctx=ctx,
                             now=cfg.data.now, max_users=cfg.train.val_users)
                rec = {"epoch": epoch, "step": st.step, "fraction": st.step / steps_per_epoch,
                       "split": "val", "train_loss": st.loss_sum / max(st.loss_n, 1), **m,
                       "train_seconds": st.train_time, "targets_per_second":
                       st.trained_targets / max(st.train_time, 1e-9)}
                st.history.append(rec)
                if ctx.is_main:
                    _append_jsonl(metrics_path, rec)
                score = primary(m)
                improved = score > st.best_score
                if improved:
                    st.best_score, st.best, st.bad_evals = score, rec, 0
                    tr.keep_best()
                    if ctx.is_main:
                        save_model(out, model, cfg, cat)
                else:
                    st.bad_evals += 1
                log(_describe(rec, improved))
                progress.set_description("training")
                model.train()
                if st.bad_evals >= cfg.train.patience:
                    st.stop_reason = "patience"
                elif over:
                    st.stop_reason = "time"
                t_mark = time.perf_counter()
            if end_of_epoch or st.stop_reason or (every > 0 and st.step % every == 0):
                st.train_time += time.perf_counter() - t_mark
                st.epoch, st.batch = (epoch + 1, 0) if end_of_epoch else (epoch, k + 1)
                tr.save_checkpoint(out, st)
                t_mark = time.perf_counter()
            if st.stop_reason:
                break
        if st.stop_reason:
            break
    progress.close()
    result = TrainResult(out, model, st.best, st.history, st.train_time, ctx.rank)
    if ctx.is_main:
        _write_summary(out, cfg, ds, result)
        _plot_curves(out, st.history)
    return result


@dataclass
class _LoopState:
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
        return {"progress": {k: getattr(self, k) for k in (
                    "epoch", "batch", "step", "trained_targets", "train_time", "loss_sum",
                    "loss_n", "stop_reason")},
                "best": {"score": self.best_score, "record": self.best,
                         "bad_evals": self.bad_evals},
                "history": self.history}

    @classmethod
    def from_dict(cls, ck: dict) -> _LoopState:
        p, b = ck["progress"], ck["best"]
        return cls(epoch=int(p["epoch"]), batch=int(p["batch"]), step=int(p["step"]),
                   trained_targets=int(p["trained_targets"]),
                   train_time=float(p["train_time"]), loss_sum=float(p["loss_sum"]),
                   loss_n=int(p["loss_n"]), stop_reason=str(p["stop_reason"]),
                   best_score=float(b["score"]), best=dict(b["record"]),
                   bad_evals=int(b["bad_evals"]), history=list(ck["history"]))


@dataclass
class StepStats:
    loss_sum: float  # training loss summed over the global batch's targets
    n: int  # targets in the global batch
    nonfinite: bool  # some rank's loss was NaN or infinite; nothing was applied
    flag: float  # the callers' flags summed over ranks


class _LossForward(nn.Module):
    """DDP synchronises gradients only for work done inside its forward(), so the loss
    (not the model's scoring forward) is what it must wrap."""

    def __init__(self, model: Recommender):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return self.model.loss(*args, **kwargs)


class _ViaDDP:
    """What training_loss needs of a model (task, loss), routed through DDP."""

    def __init__(self, ddp: nn.Module, task: str):
        self.ddp, self.task = ddp, task

    def loss(self, *args, **kwargs):
        return self.ddp(*args, **kwargs)


class _SharedNegatives:
    """Every rank draws the negatives of the whole global batch from its copy of one
    identically seeded generator and keeps its own rows, so ranks stay in step and the
    union of their negatives is what one process would have drawn."""

    def __init__(self, inner: NegativeSampler):
        self.inner = inner
        self.n_global, self.part = 0, slice(None)

    def select(self, n_global: int, part: slice) -> None:
        self.n_global, self.part = n_global, part

    def sample(self, shape):
        if len(shape) == 2:  # one row of negatives per target (bce)
            neg, logq = self.inner.sample((self.n_global, shape[1]))
            return neg[self.part], None if logq is None else logq[self.part]
        return self.inner.sample(shape)  # shared by the batch: the same on every rank

    def __getattr__(self, name):
        return getattr(self.inner, name)


def fit_rating_base(model, ds: Dataset, train_rows: np.ndarray) -> None:
    """The rating model's wide part: mean and movie biases of the training ratings."""
    from bstrec.models.baselines import RatingBaseline

    base = RatingBaseline.fit("bias", ds.user, ds.item, ds.rating, train_rows, ds.n_users,
                              ds.n_items)
    with torch.no_grad():
        model.mean_rating.copy_(base.mean)
        model.item_bias.copy_(base.item_bias)


class Trainer:
    """One rank's model, optimizer, negative sampler and share of each global batch."""

    def __init__(self, cfg: RunConfig, ds: Dataset, store: SequenceStore, split: Split,
                 ctx: DistContext, cat=None, fit_wide_part: bool = True, log=None):
        self.cfg, self.store, self.ctx, self.device = cfg.resolve(), store, ctx, ctx.device
        self.data_checksum = ds.checksum
        cat = cat if cat is not None else catalog_features(ds, store.user_feature_names)
        self.cat = cat
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.model = build_model(cfg, cat)
        t0 = time.perf_counter()
        if getattr(self.model, "wide", None) is not None and fit_wide_part:
            # deterministic, so every rank fits the same; a resumed run loads it instead
            val_ndcg = _val_ndcg(store, split, cfg, self.device)
            wide, _ = fit_wide(ds, split.train_rows(ds.user_offsets), val_ndcg)
            self.model.wide.load_state_dict(wide.scorer.state_dict())
            if log:
                log(f"wide part: co-occurrence {wide.scorer.p} tuned on validation in "
                    f"{time.perf_counter() - t0:.1f}s")
        if self.model.task == "rating" and cfg.model.wide != "none" and fit_wide_part:
            fit_rating_base(self.model, ds, split.train_rows(ds.user_offsets))
        self.setup_seconds = time.perf_counter() - t0
        self.model = self.model.to(self.device)
        stride = cfg.train.target_stride or getattr(self.model, "rows_stride", 1)
        rows = training_rows(ds, split.train_end, stride)
        if len(rows) == 0:
            raise ValueError(f"data set {ds.name}: no training examples (users need >= 4 rows)")
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        counts = np.bincount(ds.item[split.train_rows(ds.user_offsets)], minlength=ds.n_items)
        self.sampler = _SharedNegatives(
            NegativeSampler(cfg.train.sampler, ds.n_items, counts, self.gen))
        self.opt = _optimizer(cfg, self.model)
        self.shards = EpochShards(rows, cfg.train.batch_size, cfg.train.seed, ctx.rank,
                                  ctx.world)
        self.scheduler = _scheduler(cfg, self.opt, len(self.shards))
        self.best_state: dict | None = None
        self.bf16 = use_bf16(cfg.train.precision, self.device)
        self.loss_model = self.model
        if ctx.enabled:
            if ctx.rank > 0:  # distinct dropout masks on each rank's distinct rows
                torch.manual_seed(_rank_seed(cfg.train.seed, ctx.rank))
            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (catalogue features) never change: no need to sync them each step
            no_sync = ({"forward_sync_buffers": False}
                       if "forward_sync_buffers" in inspect.signature(DDP).parameters
                       else {"broadcast_buffers": False})
            self.ddp = DDP(_LossForward(self.model), **no_sync,
                           device_ids=[self.device.index] if self.device.type == "cuda"
                           else None)
            self.loss_model = _ViaDDP(self.ddp, self.model.task)

    def step(self, k: int, flag: float = 0.0) -> StepStats:
        """Train on global batch ``k`` of the current epoch (this rank's share of it)."""
        ctx = self.ctx
        rows, part = self.shards.batch(k)
        n_global = len(rows)
        mine = rows[part]
        # DDP averages gradients over ranks; weighting each rank's mean loss by its share
        # of the global batch makes that average the gradient of the global mean loss
        weight = len(mine) * ctx.world / n_global
        if len(mine) == 0:
            # every rank must take part in each all-reduce: a zero-weighted stand-in row
            part, mine, weight = slice(0, 1), rows[:1], 0.0
        self.sampler.select(n_global, part)
        batch = self.store.batch_for_targets(mine, self.cfg.data.max_len,
                                             now=self.cfg.data.now).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = training_loss(self.loss_model, batch, self.cfg, self.sampler, self.device)
        finite = torch.isfinite(loss.detach())
        real = len(mine) if weight > 0 else 0
        stats = torch.stack([torch.where(finite, loss.detach().double() * real, 0.0),
                             (~finite).double(), torch.tensor(flag, dtype=torch.float64,
                                                              device=loss.device)])
        loss_sum, bad, flags = ctx.all_reduce_sum(stats).tolist()
        if bad > 0:  # every rank sees the sum, so all stop here together
            return StepStats(loss_sum, n_global, True, flags)
        self.opt.zero_grad(set_to_none=True)
        (loss * weight if ctx.enabled else loss).backward()
        self.opt.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return StepStats(loss_sum, n_global, False, flags)

    def keep_best(self) -> None:
        self.best_state = {k: v.detach().to("cpu", copy=True)
                           for k, v in self.model.state_dict().items()}

    def save_best(self, out: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights
            best = build_model(self.cfg, self.cat)
        best.load_state_dict(self.best_state)
        save_model(out, best, self.cfg, self.cat)

    def save_checkpoint(self, out: Path, st: _LoopState) -> None:
        """Every rank must call this (it gathers their random states); rank 0 writes."""
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(f"parameter {name} is no longer finite at step {st.step}; "
                                    "no checkpoint written, the previous one is kept "
                                    "(try a lower train.lr)")
        rng = _rng_states(self.ctx, self.gen)
        if not self.ctx.is_main:
            return
        checkpoint.save(out, {
            "model": _cpu(self.model.state_dict()),
            "optimizer": _cpu(self.opt.state_dict()),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "best_model": self.best_state,
            "rng": rng,
            **st.to_dict(),
            "world_size": self.ctx.world,
            "data_checksum": self.data_checksum,
            "config": self.cfg.to_dict(),
        })

    def restore(self, ck: dict, log) -> _LoopState:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        for group in self.opt.param_groups:  # e.g. a lower lr after a non-finite loss
            group["lr"], group["weight_decay"] = self.cfg.train.lr, self.cfg.train.weight_decay
            group["initial_lr"] = self.cfg.train.lr
        if self.scheduler is not None and ck.get("scheduler") is not None:
            self.scheduler.load_state_dict(ck["scheduler"])
            # the schedule's factor at the saved step, applied to the (possibly new) base lr
            self.scheduler.base_lrs = [self.cfg.train.lr] * len(self.opt.param_groups)
            f = self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
            for group in self.opt.param_groups:
                group["lr"] = self.cfg.train.lr * f
        self.best_state = ck.get("best_model")
        _restore_rng(self.ctx, self.gen, ck["rng"], int(ck.get("world_size", 1)),
                     self.cfg.train.seed, log)
        return _LoopState.from_dict(ck)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast (weights and optimizer stay fp32)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(f"train.precision=bf16: {torch.cuda.get_device_name(device)} "
                         "has no bf16 support; use fp32")
    return precision == "bf16"


def _rank_seed(seed: int, rank: int) -> int:
    return seed + 7919 * rank


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _rng_states(ctx: DistContext, gen: torch.Generator) -> dict:
    """All random states as tensors and numbers (loadable with weights_only=True).

    The sampler's generator, numpy and python are the same on every rank; torch's
    global generator (dropout) differs per rank, so each rank's is kept.
    """
    cuda = ctx.device.type == "cuda"
    mine = {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(ctx.device) if cuda else None}
    per_rank = ctx.all_gather_object(mine)
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": [p["torch"] for p in per_rank],
        "cuda": [p["cuda"] for p in per_rank] if cuda else None,
        "generator": gen.get_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "gauss": float(np_state[4])},
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
    }


def _restore_rng(ctx: DistContext, gen: torch.Generator, rng: dict, saved_world: int,
                 seed: int, log) -> None:
    gen.set_state(rng["generator"])
    n = rng["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(p["state"].tolist()), p["gauss"]))
    if saved_world == ctx.world:
        torch.set_rng_state(rng["torch"][ctx.rank])
        if ctx.device.type == "cuda" and rng.get("cuda"):
            torch.cuda.set_rng_state(rng["cuda"][ctx.rank], ctx.device)
    else:
        # Batches and negatives do not depend on the number of ranks; only dropout
        # masks do, and those cannot carry over to a different number of ranks.
        log(f"note: checkpoint written by {saved_world} rank(s), resuming on {ctx.world}: "
            "dropout masks will differ from an uninterrupted run")
        if ctx.rank == 0:
            torch.set_rng_state(rng["torch"][0])
        else:
            torch.manual_seed(_rank_seed(seed, ctx.rank))


def _load_checkpoint(out: Path, log) -> dict:
    if not (out / "config.yaml").is_file():
        return {"error": f"{out}: not a run folder (no config.yaml); nothing to resume"}
    try:
        ck, _path = checkpoint.load(out, log)
    except checkpoint.CheckpointError as e:
        return {"error": str(e)}
    return ck


def _check_resumable(ck: dict, cfg: RunConfig, ds: Dataset, out: Path) -> None:
    if ck.get("data_checksum") and ck["data_checksum"] != ds.checksum:
        raise TrainingError(f"{out} was trained on other data (checksum {ck['data_checksum']}"
                            f", now {ds.checksum}); --resume needs the same data set")
    saved, now = _flatten(ck.get("config", {})), _flatten(cfg.to_dict())
    changed = sorted(k for k in saved.keys() | now.keys()
                     if saved.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise TrainingError(f"{out}: cannot resume with changed settings ({diffs}); only "
                            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change")


def _flatten(d: dict) -> dict:
    return {f"{s}.{k}": v for s, sub in d.items() for k, v in (sub or {}).items()}


def _kept_note(out: Path) -> str:
    last, best = checkpoint.checkpoint_dir(out) / "last.pt", out / "model.safetensors"
    if not last.exists():
        return "No checkpoint had been written yet; try a lower train.lr"
    kept = f"The last good checkpoint {last} is kept"
    if best.exists():
        kept = f"The last good checkpoint {last} and the best weights so far {best} are kept"
    return (f"{kept}: resume with `bstrec train --resume {out} "
            f"--set train.lr=...` and a lower learning rate")


# A baseline's grid is dozens of full-catalogue validation passes: its validation
# sample holds about this many (user, movie) scores, at least TUNE_MIN_USERS users.
# ml-1m-u2999 (3,615 movies) keeps all 2,999 users; 87K movies get 1,000.
TUNE_SCORES = 12_000_000
TUNE_MIN_USERS = 1000


def _val_ndcg(store: SequenceStore, split: Split, cfg: RunConfig, device="cpu"):
    """Validation NDCG@10 of a fitted baseline, scored on ``device``, on a fixed sample
    of at most ``train.val_users`` users, fewer on big catalogues (``TUNE_SCORES``)."""
    fits = max(TUNE_MIN_USERS, TUNE_SCORES // max(store.n_items, 1))
    users = min(cfg.train.val_users, fits) if cfg.train.val_users else fits

    def score(model: Recommender) -> float:
        return validate(model.to(device), store, split, cfg.data.max_len, device=device,
                        now=cfg.data.now, max_users=users)["NDCG@10"]
    return score


def _fit_baseline(cfg, ds, out, split, store, cat, ctx, log) -> TrainResult:
    t_start = time.perf_counter()
    model, trials = fit_baseline(cfg, ds, split.train_rows(ds.user_offsets),
                                 _val_ndcg(store, split, cfg))
    m = validate(model, store, split, cfg.data.max_len, now=cfg.data.now,
                 max_users=cfg.train.val_users)
    rec = {"epoch": 0, "split": "val", **m, "train_seconds": time.perf_counter() - t_start}
    result = TrainResult(out, model, rec, [rec], rec["train_seconds"], ctx.rank)
    if ctx.is_main:
        _append_jsonl(out / "metrics.jsonl", rec)
        if trials:  # the hyper-parameter grid, each tried on the validation targets
            atomic_write_text(out / "tuning.jsonl",
                              "".join(json.dumps(t) + "\n" for t in trials))
        save_model(out, model, cfg, cat)
        _write_summary(out, cfg, ds, result)
    return result


def _scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """Linear warm-up, then constant or cosine decay over the planned epochs."""
    t = cfg.train
    total = max(1, steps_per_epoch * t.epochs)
    warm = max(1, t.warmup_steps)
    floor = t.min_lr_fraction

    def factor(step: int) -> float:
        f = min(1.0, (step + 1) / warm)
        if t.schedule == "cosine":
            f *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return f

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train  # its allowed values are checked by RunConfig.resolve
    opt = {"adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}[t.optimizer]
    return opt(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)


def _describe(rec: dict, improved: bool) -> str:
    keys = ("NDCG@10", "HR@10") if "NDCG@10" in rec else ("RMSE", "MAE")
    vals = " ".join(f"{k} {rec[k]:.4f}" for k in keys)
    return (f"epoch {rec['epoch']} step {rec['step']}: loss {rec['train_loss']:.4f} "
            f"val {vals} ({rec['train_seconds']:.0f}s){' *' if improved else ''}")


def _append_jsonl(path: Path, rec: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _write_summary(out: Path, cfg: RunConfig, ds: Dataset, result: TrainResult) -> None:
    summary = {
        "model": cfg.model.name,
        "task": cfg.model.task,
        "data": ds.name,
        "data_checksum": ds.checksum,
        "best_val": result.best,
        "train_seconds": result.train_seconds,
        "evaluations": len(result.history),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def _plot_curves(out: Path, history: list[dict]) -> None:
    if not history:
        return
    # A Figure without pyplot draws to a file with no backend: matplotlib.use("Agg")
    # would switch the backend of a notebook that calls bstrec.fit, and its own plots
    # would stop showing.
    from matplotlib.figure import Figure

    x = [h["fraction"] if "fraction" in h else h["epoch"] for h in history]
    key = "NDCG@10" if "NDCG@10" in history[0] else "RMSE"
    fig = Figure(figsize=(9, 3.5))
    ax = fig.subplots(1, 2)
    ax[0].plot(x, [h["train_loss"] for h in history], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss")
    ax[1].plot(x, [h[key] for h in history], marker="o", color="C1")
    ax[1].set(xlabel="epoch", ylabel=f"validation {key}")
    fig.tight_layout()
    tmp = out / ".curves.tmp.png"
    fig.savefig(tmp, dpi=80)
    tmp.replace(out / "curves.png")


def _progress(enabled: bool, total: int, initial: int = 0):
    if not enabled:
        # plain tqdm: importing tqdm.auto warns in a notebook without ipywidgets, even
        # for a bar that is never shown
        from tqdm import tqdm
    else:
        from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", leave=False)
