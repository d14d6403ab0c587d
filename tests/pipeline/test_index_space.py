"""One index space: what an iterative run measured on its permuted model is written in the original order.

``triton_icd_layout_efficiency`` scores the run's correlation graphs with permutation.json's permutations; both
must index original channels. Checked against direct computations: the graphs of the original model scored
with the composed permutations, and the graphs of the saved (final) model scored with its own identity layout.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from icd.calibrate import calibrate
from icd.config import load_config
from icd.export.layout_efficiency import counts_for_efficiency, edge_locality, edges_for, layout_efficiency
from icd.graph import build_graphs
from icd.io.permutation_file import read_permutation_file
from icd.model.layout import bert_shape, permutable_dims
from icd.model.loader import load_encoder, load_tokenizer
from icd.pipeline.index_space import channel_origins, graphs_in_original_order, input_origins, stats_after_fold
from icd.pipeline.model_store import load_run_encoder
from icd.pipeline import runner
from icd.pipeline.runner import run_config
from icd.pipeline.stages.accept import Decision
from icd.transforms.permute import apply_permutations_
from tests.model.tiny import tiny_encoder

TINY_RUN = [
    "model.source=bert_config", "model.max_length=32",
    'model.bert_config={"hidden_size":64,"num_hidden_layers":2,"num_attention_heads":4,"intermediate_size":128}',
    "data.calibration_texts=48", "data.heldout_texts=16", "data.batch_size=16",
    "measure.latency.runs=1", "measure.latency.warmup=0", "measure.latency.batch_size=2",
    "measure.latency.seq_len=16", "solver.time_limit_s=2", "solver.objective=locality",
    "pipeline.mode=iterative", "pipeline.iterations=2", "transforms=[]",
]


def _random_perms(dims, head_dim, seed):
    rng = np.random.default_rng(seed)
    perms = {}
    for dim in dims:
        if dim.block:
            perms[dim.name] = np.concatenate([start + rng.permutation(dim.block)
                                              for start in range(0, dim.size, dim.block)])
        else:
            perms[dim.name] = rng.permutation(dim.size)
    return perms


def test_graphs_of_a_permuted_model_map_back_to_the_originals(minilm_tokenizer, corpus_split):
    original = tiny_encoder()
    dims = permutable_dims(original)
    head_dim = bert_shape(original).head_dim
    texts = corpus_split.calibration[:24]
    stats = calibrate(original, minilm_tokenizer, texts, 12, 32, progress=False)
    want = build_graphs(stats, dims, top_k=None)

    perms = _random_perms(dims, head_dim, seed=3)
    permuted = copy.deepcopy(original)
    apply_permutations_(permuted, perms)
    moved_stats = calibrate(permuted, minilm_tokenizer, texts, 12, 32, progress=False)
    moved = build_graphs(moved_stats, dims, top_k=None)
    back = graphs_in_original_order(moved, channel_origins(perms, dims, head_dim))
    for dim in dims:  # hidden, ffn, heads, qk and vo (within heads, moved with whole heads)
        assert not np.allclose(moved[dim.name].toarray(), want[dim.name].toarray(), atol=1e-6), dim.name
        np.testing.assert_allclose(back[dim.name].toarray(), want[dim.name].toarray(), atol=1e-6,
                                   err_msg=dim.name)
    for linear, origin in input_origins(permuted, perms).items():
        table = stats.hidden if linear == "hidden" else stats.inputs[linear]
        moved_table = moved_stats.hidden if linear == "hidden" else moved_stats.inputs[linear]
        np.testing.assert_allclose(moved_table.absmax, table.absmax[origin], rtol=1e-5, err_msg=linear)


def _assert_same_stats(got, want, label):
    assert got.count == want.count, label
    for field in ("sum", "sq_sum", "absmax", "gram"):  # float32 activations: sums differ in their rounding
        expected = getattr(want, field)
        np.testing.assert_allclose(getattr(got, field), expected, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(expected).max()), err_msg=f"{label} {field}")


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "mpnet"])
@pytest.mark.parametrize("task", ["embedding", "sequence_classification"])
def test_stats_after_fold_equal_a_recalibration_of_the_folded_model(model_type, task, minilm_tokenizer,
                                                                   corpus_split):
    """The statistics an iterative run reuses instead of calibrating the permuted model are what calibrating it
    measures: every Linear input (the classifier's included), the query / key outputs, the residual stream."""
    original = tiny_encoder(task=task, model_type=model_type)
    dims = permutable_dims(original)
    texts = corpus_split.calibration[:24]
    stats = calibrate(original, minilm_tokenizer, texts, 12, 32, progress=False)
    perms = _random_perms(dims, bert_shape(original).head_dim, seed=5)
    folded = copy.deepcopy(original)
    apply_permutations_(folded, perms)
    want = calibrate(folded, minilm_tokenizer, texts, 12, 32, progress=False)

    got = stats_after_fold(stats, original, perms)
    assert sorted(got.inputs) == sorted(want.inputs) and sorted(got.outputs) == sorted(want.outputs)
    _assert_same_stats(got.hidden, want.hidden, "hidden")
    moved = 0
    for group in ("inputs", "outputs"):
        for name, table in getattr(want, group).items():
            _assert_same_stats(getattr(got, group)[name], table, f"{group}/{name}")
            moved += not np.allclose(getattr(stats, group)[name].sum, table.sum)
    assert moved >= len(dims) // 2  # the permutations did move what the test compares: it can fail
    assert got.meta["reordered_by_fold"] is True


@pytest.fixture(scope="module")
def iterative_run(tmp_path_factory):
    """Two iterations, both accepted: the artefacts then come from a calibration of a model permuted twice.

    Whether a time-capped re-solve finds a gain depends on how much CPU it got, so the accept rule (tested in
    test_accept.py) is replaced by "accept" here: the index spaces are under test, not the rule."""
    out = tmp_path_factory.mktemp("runs") / "iterative"
    cfg = load_config("configs/minilm.json", TINY_RUN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner, "decide", lambda *args: Decision(True, "accepted by the test"))
        result = run_config(cfg, out, progress=False)
    return cfg, out, result


def _direct_efficiency(graphs, perms):
    scores = []
    for dim, perm in sorted(perms.items()):
        if counts_for_efficiency(dim):
            graph = graphs[dim].tocoo()
            scores.append(edge_locality(graph.row, graph.col, graph.data, perm))
    return float(np.mean(scores))


def test_layout_efficiency_of_an_iterative_run_matches_a_direct_computation(iterative_run):
    cfg, out, result = iterative_run
    assert [d.accepted for d in result.decisions] == [True, True]
    assert any(not np.array_equal(p, np.arange(p.size)) for p in result.calibrated_on.values())
    perms = read_permutation_file(out / "permutation.json")
    exported, used = layout_efficiency(perms, out / "correlation_matrix.npz")
    assert used == sorted(name for name in perms if counts_for_efficiency(name))

    tokenizer = load_tokenizer(cfg.model)
    texts, batch, length = result_texts(cfg)
    original = load_encoder(cfg.model)
    dims = permutable_dims(original)
    top_k = cfg.solver.graph_top_k
    on_original = build_graphs(calibrate(original, tokenizer, texts, batch, length, progress=False), dims, top_k)
    assert exported == pytest.approx(_direct_efficiency(on_original, perms), abs=1e-4)

    final = load_run_encoder(out / "model")
    on_final = build_graphs(calibrate(final, tokenizer, texts, batch, length, progress=False), dims, top_k)
    identity = {name: np.arange(perm.size) for name, perm in perms.items()}
    assert exported == pytest.approx(_direct_efficiency(on_final, identity), abs=1e-4)

    # the mixed-space score (iteration graphs, composed permutations) is a different number: the test can fail
    with np.load(out / "correlation_matrix.npz") as arrays:
        assert str(arrays["index_space"]) == "original"
        stored = {name: edges_for(name, arrays, perm.size) for name, perm in perms.items()}
    assert all(stored[name] is not None for name in used)
    mixed = _direct_efficiency(result.graphs, perms)
    assert abs(mixed - exported) > 1e-3


def result_texts(cfg):
    from icd.data.corpus import load_split

    split = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed)
    return split.calibration, cfg.data.batch_size, cfg.model.max_length


def test_iterations_without_weight_transforms_reorder_statistics_instead_of_calibrating(iterative_run):
    """Both iterations re-permuted a model whose function no weight transform changed: their statistics are the
    first calibration's reordered (the layout-efficiency test above checks them against re-calibrations)."""
    import json

    _cfg, out, _result = iterative_run
    events = {e["stage"]: e for e in map(json.loads, (out / "events.jsonl").read_text().splitlines())}
    assert "reused" not in events["calibrate"]
    for stage in ("iter1.calibrate", "iter2.calibrate"):
        assert events[stage]["reused"] is True and events[stage]["tokens"] == events["calibrate"]["tokens"]
