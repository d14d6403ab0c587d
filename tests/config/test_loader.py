from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icd.cli.main import main
from icd.config import apply_overrides, load_config, parse_override
from icd.config.schema import PipelineMode
from icd.errors import ConfigError


def test_shipped_configs_validate():
    for name in ("minilm", "bert", "bert_base"):
        cfg = load_config(f"configs/{name}.json")
        assert cfg.name == name


def test_override_sets_nested_value_and_parses_json():
    cfg = load_config("configs/bert.json", ["pipeline.mode=linear", "data.seed=7", "solver.refine=false"])
    assert cfg.pipeline.mode is PipelineMode.LINEAR
    assert cfg.data.seed == 7
    assert cfg.solver.refine is False


def test_yaml_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: y\npipeline:\n  mode: dense\n")
    assert load_config(path).pipeline.mode is PipelineMode.DENSE


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["pipeline.bogus=1"], "unknown key 'pipeline.bogus'"),
        (["data.seed=abc"], "data.seed"),
        (["pipeline.mode=sideways"], "pipeline.mode"),
    ],
)
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config("configs/bert.json", overrides)


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_bad_override_syntax(text):
    with pytest.raises(ConfigError, match="bad override"):
        parse_override(text)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.json")


def test_invalid_json_names_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json"):
        load_config(path)


def test_cli_config_show_and_exit_code(capsys):
    assert main(["config", "show", "-c", "configs/minilm.json", "--override", "data.seed=5"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["data"]["seed"] == 5
    assert main(["config", "show", "-c", "configs/minilm.json", "--override", "nope.x=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown key 'nope'" in err


@given(st.lists(st.integers(min_value=-1000, max_value=1000), max_size=5), st.text(min_size=1, max_size=8))
def test_override_roundtrip_json_values(values, word):
    data = apply_overrides({}, [f"a.b={json.dumps(values)}", f"a.c={word}"])
    assert data["a"]["b"] == values
    try:
        expected = json.loads(word)
    except json.JSONDecodeError:
        expected = word
    assert json.dumps(data["a"]["c"]) == json.dumps(expected)  # NaN is parsed too, and NaN != NaN
