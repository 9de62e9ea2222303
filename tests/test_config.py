"""Config values are converted to the dataclass field's declared type, or refused."""

from __future__ import annotations

import pytest

from bstrec.config import RunConfig


def _set(*assignments: str) -> RunConfig:
    return RunConfig().override(list(assignments))


@pytest.mark.parametrize(
    "text, expected",
    [("1e-3", 1e-3), (".5", 0.5), ("-2E+4", -2e4), ("3", 3.0), ("0.25", 0.25), ("1.0e-5", 1e-5)],
)
def test_float_fields_take_numbers_in_any_spelling(text, expected):
    cfg = _set(f"train.lr={text}")
    assert cfg.train.lr == expected and type(cfg.train.lr) is float


@pytest.mark.parametrize("text", ["abc", "true", "false", "[1]", "null", "1e", "nan"])
def test_float_fields_refuse_non_numbers(text):
    with pytest.raises(ValueError) as e:
        _set(f"train.lr={text}")
    msg = str(e.value)
    assert "'train.lr'" in msg and "number (float)" in msg, msg


def test_float_error_message_names_field_type_and_value():
    msg = r"^config key 'train.lr': expected a number \(float\), got 'abc'$"
    with pytest.raises(ValueError, match=msg):
        _set("train.lr=abc")


@pytest.mark.parametrize("text, expected", [("12", 12), ("'12'", 12), ("-3", -3), ("0", 0)])
def test_int_fields_take_whole_numbers(text, expected):
    cfg = _set(f"model.dim={text}")
    assert cfg.model.dim == expected and type(cfg.model.dim) is int


@pytest.mark.parametrize("text", ["true", "false", "2.5", "3.0", "'2.5'", "abc", "[64]", "1e3"])
def test_int_fields_refuse_booleans_fractions_and_text(text):
    with pytest.raises(ValueError) as e:
        _set(f"model.dim={text}")
    msg = str(e.value)
    assert "'model.dim'" in msg and "(int)" in msg, msg


@pytest.mark.parametrize("text, expected", [("true", True), ("false", False)])
def test_bool_fields_take_true_and_false(text, expected):
    assert _set(f"model.use_genres={text}").model.use_genres is expected


@pytest.mark.parametrize("text", ["1", "0", "'true'", "abc", "null"])
def test_bool_fields_refuse_anything_else(text):
    with pytest.raises(ValueError, match=r"'model.use_genres': expected true or false \(bool\)"):
        _set(f"model.use_genres={text}")


def test_list_fields_need_lists_of_the_element_type():
    assert _set("model.mlp=[32, '16', 8]").model.mlp == [32, 16, 8]
    with pytest.raises(ValueError, match=r"'model.mlp': expected a list \(list\[int\]\), got 64"):
        _set("model.mlp=64")
    with pytest.raises(ValueError, match=r"'model.mlp\[1\]': expected a whole number \(int\)"):
        _set("model.mlp=[32, 2.5]")
    with pytest.raises(ValueError, match=r"'model.mlp\[0\]'"):
        _set("model.mlp=[true]")


def test_string_fields_take_scalars():
    assert _set("data.source=123").data.source == "123"
    assert _set("data.source=1.5").data.source == "1.5"
    assert _set("model.name=popularity").model.name == "popularity"
    with pytest.raises(ValueError, match=r"'data.source': expected a string \(str\)"):
        _set("data.source=[a, b]")
    with pytest.raises(ValueError, match=r"'data.source': expected a string \(str\)"):
        _set("data.source=null")


def test_unknown_keys_and_bad_syntax_are_named():
    with pytest.raises(ValueError, match="unknown field"):
        _set("model.dims=3")
    with pytest.raises(ValueError, match="unknown section"):
        _set("modle.dim=3")
    with pytest.raises(ValueError, match="expected key=value"):
        _set("model.dim")


def test_yaml_files_are_coerced_the_same_way(tmp_path):
    f = tmp_path / "c.yaml"
    # YAML 1.1 reads 1e-3 as a string: it is still a float here
    f.write_text("train:\n  lr: 1e-3\n  epochs: 4\nmodel:\n  mlp: [8, 4]\n")
    cfg = RunConfig.load(f)
    assert cfg.train.lr == 1e-3 and type(cfg.train.lr) is float
    assert cfg.train.epochs == 4 and cfg.model.mlp == [8, 4]
    f.write_text("model:\n  dim: true\n")
    with pytest.raises(ValueError, match=r"'model.dim': expected a whole number \(int\), got True"):
        RunConfig.load(f)


def test_a_saved_config_loads_back_equal(tmp_path):
    cfg = _set("train.lr=1e-5", "model.mlp=[7]", "train.max_minutes=2")
    cfg.save(tmp_path / "c.yaml")
    back = RunConfig.load(tmp_path / "c.yaml")
    assert back == cfg and type(back.train.max_minutes) is float


def test_epochs_default_depends_on_the_task_and_is_written_resolved():
    from bstrec.config import DEFAULT_EPOCHS, RunConfig

    ranking, rating = RunConfig(), RunConfig()
    rating.model.task = "rating"
    assert ranking.resolve().train.epochs == DEFAULT_EPOCHS["ranking"]
    assert rating.resolve().train.epochs == DEFAULT_EPOCHS["rating"]
    explicit = RunConfig().override(["train.epochs=3"])
    assert explicit.resolve().train.epochs == 3


def test_allowed_values_are_checked_where_the_config_is_defined():
    with pytest.raises(ValueError, match=r"train.schedule.*constant, cosine.*'linear'"):
        RunConfig().override(["train.schedule=linear"])
    with pytest.raises(ValueError, match=r"train.precision.*fp32, bf16"):
        RunConfig().override(["train.precision=fp16"])
    cfg = RunConfig()
    cfg.model.output = "middle"  # set in Python, not through a file or --set
    with pytest.raises(ValueError, match=r"model.output.*target, concat"):
        cfg.resolve()
