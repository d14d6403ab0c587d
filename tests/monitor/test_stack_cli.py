"""`icd monitor up|down` and `icd status` through the CLI, against real Prometheus and Alertmanager."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from icd.cli.main import main
from icd.monitor.paths import CONSOLE_PAGE
from icd.monitor.process import pid_alive
from icd.monitor.stack import STATE_FILE, down, read_record
from tests.fixtures.prometheus import wait_until

@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "state"
    yield folder
    down(folder)  # never leave servers behind, even when a test fails


@pytest.mark.e2e
def test_up_status_down(state: Path, free_port: Callable[[], int], capsys: pytest.CaptureFixture[str]) -> None:
    prom_port, am_port, dead_triton = free_port(), free_port(), free_port()
    code = main(["monitor", "up", "--state-dir", str(state), "--prometheus-port", str(prom_port),
                 "--alertmanager-port", str(am_port), "--triton-metrics", f"127.0.0.1:{dead_triton}",
                 "--scrape-interval", "1s", "--evaluation-interval", "1s", "--short-for", "1s"])
    assert code == 0
    record = read_record(state)
    assert record is not None and pid_alive(record.prometheus_pid) and pid_alive(record.alertmanager_pid or -1)
    assert record.scrape_targets["triton"] == [f"127.0.0.1:{dead_triton}"]
    url = f"http://127.0.0.1:{prom_port}"
    with httpx.Client(trust_env=False, timeout=60) as http:
        rules = http.get(f"{url}/api/v1/rules").json()["data"]["groups"]
        assert {"icd_recording", "icd_alerts"} <= {g["name"] for g in rules}  # and any group added since (shadow)
        assert all(r["duration"] == 1 for g in rules for r in g["rules"] if r["type"] == "alerting")
        ams = wait_until(lambda: http.get(f"{url}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"],
                         120, what="alertmanager discovered")  # returns at once when ready; 120 s bounds a loaded CI
        assert f":{am_port}/" in ams[0]["url"]
        page = http.get(f"{url}/consoles/{CONSOLE_PAGE}")
        assert page.status_code == 200 and "no data" in page.text

    # A second `up` on the same state refuses instead of starting a second stack.
    assert main(["monitor", "up", "--state-dir", str(state), "--prometheus-port", str(free_port())]) == 2

    # Triton is down: every KPI is "no data" — not OK, not a breach — and the exit code is 0.
    capsys.readouterr()
    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert {k["state"] for k in answer["kpis"]} == {"no data"}
    assert answer["targets"][f"triton/127.0.0.1:{dead_triton}"] in ("down", "unknown")
    assert main(["status", "--state-dir", str(state)]) == 0
    table = capsys.readouterr().out
    assert "Cache Hit Rate" in table and "no data" in table and f"triton/127.0.0.1:{dead_triton}" in table

    assert main(["monitor", "down", "--state-dir", str(state)]) == 0
    assert "stopped: prometheus" in capsys.readouterr().out
    assert not pid_alive(record.prometheus_pid) and not pid_alive(record.alertmanager_pid or -1)
    assert not (state / STATE_FILE).exists()
    assert main(["monitor", "down", "--state-dir", str(state)]) == 0
    assert "nothing running" in capsys.readouterr().out


def test_status_without_prometheus_is_a_user_error(free_port: Callable[[], int],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--prometheus", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err
    assert "Prometheus not reachable" in err and "Traceback" not in err


def test_bad_target_is_a_user_error(state: Path, free_port: Callable[[], int],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["monitor", "up", "--state-dir", str(state), "--prometheus-port", str(free_port()),
                 "--alertmanager-port", "0", "--triton-metrics", "localhost"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert read_record(state) is None


@pytest.mark.e2e
def test_port_in_use_is_a_user_error(state: Path, prometheus_server: Callable, capsys: pytest.CaptureFixture[str],
                                     free_port: Callable[[], int]) -> None:
    busy = prometheus_server(["127.0.0.1:1"])
    assert main(["monitor", "up", "--state-dir", str(state), "--prometheus-port", str(busy.port),
                 "--alertmanager-port", "0"]) == 2
    assert f"port {busy.port} is already in use" in capsys.readouterr().err
    assert read_record(state) is None
