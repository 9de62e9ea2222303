"""Speed benchmark: training throughput, FLOPs, and full-ranking evaluation time.

    python benchmarks/speed.py [--data ../shared/data/ml-1m-u2999]

Prints JSON lines:
- the rating model's training throughput (targets/second; the notebook's task, one
  candidate per target), its training FLOPs per target (forward + backward, counted by
  torch's FlopCounterMode) and the FLOP/s that implies, beside a plain float32 matmul's
  FLOP/s measured in the same run (the machine's practical ceiling);
- the same for the default ranking model (one positive + shared negatives per target);
- full-catalogue evaluation (protocol R) of every validation user with the default
  model: seconds, and users per second.
Untrained weights are used: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_DATA, emit  # benchmarks/common.py (the script's folder)
from torch.utils.flop_counter import FlopCounterMode

from bstrec import load_dataset
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.splits import make_split
from bstrec.evaluate import evaluate_ranking
from bstrec.models.factory import build_model, catalog_features
from bstrec.sampling import NegativeSampler, training_loss


def matmul_flops(n: int = 1024, seconds: float = 2.0) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def train_speed(ds, store, rows, cfg: RunConfig, steps: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg, catalog_features(ds, store.user_feature_names))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    counts = np.bincount(ds.item, minlength=ds.n_items)
    sampler = NegativeSampler(cfg.train.sampler, ds.n_items, counts, gen)
    perm = torch.from_numpy(rows)[torch.randperm(len(rows), generator=gen)]
    bs = cfg.train.batch_size
    model.train()

    def step(i: int) -> None:
        # wrap around: a small data set must not hand out short or empty batches
        idx = (i * bs + torch.arange(bs)) % len(perm)
        batch = store.batch_for_targets(perm[idx], cfg.data.max_len)
        loss = training_loss(model, batch, cfg, sampler, "cpu")
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(0)
    flops_per_target = counter.get_total_flops() / bs
    step(1)  # warm-up
    t0 = time.perf_counter()
    for i in range(2, 2 + steps):
        step(i)
    dt = time.perf_counter() - t0
    tps = steps * bs / dt
    return {
        "targets_per_second": tps,
        "train_flops_per_target": flops_per_target,
        "achieved_flops_per_second": flops_per_target * tps,
        "steps": steps,
        "batch_size": bs,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--set", action="append", default=[], help="config override")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not Path(args.data).exists():
        print(f"skipped: data not found at {args.data} (needs ../shared/data/ml-1m-u2999)")
        return 0
    ds = load_dataset(args.data)
    split = make_split(ds, "leave-one-out")
    store = SequenceStore(ds)
    rows = training_rows(ds, split.train_end)
    peak = matmul_flops()
    emit(
        {
            "machine": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "matmul_1024_flops_per_second": peak,
        }
    )
    notebook_windows_per_second = 335  # the reference notebook on these 2 cores (issue 3)
    for task in ("rating", "ranking"):
        cfg = RunConfig()
        cfg.model.task = task
        if task == "rating":
            cfg.train.batch_size = 2048
        cfg.override(args.set).resolve()
        r = train_speed(ds, store, rows, cfg, args.steps)
        r["fraction_of_matmul_peak"] = r["achieved_flops_per_second"] / peak
        if task == "rating":
            r["vs_notebook_335_windows_per_second"] = (
                r["targets_per_second"] / notebook_windows_per_second
            )
        emit({"benchmark": f"train-{task}", **r})
    cfg = RunConfig().override(args.set).resolve()
    model = build_model(cfg, catalog_features(ds, store.user_feature_names))
    m = evaluate_ranking(model, store, split.targets("val"), cfg.data.max_len, batch_size=64)
    emit(
        {
            "benchmark": "full-ranking-eval",
            "protocol": "R",
            "users": m["users"],
            "movies": ds.n_items,
            "seconds": m["eval_seconds"],
            "users_per_second": m["users"] / m["eval_seconds"],
        }
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
