"""Time to quality: how soon default BST passes the best simple peer, idle and busy.

    python benchmarks/time_to_quality.py [--data DIR] [--minutes 10] [--busy]
        [--users 1501-2999] [--synth USERS:MOVIES] [--test]

Prints JSON lines (protocol R of ../shared/PROTOCOL.md, validation targets unless
``--test``):
- the co-occurrence peer, tuned on validation (its validation NDCG@10 is the bar);
- BST with the default configuration, validated every ``--eval-every`` epochs: the
  curve of validation NDCG@10 against training wall time (validation itself not
  counted), its value at 1, 2.5, 5 and 10 minutes, and the minute it first passes the
  peer;
- with ``--busy``, the same while one competing CPU-bound process (started and
  stopped here) runs beside it;
- with ``--test``, each model's test metrics, read once at the end from the
  checkpoint chosen on validation.

``--users A-B`` keeps only users A..B of an ML-1M-format folder (a filtered copy in a
temp folder): tune on 1-1500, check the untouched defaults on 1501-2999.
``--synth U:M`` generates data with ``bstrec data synth`` instead.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import tempfile
import time
from pathlib import Path

import torch
from common import DEFAULT_DATA, emit  # benchmarks/common.py (the script's folder)

from bstrec import load_dataset
from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore
from bstrec.data.splits import make_split
from bstrec.evaluate import evaluate_ranking
from bstrec.run_dir import load_run
from bstrec.train import train

MARKS = (1.0, 2.5, 5.0, 10.0)  # minutes


def _spin(stop) -> None:  # the competing CPU-bound process
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x = (x * 31 + 7) % 1_000_003


def filtered_copy(src: Path, lo: int, hi: int, dst: Path) -> Path:
    """Users lo..hi of an ML-1M-format folder, written to ``dst``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("ratings.dat", "users.dat"):
        with (
            open(src / name, encoding="latin-1") as f,
            open(dst / name, "w", encoding="latin-1") as g,
        ):
            for line in f:
                if lo <= int(line.split("::", 1)[0]) <= hi:
                    g.write(line)
    (dst / "movies.dat").write_bytes((src / "movies.dat").read_bytes())
    return dst


def curve_marks(history: list[dict], bar: float) -> dict:
    """Validation NDCG@10 at each mark (the last evaluation at or before it), and the
    training minute of the first evaluation above ``bar``."""
    out = {}
    for m in MARKS:
        done = [h for h in history if h["train_seconds"] <= 60 * m]
        out[f"val_NDCG@10_at_{m:g}min"] = done[-1]["NDCG@10"] if done else None
    passed = [h for h in history if h["NDCG@10"] > bar]
    out["minutes_to_pass_peer"] = passed[0]["train_seconds"] / 60 if passed else None
    return out


def run_bst(
    ds, out: Path, minutes: float, eval_every: float, sets: list[str], bar: float, label: str
) -> dict:
    cfg = RunConfig()
    cfg.train.progress = False
    cfg.train.max_minutes = minutes
    cfg.train.eval_every = eval_every
    # the curve is read every eval_every epochs, more often than the default run
    # validates (every 2): patience counted in those finer steps would stop the default
    # schedule early on the first dip (3 checks = 0.75 epoch), which no default run does
    cfg.train.patience = 10**6
    cfg.override(sets)
    t0 = time.perf_counter()
    res = train(cfg, ds, out, log=lambda _m: None)
    wall = time.perf_counter() - t0
    curve = [
        {
            "train_seconds": round(h["train_seconds"], 1),
            "step": h["step"],
            "NDCG@10": round(h["NDCG@10"], 4),
        }
        for h in res.history
    ]
    rec = {
        "model": "bst",
        "condition": label,
        "protocol": "R",
        "split": "val",
        "best_val_NDCG@10": res.best.get("NDCG@10"),
        "peer_val_NDCG@10": bar,
        **curve_marks(res.history, bar),
        "train_seconds": res.train_seconds,
        "wall_seconds": wall,
        "steps": res.history[-1]["step"] if res.history else 0,
        "targets_per_second": res.history[-1]["targets_per_second"] if res.history else 0,
        "curve": curve,
        "run_dir": str(out),
    }
    emit(rec)
    return rec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--users", help="keep users A-B only, e.g. 1501-2999")
    p.add_argument("--synth", help="generate USERS:MOVIES data instead of --data")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--eval-every", type=float, default=0.25, help="epochs between curves")
    p.add_argument("--busy", action="store_true", help="also run beside a busy process")
    p.add_argument("--idle", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--test", action="store_true", help="read test metrics at the end")
    p.add_argument("--set", action="append", default=[], help="config override for BST")
    p.add_argument("--out", default="runs/time-to-quality")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bstrec-ttq-"))
    if args.synth:
        from bstrec.data.synth import synthesize

        users, movies = (int(x) for x in args.synth.split(":"))
        data = synthesize(tmp / "synth", users, movies, 0).out_dir
    else:
        data = Path(args.data)
        if not (data / "ratings.dat").exists():
            print(f"skipped: data not found at {data} (needs ../shared/data/ml-1m-u2999)")
            return 0
        if args.users:
            lo, hi = (int(x) for x in args.users.split("-"))
            data = filtered_copy(data, lo, hi, tmp / f"users-{lo}-{hi}")
    emit(
        {
            "machine": platform.processor() or platform.machine(),
            "cpus": mp.cpu_count(),
            "torch": torch.__version__,
            "data": str(data),
            "users": args.users,
        }
    )
    ds = load_dataset(data, cache=False)
    split = make_split(ds, "leave-one-out")
    out = Path(args.out)
    peer = RunConfig()
    peer.model.name = "cooccurrence"
    peer.train.progress = False
    res = train(peer, ds, out / "cooccurrence", log=lambda _m: None)
    bar = res.best["NDCG@10"]
    emit(
        {
            "model": "cooccurrence",
            "protocol": "R",
            "split": "val",
            "NDCG@10": bar,
            "fit_seconds": res.train_seconds,
        }
    )
    runs = []
    if args.idle:
        runs.append(
            run_bst(ds, out / "bst-idle", args.minutes, args.eval_every, args.set, bar, "idle")
        )
    if args.busy:
        stop = mp.Event()
        spinner = mp.Process(target=_spin, args=(stop,), daemon=True)
        spinner.start()
        try:
            runs.append(
                run_bst(
                    ds,
                    out / "bst-busy",
                    args.minutes,
                    args.eval_every,
                    args.set,
                    bar,
                    "one busy process beside",
                )
            )
        finally:
            stop.set()
            spinner.join(5)
    if len(runs) == 2 and runs[0]["minutes_to_pass_peer"] and runs[1]["minutes_to_pass_peer"]:
        emit(
            {
                "busy_over_idle_minutes_to_pass_peer": runs[1]["minutes_to_pass_peer"]
                / runs[0]["minutes_to_pass_peer"]
            }
        )
    if args.test:
        store = SequenceStore(ds)
        rows = split.targets("test")
        for name in ["cooccurrence"] + [Path(r["run_dir"]).name for r in runs]:
            run = load_run(out / name)
            st = SequenceStore(ds, run.user_feature_names) if name != "cooccurrence" else store
            m = evaluate_ranking(run.model, st, rows, run.config.data.max_len)
            emit({"model": name, "split": "test", **m})
    print(json.dumps({"done": True}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
