"""Loading checkpoints of every family: by ``model_type``, whole or refused with one line naming the keys."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from icd.cli.main import main
from icd.config.schema import ModelSection
from icd.errors import ArtefactError, ConfigError, UserError
from icd.model.loader import load_encoder, load_hf_model
from icd.pipeline.model_store import load_run_encoder, save_run_encoder
from tests.model.tiny import FAMILY_TYPES, save_tiny_checkpoint


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def _drop_and_add(folder, drop: str, add: str) -> None:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    tensors[add] = tensors.pop(drop).clone()
    save_file(tensors, str(path), metadata={"format": "pt"})


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny embedding checkpoint and a tiny classifier checkpoint (3 labels) of every family."""
    root = tmp_path_factory.mktemp("ckpt")
    return {(mt, task): save_tiny_checkpoint(root / f"{mt}-{task}", mt, task)
            for mt in FAMILY_TYPES for task in ("embedding", "sequence_classification")}


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_every_family_loads_whole_by_model_type(checkpoints, model_type):
    encoder = load_encoder(ModelSection(path=str(checkpoints[(model_type, "embedding")])))
    assert encoder.family.model_type == model_type
    assert type(encoder.hf).__name__ == encoder.family.base_class
    saved = load_file(str(checkpoints[(model_type, "embedding")] / "model.safetensors"))
    for name, tensor in encoder.hf.state_dict().items():
        if name in saved:
            assert torch.equal(tensor, saved[name]), name


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_new_classification_head_is_seeded(checkpoints, model_type):
    section = ModelSection(path=str(checkpoints[(model_type, "embedding")]), task="sequence_classification",
                           num_labels=2, init_seed=7)
    first, second = load_encoder(section), load_encoder(section)
    assert type(first.hf).__name__ == first.family.classifier_class
    for (name, a), b in zip(first.hf.state_dict().items(), second.hf.state_dict().values()):
        assert torch.equal(a, b), name  # the new head comes from model.init_seed: the baseline is reproducible


@pytest.mark.parametrize("model_type", FAMILY_TYPES)
def test_checkpoint_with_missing_and_unexpected_keys_is_refused(checkpoints, tmp_path, model_type):
    folder = save_tiny_checkpoint(tmp_path / "broken", model_type)
    dropped = "encoder.layer.1.output.dense.weight" if model_type != "distilbert" else "transformer.layer.1.ffn.lin2.weight"
    _drop_and_add(folder, dropped, "mystery.weight")
    with pytest.raises(UserError) as exc:
        load_encoder(ModelSection(path=str(folder)))
    message = _one_line(exc)
    assert str(folder) in message and dropped in message and "mystery.weight" in message


def test_classifier_head_of_another_size_names_num_labels(checkpoints):
    folder = checkpoints[("roberta", "sequence_classification")]
    with pytest.raises(UserError) as exc:
        load_encoder(ModelSection(path=str(folder), task="sequence_classification", num_labels=5))
    assert "classifier.out_proj.weight" in _one_line(exc) and "model.num_labels is 5" in str(exc.value)
    assert load_encoder(ModelSection(path=str(folder), task="sequence_classification", num_labels=3))


def test_unsupported_family_is_refused_naming_the_supported_ones(checkpoints, tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "gpt", "bert")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UserError) as exc:
        load_encoder(ModelSection(path=str(folder)))
    assert _one_line(exc) == (f"{folder / 'config.json'}: model_type 'gpt2' is not supported; "
                              "supported: bert, distilbert, mpnet, roberta")


def test_max_length_beyond_the_position_table_is_a_config_error(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "mpnet", "mpnet")  # 130 positions, offset 2: 128 tokens
    assert load_encoder(ModelSection(path=str(folder), max_length=128))
    with pytest.raises(ConfigError, match="model.max_length: 129 exceeds the 128 tokens a mpnet model"):
        load_encoder(ModelSection(path=str(folder), max_length=129))


@pytest.mark.parametrize("model_type", ["roberta", "distilbert"])
def test_run_model_folder_round_trips_and_refuses_damage(checkpoints, tmp_path, minilm_tokenizer, model_type):
    section = ModelSection(path=str(checkpoints[(model_type, "embedding")]), task="sequence_classification")
    encoder = load_encoder(section)
    folder = save_run_encoder(tmp_path, encoder, minilm_tokenizer, section, runtime_transforms=[])
    loaded = load_run_encoder(folder)
    ids = torch.randint(5, 1000, (2, 9))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, mask), encoder(ids, mask), rtol=0, atol=0)
    _drop_and_add(folder, "classifier.out_proj.weight" if model_type == "roberta" else "classifier.weight", "x.w")
    with pytest.raises(ArtefactError, match="does not load whole") as exc:
        load_run_encoder(folder)  # a run saves its head: nothing may be missing from it
    _one_line(exc)


def test_icd_run_with_a_broken_checkpoint_exits_2_and_writes_nothing(tmp_path, capsys, minilm_tokenizer):
    folder = save_tiny_checkpoint(tmp_path / "ckpt", "distilbert")
    minilm_tokenizer.save_pretrained(str(folder))
    _drop_and_add(folder, "transformer.layer.0.attention.q_lin.weight", "q.weight")
    out = tmp_path / "run"
    assert main(["run", "-c", "configs/minilm.json", "--override", f"model.path={folder}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    errors = [line for line in err.splitlines() if line.startswith("icd: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err  # (the lines before it are stage progress)
    assert "transformer.layer.0.attention.q_lin.weight" in errors[0] and str(folder) in errors[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".") and "run" in p.name]


def test_missing_checkpoint_folder_names_the_fetch_command(tmp_path):
    with pytest.raises(ConfigError, match="icd models fetch mpnet-base"):
        load_encoder(ModelSection(path=str(tmp_path / "all-mpnet-base-v2")))


def test_load_hf_model_reports_a_folder_without_weights(tmp_path):
    folder = save_tiny_checkpoint(tmp_path / "empty", "mpnet")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="cannot load the mpnet checkpoint") as exc:
        load_hf_model(folder, "embedding")
    _one_line(exc)
