"""One user's full-catalogue scoring: ONNX Runtime against PyTorch, on 1 and 2 threads.

    python benchmarks/onnx_latency.py RUN_DIR [--onnx model.onnx] [--users 50] [--rounds 5]

Exports the run (with the parity check) unless --onnx names an export of it, then
scores one known user at a time, the way a service answers a request: PyTorch's cached
full-catalogue scoring (``score_all`` after ``freeze_catalog``) and the ONNX graph in
ONNX Runtime, on the same users, in alternating rounds so that a change in machine
load hits both engines alike. Prints JSON lines: per engine and thread count the
latency percentiles in ms, then per thread count the ratio ONNX Runtime / PyTorch of
the medians (below 1: ONNX Runtime is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import emit  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--onnx", type=Path, help="an export of RUN_DIR (default: export now)")
    ap.add_argument("--users", type=int, default=50, help="distinct users scored per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per engine")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()

    import torch

    import bstrec
    from bstrec.data.batches import SequenceStore
    from bstrec.export_onnx import CatalogueScorer, onnx_session

    run = bstrec.load_run(args.run_dir)
    loaded = run.loaded
    path = args.onnx
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory()
        path = Path(tmp.name) / "model.onnx"
        res = run.export_onnx(path)
        emit(
            {
                "export_seconds": round(res.export_seconds, 1),
                "size_mb": res.size_bytes / 1e6,
                "max_abs_diff": res.max_abs_diff,
                "parity_rows": res.parity_rows,
            }
        )
    ds = run.dataset
    store = SequenceStore(ds, loaded.user_feature_names)
    users = np.random.default_rng(0).choice(ds.n_users, min(args.users, ds.n_users), replace=False)
    batches = [
        store.batch_for_users(torch.tensor([int(u)]), run.config.data.max_len) for u in users
    ]
    model = loaded.model.eval()
    if hasattr(model, "freeze_catalog"):
        model.freeze_catalog()  # what a serving process does once
    scorer = CatalogueScorer(model, len(loaded.user_feature_names), run.config.model.use_user_id)
    names = scorer.input_names()
    feeds = [
        {n: a.numpy() for n, a in zip(names, scorer.inputs_of(b), strict=True)} for b in batches
    ]

    for threads in args.threads:
        torch.set_num_threads(threads)
        sess = onnx_session(path, threads=threads)

        def torch_call(i: int) -> None:
            with torch.no_grad():
                model.score_all(batches[i])

        def onnx_call(i: int, sess=sess) -> None:
            sess.run(["scores"], feeds[i])

        times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
        for fn in (torch_call, onnx_call):  # warm-up: allocators, caches, lazy inits
            for i in range(min(10, len(batches))):
                fn(i)
        for _ in range(args.rounds):
            for engine, fn in (("pytorch", torch_call), ("onnxruntime", onnx_call)):
                for i in range(len(batches)):
                    t0 = time.perf_counter()
                    fn(i)
                    times[engine].append(1000 * (time.perf_counter() - t0))
        p50 = {}
        for engine, ts in times.items():
            ts = np.asarray(ts)
            p50[engine] = float(np.percentile(ts, 50))
            emit(
                {
                    "engine": engine,
                    "threads": threads,
                    "calls": len(ts),
                    "p50_ms": round(p50[engine], 3),
                    "p90_ms": round(float(np.percentile(ts, 90)), 3),
                    "mean_ms": round(float(ts.mean()), 3),
                    "n_items": ds.n_items,
                    "load_avg_1min": round(os.getloadavg()[0], 2),
                }
            )
        emit(
            {
                "threads": threads,
                "onnx_over_pytorch_p50": round(p50["onnxruntime"] / p50["pytorch"], 3),
            }
        )
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
