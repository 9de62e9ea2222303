import os
from pathlib import Path

import pytest

SHARED_ML1M = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ml-1m-u2999"


@pytest.fixture(scope="session")
def bst_run(tmp_path_factory):
    """A small default BST trained for 2 epochs on the tiny data set: (run folder,
    dataset). Tests only read it."""
    from bstrec.config import RunConfig
    from bstrec.train import train
    from tests.factories import tiny_dataset

    ds = tiny_dataset()
    cfg = RunConfig()
    cfg.model.dim, cfg.model.heads, cfg.model.mlp = 16, 2, [16, 8]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.negatives = 2, 64, 8
    cfg.train.progress = False
    cfg.data.max_len = 5
    out = tmp_path_factory.mktemp("bst-run")
    train(cfg, ds, out, log=lambda _m: None)
    return out, ds


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
