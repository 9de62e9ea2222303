"""One tiny trained run per test session, shared by every serving test."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import pytest

from tests.factories import tiny_dataset

pytest.importorskip("fastapi", reason="serving tests need the 'serve' extra")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A BST trained for 3 epochs on the tiny chain data set (a few seconds).

    Its quality does not matter here; the API only needs a real run folder.
    """
    import torch

    from bstrec.config import RunConfig
    from bstrec.train import train

    ds = tiny_dataset(n_users=40, per_user=12)
    cfg = RunConfig()
    cfg.model.dim, cfg.model.heads, cfg.model.mlp = 16, 2, [16, 8]
    cfg.train.epochs, cfg.train.batch_size, cfg.train.negatives = 3, 64, 16
    cfg.train.progress, cfg.train.lr, cfg.train.seed = False, 1e-2, 0
    cfg.data.max_len = 5
    # one thread: on a busy 2-core machine torch's spinning intra-op threads make this
    # tiny job ~10x slower (24 s instead of 2 s measured); the setting is process-wide,
    # so put it back for the tests that follow
    cfg.train.threads = 1
    out = tmp_path_factory.mktemp("serve") / "tiny-run"
    threads = torch.get_num_threads()
    try:
        train(cfg, ds, out, log=lambda _m: None)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="session")
def recommender(tiny_run):
    from bstrec.recommend import Recommender
    from bstrec.run_dir import load_run

    return Recommender(load_run(tiny_run))


@pytest.fixture(scope="session")
def app(recommender):
    from bstrec.serve.app import create_app

    return create_app(recommender)


@pytest.fixture(scope="session")
def client(app):
    from fastapi.testclient import TestClient

    # a server-side exception must fail the test, not hide behind the generic 500
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


@contextmanager
def running(app):
    """The app on a real loopback socket (uvicorn in a thread); yields its base URL."""
    import uvicorn

    # port 0: the OS picks a free port, read back once the socket is bound
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        thread.join(0.05)
    else:
        raise RuntimeError("uvicorn did not start within 10 s")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def live_server(app):
    with running(app) as url:
        yield url
