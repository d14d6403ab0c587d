"""A/B comparison and report from generated (synthetic) request records — no servers."""

from __future__ import annotations

import json

import numpy as np

from icd.rollout.ab import ABResult, ABSpec, compare, verdict_table_text, write_ab_report
from icd.rollout.traffic import RequestRecord


def _records(rng, model, n, scale, errors=0):
    lat = scale * rng.lognormal(np.log(20), 0.2, n)
    return [RequestRecord(1000.0 + i * 0.01, float(lat[i]), 500 if i < errors else 200, model, 1) for i in range(n)]


def test_compare_and_report(tmp_path):
    rng = np.random.default_rng(0)
    recs = _records(rng, "a", 400, 1.0) + _records(rng, "b", 400, 1.3, errors=80)
    spec = ABSpec("a", "b", duration_s=10, agreement_n=0, inputs="synthetic")
    result = ABResult(spec, "http://router", 1000.0, recs, {"n": 0, "argmax_agreement": None, "cosine_mean": None})
    compare(result)
    verdicts = {row["metric"]: row["verdict"] for row in result.verdicts}
    assert verdicts["latency (median, Mann-Whitney U)"] == "worse"
    assert verdicts["p95 latency (bootstrap)"] == "worse"
    assert verdicts["error rate (Fisher exact)"] == "worse"
    assert verdicts["throughput (successful req/s)"] == "worse"  # 320 vs 400 successes at 50:50
    text = verdict_table_text(result.verdicts)
    assert text.splitlines()[0].startswith("metric") and "not measured" in text  # agreement not measured
    json_path, html_path = write_ab_report(result, tmp_path / "ab.json")
    data = json.loads(json_path.read_text())
    assert data["requests"] == {"a": 400, "b": 400} and data["failed_requests"] == 80
    assert html_path.read_text().count("<img") == 2
