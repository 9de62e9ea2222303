"""Training on a GPU: per-step throughput and time to quality of the default run.

    python benchmarks/gpu.py [--data DIR] [--out DIR] [--variants default fp32 ...]
        [--skip-throughput] [--test]

Prints JSON lines (protocol R of ../shared/PROTOCOL.md, validation targets; with
``--test`` the test figure of the default variant, read once at the end):
- the device and its measured matmul rates (fp32 and bf16), the ceilings to compare with;
- training throughput (targets/s, and B x L positions/s of the tower's full-catalogue
  loss) at several batch sizes in fp32 and under bf16 autocast: a few timed steps each;
- each variant's whole training run with the default schedule: validation NDCG@10
  along the run against training time (the trainer's figure: fitting the wide part,
  the steps and checkpoints, not validation), its best, and the wall time.

Everything runs in this one process so that a lent GPU's minutes go to measuring.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, emit  # benchmarks/common.py (the script's folder)

from bstrec import load_dataset
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import make_split
from bstrec.distributed import setup as setup_distributed
from bstrec.evaluate import evaluate_ranking
from bstrec.models.factory import catalog_features
from bstrec.train import Trainer, train

# name -> --set overrides on top of the defaults (device=cuda is added)
VARIANTS = {
    "default": [],
    "bf16": ["train.precision=bf16"],
    "b2048": ["train.batch_size=2048", "train.lr=0.02", "train.warmup_steps=25"],
    "b1024": ["train.batch_size=1024", "train.lr=0.014", "train.warmup_steps=50"],
    "e24": ["train.epochs=24"],
    "fdrop10": ["model.user_feature_dropout=0.1"],
    "fdrop25": ["model.user_feature_dropout=0.25"],
}


class Anonymous:
    """A store whose batches carry no user: every feature "unknown", as a typed history
    sent to the server without demographics has them."""

    def __init__(self, store: SequenceStore):
        self.store = store

    def __getattr__(self, name):
        return getattr(self.store, name)

    def batch_for_targets(self, *args, **kwargs):
        b = self.store.batch_for_targets(*args, **kwargs)
        b.user_feats = torch.zeros_like(b.user_feats)
        b.user = torch.zeros_like(b.user)
        return b


def matmul_rate(dtype: torch.dtype, n: int, reps: int = 10) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def throughput(ds, batch_size: int, precision: str, steps: int = 30) -> dict:
    cfg = RunConfig().override(
        [
            "train.device=cuda",
            f"train.batch_size={batch_size}",
            f"train.precision={precision}",
            "train.progress=false",
        ]
    )
    cfg.resolve()
    split = make_split(ds, cfg.data.split)
    store = SequenceStore(ds, SequenceStore(ds).user_feature_names)
    ctx = setup_distributed("cuda")
    # the wide part's counts cost the same fitted or not: skip the fit here
    tr = Trainer(
        cfg,
        ds,
        store,
        split,
        ctx,
        catalog_features(ds, store.user_feature_names),
        fit_wide_part=False,
    )
    n, per_epoch = steps + 5, len(tr.shards)  # wraps around within the epoch's batches
    torch.cuda.reset_peak_memory_stats()
    for k in range(5):
        tr.step(k % per_epoch)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    targets = 0
    for k in range(5, n):
        targets += tr.step(k % per_epoch).n
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {
        "bench": "throughput",
        "batch_size": batch_size,
        "precision": precision,
        "steps": n - 5,
        "step_ms": 1000 * sec / max(n - 5, 1),
        "targets_per_s": targets / sec,
        "positions_per_s": targets * cfg.data.max_len / sec,
        "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30,
    }


def quality(
    ds, name: str, overrides: list[str], out: Path, read_test: bool, extra: bool = False
) -> dict:
    cfg = RunConfig().override(["train.device=cuda", "train.progress=false", *overrides])
    t0 = time.perf_counter()
    result = train(
        cfg, ds, out / name, log=lambda m: print(f"  [{name}] {m}", file=sys.stderr, flush=True)
    )
    wall = time.perf_counter() - t0
    curve = [(round(r["train_seconds"], 1), round(r["NDCG@10"], 4)) for r in result.history]
    rec = {
        "bench": "quality",
        "variant": name,
        "overrides": overrides,
        "protocol": "R",
        "split": "val",
        "best_val_NDCG@10": result.best["NDCG@10"],
        "best_at_train_seconds": result.best["train_seconds"],
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "eval_seconds": sum(r["eval_seconds"] for r in result.history),
        "steps": result.history[-1]["step"],
        "curve": curve,
        "targets_per_second": result.history[-1]["targets_per_second"],
    }
    if read_test or extra:
        from bstrec.run_dir import load_run

        run = load_run(out / name)
        store = SequenceStore(ds, run.user_feature_names)
        split = make_split(ds, cfg.data.split)
        model = run.model.to("cuda")

        def ev(which, **kw):
            return evaluate_ranking(
                model,
                kw.pop("store", store),
                split.targets(which),
                cfg.data.max_len,
                device="cuda",
                **kw,
            )

    if extra:  # validation only: anonymous requests, and retrieve-then-rank
        rec["val_anonymous_NDCG@10"] = ev("val", store=Anonymous(store))["NDCG@10"]
        rec["val_retrieval"] = []
        for c in (50, 100, 200, 500):
            m = ev("val", candidates=c)
            rec["val_retrieval"].append(
                {"candidates": c, "NDCG@10": m["NDCG@10"], "recall": m[f"retrieval_recall@{c}"]}
            )
    if read_test:
        m = ev("test")
        rec["test_NDCG@10"], rec["test_HR@10"] = m["NDCG@10"], m["HR@10"]
        if extra:
            m = ev("test", candidates=200)
            rec["test_retrieval_200"] = {
                "NDCG@10": m["NDCG@10"],
                "recall": m["retrieval_recall@200"],
            }
    return rec


def big_catalogue(users: int, movies: int, minutes: float) -> list[dict]:
    """Evaluation at ML-32M's catalogue size: a short training run on generated data,
    then 10,000 validation users scored over every movie, and retrieve-then-rank."""
    import subprocess
    import sys

    root = Path(tempfile.mkdtemp(prefix="bstrec-big-"))
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bstrec",
            "data",
            "synth",
            str(root / "d"),
            "--users",
            str(users),
            "--movies",
            str(movies),
        ],
        check=True,
        capture_output=True,
    )
    ds = load_dataset(root / "d")
    out = [
        {
            "bench": "big",
            "stage": "data",
            "users": ds.n_users,
            "movies": ds.n_items,
            "ratings": int(len(ds.item)),
            "seconds": time.perf_counter() - t0,
        }
    ]
    cfg = RunConfig().override(
        [
            "train.device=cuda",
            "train.progress=false",
            f"train.max_minutes={minutes}",
            "train.eval_every=1000",
        ]
    )
    t0 = time.perf_counter()
    r = train(
        cfg, ds, root / "run", log=lambda m: print(f"  [big] {m}", file=sys.stderr, flush=True)
    )
    last = r.history[-1]
    out.append(
        {
            "bench": "big",
            "stage": "train",
            "wall_s": time.perf_counter() - t0,
            "steps": last["step"],
            "train_seconds": last["train_seconds"],
            "targets_per_s": last["targets_per_second"],
            "val_users": last["users"],
            "val_eval_seconds": last["eval_seconds"],
            "val_NDCG@10": last["NDCG@10"],
            **{k: v for k, v in last.items() if k.startswith("retrieval")},
        }
    )
    from bstrec.evaluate import sample_targets
    from bstrec.run_dir import load_run

    run = load_run(root / "run")
    store = SequenceStore(ds, run.user_feature_names)
    rows = sample_targets(make_split(ds, cfg.data.split).targets("val"), 10000)
    model = run.model.to("cuda")
    for c in (0, 200):
        torch.cuda.synchronize()
        m = evaluate_ranking(model, store, rows, cfg.data.max_len, device="cuda", candidates=c)
        out.append(
            {
                "bench": "big",
                "stage": "evaluate",
                "candidates": c,
                "users": m["users"],
                "seconds": m["eval_seconds"],
                "NDCG@10": m["NDCG@10"],
                **{k: v for k, v in m.items() if k.startswith("retrieval")},
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--out", default=None, help="run folders (default: a temp folder)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument(
        "--extra",
        action="store_true",
        help="also measure each variant on "
        "anonymous validation requests and with retrieve-then-rank",
    )
    ap.add_argument(
        "--big",
        default="",
        help="USERS:MOVIES: evaluation time on generated "
        "data with that catalogue (e.g. 20000:87000)",
    )
    ap.add_argument(
        "--test",
        action="store_true",
        help="read the default variant's test figure once, at the end",
    )
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device; none is available here")
    emit(
        {
            "bench": "device",
            "name": torch.cuda.get_device_name(),
            "torch": torch.__version__,
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "matmul_tflops_fp32": matmul_rate(torch.float32, 4096),
            "matmul_tflops_bf16": matmul_rate(torch.bfloat16, 8192),
        }
    )
    ds = load_dataset(args.data)
    emit(
        {
            "bench": "data",
            "name": ds.name,
            "users": ds.n_users,
            "movies": ds.n_items,
            "ratings": int(len(ds.item)),
        }
    )
    if not args.skip_throughput:
        for bs in (512, 2048, 8192):
            for precision in ("fp32", "bf16"):
                emit(throughput(ds, bs, precision))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bstrec-gpu-"))
    for name in args.variants:
        emit(
            quality(
                ds,
                name,
                VARIANTS[name],
                out,
                read_test=args.test and name == "default",
                extra=args.extra,
            )
        )
    if args.big:
        users, movies = (int(x) for x in args.big.split(":"))
        for rec in big_catalogue(users, movies, minutes=0.5):
            emit(rec)


if __name__ == "__main__":
    main()
