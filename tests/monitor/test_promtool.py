"""promtool checks of the shipped and generated monitoring files (run in `make test`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from icd.monitor import promtool
from icd.monitor.paths import PROMETHEUS_FILE, RULE_TESTS_DIR, RULES_FILE, monitoring_dir
from icd.monitor.prometheus_config import PrometheusConfig, ScrapeJob
from icd.monitor.rules import load_rules, with_short_for

RULE_TEST_FILE = monitoring_dir() / RULE_TESTS_DIR / "rules_test.yml"


@pytest.mark.binary
def test_shipped_rules_pass_promtool_check() -> None:
    result = promtool.check_rules(monitoring_dir() / RULES_FILE)
    assert result.ok, result.output


@pytest.mark.binary
def test_rule_unit_tests_pass() -> None:
    result = promtool.run_rule_tests(RULE_TEST_FILE)
    assert result.ok, result.output
    assert "SUCCESS" in result.output


@pytest.mark.binary
def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The rule tests can fail: flip one expected threshold value and promtool must reject it."""
    shutil.copy(monitoring_dir() / RULES_FILE, tmp_path / RULES_FILE)
    text = RULE_TEST_FILE.read_text().replace("rule_files:\n  - ../prometheus_rules.yml",
                                              f"rule_files:\n  - {RULES_FILE}")
    broken = text.replace("is 250.0 ms (> 200 ms)", "is 199.0 ms (> 200 ms)", 1)
    assert broken != text
    (tmp_path / "broken_test.yml").write_text(broken)
    result = promtool.run_rule_tests(tmp_path / "broken_test.yml")
    assert not result.ok
    assert "FAILED" in result.output


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    doc = yaml.safe_load(RULE_TEST_FILE.read_text())
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = set(load_rules(monitoring_dir() / RULES_FILE).alerts)
    assert alerts == fires == quiet


@pytest.mark.binary
def test_shipped_prometheus_yml_passes_check_config() -> None:
    result = promtool.check_config(monitoring_dir() / PROMETHEUS_FILE)
    assert result.ok, result.output


@pytest.mark.binary
def test_generated_config_passes_check_config(tmp_path: Path) -> None:
    rules = with_short_for(monitoring_dir() / RULES_FILE, tmp_path / "rules.yml", "1s")
    config = PrometheusConfig(
        scrape_jobs=[ScrapeJob("triton", ["127.0.0.1:18002"]), ScrapeJob("load_generator", ["127.0.0.1:19101"])],
        rule_files=[rules], alertmanagers=["127.0.0.1:19093"], scrape_interval="1s", evaluation_interval="1s",
    )
    (tmp_path / "prometheus.yml").write_text(config.to_yaml())
    result = promtool.check_config(tmp_path / "prometheus.yml")
    assert result.ok, result.output
    assert "30 rules found" in result.output  # 16 + 6 shadow recording rules, 8 alerts


@pytest.mark.binary
def test_generated_config_with_bad_rules_fails_check(tmp_path: Path) -> None:
    (tmp_path / "bad.yml").write_text("groups:\n  - name: x\n    rules:\n      - record: a:b\n        expr: rate(\n")
    config = PrometheusConfig(scrape_jobs=[ScrapeJob("triton", ["127.0.0.1:18002"])], rule_files=[tmp_path / "bad.yml"])
    (tmp_path / "prometheus.yml").write_text(config.to_yaml())
    assert not promtool.check_config(tmp_path / "prometheus.yml").ok


@pytest.mark.binary
@pytest.mark.parametrize("for_", ["1s", "2s"])
def test_short_for_variant_keeps_expressions(tmp_path: Path, for_: str) -> None:
    shipped = load_rules(monitoring_dir() / RULES_FILE)
    variant = load_rules(with_short_for(monitoring_dir() / RULES_FILE, tmp_path / "r.yml", for_))
    assert variant.recording == shipped.recording
    assert {n: a.expr for n, a in variant.alerts.items()} == {n: a.expr for n, a in shipped.alerts.items()}
    assert {a.for_ for a in variant.alerts.values()} == {for_}
    assert shipped.alerts["ICDHighLatency"].for_ == "5m"
    assert shipped.alerts["ICDLowCacheHitRate"].for_ == "2m"
    assert promtool.check_rules(tmp_path / "r.yml").ok
