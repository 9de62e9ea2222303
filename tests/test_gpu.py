"""The CUDA code paths (skipped without a GPU; `benchmarks/gpu.py` runs these and the
timings on a GPU machine)."""

from __future__ import annotations

import math

import pytest
import torch

from bstrec.config import RunConfig
from bstrec.run_dir import load_run
from bstrec.train import train
from tests.factories import tiny_dataset
from tests.models.test_bst import make
from tests.test_train_precision import SMALL

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@pytest.mark.parametrize("task", ["ranking", "rating"])
def test_scores_on_cuda_equal_scores_on_cpu(task):
    model, batch, ds = make(task=task)
    cands = torch.arange(1, ds.n_items + 1)
    cpu = model.score(batch, cands)
    gpu = model.to("cuda").score(batch.to("cuda"), cands.to("cuda")).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-3)
    model.freeze_catalog()
    torch.testing.assert_close(
        model.score_all(batch.to("cuda")).cpu()[:, : len(cands)], cpu, rtol=1e-3, atol=1e-3
    )


def test_training_on_cuda_in_bf16_saves_a_run_that_loads_on_cpu(tmp_path):
    ds = tiny_dataset(n_users=40)
    cfg = RunConfig().override([*SMALL, "train.device=cuda", "train.precision=bf16"])
    result = train(cfg, ds, tmp_path / "run", log=lambda _m: None)
    assert math.isfinite(result.best["NDCG@10"])
    run = load_run(tmp_path / "run")
    assert all(p.device.type == "cpu" for p in run.model.parameters())
