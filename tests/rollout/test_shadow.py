"""The shadow comparator's judgement, against an in-process synthetic KServe upstream (no router)."""

from __future__ import annotations

import asyncio
import json

from aiohttp.test_utils import TestServer

from icd.rollout.shadow import Comparator, Outcome, _Job, parse_shadow_line
from tests.rollout.kserve_stub import build_app

MODELS = {"base": (0.0, 0.0), "twin": (0.0, 0.0), "other": (0.0, 0.0, 2.0), "broken": (0.0, 1.0)}


def _body(values: list[float]) -> bytes:
    return json.dumps({"inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, len(values)],
                                   "data": values}]}).encode()


async def _judge(tmp_path, output_name: str, candidate: str, bodies: list[list[float]]):
    server = TestServer(build_app(MODELS, output_name=output_name), host="127.0.0.1")
    await server.start_server()
    comparator = Comparator(tmp_path / "shadow.jsonl")
    await comparator.start(None)
    try:
        upstream = f"127.0.0.1:{server.port}"
        comparator.metrics.pair("base", candidate)
        for i, values in enumerate(bodies):
            comparator.queue.put_nowait(_Job(_body(values), "base", candidate, upstream, f"r{i}"))
        await comparator.queue.join()  # the workers compared and logged every one
    finally:
        await comparator.stop(None)
        await server.close()
    lines = (tmp_path / "shadow.jsonl").read_text().splitlines()
    records = sorted((parse_shadow_line(x) for x in lines if f'"candidate": "{candidate}"' in x), key=lambda r: r.rid)
    return records, comparator.registry.get_sample_value


def test_classifier_outputs_are_judged_by_argmax_and_logit_cosine(tmp_path):
    bodies = [[1.0, 0.0, 0.0, 0.5], [0.0, 3.0, 3.0, 0.0], [2.0, 1.0, 0.0, 0.0]]
    records, get = asyncio.run(_judge(tmp_path, "logits", "other", bodies))
    assert [r.outcome for r in records] == [Outcome.COMPARED] * 3 and {r.task for r in records} == {"classifier"}
    agree = [r.argmax_agree for r in records]
    assert agree == [False, True, False]  # data + 2 · reversed(data) moves the argmax of two of the three
    labels = {"primary": "base", "candidate": "other"}
    assert get("icd_shadow_argmax_agreements_total", labels) == 1.0
    assert get("icd_shadow_cosine_count", {**labels, "task": "classifier"}) == 3.0
    assert get("icd_shadow_requests_total", {**labels, "outcome": "candidate_error"}) == 0.0  # exists at 0


def test_embeddings_identical_failing_and_missing_headers(tmp_path):
    bodies = [[float(i), 1.0, 2.0, float(i % 3)] for i in range(5)]
    same, get = asyncio.run(_judge(tmp_path, "embedding", "twin", bodies))
    assert all(r.outcome == Outcome.COMPARED and abs(r.cosine - 1.0) < 1e-12 and r.argmax_agree is None for r in same)
    assert get("icd_shadow_nn_agreement", {"primary": "base", "candidate": "twin"}) == 1.0
    broken, get = asyncio.run(_judge(tmp_path, "embedding", "broken", bodies[:2]))
    assert [r.outcome for r in broken] == [Outcome.CANDIDATE_ERROR] * 2 and "HTTP 500" in broken[0].error
    assert (tmp_path / "shadow.jsonl").read_text().count('"outcome": "candidate_error"') == 2

    async def headless():
        comparator = Comparator(tmp_path / "x.jsonl")
        return await comparator.compare(_Job(b"{}", "", "twin", "", "r"))

    assert asyncio.run(headless()).outcome == Outcome.SKIPPED
