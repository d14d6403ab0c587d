"""The generated prometheus.yml and the rules helpers (no server)."""

from __future__ import annotations

import pytest
import yaml

from icd.errors import UserError
from icd.monitor.paths import RULES_FILE, monitoring_dir
from icd.monitor.prometheus_config import PrometheusConfig, ScrapeJob, check_duration, check_host_port
from icd.monitor.rules import load_rules
from icd.monitor.stack import StackOptions, build_config


def test_config_holds_targets_rules_and_alertmanager() -> None:
    options = StackOptions(prometheus_port=19090, alertmanager_port=19093, triton_metrics=["127.0.0.1:18002"],
                           load_metrics=["127.0.0.1:19101"], router_metrics=["127.0.0.1:19180"],
                           scrape_interval="1s", evaluation_interval="2s")
    doc = yaml.safe_load(build_config(options, monitoring_dir() / RULES_FILE, "127.0.0.1:19093").to_yaml())
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in doc["scrape_configs"]}
    assert jobs == {"prometheus": ["127.0.0.1:19090"], "triton": ["127.0.0.1:18002"],
                    "load_generator": ["127.0.0.1:19101"], "router": ["127.0.0.1:19180"],
                    "alertmanager": ["127.0.0.1:19093"]}
    assert doc["global"]["scrape_interval"] == "1s" and doc["global"]["evaluation_interval"] == "2s"
    assert doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    assert doc["rule_files"] == [str((monitoring_dir() / RULES_FILE).resolve())]


def test_no_alertmanager_means_no_alerting_section() -> None:
    doc = PrometheusConfig(scrape_jobs=[ScrapeJob("triton", ["127.0.0.1:18002"])]).to_dict()
    assert "alerting" not in doc


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1:", "127.0.0.1:99999", "http://x:1", "a b:80"])
def test_bad_target_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="HOST:PORT"):
        check_host_port(bad, "--triton-metrics")
    options = StackOptions(prometheus_port=19090, alertmanager_port=None, triton_metrics=[bad])
    with pytest.raises(UserError, match="HOST:PORT"):
        build_config(options, monitoring_dir() / RULES_FILE, None)
    options = StackOptions(prometheus_port=19090, alertmanager_port=None, router_metrics=[bad])
    with pytest.raises(UserError, match="HOST:PORT"):
        build_config(options, monitoring_dir() / RULES_FILE, None)


@pytest.mark.parametrize("good", ["1s", "15s", "1m30s", "500ms", "2h"])
def test_durations_accepted(good: str) -> None:
    assert check_duration(good, "x") == good


@pytest.mark.parametrize("bad", ["1", "fast", "1.5s", "-1s", ""])
def test_bad_duration_is_a_user_error(bad: str) -> None:
    with pytest.raises(UserError, match="duration"):
        check_duration(bad, "--scrape-interval")


def test_expand_replaces_recording_rules_recursively() -> None:
    rules = load_rules(monitoring_dir() / RULES_FILE)
    expanded = rules.expand("max(icd:request_latency_p95:ms) > 200")
    assert "icd:" not in expanded
    assert 'nv_inference_request_summary_us{quantile="0.95"}' in expanded
    assert rules.expand("up") == "up"
