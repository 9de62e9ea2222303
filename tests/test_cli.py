"""The command line's contract: exit status 2 for usage errors, 1 for data and runtime
errors, each one `error:` line on stderr without a traceback; no half-made run folders."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bstrec.cli import app
from bstrec.config import RunConfig
from bstrec.models.factory import MODELS
from tests.data.formats import ML1M, write
from tests.factories import tiny_dataset


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_error(r, code: int, *parts: str) -> str:
    """Exit status ``code``, and the output is one `error:` line holding ``parts``."""
    assert r.exit_code == code, (r.exit_code, r.output)
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A popularity run (closed form, about a second) on the tiny data set."""
    from bstrec.train import train

    cfg = RunConfig()
    cfg.model.name = "popularity"
    cfg.train.progress = False
    out = tmp_path_factory.mktemp("cli") / "run"
    train(cfg, tiny_dataset(), out, log=lambda _m: None)
    return out


@pytest.fixture
def data(tmp_path):
    return write(tmp_path / "ml", ML1M)


# ---------------------------------------------------------------- usage errors: 2
@pytest.mark.parametrize(
    "args, parts",
    [
        (["-k", "abc"], ["'-k' / '--k'"]),
        (["-k", "0"], ["'-k' / '--k'"]),
        (["--user", "1", "--bogus"], ["--bogus"]),
        ([], ["exactly one of --user or --history"]),
        (["--user", "1", "--history", "10"], ["exactly one of --user or --history"]),
        (["--user", "1", "--candidates", "-1"], ["--candidates"]),
    ],
)
def test_recommend_option_errors_exit_2(run_dir, args, parts):
    assert_error(invoke("recommend", run_dir, *args), 2, *parts)


@pytest.mark.parametrize(
    "history, parts",
    [
        ("1193,,661", ["item 2 is empty"]),
        ("10,11,", ["item 3 is empty"]),
        ("", ["item 1 is empty"]),
        ("10,x", ["item 2", "'x'", "not a movie id"]),
        ("10, 2.5", ["'2.5'"]),
    ],
)
def test_malformed_id_lists_exit_2_naming_the_bad_item(run_dir, history, parts):
    assert_error(invoke("recommend", run_dir, "--history", history), 2, "--history", *parts)


def test_a_well_formed_list_of_unknown_ids_is_a_data_error(run_dir):
    assert_error(
        invoke("recommend", run_dir, "--history", "10, 99999"), 1, "unknown movie id: 99999"
    )
    r = invoke("recommend", run_dir, "--history", " 10 ,11", "--json")
    assert r.exit_code == 0, r.output


def test_recommend_retrieves_only_with_a_model_that_can(run_dir):
    def picks(*more):
        r = invoke("recommend", run_dir, "--history", "10,11", "-k", "4", "--json", *more)
        assert r.exit_code == 0, r.output
        return [p["movie_id"] for p in json.loads(r.output)["picks"]]

    assert picks("--candidates", "0") == picks()
    # this run is a popularity model: it has no cheap stage to retrieve with
    r = invoke("recommend", run_dir, "--history", "10,11", "--candidates", "5")
    assert_error(r, 1, "candidates=5", "Popularity has no retrieval stage")


def test_train_unknown_model_lists_the_names_before_reading_data(tmp_path):
    out = tmp_path / "run"
    # the data does not exist: reading it would be a data error (exit status 1)
    line = assert_error(
        invoke("train", "--model", "nonsense", "--data", tmp_path / "nope", "--out", out),
        2,
        "nonsense",
    )
    assert all(name in line for name in MODELS), line
    assert not out.exists()


def test_train_unknown_model_from_set_or_config_file(tmp_path, data):
    assert_error(
        invoke("train", "--data", data, "--out", tmp_path / "r", "--set", "model.name=bogus"),
        2,
        "bogus",
        "popularity",
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model:\n  name: bogus\n")
    assert_error(invoke("train", "--config", cfg, "--out", tmp_path / "r"), 2, "bogus")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "assignment, parts",
    [
        ("train.lr=abc", ["config key 'train.lr': expected a number (float), got 'abc'"]),
        ("model.dim=true", ["'model.dim'", "(int)", "True"]),
        ("model.dim=2.5", ["'model.dim'", "(int)"]),
        ("model.nope=1", ["'model.nope'", "unknown field"]),
        ("train.lr", ["expected key=value"]),
    ],
)
def test_bad_set_exits_2_naming_the_key(tmp_path, data, assignment, parts):
    out = tmp_path / "run"
    assert_error(invoke("train", "--data", data, "--out", out, "--set", assignment), 2, *parts)
    assert not out.exists()


def test_bad_config_file_and_option_combinations_exit_2(tmp_path, data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: [unclosed\n")
    assert_error(invoke("train", "--config", cfg, "--out", tmp_path / "r"), 2, "not valid YAML")
    assert_error(
        invoke("train", "--config", tmp_path / "missing.yaml", "--out", tmp_path / "r"),
        2,
        "--config",
    )
    assert_error(invoke("train", "--data", data), 2, "--out RUN_DIR is required")
    assert_error(invoke("train", "--resume", tmp_path, "--model", "bst"), 2, "drop --model")


def test_evaluate_bad_split_exits_2(run_dir):
    assert_error(invoke("evaluate", run_dir, "--split", "train"), 2, "--split")


def test_unknown_command_or_option_exits_2():
    assert_error(invoke("--bogus"), 2, "--bogus")
    assert_error(invoke("data", "info", "x", "--bogus"), 2, "--bogus")


# ---------------------------------------------------------------- data errors: 1
def test_data_and_run_errors_exit_1(tmp_path):
    assert_error(invoke("recommend", tmp_path, "--user", "1"), 1, "not a run folder")
    assert_error(invoke("evaluate", tmp_path), 1, "not a run folder")
    assert_error(invoke("train", "--data", tmp_path / "nope", "--out", tmp_path / "r"), 1, "nope")
    assert not (tmp_path / "r").exists()
    # a folder given to --resume that is not a run: the data's fault, not the syntax's
    assert_error(invoke("train", "--resume", tmp_path), 1, "not a run folder")


# ---------------------------------------------------------------- run folders
def _failing_training(monkeypatch, write_first: tuple[str, ...] = ()):
    """Replace training with one that creates the run folder, writes ``write_first``
    and fails, as a diverging run does."""
    import bstrec.train
    from bstrec.train import TrainingError

    def fake(cfg, ds, out, log=print, *, resume=False):
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text("written before the failure\n")
        for name in write_first:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(b"weights")
        raise TrainingError("loss is no longer finite")

    monkeypatch.setattr(bstrec.train, "train", fake)


def test_failed_training_removes_the_folder_it_created(tmp_path, data, monkeypatch):
    _failing_training(monkeypatch)
    out = tmp_path / "runs" / "deep" / "run"
    assert_error(invoke("train", "--data", data, "--out", out), 1, "no longer finite")
    assert not (tmp_path / "runs").exists()  # every folder the command created
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ml"]


def test_failed_training_keeps_a_folder_that_was_there(tmp_path, data, monkeypatch):
    _failing_training(monkeypatch)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_error(invoke("train", "--data", data, "--out", out), 1, "no longer finite")
    assert (out / "notes.txt").read_text() == "mine"
    parent = tmp_path / "existing"
    parent.mkdir()
    assert_error(invoke("train", "--data", data, "--out", parent / "run"), 1)
    assert parent.is_dir() and not (parent / "run").exists()


@pytest.mark.parametrize("written", ["model.safetensors", "checkpoint/last.pt"])
def test_failed_training_keeps_a_folder_with_a_model_or_checkpoint(
    tmp_path, data, monkeypatch, written
):
    _failing_training(monkeypatch, (written,))
    out = tmp_path / "run"
    assert_error(invoke("train", "--data", data, "--out", out), 1, "no longer finite")
    assert (out / written).is_file()


# ---------------------------------------------------------------- help
def test_help_shows_flags_plainly_and_the_defaults_of_train():
    r = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output
    for default in (
        "[default: ml-1m]",
        "[default: ranking]",
        "[default: bst]",
        "[default: 0]",
        "[default: auto]",
    ):
        assert default in r.output, (default, r.output)
    for command in (
        ["recommend"],
        ["data", "info"],
        ["data", "download"],
        ["evaluate"],
        ["export"],
        ["serve"],
        ["quickstart"],
        [],
    ):
        r = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "<bool>" not in r.output, (command, r.output)
