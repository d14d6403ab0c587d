"""In-process latency harness and encode (no timing assertions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertModel

from icd.measure.encode import encode
from icd.measure.latency import measure_latency, measure_latency_interleaved, paired_ratio
from icd.model.encoder import Encoder


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    return Encoder(BertModel(config, add_pooling_layer=False).eval(), "embedding").eval()


def test_latency_positive_with_asked_runs_and_threads_restored(tiny):
    before = torch.get_num_threads()
    lat = measure_latency(tiny, batch_size=2, seq_len=8, warmup=1, runs=4, threads=1)
    assert lat.runs == 4 and len(lat.samples_ms) == 4
    assert lat.median_ms > 0 and lat.p95_ms >= lat.median_ms
    assert (lat.batch_size, lat.seq_len, lat.threads) == (2, 8, 1)
    assert "1 threads" in lat.how and "4 timed runs" in lat.how
    assert torch.get_num_threads() == before
    assert [m.tag for m in lat.measurements()] == ["latency_median_ms", "latency_p95_ms"]


def test_interleaved_latency_times_every_model(tiny):
    lat = measure_latency_interleaved({"a": tiny, "b": tiny}, batch_size=1, seq_len=4, warmup=0, runs=3, threads=1)
    assert sorted(lat) == ["a", "b"]
    assert all(len(x.samples_ms) == 3 and x.median_ms > 0 for x in lat.values())
    assert "interleaved" in lat["a"].how
    with pytest.raises(ValueError, match="no models"):
        measure_latency_interleaved({})


def test_interleaved_rounds_shuffle_the_order_and_keep_rounds_paired(tiny):
    calls: list[str] = []

    class Logged(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.bert = name, tiny.bert

        def forward(self, ids, mask):
            calls.append(self.name)
            return tiny(ids, mask)

    lat = measure_latency_interleaved({n: Logged(n) for n in "abc"}, batch_size=1, seq_len=4, warmup=0, runs=12,
                                      threads=1)
    rounds = [calls[i:i + 3] for i in range(0, len(calls), 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and len(rounds) == 12
    assert len({r[0] for r in rounds}) > 1, "every round started with the same model"
    assert all(len(x.samples_ms) == 12 for x in lat.values())
    assert "shuffled" in lat["a"].how


def test_paired_ratio_compares_round_by_round():
    gen = np.random.default_rng(3)
    load = 50 + 20 * gen.random(60)  # a shared machine: every round's load hits both models
    slower = paired_ratio(load * 1.05, load)
    assert slower.median == pytest.approx(1.05) and slower.low == pytest.approx(1.05) and slower.rounds == 60
    noisy = paired_ratio(load * 0.9 * (1 + 0.02 * gen.standard_normal(60)), load)
    assert noisy.low < 0.9 < noisy.high and noisy.high < 1.0
    assert set(noisy.to_dict()) == {"median", "ci95", "rounds", "how"}
    with pytest.raises(ValueError, match="equally long"):
        paired_ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="> 0"):
        paired_ratio([1.0, 0.0], [1.0, 1.0])


def test_latency_rejects_bad_sizes(tiny):
    with pytest.raises(ValueError, match="runs"):
        measure_latency(tiny, runs=0)


def test_encode_keeps_text_order(tiny, minilm_tokenizer):
    texts = ["a much longer text than the others, with many more tokens in it", "short", "medium length text"]
    together = encode(tiny, minilm_tokenizer, texts, batch_size=2, max_length=32)
    alone = torch.cat([encode(tiny, minilm_tokenizer, [t], batch_size=1, max_length=32) for t in texts])
    assert together.shape == (3, 16)
    assert torch.allclose(together, alone, atol=1e-5)
    with pytest.raises(ValueError, match="no texts"):
        encode(tiny, minilm_tokenizer, [], batch_size=2)


def test_workloads_run_each_models_own_batches_every_round(tiny):
    """With workloads, every model runs all of its own batches once per round (and per warm-up pass), shapes as
    given; tokens_run is the mean columns per row."""
    from icd.measure.latency import Workload

    shapes: dict[str, list[tuple[int, int]]] = {"a": [], "b": []}

    class Logged(torch.nn.Module):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name, self.bert = name, tiny.bert

        def forward(self, ids, mask):
            shapes[self.name].append(tuple(ids.shape))
            return tiny(ids, mask)

    def batch(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((rows, cols), 1000), torch.ones(rows, cols, dtype=torch.long)

    work = {"a": Workload((batch(2, 8), batch(1, 16)), "two real batches"), "b": Workload((batch(2, 4),), "one")}
    lat = measure_latency_interleaved({n: Logged(n) for n in "ab"}, warmup=1, runs=3, threads=1, workloads=work)
    assert shapes["a"] == [(2, 8), (1, 16)] * 4 and shapes["b"] == [(2, 4)] * 4
    assert lat["a"].tokens_run == pytest.approx((2 * 8 + 16) / 3) and lat["b"].tokens_run == 4
    assert "two real batches" in lat["a"].how and len(lat["a"].samples_ms) == 3
    with pytest.raises(ValueError, match="workloads for"):
        measure_latency_interleaved({"a": tiny, "b": tiny}, workloads={"a": work["a"]})
    with pytest.raises(ValueError, match="no batches"):
        Workload((), "nothing")
