"""Must show 1: Triton + Prometheus + load → every dashboard expression returns data, `icd status` shows live
values, the embedded dashboard renders with data in headless Chromium, and an alert fires when provoked for
real and resolves when the cause stops.

How durations are shortened: Prometheus scrapes and evaluates every 1 s, and loads a variant of the shipped
rules where every alert's ``for:`` is 2 s (:func:`icd.monitor.rules.with_short_for`) — same expressions and
thresholds. The latency alert is provoked by the *synthetic* ``echo_delay`` model configured to sleep 300 ms per
batch (p95 > 200 ms). It resolves when the slow traffic stops and Triton's latency summary forgets the slow
requests: Triton's summaries keep a 60 s sliding window, so resolution takes ~60 s (test marked slow).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from icd.cli.main import main
from icd.monitor.alertmanager_local import AlertmanagerServer
from icd.monitor.client import AlertState, PrometheusClient
from icd.monitor.console import panel_id
from icd.monitor.dashboard import ExprKind, dashboard_exprs, load_dashboard
from icd.monitor.headless import dump_dom, screenshot
from icd.monitor.paths import CONSOLE_PAGE, DASHBOARD_FILE, RULES_FILE, monitoring_dir
from icd.monitor.prometheus_config import PrometheusConfig, ScrapeJob
from icd.monitor.prometheus_local import PrometheusServer
from icd.monitor.rules import load_rules
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
from icd.serve.triton_local import TritonServer
from tests.conftest import _free_port
from tests.fixtures.prometheus import start_prometheus, wait_until
from tests.fixtures.triton import start_triton
from tests.monitor.traffic import BackgroundTraffic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # the live stack (real bert_icd export + load) takes > 20 s

FAST, SLOW, BERT = "echo_fast", "echo_slow", "bert_icd"
SLOW_DELAY_MS = 300.0
DATA_TIMEOUT_S = 180  # waits return as soon as data is there; the deadline only bounds a loaded CI machine


@dataclass
class LiveStack:
    triton: TritonServer
    prometheus: PrometheusServer
    traffic: BackgroundTraffic
    serves_icd_model: bool
    load_exporter_port: int
    alertmanager: AlertmanagerServer

    def client(self) -> PrometheusClient:
        return PrometheusClient(self.prometheus.url)


def _bert_export_available() -> bool:
    return importlib.util.find_spec("icd.export.repository") is not None


@pytest.fixture(scope="module")
def live_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    repo = tmp_path_factory.mktemp("monitor_repo")
    write_echo_delay_model(repo, EchoDelaySpec(name=FAST, delay_ms=5.0))
    write_echo_delay_model(repo, EchoDelaySpec(name=SLOW, delay_ms=SLOW_DELAY_MS, max_batch_size=1))
    serves_icd = _bert_export_available()
    if serves_icd:
        bert_repo = request.getfixturevalue("triton_repo_bert")
        shutil.copytree(Path(bert_repo) / BERT, repo / BERT)
    triton = start_triton(repo)
    load_port = _free_port()
    prometheus = traffic = alertmanager = None
    try:
        alertmanager = AlertmanagerServer(_free_port(), tmp_path_factory.mktemp("alertmanager")).start()
        prometheus = start_prometheus([triton.metrics_url.split("//")[1].split("/")[0]],
                                      workdir=tmp_path_factory.mktemp("prometheus"), short_for="2s",
                                      load_targets=[f"127.0.0.1:{load_port}"], alertmanagers=[alertmanager.address])
        traffic = BackgroundTraffic(triton.http_url, [FAST, FAST, BERT] if serves_icd else [FAST, FAST],
                                    threads=1).start()
        yield LiveStack(triton, prometheus, traffic, serves_icd, load_port, alertmanager)
    finally:
        if traffic:
            traffic.stop()
        if prometheus:
            prometheus.stop()
        if alertmanager:
            alertmanager.stop()
        triton.stop()


def _has_data(client: PrometheusClient, expr: str) -> bool:
    return any(s.is_number for s in client.query(expr))


def _wait_for_data(client: PrometheusClient, exprs: list[str], timeout_s: float) -> list[str]:
    """Poll until every expression has a finite sample; returns those still without one at the deadline.

    Each query also proves the expression parses and evaluates (a PromQL error raises)."""
    deadline = time.monotonic() + timeout_s
    missing = [e for e in exprs if not _has_data(client, e)]
    while missing and time.monotonic() < deadline:
        time.sleep(1)
        missing = [e for e in missing if not _has_data(client, e)]
    return missing


def test_every_dashboard_expression_returns_data(live_stack: LiveStack) -> None:
    rules = load_rules(monitoring_dir() / RULES_FILE)
    exprs = [e for e in dashboard_exprs(load_dashboard(monitoring_dir() / DASHBOARD_FILE), rules)
             if e.kind is ExprKind.PANEL]
    expected = [e for e in exprs if not e.needs_gpu and not e.needs_shadow  # shadow: tests/rollout/test_shadow_e2e.py
                and (live_stack.serves_icd_model or not e.needs_icd_backend)]
    with live_stack.client() as client:
        missing = _wait_for_data(client, [e.expr for e in expected], DATA_TIMEOUT_S)
        assert not missing, f"no data after {DATA_TIMEOUT_S} s for: {missing}"
        for e in exprs:
            if e.needs_gpu:  # documented: GPU series do not exist on a CPU-only host
                assert client.query(e.expr) == [], e.expr
    assert live_stack.traffic.status[(FAST, 200)] > 0


def test_icd_backend_expressions_return_data(live_stack: LiveStack) -> None:
    if not live_stack.serves_icd_model:
        pytest.skip("icd.export.repository (the bert_icd export) not available yet: ICD custom metrics not served")
    rules = load_rules(monitoring_dir() / RULES_FILE)
    exprs = [e for e in dashboard_exprs(load_dashboard(monitoring_dir() / DASHBOARD_FILE), rules)
             if e.needs_icd_backend]
    with live_stack.client() as client:
        missing = _wait_for_data(client, [e.expr for e in exprs], DATA_TIMEOUT_S)
        assert not missing, f"no data after {DATA_TIMEOUT_S} s for: {missing}"


def _status(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(["status", "--prometheus", url, "--json"])
    return code, {k["kpi"]: k for k in json.loads(capsys.readouterr().out)["kpis"]}


def test_status_shows_live_values(live_stack: LiveStack, capsys: pytest.CaptureFixture[str]) -> None:
    with live_stack.client() as client:
        wait_until(lambda: _has_data(client, "icd:request_latency_p95:ms"), DATA_TIMEOUT_S, what="p95 latency")
    code, kpis = _status(live_stack.prometheus.url, capsys)
    latency = kpis["p95_latency"]  # the worst served model: the real bert_icd on 2 shared cores may exceed 200 ms
    assert latency["value"] > 0 and latency["state"] == ("breached" if latency["value"] > 200 else "ok"), latency
    assert code == (1 if any(k["state"] == "breached" for k in kpis.values()) else 0), kpis
    assert kpis["queue_depth"]["state"] == "ok" and kpis["queue_depth"]["value"] >= 0
    assert kpis["error_rate"]["state"] == "ok" and kpis["error_rate"]["value"] == 0
    assert kpis["memory_usage"]["where"] == "system" and 0 < kpis["memory_usage"]["value"] < 1
    assert kpis["gpu_utilization"]["state"] == "no data" and kpis["gpu_utilization"]["value"] is None
    if live_stack.serves_icd_model:
        assert kpis["cache_hit_rate"]["state"] in ("ok", "breached") and math.isfinite(kpis["cache_hit_rate"]["value"])
    capsys.readouterr()
    assert main(["status", "--prometheus", live_stack.prometheus.url]) == code
    table = capsys.readouterr().out
    assert "P95 Latency" in table and "no data" in table and "ms" in table


def test_status_against_a_prometheus_without_icd_rules(live_stack: LiveStack, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A Prometheus that only scrapes Triton: `icd status` expands the recording rules into their expressions."""
    target = live_stack.triton.metrics_url.split("//")[1].split("/")[0]
    config = PrometheusConfig(scrape_jobs=[ScrapeJob("triton", [target])], scrape_interval="1s",
                              evaluation_interval="1s")
    with PrometheusServer(config, port=_free_port(), workdir=tmp_path / "bare") as bare:
        with PrometheusClient(bare.url) as client:
            assert client.recording_rule_names() == set()
            wait_until(lambda: _has_data(client, "rate(nv_inference_request_success[1m]) > 0"), DATA_TIMEOUT_S,
                       what="two scrapes of Triton")
        _, kpis = _status(bare.url, capsys)
    assert kpis["p95_latency"]["value"] > 0 and f"{FAST} v1" in kpis["p95_latency"]["by_target"]
    assert kpis["error_rate"]["value"] == 0 and kpis["queue_depth"]["state"] != "no data"


def test_embedded_dashboard_renders_with_data(live_stack: LiveStack, tmp_path: Path) -> None:
    url = f"{live_stack.prometheus.url}/consoles/{CONSOLE_PAGE}"
    with live_stack.client() as client:
        wait_until(lambda: _has_data(client, "icd:batch_size:mean"), DATA_TIMEOUT_S, what="batching data")
    dom = dump_dom(url)
    dashboard = load_dashboard(monitoring_dir() / DASHBOARD_FILE)
    rules = load_rules(monitoring_dir() / RULES_FILE)
    gpu_titles = {e.title for e in dashboard_exprs(dashboard, rules) if e.needs_gpu}
    icd_titles = {e.title for e in dashboard_exprs(dashboard, rules) if e.needs_icd_backend}
    shadow_titles = {e.title for e in dashboard_exprs(dashboard, rules) if e.needs_shadow}  # no candidate shadowed
    for panel in dashboard["panels"]:
        section = dom.split(f'id="{panel_id(panel["title"])}"', 1)[1].split('class="icd-panel"', 1)[0]
        if panel["title"] in gpu_titles | shadow_titles or (panel["title"] in icd_titles
                                                            and not live_stack.serves_icd_model):
            assert "No timeseries returned" in section, panel["title"]
            continue
        assert "<svg" in section and "<path" in section, f"{panel['title']}: no plotted line"
        assert 'class="icd-sample"' in section, f"{panel['title']}: no current value"
    png = screenshot(url, tmp_path / "dashboard.png", height=2400)
    assert png.stat().st_size > 20_000


def test_load_generator_exporter_is_scraped(live_stack: LiveStack) -> None:
    """The stack scrapes the load generator's exporter (icd.load, --metrics-port) while it runs."""
    from icd.load import LoadSettings, Target, run_load

    settings = LoadSettings(duration_s=6, warmup_s=0, concurrency=1, inputs="random", input_shape=8, workers=0)
    runner = threading.Thread(target=run_load, args=(settings, Target(live_stack.triton.http_url, [FAST])),
                              kwargs={"metrics_port": live_stack.load_exporter_port}, daemon=True)
    runner.start()
    try:
        with live_stack.client() as client:
            wait_until(lambda: [s for s in client.query('up{job="load_generator"} == 1')], DATA_TIMEOUT_S,
                       what="load generator target up")
            wait_until(lambda: _has_data(client, f'icd_load_requests_total{{model="{FAST}",outcome="ok"}} > 0'), DATA_TIMEOUT_S,
                       what="load generator request counter")
    finally:
        runner.join(timeout=DATA_TIMEOUT_S)
    assert not runner.is_alive()


def _alertmanager_has(alertmanager: AlertmanagerServer, name: str, model: str) -> dict | None:
    with httpx.Client(trust_env=False, timeout=5) as http:
        alerts = http.get(f"{alertmanager.url}/api/v2/alerts").json()
    return next((a for a in alerts if a["labels"].get("alertname") == name and a["labels"].get("model") == model),
                None)


def test_latency_alert_fires_and_resolves(live_stack: LiveStack, capsys: pytest.CaptureFixture[str]) -> None:
    def slow_alert_state() -> AlertState | None:
        with live_stack.client() as client:
            for alert in client.alerts():
                if alert.name == "ICDHighLatency" and alert.labels.get("model") == SLOW:
                    return alert.state
        return None

    assert slow_alert_state() is None
    slow = BackgroundTraffic(live_stack.triton.http_url, [SLOW], threads=2).start()
    try:
        wait_until(lambda: slow_alert_state() is AlertState.FIRING, DATA_TIMEOUT_S, what="ICDHighLatency firing")
        code, kpis = _status(live_stack.prometheus.url, capsys)
        assert code == 1
        assert kpis["p95_latency"]["state"] == "breached"
        assert kpis["p95_latency"]["by_target"][f"{SLOW} v1"] >= SLOW_DELAY_MS
        with live_stack.client() as client:
            firing = client.query('ALERTS{alertstate="firing", alertname=~"ICD.*"}')  # the dashboard annotation
            assert any(s.labels["alertname"] == "ICDHighLatency" for s in firing)
        received = wait_until(lambda: _alertmanager_has(live_stack.alertmanager, "ICDHighLatency", SLOW), DATA_TIMEOUT_S,
                              what="ICDHighLatency received by Alertmanager")
        assert received["labels"]["severity"] == "warning" and received["labels"]["kpi"] == "p95_latency"
    finally:
        slow.stop()
    assert slow.status[(SLOW, 200)] > 0
    wait_until(lambda: slow_alert_state() is None, 2 * DATA_TIMEOUT_S, interval_s=2, what="ICDHighLatency resolved")
    code, kpis = _status(live_stack.prometheus.url, capsys)
    assert f"{SLOW} v1" not in kpis["p95_latency"]["by_target"]  # its summary window emptied (NaN = no sample)
    assert code == (1 if any(k["state"] == "breached" for k in kpis.values()) else 0)
