"""icd's locustfile: Locust master + 2 workers (FastHttpUser) against the real embedded Triton (synthetic echo_delay)."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path

import pytest

from icd.load.locust import LOCUSTFILE

pytestmark = pytest.mark.e2e
LOCUST = Path(sys.executable).with_name("locust")


def _locust(*args: str, log: Path) -> subprocess.Popen:
    handle = open(log, "w")  # noqa: SIM115 - closed when the process is reaped
    return subprocess.Popen([str(LOCUST), "-f", str(LOCUSTFILE), *args], stdout=handle, stderr=subprocess.STDOUT)


def test_master_and_two_workers_send_icd_payloads(tmp_path, triton_small_server, free_port):
    port = free_port()
    workers = [_locust("--worker", "--master-host", "127.0.0.1", "--master-port", str(port), log=tmp_path / f"w{i}.log")
               for i in range(2)]
    try:
        master = subprocess.run(
            [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "--master", "--master-bind-host", "127.0.0.1",
             "--master-bind-port", str(port), "--expect-workers", "2", "-u", "4", "-r", "4", "-t", "4s",
             "--host", triton_small_server.http_url, "--icd-model", "echo_delay", "--icd-input-shape", "16",
             "--csv", str(tmp_path / "run"), "--only-summary"],
            capture_output=True, text=True, timeout=180, check=False)
        for worker in workers:
            worker.wait(timeout=60)
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert master.returncode == 0, master.stdout[-2000:] + master.stderr[-2000:]
    with open(tmp_path / "run_stats.csv") as fh:
        total = next(row for row in csv.DictReader(fh) if row["Name"] == "Aggregated")
    assert int(total["Request Count"]) > 0 and int(total["Failure Count"]) == 0
    sent = []
    for i in range(2):
        match = re.search(r"this node sent (\d+) ok / (\d+) failed", (tmp_path / f"w{i}.log").read_text())
        assert match is not None, (tmp_path / f"w{i}.log").read_text()[-1500:]
        sent.append((int(match[1]), int(match[2])))
    assert all(ok > 0 and failed == 0 for ok, failed in sent)  # both machines' share of the load
    assert sum(ok for ok, _ in sent) == int(total["Request Count"])  # the master's figures are the workers' sum


def test_wrong_model_fails_fast_with_one_line(triton_small_server):
    done = subprocess.run([sys.executable, "-m", "icd.load.locust", "--headless", "-u", "1", "-r", "1", "-t", "2s",
                           "--host", triton_small_server.http_url, "--icd-model", "bert_base", "--only-summary"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert "icd: model 'bert_base'" in done.stderr and "not ready" in done.stderr and "Traceback" not in done.stderr
