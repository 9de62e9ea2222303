"""Training throughput of 1 process against 2 torchrun processes (DDP, gloo) on one machine.

For each task (ranking: sampled-softmax over shared negatives; rating: MSE, one
candidate per target) it times a fixed number of optimizer steps of the default BST
configuration on ml-1m-u2999, with the same global batch in every setting:

- 1 process, 1 thread
- 1 process, 2 threads
- 2 processes (``torchrun --nproc_per_node=2``), 1 thread each

and prints one JSON line per setting (training targets per second, step time), then a
summary line per task with the ratios. On a 2-core machine expect little gain: the
all-reduce and the second process's share of the cores cost what the split batch
saves; the point of DDP is scaling on hardware with one GPU per rank.

    python benchmarks/train_throughput.py [DATA_FOLDER] [--steps 30] [--warmup 3]
                                          [--tasks ranking,rating] [--set key=value ...]

Default folder: ../shared/data/ml-1m-u2999 (or $BSTREC_ML1M_U2999); exits 0 with a
"skipped" line when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "ml-1m-u2999"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def worker(args) -> None:
    """One rank (or the only process): time `steps` training steps after `warmup`."""
    import torch

    from bstrec import load_dataset
    from bstrec.config import RunConfig
    from bstrec.data.batches import SequenceStore
    from bstrec.data.splits import make_split
    from bstrec.distributed import setup
    from bstrec.train import Trainer

    torch.set_num_threads(args.threads)
    cfg = RunConfig()
    cfg.model.task = args.task
    cfg.train.device = "cpu"
    cfg.override(args.set)
    ds = load_dataset(args.data)
    ctx = setup(cfg.train.device)
    try:
        split = make_split(ds, cfg.data.split)
        names = SequenceStore(ds).user_feature_names if cfg.model.use_user_features else []
        tr = Trainer(cfg, ds, SequenceStore(ds, names), split, ctx)
        tr.shards.set_epoch(0)
        tr.model.train()
        if args.warmup + args.steps > len(tr.shards):
            raise SystemExit(f"only {len(tr.shards)} steps in an epoch")
        for k in range(args.warmup):
            tr.step(k)
        ctx.barrier()
        t0 = time.perf_counter()
        targets = 0
        for k in range(args.warmup, args.warmup + args.steps):
            targets += tr.step(k).n
        ctx.barrier()
        seconds = time.perf_counter() - t0
    finally:
        ctx.close()
    if ctx.is_main:
        emit(
            task=args.task,
            processes=ctx.world,
            threads_per_process=args.threads,
            steps=args.steps,
            global_batch=cfg.train.batch_size,
            targets=targets,
            seconds=round(seconds, 3),
            step_ms=round(1000 * seconds / args.steps, 1),
            targets_per_second=round(targets / seconds, 1),
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_setting(args, task: str, processes: int, threads: int) -> dict:
    me = [
        str(Path(__file__).resolve()),
        str(args.data),
        "--worker",
        "--task",
        task,
        "--threads",
        str(threads),
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
    ] + [a for kv in args.set for a in ("--set", kv)]
    if processes == 1:
        cmd = [sys.executable, *me]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={processes}",
            "--master_addr=127.0.0.1",
            f"--master_port={free_port()}",
            *me,
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"setting {task} x{processes} failed (exit {p.returncode})")
    rec = json.loads(p.stdout.strip().splitlines()[-1])
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="?", default=os.environ.get("BSTREC_ML1M_U2999", DEFAULT))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tasks", default="ranking,rating")
    ap.add_argument("--set", action="append", default=[], help="config override, key=value")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--task", default="ranking", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.data = Path(args.data)
    if args.worker:
        worker(args)
        return
    if not (args.data / "ratings.dat").is_file():
        emit(skipped=f"data not found at {args.data} (../shared/data/ml-1m-u2999)")
        return
    import torch

    emit(
        benchmark="train_throughput",
        data=str(args.data),
        torch=torch.__version__,
        cpus=os.cpu_count(),
        machine=platform.machine(),
        steps=args.steps,
        warmup=args.warmup,
        overrides=args.set,
    )
    for task in args.tasks.split(","):
        one_1 = run_setting(args, task, 1, 1)
        one_2 = run_setting(args, task, 1, 2)
        two_1 = run_setting(args, task, 2, 1)
        emit(
            task=task,
            summary=True,
            targets_per_second={
                "1proc_1thread": one_1["targets_per_second"],
                "1proc_2threads": one_2["targets_per_second"],
                "2procs_1thread_each": two_1["targets_per_second"],
            },
            ratio_2procs_vs_1proc_1thread=round(
                two_1["targets_per_second"] / one_1["targets_per_second"], 3
            ),
            ratio_2procs_vs_1proc_2threads=round(
                two_1["targets_per_second"] / one_2["targets_per_second"], 3
            ),
        )


if __name__ == "__main__":
    main()
