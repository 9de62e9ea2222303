"""The synthetic generator: format, determinism, and that its structure is real."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from bstrec import load_dataset
from bstrec.cli import app
from bstrec.data.splits import leave_one_out
from bstrec.data.synth import synthesize


def test_deterministic_for_a_seed(tmp_path):
    synthesize(tmp_path / "a", 60, 80, seed=3)
    synthesize(tmp_path / "b", 60, 80, seed=3)
    synthesize(tmp_path / "c", 60, 80, seed=4)
    for name in ("ratings.dat", "movies.dat", "users.dat"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    a, c = ((tmp_path / d / "ratings.dat").read_bytes() for d in "ac")
    assert a != c


def test_ml1m_format_and_loadable(tmp_path):
    res = synthesize(tmp_path, 40, 50, seed=0)
    movies = (tmp_path / "movies.dat").read_bytes()
    assert "Café".encode("latin-1") in movies  # latin-1, like the real files
    first = (tmp_path / "ratings.dat").read_text().splitlines()[0].split("::")
    assert len(first) == 4 and all(p.isdigit() for p in first)
    ds = load_dataset(tmp_path, cache=False)
    assert ds.n_users == 40 and ds.n_interactions == res.n_ratings
    assert len(movies.splitlines()) == 50 and ds.n_items <= 50
    assert set(np.unique(ds.rating).tolist()) <= {1, 2, 3, 4, 5}
    assert sorted(ds.user_features) == ["age", "gender", "occupation", "zip1"]
    assert ds.seq_lengths().min() >= 5
    # some consecutive watches share a timestamp, to exercise the tie rule
    same = np.diff(ds.timestamp) == 0
    assert same[np.diff(ds.user) == 0].any()


def test_next_in_series_oracle_beats_popularity_by_far(tmp_path):
    """'The movie after the last one watched' vs the most popular unseen movies."""
    synthesize(tmp_path, 500, 300, seed=0)
    ds = load_dataset(tmp_path, cache=False)
    split = leave_one_out(ds)
    test = split.targets("test")
    raw = ds.item_ids
    last_raw = raw[ds.item[test - 1]]
    oracle_hit = np.mean(last_raw + 1 == raw[ds.item[test]])

    counts = np.bincount(ds.item[split.train_rows(ds.user_offsets)], minlength=ds.n_items)
    scores = np.tile(counts.astype(float), (len(test), 1))
    users = ds.user[test]
    for k, u in enumerate(users):  # remove each user's history from their ranking
        scores[k, ds.item[ds.user_offsets[u] : test[k]]] = -1
    top10 = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    pop_hit10 = np.mean((top10 == ds.item[test][:, None]).any(axis=1))

    assert oracle_hit > 0.35, oracle_hit
    assert oracle_hit > 3 * pop_hit10, (oracle_hit, pop_hit10)


def test_cli(tmp_path):
    result = CliRunner().invoke(
        app, ["data", "synth", str(tmp_path), "--users", "20", "--movies", "30", "--seed", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "users.dat").read_text().count("\n") == 20
