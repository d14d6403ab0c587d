"""A/B of the real exported bert_icd vs bert_baseline (MiniLM, identity permutations) through the router."""

from __future__ import annotations

import pytest

from icd.rollout.ab import ERROR_ROW, LATENCY_ROW, ABSpec, run_ab
from icd.rollout.payloads import text_payloads

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_real_bert_ab_through_router(triton_repo_bert, triton_server, nginx_router):
    server = triton_server(triton_repo_bert)
    router = nginx_router({"bert_baseline": 100, "bert_icd": 0}, {"blue": [f"127.0.0.1:{server.http_port}"]})
    payloads = text_payloads(8, seq_len=32)  # real held-out text
    result = run_ab(router, ABSpec("bert_baseline", "bert_icd", duration_s=6, rate=None, concurrency=2,
                                   agreement_n=8), payloads)
    agreement = result.agreement
    assert agreement.task.value == "classifier" and agreement.n == 8  # the identity sample is a classifier: logits
    assert agreement.argmax_agreement == 1.0 and agreement.cosine_min > 0.999  # identity permutations
    assert all(r.ok for r in result.records) and len(result.records) >= 2  # CPU MiniLM: seconds per request here
    assert {row["metric"] for row in result.verdicts} >= {LATENCY_ROW, ERROR_ROW}
