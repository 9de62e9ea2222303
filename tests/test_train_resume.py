"""Faults: SIGKILL in the middle of an epoch, then --resume; non-finite loss.

Single-threaded CPU training is deterministic, so a resumed run must reproduce an
uninterrupted one exactly: every evaluation, the best metrics and the saved weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from bstrec import checkpoint
from bstrec.config import RunConfig
from bstrec.run_dir import load_run
from bstrec.train import TrainingError, train

# 1826 training rows / batch 128 = 15 steps per epoch (every row a target); evaluations
# every 8 steps and at epoch ends, checkpoints every 5 steps and at epoch ends
SETTINGS = {
    "model.dim": 16,
    "model.heads": 2,
    "model.mlp": [16, 8],
    "data.max_len": 5,
    "train.epochs": 2,
    "train.batch_size": 128,
    "train.negatives": 8,
    "train.target_stride": 1,
    "train.eval_every": 0.5,
    "train.checkpoint_every_steps": 5,
    "train.patience": 10,
    "train.threads": 1,
    "train.progress": False,
    "train.device": "cpu",
    "train.seed": 3,
}
KILL_AT_STEP = 25  # checkpoint at step 20 (epoch 1, batch 5), evaluation at 24, then kill
TIMING = ("train_seconds", "targets_per_second", "eval_seconds")

CHILD = """
import sys, time
import bstrec.training.step as T
from bstrec.sampling import training_loss
calls = 0
def stall_at_kill_step(*args, **kwargs):
    global calls
    calls += 1
    if calls == {kill_at}:
        open({marker!r}, "w").close()
        time.sleep(600)  # the test SIGKILLs us here, in the middle of an epoch
    return training_loss(*args, **kwargs)
T.training_loss = stall_at_kill_step
from bstrec.cli import app
sys.argv = ["bstrec"] + {args!r}
app()
"""


def _set_args() -> list[str]:
    out = []
    for k, v in SETTINGS.items():
        out += ["--set", f"{k}={json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"]
    return out


def _cfg(data) -> RunConfig:
    cfg = RunConfig()
    cfg.data.source = str(data)
    cfg.override(
        [
            f"{k}={json.dumps(v) if not isinstance(v, bool) else str(v).lower()}"
            for k, v in SETTINGS.items()
        ]
    )
    return cfg


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from bstrec.data.synth import synthesize

    return synthesize(
        tmp_path_factory.mktemp("synth") / "d", n_users=60, n_movies=40, seed=0
    ).out_dir


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _strip(rec: dict) -> dict:
    return {k: v for k, v in rec.items() if k not in TIMING}


def test_sigkill_mid_epoch_then_resume_equals_an_uninterrupted_run(tmp_path, data, restore_threads):
    from bstrec import load_dataset

    # the uninterrupted run, in this process
    ref = train(_cfg(data), load_dataset(str(data)), tmp_path / "ref", log=lambda _m: None)
    # fitting the wide part counts in the training time, and is reported apart
    assert 0 < ref.setup_seconds < ref.history[0]["train_seconds"]

    run, marker = tmp_path / "run", tmp_path / "stalled"
    args = ["train", "--data", str(data), "--out", str(run), *_set_args()]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD.format(kill_at=KILL_AT_STEP, marker=str(marker), args=args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "training never reached the kill step"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()

    ck, _ = checkpoint.load(run)
    assert (ck["progress"]["epoch"], ck["progress"]["batch"]) == (1, 5)  # mid-epoch
    assert ck["progress"]["step"] == 20
    evaluated = (run / "metrics.jsonl").read_text().splitlines()
    assert len(evaluated) == len(ck["history"]) + 1  # step 24's, after the checkpoint

    r = subprocess.run(
        [sys.executable, "-m", "bstrec", "train", "--resume", str(run), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    best = json.loads(r.stdout)["best_val"]

    assert _strip(best) == _strip(ref.best)
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [_strip(h) for h in history] == [_strip(h) for h in ref.history]
    assert [h["step"] for h in history] == [8, 15, 16, 24, 30]
    summary = json.loads((run / "summary.json").read_text())
    assert _strip(summary["best_val"]) == _strip(ref.best)
    assert summary["setup_seconds"] == 0  # fitted before the checkpoint, not again
    got, want = (
        load_file(run / "model.safetensors"),
        load_file(tmp_path / "ref" / "model.safetensors"),
    )
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    loaded = load_run(run)
    assert loaded.model.task == "ranking" and (run / "curves.png").is_file()
    final = checkpoint.load(run)[0]
    assert (final["progress"]["epoch"], final["progress"]["step"]) == (2, 30)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(
    tmp_path, data, monkeypatch, restore_threads
):
    import bstrec.training.step as T
    from bstrec import load_dataset

    real = T.training_loss
    calls = []

    def poisoned(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 23 else loss

    monkeypatch.setattr(T, "training_loss", poisoned)
    run = tmp_path / "run"
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1 step 23") as e:
        train(_cfg(data), load_dataset(str(data)), run, log=lambda _m: None)
    assert str(run / "checkpoint" / "last.pt") in str(e.value)
    ck, path = checkpoint.load(run, log=pytest.fail)
    assert path.name == "last.pt" and ck["progress"]["step"] == 20
    assert all(torch.isfinite(v).all() for v in ck["model"].values())
    assert load_run(run).model is not None  # the best weights so far are intact
    # the way out: resume from the last good checkpoint with a lower learning rate
    cfg = _cfg(data)
    cfg.train.lr = 1e-4
    done = train(cfg, load_dataset(str(data)), run, log=lambda _m: None, resume=True)
    assert done.history[-1]["step"] == 30


def test_cli_exits_non_zero_on_a_diverging_learning_rate(tmp_path, data, restore_threads):
    from typer.testing import CliRunner

    from bstrec.cli import app

    r = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "r"),
            *_set_args(),
            "--set",
            "train.lr=1.0e+30",
        ],
    )
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and ("non-finite" in r.output or "no longer finite" in r.output)
    assert "Traceback" not in r.output


def test_stop_after_epochs_trains_the_first_part_of_the_same_schedule(
    tmp_path, data, restore_threads
):
    """The quickstart's fixed work: the first epoch of a 2-epoch schedule is the full
    run's first epoch, evaluation for evaluation, not a 1-epoch schedule."""
    from bstrec import load_dataset

    ds = load_dataset(str(data))
    ref = train(_cfg(data), ds, tmp_path / "ref", log=lambda _m: None)
    cut = _cfg(data).set("train.stop_after_epochs", 1)
    part = train(cut, ds, tmp_path / "part", log=lambda _m: None)
    first = [_strip(r) for r in ref.history if r["epoch"] == 0]
    assert len(first) >= 2 and [_strip(r) for r in part.history] == first
    short = train(_cfg(data).set("train.epochs", 1), ds, tmp_path / "short", log=lambda _m: None)
    assert [_strip(r) for r in short.history] != first  # the schedule itself differs
