"""A/B comparison and report from generated (synthetic) request records — no servers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from icd.errors import UserError
from icd.load.routed import RoutedRecord
from icd.rollout.ab import (
    AGREEMENT_ROW,
    ERROR_ROW,
    LATENCY_ROW,
    P95_ROW,
    THROUGHPUT_ROW,
    ABResult,
    ABSpec,
    compare,
    verdict_table_text,
    write_ab_report,
)
from icd.rollout.agreement import Agreement, OutputTask


def _records(rng, model, n, scale, errors=0, seconds=30.0):
    """Generated records spread over ``seconds`` (synthetic latencies, log-normal around 20 ms)."""
    lat = scale * rng.lognormal(np.log(20), 0.2, n)
    t = 1000.0 + np.sort(rng.uniform(0, seconds, n))
    return [RoutedRecord(float(t[i]), float(lat[i]), 500 if i < errors else 200, model, 1) for i in range(n)]


def _result(recs, **kw) -> ABResult:
    spec = ABSpec("a", "b", duration_s=30, agreement_n=0, inputs="synthetic", block_s=2.0, **kw)
    result = ABResult(spec, "http://router", 1000.0, recs, Agreement(OutputTask.EMBEDDING, 0))
    compare(result)
    return result


def test_compare_and_report(tmp_path):
    rng = np.random.default_rng(0)
    recs = _records(rng, "a", 600, 1.0) + _records(rng, "b", 600, 1.3, errors=120)
    result = _result(recs)
    verdicts = {row["metric"]: row["verdict"] for row in result.verdicts}
    assert verdicts[LATENCY_ROW] == "worse" and result.conclusive
    assert verdicts[P95_ROW] == "worse"
    assert verdicts[ERROR_ROW] == "worse"
    assert verdicts[THROUGHPUT_ROW] == "worse"  # 480 vs 600 successes at 50:50
    text = verdict_table_text(result.verdicts)
    assert text.splitlines()[0].startswith("metric") and "not measured" in text  # agreement not measured
    json_path, html_path = write_ab_report(result, tmp_path / "ab.json")
    data = json.loads(json_path.read_text())
    assert data["requests"] == {"a": 600, "b": 600} and data["failed_requests"] == 120 and data["conclusive"]
    assert html_path.read_text().count("<img") == 2


def test_too_little_traffic_is_inconclusive_not_a_verdict():
    rng = np.random.default_rng(1)
    recs = _records(rng, "a", 12, 1.0) + _records(rng, "b", 12, 3.0)  # B far slower, but 12 requests each
    result = _result(recs)
    verdicts = {row["metric"]: row for row in result.verdicts}
    assert verdicts[LATENCY_ROW]["verdict"] == "inconclusive" and not result.conclusive
    assert "too little traffic" in verdicts[LATENCY_ROW]["why"]


def test_a_variant_that_only_fails_gives_no_latency_verdict():
    """The typo case of issue 12 (A answers 100 % errors): no "B better" from it."""
    rng = np.random.default_rng(2)
    recs = _records(rng, "a", 300, 1.0, errors=300) + _records(rng, "b", 300, 1.0)
    result = _result(recs)
    verdicts = {row["metric"]: row["verdict"] for row in result.verdicts}
    assert verdicts[LATENCY_ROW] == "inconclusive" and verdicts[ERROR_ROW] == "better"
    assert not result.conclusive


def test_agreement_row_shows_the_figures_of_the_task():
    rng = np.random.default_rng(3)
    recs = _records(rng, "a", 300, 1.0) + _records(rng, "b", 300, 1.0)
    result = _result(recs)
    result.agreement = Agreement(OutputTask.EMBEDDING, 64, 0.9991, 0.995, nn_agreement=0.969)
    compare(result)
    row = next(r for r in result.verdicts if r["metric"] == AGREEMENT_ROW)
    assert "cosine mean 0.9991" in row["b"] and "NN agreement 0.969" in row["b"] and "argmax" not in row["b"]


@pytest.mark.parametrize("kw,needle", [
    (dict(split=(100.0, 0.0)), "--traffic-split"),
    (dict(rate=-1.0), "--rate"),
])
def test_bad_specs_are_user_errors(kw, needle):
    with pytest.raises(UserError, match=needle):
        ABSpec("a", "b", duration_s=10, **kw)
    with pytest.raises(UserError, match="both"):
        ABSpec("a", "a", duration_s=10)
