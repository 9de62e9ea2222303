"""Does scoring several requests in one forward pass pay? Stacked rows against one row
at a time, on a trained run: time per row, and whether a row gets the same bits.

    python benchmarks/batch_forward.py RUN_DIR [--sizes 1 2 4 8 16] [--repeat 5]

Prints one JSON line per path and batch size, one torch thread, best of --repeat:

- ``whole``: ``score_all`` over the whole catalogue, for rows of known users;
- ``retrieve``: ``Recommender.rank``'s retrieve-then-rank pass (``_rank_stack``: the
  cheap stage, the head over 200 candidates, the reasons) for typed histories of 1 to 8
  real recent watches, as the server gets them.

``bitwise_equal`` says whether every row's answer in the stacked pass equals its answer
alone. This is the measurement behind ``Recommender.rank`` stacking retrieve-then-rank
queries and scoring whole-catalogue ones one at a time (serve/worker.py).
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
    ap.add_argument("--paths", nargs="+", default=["whole", "retrieve"])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    import numpy as np
    import torch

    from bstrec.recommend import Recommender, _same
    from bstrec.retrieval import DEFAULT_CANDIDATES
    from bstrec.run_dir import load_run

    torch.set_num_threads(1)
    run = load_run(args.run_dir)
    whole = Recommender(run, candidates=0)
    gen = torch.Generator().manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    ds = whole.ds
    common = {"n_movies": ds.n_items, "threads": 1}
    if "whole" in args.paths:
        model = whole.model
        for size in args.sizes:
            users = torch.randperm(ds.n_users, generator=gen)[:size]
            stacked = whole.store.batch_for_users(users, whole.max_len)
            rows = [stacked.index(slice(i, i + 1)) for i in range(len(users))]
            with torch.inference_mode():
                together = model.score_all(stacked)
                alone = torch.cat([model.score_all(r) for r in rows])
                ms_stacked = best_ms(lambda b=stacked: model.score_all(b), args.repeat)
                ms_alone = best_ms(lambda rs=rows: [model.score_all(r) for r in rs], args.repeat)
            _emit("whole", size, ms_stacked, ms_alone, bool(torch.equal(together, alone)), common)
    if "retrieve" in args.paths and getattr(whole.model, "retrieves", False):
        rec = Recommender(run, candidates=DEFAULT_CANDIDATES)
        for size in args.sizes:
            queries = []
            for u in rng.choice(ds.n_users, size, replace=False):
                hi = int(ds.user_offsets[u + 1])
                n = int(rng.integers(1, 9))
                queries.append(
                    rec.history_query([ds.item_ids[i].item() for i in ds.item[hi - n : hi]], 10)
                )
            together = rec._rank_stack(queries)
            alone = [rec._rank_stack([q])[0] for q in queries]
            same = all(_same(a, b) for a, b in zip(together, alone, strict=True))
            ms_stacked = best_ms(lambda qs=queries: rec._rank_stack(qs), args.repeat)
            ms_alone = best_ms(lambda qs=queries: [rec._rank_stack([q]) for q in qs], args.repeat)
            _emit(
                "retrieve",
                size,
                ms_stacked,
                ms_alone,
                same,
                {**common, "candidates": rec.candidates},
            )
    return 0


def _emit(path: str, rows: int, stacked: float, alone: float, equal: bool, common: dict):
    emit(
        {
            "bench": "batch_forward",
            "path": path,
            "rows": rows,
            "stacked_ms": round(stacked, 2),
            "one_at_a_time_ms": round(alone, 2),
            "stacked_ms_per_row": round(stacked / rows, 2),
            "one_at_a_time_ms_per_row": round(alone / rows, 2),
            "bitwise_equal": equal,
            **common,
            "load_avg": [round(x, 2) for x in os.getloadavg()],
        }
    )


if __name__ == "__main__":
    sys.exit(main())
