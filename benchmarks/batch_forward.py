"""Does scoring several requests in one forward pass pay? Stacked rows against one row
at a time, on a trained run: time per row, and whether a row gets the same bits.

    python benchmarks/batch_forward.py RUN_DIR [--sizes 1 2 4 8 16] [--repeat 5]

Prints one JSON line per batch size: ms for the stacked pass and for the same rows one
at a time (best of --repeat, one torch thread), and ``bitwise_equal``: whether every
row's scores in the stacked pass equal its scores alone. This is the measurement behind
``Recommender.rank`` scoring each query alone (serve/worker.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.common import emit  # noqa: E402


def best_ms(fn, repeat: int) -> float:
    fn()  # warm: first-call allocations
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import torch

    from bstrec.data.batches import Batch
    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run

    torch.set_num_threads(1)
    rec = Recommender(load_run(args.run_dir))
    gen = torch.Generator().manual_seed(args.seed)
    for size in args.sizes:
        users = torch.randperm(rec.ds.n_users, generator=gen)[:size]
        stacked = rec.store.batch_for_users(users, rec.max_len)
        rows = [
            Batch(**{k: v[i : i + 1] for k, v in stacked.__dict__.items()})
            for i in range(len(users))
        ]
        with torch.no_grad():
            together = rec.model.score_all(stacked)
            alone = torch.cat([rec.model.score_all(r) for r in rows])
            ms_stacked = best_ms(lambda b=stacked: rec.model.score_all(b), args.repeat)
            ms_alone = best_ms(lambda rs=rows: [rec.model.score_all(r) for r in rs], args.repeat)
        emit(
            {
                "bench": "batch_forward",
                "rows": len(users),
                "stacked_ms": round(ms_stacked, 2),
                "one_at_a_time_ms": round(ms_alone, 2),
                "stacked_ms_per_row": round(ms_stacked / len(users), 2),
                "one_at_a_time_ms_per_row": round(ms_alone / len(users), 2),
                "bitwise_equal": bool(torch.equal(together, alone)),
                "max_abs_diff": float((together - alone).abs().max()),
                "n_movies": rec.ds.n_items,
                "load_avg": [round(x, 2) for x in os.getloadavg()],
            }
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
