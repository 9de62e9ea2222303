"""Mixed precision: the setting's meaning, and a bf16 training run on CPU (the same
code path a GPU takes with ``train.precision=auto``)."""

from __future__ import annotations

import math

import pytest
import torch

from bstrec.config import RunConfig
from bstrec.train import primary, train, use_bf16
from tests.factories import tiny_dataset

SMALL = [
    "model.dim=16",
    "model.heads=2",
    "model.mlp=[16, 8]",
    "data.max_len=5",
    "train.epochs=2",
    "train.batch_size=64",
    "train.negatives=8",
    "train.eval_every=1",
    "train.progress=false",
    "train.device=cpu",
    "train.threads=1",
]


def test_bf16_is_opt_in():
    assert RunConfig().train.precision == "fp32"
    assert use_bf16("bf16", torch.device("cpu"))
    assert not use_bf16("fp32", torch.device("cpu"))


@pytest.mark.parametrize("variant", [[], ["train.loss=bce"], ["model.task=rating"]])
def test_bf16_training_runs_and_differs_from_fp32(tmp_path, variant):
    ds = tiny_dataset(n_users=40)
    results = {}
    for precision in ("fp32", "bf16"):
        cfg = RunConfig().override([*SMALL, *variant, f"train.precision={precision}"])
        results[precision] = train(cfg, ds, tmp_path / precision, log=lambda _m: None)
    for r in results.values():
        assert math.isfinite(primary(r.best)) and math.isfinite(r.history[-1]["train_loss"])
    # autocast really ran: bf16 rounding changes the losses, not only a flag
    assert results["bf16"].history[-1]["train_loss"] != results["fp32"].history[-1]["train_loss"]
    # weights and the saved model stay fp32 whatever the step's precision
    assert all(p.dtype == torch.float32 for p in results["bf16"].model.parameters())
