"""Parse speed of the ML-1M data layer against pandas' python engine, in one run.

Prints JSON lines: the pandas reference (ratings.dat alone, ``sep="::"``,
``engine="python"``), bstrec's full load of the folder without the processed cache
(cold: ratings + movies + users into the in-memory Dataset), with it (warm), a cold
load in a fresh interpreter (imports included), and a summary with the ratios. The
target is a cold speedup of at least 10x.

    python benchmarks/parse_speed.py [DATA_FOLDER] [--repeat N]

Default folder: ../shared/data/ml-1m-u2999 (or $BSTREC_ML1M_U2999); exits 0 with a
"skipped" line when it is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "ml-1m-u2999"


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("folder", nargs="?", default=os.environ.get("BSTREC_ML1M_U2999", DEFAULT))
    ap.add_argument("--repeat", type=int, default=5, help="best of N for bstrec timings")
    args = ap.parse_args()
    folder = Path(args.folder).resolve()
    ratings = folder / "ratings.dat"
    if not ratings.is_file():
        emit(bench="parse_speed", skipped=f"no ratings.dat in {folder}; nothing to measure")
        return 0

    import pandas as pd

    import bstrec

    t_pandas, df = best_of(
        lambda: pd.read_csv(
            ratings, sep="::", engine="python", header=None,
            names=["user", "item", "rating", "timestamp"], encoding="latin-1",
        ),
        1,  # several seconds; one run is a fair reference
    )  # fmt: skip
    emit(bench="pandas_python_engine", what="ratings.dat only", rows=len(df), seconds=t_pandas)

    with tempfile.TemporaryDirectory() as cache_dir:
        t_cold, ds = best_of(lambda: bstrec.load_dataset(folder, cache_dir, cache=False),
                             args.repeat)  # fmt: skip
        emit(bench="bstrec_cold", what="ratings+movies+users -> Dataset, no cache",
             interactions=ds.n_interactions, users=ds.n_users, seconds=t_cold)  # fmt: skip
        t_build = time.perf_counter()
        bstrec.load_dataset(folder, cache_dir)  # writes the processed cache
        t_build = time.perf_counter() - t_build
        t_warm, ds_warm = best_of(lambda: bstrec.load_dataset(folder, cache_dir), args.repeat)
        assert ds_warm.checksum == ds.checksum and ds_warm.n_interactions == ds.n_interactions
        emit(bench="bstrec_warm", what="same, from the processed cache",
             first_load_writing_cache_seconds=t_build, seconds=t_warm)  # fmt: skip

    code = (
        "import time; t = time.perf_counter(); import bstrec; "
        f"bstrec.load_dataset({str(folder)!r}, cache=False); print(time.perf_counter() - t)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)  # fmt: skip
    t_process = float(proc.stdout.strip())
    emit(bench="bstrec_cold_new_process", what="import bstrec + cold load", seconds=t_process)

    emit(
        bench="summary",
        cold_speedup=round(t_pandas / t_cold, 1),
        warm_speedup=round(t_pandas / t_warm, 1),
        cold_speedup_with_imports=round(t_pandas / t_process, 1),
        target_cold_speedup=10,
        meets_target=t_pandas / t_cold >= 10,
        pandas_seconds=round(t_pandas, 3),
        cold_seconds=round(t_cold, 4),
        warm_seconds=round(t_warm, 4),
        cpu=cpu_name(),
        cores=os.cpu_count(),
        python=platform.python_version(),
        pandas=pd.__version__,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
