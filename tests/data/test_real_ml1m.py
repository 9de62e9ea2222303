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
