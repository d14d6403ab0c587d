"""Shadow traffic on the real router: nginx mirrors a share of live requests to the comparator, which judges a
candidate (synthetic KServe stub upstream) — and no client ever receives the candidate's answer."""

from __future__ import annotations

import time

import httpx
import pytest

from icd.load.routed import BackgroundRouted, RoutedSpec
from icd.monitor.client import PrometheusClient
from icd.rollout.canary_spec import CanarySpec, Strategy, agreement_check
from icd.rollout.phase import RolloutOutcome, RolloutPhase
from icd.rollout.providers import LogProvider
from icd.rollout.router_nginx import Routes
from icd.rollout.router_ops import ManagedRouter, comparator_addr
from icd.rollout.scheduler import RolloutScheduler
from icd.rollout.shadow import SHADOW_LOG, Outcome, ShadowLogReader
from tests.fixtures.prometheus import wait_until

pytestmark = pytest.mark.e2e

MODELS = {"bert_baseline": (2.0, 0.0), "bert_icd": (2.0, 0.0, 0.5), "bert_twin": (2.0, 0.0)}  # bert_icd disagrees


def _body(i: int) -> dict:
    data = [float(i % 97), float(i % 13), 1.0, float((i * 7) % 31)]
    return {"inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 4], "data": data}]}


def _compared(router) -> list:
    return [r for r in ShadowLogReader(router.workdir / SHADOW_LOG).since(0) if r.outcome == Outcome.COMPARED]


def test_mirrored_candidate_is_judged_and_never_answers_a_client(stub_upstream, nginx_router, prometheus_server):
    up = stub_upstream(MODELS)
    router = nginx_router({"bert_baseline": 100, "bert_icd": 0}, {"blue": [up.addr]})
    weights = {"bert_baseline": 50.0, "bert_twin": 50.0, "bert_icd": 0.0}
    ManagedRouter(router).set_routes(Routes(weights, mirror=("bert_icd", 0.5)))
    prom = prometheus_server([comparator_addr(router)])
    url = f"{router.url}/v2/models/bert/infer"
    with BackgroundRouted(RoutedSpec(url, _body, rate=100, duration_s=60, concurrency=16, keep_bodies=True)) as load:
        time.sleep(4)
        with PrometheusClient(prom.url) as client:  # scraped while traffic flows: the recording rules have rates
            agreement = wait_until(lambda: [x for x in client.query(
                'icd:shadow_agreement:ratio{candidate="bert_icd",primary="bert_baseline"}') if x.is_number], 30,
                what="icd:shadow_agreement:ratio")
            latency = wait_until(lambda: [x for x in client.query("icd:shadow_latency_p95:ms") if x.is_number], 30,
                                 what="icd:shadow_latency_p95:ms")
            nn = client.query("icd_shadow_nn_agreement")
        records = load.stop()
    assert agreement[0].labels["measure"] == "cosine_mean" and agreement[0].value < 0.99
    assert {x.labels["role"] for x in latency} == {"primary", "candidate"} and nn and nn[0].value <= 1.0
    assert len(records) > 250 and [r for r in records if not r.ok] == []
    assert {r.variant for r in records} == {"bert_baseline", "bert_twin"}
    assert all(r.body["model_name"] == r.variant for r in records)  # no candidate answer reached a client
    pinned = httpx.post(url, json=_body(1), headers={"X-ICD-Variant": "bert_icd"}, trust_env=False)
    assert pinned.json()["model_name"] != "bert_icd"  # a 0 %-weight variant cannot be pinned by a client
    judged = wait_until(lambda: len(c := _compared(router)) >= 0.3 * len(records) and c, 20, what="comparisons")
    served = {r.request_id: r.variant for r in records}
    assert {j.rid for j in judged} <= set(served)  # the mirror carried the clients' requests...
    assert all(j.primary == served[j.rid] for j in judged)  # ...compared with the variant that answered the client
    assert 0.3 < len(judged) / len(records) < 0.7  # share 0.5
    assert all(j.candidate == "bert_icd" and j.cosine < 1.0 for j in judged)
    assert sum(j.cosine for j in judged) / len(judged) < 0.99


@pytest.mark.parametrize("candidate,outcome", [("bert_icd", RolloutOutcome.ROLLED_BACK),
                                               ("bert_twin", RolloutOutcome.PROMOTED)])
def test_mirror_rollout_gates_on_output_agreement(stub_upstream, nginx_router, tmp_path, candidate, outcome):
    up = stub_upstream(MODELS)
    router = nginx_router({"bert_baseline": 100, candidate: 0}, {"blue": [up.addr]})
    spec = CanarySpec(primary="bert_baseline", canary=candidate, strategy=Strategy.MIRROR, mirror_share=1.0,
                      interval_s=1.0, threshold=2, iterations=2, min_samples=10, metrics=[agreement_check(0.99)])
    scheduler = RolloutScheduler(ManagedRouter(router), LogProvider(router.access_log, router.workdir / SHADOW_LOG),
                                 tmp_path / "state")
    scheduler.begin(spec)
    with BackgroundRouted(RoutedSpec(f"{router.url}/v2/models/bert/infer", _body, rate=60, duration_s=60,
                                     concurrency=8, keep_bodies=True)) as load:
        status = scheduler.tick()
        assert router.spec.mirror is not None and router.spec.mirror.variant == candidate
        for _ in range(8):
            time.sleep(spec.interval_s)
            status = scheduler.tick()
            if status.phase.is_terminal:
                break
        mirrored_phase = [r for r in load.stop()]
    assert status.outcome == outcome.value, status.reason
    assert router.spec.mirror is None
    assert router.spec.weights[candidate] == (100.0 if outcome is RolloutOutcome.PROMOTED else 0.0)
    if outcome is RolloutOutcome.ROLLED_BACK:
        assert status.phase is RolloutPhase.FAILED and "output-agreement" in status.reason
        assert {r.body["model_name"] for r in mirrored_phase if r.ok} == {"bert_baseline"}
    assert [r for r in mirrored_phase if not r.ok] == []
