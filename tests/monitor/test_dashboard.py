"""The Grafana dashboard and the embedded console page (offline checks; live ones are in test_e2e_stack.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from icd.monitor import promtool
from icd.monitor.console import panel_id, render_console
from icd.monitor.dashboard import ExprKind, dashboard_exprs, load_dashboard
from icd.monitor.paths import CONSOLE_PAGE, CONSOLES_DIR, DASHBOARD_FILE, RULES_FILE, monitoring_dir
from icd.monitor.rules import load_rules

GUIDE_PANELS = (
    "Request rate", "Latency p50 / p95 / p99", "GPU utilization per device", "GPU memory used", "System memory used",
    "Queue depth", "Batching efficiency", "Error rate", "ICD layout efficiency", "Correlation cache hit rate",
    "Permutation time per inference",
)


def _dashboard() -> dict:
    return load_dashboard(monitoring_dir() / DASHBOARD_FILE)


def test_dashboard_has_the_guide_panels() -> None:
    titles = [p["title"] for p in _dashboard()["panels"]]
    for title in GUIDE_PANELS:
        assert title in titles


def test_latency_panel_has_p50_p95_p99() -> None:
    panel = next(p for p in _dashboard()["panels"] if p["title"] == "Latency p50 / p95 / p99")
    exprs = " ".join(t["expr"] for t in panel["targets"])
    for q in ("p50", "p95", "p99"):
        assert f"icd:request_latency_{q}:ms" in exprs


@pytest.mark.binary
def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (as a recording rule) — offline, before any server runs."""
    exprs = dashboard_exprs(_dashboard(), load_rules(monitoring_dir() / RULES_FILE))
    rules = [{"record": f"dashboard:expr{i}", "expr": e.expr} for i, e in enumerate(exprs)]
    (tmp_path / "exprs.yml").write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": rules}]}))
    result = promtool.check_rules(tmp_path / "exprs.yml")
    assert result.ok, result.output


def test_every_recording_rule_used_by_the_dashboard_exists() -> None:
    rules = load_rules(monitoring_dir() / RULES_FILE)
    for e in dashboard_exprs(_dashboard(), rules):
        assert "icd:" not in rules.expand(e.expr), e.expr


def test_gpu_only_classification() -> None:
    exprs = dashboard_exprs(_dashboard(), load_rules(monitoring_dir() / RULES_FILE))
    gpu = {e.title for e in exprs if e.needs_gpu}
    assert gpu == {"GPU utilization per device", "GPU memory used"}
    icd = {e.title for e in exprs if e.needs_icd_backend}
    assert icd == {"ICD layout efficiency", "Correlation cache hit rate", "Permutation time per inference"}
    assert [e.kind for e in exprs].count(ExprKind.ANNOTATION) == 1


def test_shipped_console_page_is_generated_from_the_dashboard() -> None:
    shipped = (monitoring_dir() / CONSOLES_DIR / CONSOLE_PAGE).read_text()
    assert shipped == render_console(_dashboard()), "regenerate: python -m icd.monitor.console"


def test_console_page_has_every_panel_and_expression() -> None:
    page = render_console(_dashboard())
    for panel in _dashboard()["panels"]:
        assert f'id="{panel_id(panel["title"])}"' in page
        for target in panel["targets"]:
            assert json.dumps(target["expr"])[1:-1] in page


def test_grafana_provisioning_files() -> None:
    grafana = monitoring_dir() / "grafana"
    datasources = yaml.safe_load((grafana / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert [d["type"] for d in datasources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((grafana / "provisioning" / "dashboards" / "icd.yml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["options"]["path"]
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["templating"]["list"][0]["query"] == "prometheus"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
