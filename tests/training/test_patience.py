"""Early stopping: patience counts validations without improvement only from
``train.patience_from`` of the schedule on, however early the best one came."""

from __future__ import annotations

import pytest

from bstrec.config import RunConfig
from bstrec.train import train
from tests.factories import tiny_dataset


@pytest.mark.parametrize(
    "patience, patience_from, validations",
    [(1, 0.0, 2), (1, 0.5, 3), (2, 0.5, 4), (1, 1.0, 6), (2, 0.0, 3)],
)
def test_patience_counts_from_its_share_of_the_schedule(
    tmp_path, patience, patience_from, validations
):
    cfg = RunConfig()
    cfg.model.dim, cfg.model.heads, cfg.model.mlp = 16, 2, [16, 8]
    cfg.data.max_len = 5
    # a learning rate of 0: the first validation (epoch 0) stays the best and every
    # later one is no better; from half the schedule (epoch 2's validation) they count
    cfg.train.epochs, cfg.train.lr, cfg.train.warmup_steps = 6, 0.0, 0
    cfg.train.batch_size, cfg.train.negatives, cfg.train.eval_every = 256, 8, 1.0
    cfg.train.patience, cfg.train.patience_from = patience, patience_from
    cfg.train.progress, cfg.train.threads = False, 1
    res = train(cfg, tiny_dataset(), tmp_path / "run", log=lambda _m: None)
    assert [r["epoch"] for r in res.history] == list(range(validations))
    assert res.best["epoch"] == 0
