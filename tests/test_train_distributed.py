"""DistributedDataParallel training on this machine: 2 processes, gloo, loopback.

Two ranks with the same global batch must train the same model as one process:
same batches (EpochShards), same negatives (one generator seeded alike on every
rank), gradient of the global mean loss (per-rank weights). What differs is only the
order of floating-point sums in the all-reduce, hence the tolerance below.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bstrec.config import RunConfig
from bstrec.data.batches import SequenceStore, training_rows
from bstrec.data.splits import make_split
from bstrec.distributed import EpochShards, merge_shard_metrics, shard_bounds
from bstrec.train import train
from tests.factories import tiny_dataset

# Adam divides by sqrt(v), so rounding differences of the all-reduced gradients
# (~1e-7 relative) grow a little over steps; measured max |diff| ~1e-6 here.
ATOL, RTOL = 1e-5, 1e-4
# A merged metric is a count-weighted mean of the shards' means: only summation order
# differs from one process.
METRIC_RTOL = 1e-12
WORLD = 2


def _cfg(**train) -> RunConfig:
    cfg = RunConfig()
    cfg.model.dim, cfg.model.heads, cfg.model.mlp = 16, 2, [16, 8]
    cfg.model.dropout = 0.0  # dropout masks are per rank: they would differ from 1 process
    cfg.model.user_feature_dropout = 0.0  # so are the anonymous-request masks
    cfg.data.max_len = 5
    cfg.train.epochs, cfg.train.batch_size, cfg.train.negatives = 2, 64, 16
    cfg.train.progress, cfg.train.patience, cfg.train.lr = False, 10, 1e-2
    cfg.train.device, cfg.train.threads, cfg.train.eval_every = "cpu", 1, 1.0
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def _dataset():
    return tiny_dataset(n_users=40, per_user=12)


def _scenarios() -> dict[str, RunConfig]:
    ds = _dataset()
    n_rows = len(training_rows(ds, make_split(ds, "leave-one-out").train_end))
    uneven = _cfg(batch_size=n_rows - 1, epochs=1)  # 2nd batch: 1 row, rank 1 gets none
    uneven.train.loss = "bce"
    rating = _cfg(batch_size=50)
    rating.model.task = "rating"
    dropout = _cfg(epochs=1)
    dropout.model.dropout = dropout.model.user_feature_dropout = 0.3
    # the other scoring path and the user-id embedding: DDP must see every parameter used
    dropout.model.output, dropout.model.use_user_id = "concat", True
    return {
        "one_step": _cfg(batch_size=10_000, epochs=1),
        "softmax": _cfg(sampler="popularity", checkpoint_every_steps=2),
        "bce_uneven": uneven,
        "rating": rating,
        "dropout": dropout,
    }


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    import torch.distributed as dist

    from bstrec.distributed import DistContext
    from bstrec.train import validate

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        ds = _dataset()
        for name, cfg in _scenarios().items():
            res = train(cfg, ds, Path(tmp) / name / f"rank{rank}", log=lambda _m: None)
            torch.save(res.model.state_dict(), Path(tmp) / name / f"params{rank}.pt")
            (Path(tmp) / name / f"history{rank}.json").write_text(json.dumps(res.history))
        # the trained softmax model, evaluated sharded over ranks vs by this rank alone
        split = make_split(ds, "leave-one-out")
        store = SequenceStore(ds, sorted(ds.user_features))
        ctx = DistContext(rank, world, rank, torch.device("cpu"))
        for which in ("val", "test"):
            both = validate(res.model, store, split, 5, which=which, ctx=ctx)
            alone = validate(res.model, store, split, 5, which=which)
            out = Path(tmp) / f"eval-{which}-rank{rank}.json"
            out.write_text(json.dumps({"sharded": both, "single": alone}))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every scenario trained once by 2 ranks and once by 1 process."""
    import torch.multiprocessing as mp

    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    threads = torch.get_num_threads()
    try:
        ds = _dataset()
        for name, cfg in _scenarios().items():
            if name == "dropout":
                continue
            res = train(cfg, ds, tmp / name / "single", log=lambda _m: None)
            torch.save(res.model.state_dict(), tmp / name / "params-single.pt")
            (tmp / name / "history-single.json").write_text(json.dumps(res.history))
    finally:
        torch.set_num_threads(threads)
    return tmp


def _params(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("name", ["one_step", "softmax", "bce_uneven", "rating", "dropout"])
def test_parameters_are_identical_on_both_ranks(runs, name):
    p0, p1 = _params(runs / name / "params0.pt"), _params(runs / name / "params1.pt")
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), f"{name}: {k} differs between ranks"
    untrained = _untrained(name)
    assert any(not torch.equal(p0[k], untrained[k]) for k in p0), "nothing was trained"


def _untrained(name: str) -> dict:
    from bstrec.models.factory import build_model, catalog_features

    ds, cfg = _dataset(), _scenarios()[name]
    torch.manual_seed(cfg.train.seed)
    cat = catalog_features(ds, sorted(ds.user_features))
    return build_model(cfg, cat).state_dict()


@pytest.mark.parametrize("name", ["one_step", "softmax", "bce_uneven", "rating"])
def test_two_ranks_train_the_same_model_as_one_process(runs, name):
    single = _params(runs / name / "params-single.pt")
    ddp = _params(runs / name / "params0.pt")
    if _scenarios()[name].train.loss == "sampled-softmax" and name != "rating":
        # A softmax is blind to a shift of all scores, so the output bias has a zero
        # gradient in exact arithmetic; Adam rescales its rounding noise to steps of
        # +-lr in either run. It may only drift by that much.
        bias = "mlp_rest.5.bias"
        steps = json.loads((runs / name / "history0.json").read_text())[-1]["step"]
        lr = _scenarios()[name].train.lr
        assert (ddp[bias] - single[bias]).abs().max() <= 2 * lr * steps + 1e-6
        single.pop(bias), ddp.pop(bias)
        # the same for the key bias of each SASRec-tower attention layer (a shift of
        # every key score of a query), the middle third of in_proj_bias
        for k in [k for k in single if k.endswith("self_attn.in_proj_bias")]:
            d = single[k].shape[0] // 3
            assert (ddp[k][d : 2 * d] - single[k][d : 2 * d]).abs().max() <= 2 * lr * steps + 1e-6
            ddp[k][d : 2 * d] = single[k][d : 2 * d]
    for k in single:
        torch.testing.assert_close(
            ddp[k], single[k], atol=ATOL, rtol=RTOL, msg=lambda m, k=k: f"{name} {k}: {m}"
        )
    h1 = json.loads((runs / name / "history-single.json").read_text())
    h2 = json.loads((runs / name / "history0.json").read_text())
    assert [h["step"] for h in h1] == [h["step"] for h in h2]
    for a, b in zip(h1, h2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        key = "RMSE" if "RMSE" in a else "NDCG@10"
        assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5)
        assert b["users"] == a["users"]


def test_only_rank_zero_writes(runs):
    for name in _scenarios():
        assert (runs / name / "rank0" / "model.safetensors").is_file()
        assert (runs / name / "rank0" / "metrics.jsonl").is_file()
        assert not (runs / name / "rank1").exists(), f"{name}: rank 1 wrote files"
    assert (runs / "softmax" / "rank0" / "checkpoint" / "last.pt").is_file()
    lines = (runs / "softmax" / "rank0" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2  # one evaluation per epoch, written once


@pytest.mark.parametrize("which", ["val", "test"])
def test_sharded_evaluation_equals_single_process(runs, which):
    for rank in range(WORLD):
        r = json.loads((runs / f"eval-{which}-rank{rank}.json").read_text())
        sharded, single = r["sharded"], r["single"]
        assert sharded["users"] == single["users"] > 0
        for k in ("HR@1", "HR@10", "HR@20", "NDCG@10", "MRR"):
            assert sharded[k] == pytest.approx(single[k], rel=METRIC_RTOL, abs=1e-15), k


def test_shards_cover_each_global_batch_exactly_once():
    rows = torch.arange(100, 203).numpy()
    one = EpochShards(rows, 10, seed=3)
    two = [EpochShards(rows, 10, seed=3, rank=r, world=3) for r in range(3)]
    for epoch in (0, 1):
        for s in (one, *two):
            s.set_epoch(epoch)
        for k in range(len(one)):
            whole, _ = one.batch(k)
            parts = [s.batch(k)[0][s.batch(k)[1]] for s in two]
            assert torch.equal(torch.cat(parts), whole)
    assert not torch.equal(one.perm, EpochShards(rows, 10, seed=3).perm)  # set_epoch shuffles
    assert [shard_bounds(5, r, 2) for r in range(2)] == [slice(0, 3), slice(3, 5)]
    assert shard_bounds(1, 1, 2) == slice(1, 1)


def test_merged_rmse_is_the_rmse_of_all_targets():
    parts = [
        {"protocol": "T", "RMSE": 1.0, "MAE": 1.0, "users": 1, "eval_seconds": 0.1},
        {"protocol": "T", "RMSE": 3.0, "MAE": 3.0, "users": 3, "eval_seconds": 0.2},
    ]
    m = merge_shard_metrics(parts)
    assert m["RMSE"] == pytest.approx(((1 + 27) / 4) ** 0.5)
    assert m["MAE"] == pytest.approx(2.5)
    assert (m["users"], m["eval_seconds"], m["protocol"]) == (4, 0.2, "T")
    empty = merge_shard_metrics(
        [{"protocol": "R", "users": 0}, {"protocol": "R", "users": 2, "HR@10": 0.5}]
    )
    assert empty == {"protocol": "R", "users": 2, "HR@10": 0.5}


def test_torchrun_runs_the_cli_on_two_ranks(tmp_path):
    """The real launcher: `torchrun --nproc_per_node=2 -m bstrec train`."""
    from bstrec.data.synth import synthesize

    synthesize(tmp_path / "data", n_users=40, n_movies=30, seed=0)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "bstrec",
        "train",
        "--data",
        str(tmp_path / "data"),
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--json",
        "--set",
        "model.dim=16",
        "--set",
        "model.mlp=[16, 8]",
        "--set",
        "data.max_len=5",
        "--set",
        "train.epochs=1",
        "--set",
        "train.batch_size=64",
        "--set",
        "train.negatives=8",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    # only rank 0 reports; the JSON on stdout is one document
    out = json.loads(p.stdout[p.stdout.index("{") :])
    assert out["best_val"]["users"] > 0
    from bstrec.run_dir import load_run

    assert load_run(tmp_path / "run").model.task == "ranking"
    assert (tmp_path / "run" / "checkpoint" / "last.pt").is_file()
