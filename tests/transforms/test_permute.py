"""Folding permutations into the weights preserves the function (issue 2, Must show 3).

The equivalence tests run the real all-MiniLM-L6-v2 weights on held-out stdlib docstrings (never used for
calibration) and require ``max|y_perm - y| <= 1e-5 * max|y|`` for each kind of dimension alone and all together,
for the embedding model and for a sequence classifier (pooler + classifier head).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icd.errors import ArtefactError
from icd.io.permutation_file import (
    perm_sha256,
    read_permutation_document,
    read_permutation_file,
    write_permutation_file,
)
from icd.model.layout import Dim, DimKind, bert_shape, permutable_dims
from icd.transforms.permute import (
    apply_permutations_,
    compose_permutations,
    inverse_permutation,
    output_basis_dim,
    unpermute_output,
)
from tests.model.tiny import tiny_encoder

RTOL = 1e-5
KINDS = ["hidden", "ffn", "heads", "qk", "vo", "all"]


def random_perm(dim: Dim, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of ``dim`` that respects its block constraint."""
    if dim.block:
        return np.concatenate([start + rng.permutation(dim.block) for start in range(0, dim.size, dim.block)])
    return rng.permutation(dim.size)


def random_perms(encoder, kind: str, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {d.name: random_perm(d, rng) for d in permutable_dims(encoder) if kind in ("all", d.kind.value)}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@torch.no_grad()
def run(encoder, batch) -> torch.Tensor:
    return encoder(batch["input_ids"], batch["attention_mask"])


@pytest.fixture(scope="module")
def heldout_batch(minilm_tokenizer, corpus_split):
    texts = corpus_split.heldout[:8]
    return minilm_tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")


@pytest.fixture(scope="module")
def minilm_classifier():
    from icd.config.schema import ModelSection
    from icd.model.loader import load_encoder

    return load_encoder(ModelSection(task="sequence_classification"))


@pytest.fixture(scope="module")
def encoders(minilm_encoder, minilm_classifier):
    return {"embedding": minilm_encoder, "sequence_classification": minilm_classifier}


@pytest.fixture(scope="module")
def references(encoders, heldout_batch):
    return {task: run(encoder, heldout_batch) for task, encoder in encoders.items()}


@pytest.mark.parametrize("task", ["embedding", "sequence_classification"])
@pytest.mark.parametrize("kind", KINDS)
def test_permuted_model_equals_original_on_heldout_text(encoders, references, heldout_batch, task, kind):
    original = encoders[task]
    permuted = copy.deepcopy(original)
    perms = random_perms(original, kind, seed=KINDS.index(kind))
    apply_permutations_(permuted, perms)
    # the weights really moved ...
    changed = [
        name for (name, a), b in zip(original.state_dict().items(), permuted.state_dict().values(), strict=True)
        if not torch.equal(a, b)
    ]
    assert changed
    # ... and the function did not
    assert relative_error(run(permuted, heldout_batch), references[task]) <= RTOL
    if task == "sequence_classification":
        assert permuted.output_index is None  # logits need no output gather


def test_embedding_output_basis_without_output_gather(minilm_encoder, references, heldout_batch):
    perms = random_perms(minilm_encoder, "all", seed=11)
    permuted = copy.deepcopy(minilm_encoder)
    apply_permutations_(permuted, perms, keep_output=False)
    raw = run(permuted, heldout_batch)
    assert permuted.output_index is None
    assert output_basis_dim("embedding", perms) == "hidden"
    assert output_basis_dim("sequence_classification", perms) is None
    assert relative_error(raw, references["embedding"]) > 0.1  # the basis did change
    assert relative_error(unpermute_output(raw, perms["hidden"]), references["embedding"]) <= RTOL
    assert torch.equal(raw[:, inverse_permutation(perms["hidden"])], unpermute_output(raw, perms["hidden"]))


def test_a_wrong_fold_is_detected(minilm_encoder, references, heldout_batch):
    """Negative control: moving query rows without the key rows changes the output, so the checks can fail."""
    broken = copy.deepcopy(minilm_encoder)
    dim = next(d for d in permutable_dims(broken) if d.name == "layer0.qk")
    perm = random_perm(dim, np.random.default_rng(0))
    query = broken.bert.encoder.layer[0].attention.self.query
    with torch.no_grad():
        query.weight.copy_(query.weight[perm])
        query.bias.copy_(query.bias[perm])
    assert relative_error(run(broken, heldout_batch), references["embedding"]) > 1e-3


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), kinds=st.sets(st.sampled_from(["hidden", "ffn", "heads", "qk", "vo"]),
                                                     min_size=1))
def test_random_permutations_preserve_the_function(minilm_encoder, references, heldout_batch, seed, kinds):
    rng = np.random.default_rng(seed)
    perms = {d.name: random_perm(d, rng) for d in permutable_dims(minilm_encoder) if d.kind.value in kinds}
    permuted = copy.deepcopy(minilm_encoder)
    apply_permutations_(permuted, perms)
    assert relative_error(run(permuted, heldout_batch), references["embedding"]) <= RTOL


# ---- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "perm", "message"),
    [
        ("layer0.ffn", np.arange(127), "'layer0.ffn': permutation has 127 entries, expected size 128"),
        ("layer0.heads", np.array([0, 1, 2, 2]), "'layer0.heads': permutation not a permutation of range\\(4\\)"),
        ("layer1.qk", np.r_[16, np.arange(1, 16), 0, np.arange(17, 64)], "'layer1.qk'.*across blocks of 16"),
        ("layer1.vo", np.r_[np.arange(63, -1, -1)], "'layer1.vo'.*across blocks of 16"),
        ("layer2.ffn", np.arange(128), "unknown permutable dim 'layer2.ffn'"),
        ("hidden", np.arange(64).reshape(8, 8), "'hidden': permutation must be 1-D"),
    ],
)
def test_invalid_permutations_raise_and_leave_the_model_untouched(name, perm, message):
    encoder = tiny_encoder()
    before = copy.deepcopy(encoder.state_dict())
    good = {"hidden": np.random.default_rng(0).permutation(64)}
    with pytest.raises(ValueError, match=message):
        apply_permutations_(encoder, {**good, name: perm})
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_identity_permutations_change_nothing():
    encoder = tiny_encoder("sequence_classification")
    before = copy.deepcopy(encoder.state_dict())
    apply_permutations_(encoder, {d.name: np.arange(d.size) for d in permutable_dims(encoder)})
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())


def test_two_applications_equal_their_composition(minilm_tokenizer):
    """Applying A then B (B in A's layout) equals applying compose(A, B) once — weights bit-identical, and the
    output gather of the embedding model composes too."""
    encoder = tiny_encoder()
    batch = minilm_tokenizer(["a short text", "another, slightly longer text to pad"], padding=True,
                             return_tensors="pt")
    reference = run(encoder, batch)
    first, second = random_perms(encoder, "all", 1), random_perms(encoder, "all", 2)
    twice, once = copy.deepcopy(encoder), copy.deepcopy(encoder)
    apply_permutations_(twice, first)
    apply_permutations_(twice, second)
    apply_permutations_(once, compose_permutations(first, second, head_dim=bert_shape(encoder).head_dim))
    for (name, a), b in zip(twice.state_dict().items(), once.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(twice.output_index, once.output_index)
    assert relative_error(run(twice, batch), reference) <= RTOL


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       first_kinds=st.sets(st.sampled_from(["hidden", "ffn", "heads", "qk", "vo"])),
       second_kinds=st.sets(st.sampled_from(["hidden", "ffn", "heads", "qk", "vo"])))
def test_composition_of_any_subsets_is_exact(seed, first_kinds, second_kinds):
    encoder = tiny_encoder()
    rng = np.random.default_rng(seed)
    dims = permutable_dims(encoder)
    first = {d.name: random_perm(d, rng) for d in dims if d.kind.value in first_kinds}
    second = {d.name: random_perm(d, rng) for d in dims if d.kind.value in second_kinds}
    twice, once = copy.deepcopy(encoder), copy.deepcopy(encoder)
    apply_permutations_(twice, first)
    apply_permutations_(twice, second)
    apply_permutations_(once, compose_permutations(first, second, head_dim=bert_shape(encoder).head_dim))
    for (name, a), b in zip(twice.state_dict().items(), once.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# ---- permutation.json ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_file(tmp_path):
    encoder = tiny_encoder()
    dims = permutable_dims(encoder)
    perms = random_perms(encoder, "all", 5)
    path = tmp_path / "permutation.json"
    details = {"layer0.ffn": {"cost_before": 2.0, "cost_after": 1.0, "solver": {"name": "spectral", "seed": 0}}}
    write_permutation_file(path, dims, perms, model={"layers": 2}, details=details)
    return path, dims, perms, encoder


def test_permutation_file_round_trip_and_apply(tiny_file, minilm_tokenizer):
    path, dims, perms, encoder = tiny_file
    document, read = read_permutation_document(path, dims)
    assert document["schema"] == "icd.permutation/v1" and document["output_basis_perm"] is None
    assert set(read) == set(perms) and all(np.array_equal(read[k], perms[k]) for k in perms)
    entry = next(e for e in document["dims"] if e["name"] == "layer0.ffn")
    assert entry["cost_after"] == 1.0 and entry["solver"]["name"] == "spectral"
    assert entry["sha256"] == perm_sha256(perms["layer0.ffn"])
    batch = minilm_tokenizer(["read back from permutation.json"], return_tensors="pt")
    permuted = copy.deepcopy(encoder)
    apply_permutations_(permuted, read_permutation_file(path, permutable_dims(permuted)))
    assert relative_error(run(permuted, batch), run(encoder, batch)) <= RTOL


def _edit(path, dim_name, **fields):
    document = json.loads(path.read_text())
    entry = next(e for e in document["dims"] if e["name"] == dim_name)
    entry.update(fields)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p.write_text("{not json"), "invalid JSON at line 1"),
        (lambda p: p.write_text('{"schema": "other/v9", "dims": []}'), "schema: expected 'icd.permutation/v1'"),
        (lambda p: _edit(p, "layer0.heads", perm=[0, 1, 1, 3], sha256=perm_sha256([0, 1, 1, 3])),
         "dim 'layer0.heads': perm not a permutation of range\\(4\\): 2 is missing"),
        (lambda p: _edit(p, "layer0.heads", perm=[0, 1, 2, 4], sha256=perm_sha256([0, 1, 2, 4])),
         "dim 'layer0.heads': perm not a permutation of range\\(4\\): value 4 at index 3"),
        (lambda p: _edit(p, "layer0.heads", perm=[0, 1, 2], size=3, sha256=perm_sha256([0, 1, 2])),
         "dim 'layer0.heads': size 3 but the model's dim has size 4"),
        (lambda p: _edit(p, "layer0.heads", perm=[0, 1, 2]), "dim 'layer0.heads': perm has 3 entries"),
        (lambda p: _edit(p, "layer1.ffn", sha256="0" * 64), "dim 'layer1.ffn': sha256 mismatch"),
        (lambda p: _edit(p, "layer1.qk", perm=list(range(63, -1, -1)), sha256=perm_sha256(np.arange(63, -1, -1))),
         "dim 'layer1.qk': perm moves channel 63 to position 0, across blocks of 16"),
        (lambda p: _edit(p, "layer1.qk", block=None), "dim 'layer1.qk': block None but the model's dim has block 16"),
        (lambda p: _edit(p, "layer1.vo", name="layer7.vo"), "dim 'layer7.vo': not a permutable dim of this model"),
        (lambda p: _edit(p, "layer1.vo", name="layer1.qk"), "dim 'layer1.qk': listed twice"),
        (lambda p: _edit(p, "layer1.vo", perm="0 1 2"), "dim 'layer1.vo': perm must be a list of integers"),
        (lambda p: p.unlink(), "permutation file not found"),
    ],
)
def test_bad_permutation_files_raise_one_line_artefact_errors(tiny_file, edit, message):
    path, dims, _, _ = tiny_file
    edit(path)
    with pytest.raises(ArtefactError, match=message) as info:
        read_permutation_file(path, dims)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_writer_rejects_invalid_permutations(tmp_path):
    dims = [Dim("layer0.qk", 8, DimKind.QK, 0, 4)]
    with pytest.raises(ValueError, match="across blocks of 4"):
        write_permutation_file(tmp_path / "p.json", dims, {"layer0.qk": np.arange(7, -1, -1)}, model={})
    with pytest.raises(ValueError, match="unknown dims"):
        write_permutation_file(tmp_path / "p.json", dims, {"hidden": np.arange(8)}, model={})
    assert not (tmp_path / "p.json").exists()
