"""`bstrec quickstart` end to end on generated data in the ML-1M file format."""

import json

from typer.testing import CliRunner

from bstrec.cli import app
from bstrec.data.synth import synthesize


def test_quickstart_trains_compares_and_recommends(tmp_path):
    data = tmp_path / "synth"
    synthesize(data, n_users=120, n_movies=80, seed=1)
    out = tmp_path / "runs"
    r = CliRunner().invoke(
        app, ["quickstart", "--data", str(data), "--out", str(out), "--epochs", "1", "--json"]
    )
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert [row["model"] for row in body["test_protocol_R"]] == [
        "popularity",
        "itemknn",
        "ease",
        "cooccurrence",
        "bst",
    ]
    assert all(row["protocol"] == "R" and row["users"] == 120 for row in body["test_protocol_R"])
    picks = body["example"]["picks"]
    assert len(picks) == 10 and all(p["title"] for p in picks)
    for name in ("popularity", "itemknn", "ease", "cooccurrence", "bst"):
        assert (out / name / "model.safetensors").is_file()
        assert (out / name / "config.yaml").is_file()


def test_quickstart_without_data_offline_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("BSTREC_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("BSTREC_MIRROR", "http://127.0.0.1:9")  # nothing listens there
    r = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q")])
    assert r.exit_code == 1
    assert "bstrec data import" in r.output
