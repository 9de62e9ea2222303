"""Memory and time budget on synthetic data of growing size (ML-1M to ML-32M scale).

    python benchmarks/scale.py [--sizes 1m 8m 32m] [--root DIR] [--train-minutes 3]

For each size (``bstrec data synth``, generated into ``--root`` when missing) prints one
JSON line per stage, each stage in its own process so that peak memory is its own:
- ``generate``: time and peak memory of writing the data (when it had to);
- ``load``: the first load (parsing and building the cache) and a cached load;
- ``train``: the default configuration for ``--train-minutes`` of training on one torch
  thread (the budget includes fitting and tuning the wide part, which is reported
  apart): training targets/s over the steps alone, and one validation on
  the fixed 10,000-user sample (its time is the evaluation time for 10,000 users;
  retrieve-then-rank above 20,000 movies, with the retrieval stage's recall);
- ``serve``: loading the run for inference (what `bstrec serve` does before it
  answers), then the latency of one known user's and one history's top-10 (median and
  worst of 20 requests each, computed on demand, not precomputed).
Figures are from whatever machine runs this; the README says which one produced its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {  # name: (users, movies); about 50 ratings per user
    "1m": (20_000, 10_000),
    "8m": (160_000, 40_000),
    "32m": (640_000, 87_000),
}


def _child(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object last."""
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    rec = json.loads(out.stdout.strip().splitlines()[-1])
    rec["peak_rss_gb"] = rec.pop("maxrss_kb") / 2**20
    return rec


PEAK = "import resource; maxrss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"

LOAD = (
    PEAK
    + """
import json, time
from bstrec import load_dataset
t0 = time.perf_counter(); ds = load_dataset({path!r}); first = time.perf_counter() - t0
t0 = time.perf_counter(); load_dataset({path!r}); cached = time.perf_counter() - t0
print(json.dumps({{"ratings": int(len(ds.item)), "users": ds.n_users, "movies": ds.n_items,
                  "first_load_s": first, "cached_load_s": cached, "maxrss_kb": maxrss()}}))
"""
)

TRAIN = (
    PEAK
    + """
import json, time, torch
torch.set_num_threads(1)
from bstrec import load_dataset
from bstrec.config import RunConfig
from bstrec.train import train
ds = load_dataset({path!r})
lines = []
cfg = RunConfig().override(["train.progress=false", "train.max_minutes={minutes}",
                            "train.eval_every=1000", "train.val_users=10000"])
t0 = time.perf_counter()
r = train(cfg, ds, {out!r}, log=lines.append)
last = r.history[-1]
# training time includes fitting and tuning the wide part: the step rate excludes it
steps_s = last["train_seconds"] - r.setup_seconds
print(json.dumps({{"wall_s": time.perf_counter() - t0, "log": lines[:2],
    "steps": last["step"], "train_seconds": last["train_seconds"],
    "wide_tuning_s": r.setup_seconds, "step_seconds": steps_s,
    "targets_per_s": last["step"] * cfg.train.batch_size / steps_s if steps_s > 0 else None,
    "val_users": last["users"],
    "eval_10k_users_s": last["eval_seconds"], "val_NDCG@10": last["NDCG@10"],
    "retrieval": {{k: v for k, v in last.items() if k.startswith("retrieval")}},
    "maxrss_kb": maxrss()}}))
"""
)

SERVE = (
    PEAK
    + """
import json, time, statistics, torch
torch.set_num_threads(1)
t0 = time.perf_counter()
from bstrec.recommend import Recommender
from bstrec.run_dir import load_run
rec = Recommender(load_run({out!r}))
ready = time.perf_counter() - t0
users = [int(u) for u in rec.run.dataset.user_ids[:: max(1, rec.run.dataset.n_users // 20)][:20]]
movies = [int(m) for m in rec.run.dataset.item_ids[:200:10]]
def timed(f, args):
    out = []
    for a in args:
        t = time.perf_counter(); f(a); out.append(1000 * (time.perf_counter() - t))
    return {{"p50_ms": statistics.median(out), "max_ms": max(out)}}
known = timed(lambda u: rec.for_user(u, k=10), users)
hist = timed(lambda i: rec.for_history(movies[i:i + 5], k=10), range(15))
print(json.dumps({{"ready_s": ready, "known_user": known, "history": hist,
                  "maxrss_kb": maxrss()}}))
"""
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--root", default=None, help="where the synthetic data sets live")
    ap.add_argument("--train-minutes", type=float, default=3.0)
    args = ap.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="bstrec-scale-"))
    for name in args.sizes:
        users, movies = SIZES[name]
        path = root / f"s{name}"
        cache = tempfile.mkdtemp(prefix=f"bstrec-scale-cache-{name}-")
        env = {**os.environ, "BSTREC_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1"}
        base = {"size": name, "users": users, "movies": movies}
        if not (path / "ratings.dat").is_file():
            t0 = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bstrec",
                    "data",
                    "synth",
                    str(path),
                    "--users",
                    str(users),
                    "--movies",
                    str(movies),
                ],
                check=True,
                env=env,
                capture_output=True,
            )
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
            print(
                json.dumps(
                    {
                        **base,
                        "stage": "generate",
                        "seconds": time.perf_counter() - t0,
                        "peak_rss_gb_so_far": peak,
                    }
                ),
                flush=True,
            )
        print(
            json.dumps({**base, "stage": "load", **_child(LOAD.format(path=str(path)), env)}),
            flush=True,
        )
        out = str(Path(cache) / "run")
        print(
            json.dumps(
                {
                    **base,
                    "stage": "train",
                    **_child(
                        TRAIN.format(path=str(path), out=out, minutes=args.train_minutes), env
                    ),
                }
            ),
            flush=True,
        )
        print(
            json.dumps({**base, "stage": "serve", **_child(SERVE.format(out=out), env)}), flush=True
        )


if __name__ == "__main__":
    main()
