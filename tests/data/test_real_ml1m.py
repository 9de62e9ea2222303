"""Figures on the real ml-1m-u2999 folder (skipped where it is absent)."""

import json

from typer.testing import CliRunner

from bstrec.cli import app


def test_data_info_reports_known_figures(ml1m_u2999):
    result = CliRunner().invoke(app, ["data", "info", str(ml1m_u2999), "--json"])
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert stats["users"] == 2999
    assert stats["interactions"] == 487650
    assert stats["movies"] == 3615
    assert sum(stats["ratings_histogram"].values()) == 487650


def test_real_sources_and_cache_round_trip(ml1m_u2999, tmp_path):
    """md5s as in SOURCE.md; the processed cache gives back exactly what parsing gives."""
    import numpy as np

    from bstrec import load_dataset

    parsed = load_dataset(ml1m_u2999, cache=False)
    assert parsed.sources == {
        "ratings.dat": "aa653a502e6beda9559796cebccf36dd",
        "movies.dat": "ef9fd9ff8d1b33faf73e2122c371e910",
        "users.dat": "681c0711d0d4548cd3d4718a49c2dcd8",
    }
    load_dataset(ml1m_u2999, tmp_path)
    cached = load_dataset(ml1m_u2999, tmp_path)
    for k in ("user", "item", "rating", "timestamp", "user_offsets", "item_ids", "item_titles"):
        np.testing.assert_array_equal(getattr(parsed, k), getattr(cached, k))
    assert cached.unrated_items == parsed.unrated_items and cached.n_users == 2999


def test_parse_speed_benchmark_skips_without_data(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "parse_speed.py"
    out = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    assert json.loads(out.stdout)["skipped"]
