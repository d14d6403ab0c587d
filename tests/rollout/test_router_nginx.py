"""The real nginx router in front of synthetic KServe-v2 upstreams (tests/rollout/kserve_stub.py)."""

from __future__ import annotations

import collections
import dataclasses
import time

import httpx
import pytest

from icd.load.routed import BackgroundRouted, RoutedSpec, run_routed
from icd.rollout.router_config import MatchRule
from tests.rollout.conftest import PAYLOAD

pytestmark = pytest.mark.e2e


def _infer_url(router) -> str:
    return f"{router.url}/v2/models/bert/infer"


def test_weights_sticky_header_and_client_hash(stub_upstream, nginx_router):
    blue = stub_upstream({"bert_baseline": (0, 0), "bert_icd": (0, 0)})
    router = nginx_router({"bert_baseline": 70, "bert_icd": 30}, {"blue": [blue.addr]})
    records = run_routed(RoutedSpec(_infer_url(router), PAYLOAD, concurrency=4, duration_s=60, max_requests=400))
    counts = collections.Counter(r.variant for r in records)
    assert all(r.ok for r in records) and len(records) == 400
    assert 0.22 < counts["bert_icd"] / 400 < 0.38, counts
    # The response body comes from the chosen variant: the router rewrote the public name.
    with httpx.Client() as client:
        pinned = client.post(_infer_url(router), json=PAYLOAD, headers={"X-ICD-Variant": "bert_icd"})
        assert pinned.json()["model_name"] == "bert_icd" and pinned.headers["X-ICD-Variant"] == "bert_icd"
        seen = {client.post(_infer_url(router), json=PAYLOAD, headers={"X-ICD-Client": "alice"}).headers["X-ICD-Variant"]
                for _ in range(20)}
        assert len(seen) == 1
    # At 0 % the variant is not pinnable, unless the spec allows it; a match rule routes to it explicitly.
    router.set_weights({"bert_baseline": 100, "bert_icd": 0})
    with httpx.Client() as client:
        refused = client.post(_infer_url(router), json=PAYLOAD, headers={"X-ICD-Variant": "bert_icd"})
        assert refused.json()["model_name"] == "bert_baseline"
        router.apply(lambda s: dataclasses.replace(s, pinnable=["bert_icd"]))
        allowed = client.post(_infer_url(router), json=PAYLOAD, headers={"X-ICD-Variant": "bert_icd"})
        assert allowed.json()["model_name"] == "bert_icd"
        router.apply(lambda s: dataclasses.replace(s, pinnable=[], match=[
            MatchRule("bert_icd", header="X-Canary", value="always"), MatchRule("bert_icd", cookie="beta", value="1")]))
        def served(headers: dict[str, str]) -> str:
            return client.post(_infer_url(router), json=PAYLOAD, headers=headers).json()["model_name"]

        assert served({"X-Canary": "always"}) == "bert_icd" and served({"Cookie": "a=b; beta=1"}) == "bert_icd"
        assert served({"X-Canary": "no"}) == "bert_baseline"
    deadline = time.monotonic() + 5  # nginx logs a request after answering it
    while len(log_lines := router.access_log.read_text().splitlines()) < 400 + 26 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(log_lines) == 400 + 26
    assert sum('"variant":"bert_icd"' in line for line in log_lines) >= counts["bert_icd"]


def test_reload_and_blue_green_switch_under_load_drop_no_request(stub_upstream, nginx_router):
    blue = stub_upstream({"bert_baseline": (5, 0), "bert_icd": (5, 0)})
    green = stub_upstream({"bert_baseline": (5, 0), "bert_icd": (5, 0)})
    router = nginx_router({"bert_baseline": 90, "bert_icd": 10}, {"blue": [blue.addr], "green": [green.addr]})
    with BackgroundRouted(RoutedSpec(_infer_url(router), PAYLOAD, concurrency=8, duration_s=60)) as load:
        time.sleep(0.5)
        for weight in (20, 50, 100, 0):
            router.set_weights({"bert_baseline": 100 - weight, "bert_icd": weight})
            time.sleep(0.3)
        router.switch("green")
        time.sleep(0.5)
        blue.stop()  # blue drained: nothing may reach it any more
        time.sleep(0.5)
    records = load.stop()
    failed = [r for r in records if not r.ok]
    assert len(records) > 100
    assert failed == [], failed[:3]
    assert max(r.generation for r in records) == router.spec.generation == 5
