import os
from pathlib import Path

import pytest

SHARED_ML1M = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-1m-u2999"


@pytest.fixture(scope="session")
def ml1m_u2999() -> Path:
    """The real ML-1M subset beside the checkout; tests that need it skip without it."""
    path = Path(os.environ.get("BSTREC_ML1M_U2999", SHARED_ML1M)).resolve()
    if not (path / "ratings.dat").is_file():
        pytest.skip(f"real data not found at {path} (../shared/data/ml-1m-u2999)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write caches into the user's real cache folder from a test."""
    monkeypatch.setenv("BSTREC_DATA_DIR", str(tmp_path_factory.getbasetemp() / "bstrec-data"))
    monkeypatch.setenv("BSTREC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "bstrec-cache"))
