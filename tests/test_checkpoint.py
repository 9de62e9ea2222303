"""Checkpoint files: atomic, verified, loaded without unpickling arbitrary objects,
and a corrupt latest one falls back to the one before."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from bstrec import checkpoint
from bstrec.checkpoint import CheckpointError


def _state(step: int) -> dict:
    return {
        "model": {"w": torch.full((50, 8), float(step))},
        "optimizer": {"state": {}},
        "rng": {"generator": torch.Generator().manual_seed(step).get_state()},
        "progress": {"epoch": 0, "batch": step, "step": step, "stop_reason": ""},
        "best": {"score": -float("inf"), "record": {}, "bad_evals": 0},
        "history": [{"epoch": 0, "NDCG@10": 0.5, "protocol": "R"}],
    }


def test_save_keeps_the_previous_checkpoint_and_loads_the_latest(tmp_path):
    checkpoint.save(tmp_path, _state(1))
    checkpoint.save(tmp_path, _state(2))
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["last.pt", "previous.pt"]
    state, path = checkpoint.load(tmp_path, log=pytest.fail)
    assert path.name == "last.pt" and state["progress"]["step"] == 2
    assert torch.equal(state["model"]["w"], torch.full((50, 8), 2.0))
    assert checkpoint.read(folder / "previous.pt")["progress"]["step"] == 1
    # an ordinary torch.load still opens it (weights_only: tensors and plain data only)
    assert torch.load(folder / "last.pt", weights_only=True)["history"][0]["NDCG@10"] == 0.5


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_a_damaged_last_checkpoint_falls_back_to_previous(tmp_path, damage):
    checkpoint.save(tmp_path, _state(1))
    checkpoint.save(tmp_path, _state(2))
    last = tmp_path / "checkpoint" / "last.pt"
    data = bytearray(last.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        # inside the tensor data, which torch.load itself does not check
        data[data.index(torch.full((8,), 2.0).numpy().tobytes()) + 1] ^= 0x40
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a checkpoint at all" * 10)
    last.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="last.pt"):
        checkpoint.read(last)
    messages = []
    state, path = checkpoint.load(tmp_path, log=messages.append)
    assert path.name == "previous.pt" and state["progress"]["step"] == 1
    assert "last.pt" in messages[0] and "previous.pt" in messages[-1]


def test_no_usable_checkpoint_names_both_files(tmp_path):
    checkpoint.save(tmp_path, _state(1))
    checkpoint.save(tmp_path, _state(2))
    for name in ("last.pt", "previous.pt"):
        p = tmp_path / "checkpoint" / name
        p.write_bytes(p.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"last\.pt.*previous\.pt"):
        checkpoint.load(tmp_path, log=lambda _m: None)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "elsewhere", log=lambda _m: None)


def test_a_crash_between_the_renames_leaves_previous(tmp_path):
    checkpoint.save(tmp_path, _state(1))
    checkpoint.save(tmp_path, _state(2))
    (tmp_path / "checkpoint" / "last.pt").unlink()
    state, path = checkpoint.load(tmp_path, log=lambda _m: None)
    assert path.name == "previous.pt" and state["progress"]["step"] == 1


class Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    torch.save(
        {**_state(1), "format": checkpoint.FORMAT, "version": checkpoint.VERSION, "extra": Evil()},
        folder / "last.pt",
    )
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.read(folder / "last.pt")


def test_no_temp_files_are_left_behind(tmp_path):
    for step in range(3):
        checkpoint.save(tmp_path, _state(step))
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == ["last.pt", "previous.pt"]


def _tiny_cli_args(data, out, *extra):
    return [
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--set",
        "model.dim=16",
        "--set",
        "model.mlp=[16, 8]",
        "--set",
        "data.max_len=5",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.negatives=8",
        "--set",
        "train.threads=1",
        "--set",
        "train.progress=false",
        "--set",
        "train.eval_every=1",
        *extra,
    ]


@pytest.fixture
def synth_data(tmp_path):
    from bstrec.data.synth import synthesize

    synthesize(tmp_path / "data", n_users=40, n_movies=30, seed=0)
    return tmp_path / "data"


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_cli_resume_from_a_corrupt_checkpoint(tmp_path, synth_data, restore_threads):
    from bstrec.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    r = runner.invoke(
        app,
        _tiny_cli_args(
            synth_data, run, "--set", "train.epochs=1", "--set", "train.checkpoint_every_steps=3"
        ),
    )
    assert r.exit_code == 0, r.output
    last = run / "checkpoint" / "last.pt"
    good = last.read_bytes()
    last.write_bytes(good[: len(good) // 3])
    # one more epoch, from the checkpoint before the damaged one
    r = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=2"])
    assert r.exit_code == 0, r.output
    assert f"{last}: corrupt or truncated" in r.output
    assert "resuming from" in r.output and "previous.pt" in r.output
    assert [
        int(line.split('"epoch": ')[1].split(",")[0])
        for line in (run / "metrics.jsonl").read_text().splitlines()
    ] == [0, 1]
    # both damaged: a clear error naming the files, exit status 1
    for name in ("last.pt", "previous.pt"):
        (run / "checkpoint" / name).write_bytes(b"\0" * 64)
    r = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.epochs=3"])
    assert r.exit_code == 1
    assert "no usable checkpoint" in r.output and "previous.pt" in r.output


def test_cli_resume_refuses_changed_settings(tmp_path, synth_data, restore_threads):
    from bstrec.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    assert (
        runner.invoke(app, _tiny_cli_args(synth_data, run, "--set", "train.epochs=1")).exit_code
        == 0
    )
    r = runner.invoke(app, ["train", "--resume", str(run), "--set", "train.batch_size=7"])
    assert r.exit_code == 1 and "train.batch_size: 32 -> 7" in r.output
    r = runner.invoke(app, ["train", "--resume", str(run), "--model", "popularity"])
    assert r.exit_code == 2 and "--model" in r.output  # a usage error
    r = runner.invoke(app, ["train", "--resume", str(tmp_path / "nothing")])
    assert r.exit_code == 1 and "not a run folder" in r.output
    r = runner.invoke(app, ["train", "--resume", str(run)])  # already finished
    assert r.exit_code == 0 and "already finished" in r.output
