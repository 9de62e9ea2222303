"""One rank's model, optimizer, schedule and negative sampler, and one training step
(DistributedDataParallel under torchrun)."""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bstrec import checkpoint
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.interactions import Dataset
from bstrec.data.splits import Split
from bstrec.distributed import DistContext, EpochShards
from bstrec.models.base import ScoringModel
from bstrec.models.factory import build_model, catalog_features, fit_wide
from bstrec.run_dir import save_model
from bstrec.sampling import NegativeSampler, training_loss
from bstrec.training.baselines import val_ndcg
from bstrec.training.state import (
    LoopState,
    TrainingError,
    rank_seed,
    restore_rng,
    rng_states,
    to_cpu,
)


@dataclass
class StepStats:
    loss_sum: float  # training loss summed over the global batch's targets
    n: int  # targets in the global batch
    nonfinite: bool  # some rank's loss was NaN or infinite; nothing was applied
    flag: float  # the callers' flags summed over ranks


class _LossForward(nn.Module):
    """DDP synchronises gradients only for work done inside its forward(), so the loss
    (not the model's scoring forward) is what it must wrap."""

    def __init__(self, model: ScoringModel):
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


def fit_rating_base(model, ds: Dataset, train_rows: np.ndarray, validate=None, log=None) -> None:
    """The rating model's wide part: the factors peer of the training ratings, its ridges
    tuned on ``validate`` (validation RMSE of the peer alone; bstrec.models.factors), or
    the bias part alone for ``model.rating_factors=0``."""
    from bstrec.models.factors import RatingFactors, tune_rating_factors

    args = (ds.user, ds.item, ds.rating, train_rows, ds.n_users, ds.n_items)
    k = model.rating_wide.k
    if k == 0:
        peer = RatingFactors.fit(*args, k=0)
    else:
        peer, _ = tune_rating_factors(*args, k, validate, log)
        if log:
            ridge = peer.fold_ridge.item()
            log(f"wide part: rating factors (k {k}, fold-in ridge {ridge:g}) tuned on validation")
    model.rating_wide.load_state_dict(peer.state_dict())


class Trainer:
    """One rank's model, optimizer, negative sampler and share of each global batch."""

    def __init__(
        self,
        cfg: RunConfig,
        ds: Dataset,
        store: SequenceStore,
        split: Split,
        ctx: DistContext,
        cat=None,
        fit_wide_part: bool = True,
        log=None,
    ):
        self.cfg, self.store, self.ctx, self.device = cfg.resolve(), store, ctx, ctx.device
        self.data_checksum = ds.checksum
        cat = cat if cat is not None else catalog_features(ds, store.user_feature_names)
        self.cat = cat
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.model = build_model(cfg, cat)
        t0 = time.perf_counter()
        if getattr(self.model, "wide", None) is not None and fit_wide_part:
            # deterministic, so every rank fits the same; a resumed run loads it instead
            score = val_ndcg(store, split, cfg, self.device)
            wide, _ = fit_wide(ds, split.train_rows(ds.user_offsets), score)
            self.model.wide.load_state_dict(wide.scorer.state_dict())
            if log:
                log(
                    f"wide part: co-occurrence {wide.scorer.p} tuned on validation in "
                    f"{time.perf_counter() - t0:.1f}s"
                )
        if self.model.task == "rating" and cfg.model.wide != "none" and fit_wide_part:
            rmse = val_ndcg(store, split, cfg, self.device, metric="RMSE")
            fit_rating_base(self.model, ds, split.train_rows(ds.user_offsets), rmse, log)
        self.setup_seconds = time.perf_counter() - t0
        self.model = self.model.to(self.device)
        stride = cfg.train.target_stride or getattr(self.model, "rows_stride", 1)
        rows = training_rows(ds, split.train_end, stride)
        if len(rows) == 0:
            raise ValueError(f"data set {ds.name}: no training examples (users need >= 4 rows)")
        self.gen = torch.Generator().manual_seed(cfg.train.seed)
        counts = np.bincount(ds.item[split.train_rows(ds.user_offsets)], minlength=ds.n_items)
        self.sampler = _SharedNegatives(
            NegativeSampler(cfg.train.sampler, ds.n_items, counts, self.gen)
        )
        self.opt = make_optimizer(cfg, self.model)
        self.shards = EpochShards(rows, cfg.train.batch_size, cfg.train.seed, ctx.rank, ctx.world)
        self.scheduler = make_scheduler(cfg, self.opt, len(self.shards))
        self.best_state: dict | None = None
        self.bf16 = use_bf16(cfg.train.precision, self.device)
        self.loss_model = self.model
        if ctx.enabled:
            if ctx.rank > 0:  # distinct dropout masks on each rank's distinct rows
                torch.manual_seed(rank_seed(cfg.train.seed, ctx.rank))
            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers (catalogue features) never change: no need to sync them each step
            no_sync = (
                {"forward_sync_buffers": False}
                if "forward_sync_buffers" in inspect.signature(DDP).parameters
                else {"broadcast_buffers": False}
            )
            self.ddp = DDP(
                _LossForward(self.model),
                **no_sync,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
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
        batch = self.store.batch_for_targets(mine, self.cfg.data.max_len, now=self.cfg.data.now).to(
            self.device
        )
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = training_loss(self.loss_model, batch, self.cfg, self.sampler, self.device)
        finite = torch.isfinite(loss.detach())
        real = len(mine) if weight > 0 else 0
        stats = torch.stack(
            [
                torch.where(finite, loss.detach().double() * real, 0.0),
                (~finite).double(),
                torch.tensor(flag, dtype=torch.float64, device=loss.device),
            ]
        )
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
        self.best_state = {
            k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()
        }

    def save_best(self, out: Path) -> None:
        with torch.random.fork_rng(devices=[]):  # building draws initial weights
            best = build_model(self.cfg, self.cat)
        best.load_state_dict(self.best_state)
        save_model(out, best, self.cfg, self.cat)

    def save_checkpoint(self, out: Path, st: LoopState) -> None:
        """Every rank must call this (it gathers their random states); rank 0 writes."""
        for name, p in self.model.named_parameters():
            if not torch.isfinite(p).all():
                raise TrainingError(
                    f"parameter {name} is no longer finite at step {st.step}; "
                    "no checkpoint written, the previous one is kept "
                    "(try a lower train.lr)"
                )
        rng = rng_states(self.ctx, self.gen)
        if not self.ctx.is_main:
            return
        checkpoint.save(
            out,
            {
                "model": to_cpu(self.model.state_dict()),
                "optimizer": to_cpu(self.opt.state_dict()),
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
                "best_model": self.best_state,
                "rng": rng,
                **st.to_dict(),
                "world_size": self.ctx.world,
                "data_checksum": self.data_checksum,
                "config": self.cfg.to_dict(),
            },
        )

    def restore(self, ck: dict, log) -> LoopState:
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
        restore_rng(
            self.ctx, self.gen, ck["rng"], int(ck.get("world_size", 1)), self.cfg.train.seed, log
        )
        return LoopState.from_dict(ck)


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether training steps run under bf16 autocast (weights and optimizer stay fp32)."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"train.precision=bf16: {torch.cuda.get_device_name(device)} "
            "has no bf16 support; use fp32"
        )
    return precision == "bf16"


def make_scheduler(cfg: RunConfig, opt: torch.optim.Optimizer, steps_per_epoch: int):
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


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train  # its allowed values are checked by RunConfig.resolve
    opt = {"adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad}[t.optimizer]
    return opt(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
