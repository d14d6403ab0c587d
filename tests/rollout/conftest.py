"""Rollout fixtures: synthetic KServe-v2 upstreams (subprocesses) and a real nginx router, on free ports."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from icd.rollout.router_config import RouterSpec
from icd.rollout.router_nginx import NginxRouter
from icd.rollout.router_ops import stop_comparator

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = {"inputs": [{"name": "IN", "datatype": "FP32", "shape": [1, 4], "data": [1.0, 2.0, 3.0, 4.0]}]}


class StubUpstream:
    """A synthetic KServe-v2 server process (tests/rollout/kserve_stub.py)."""

    def __init__(self, port: int, models: dict[str, tuple[float, ...]]) -> None:
        self.port = port
        args = [a for name, spec in models.items() for a in ("--model", ":".join([name, *map(str, spec)]))]
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.rollout.kserve_stub", "--port", str(port), *args],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"stub upstream on {port} did not start")

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.addr}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def stub_upstream(free_port) -> Iterator[Callable[..., StubUpstream]]:
    started: list[StubUpstream] = []

    def make(models: dict[str, tuple[float, ...]]) -> StubUpstream:
        stub = StubUpstream(free_port(), models)
        started.append(stub)
        return stub

    yield make
    for stub in started:
        stub.stop()


@pytest.fixture
def nginx_router(tmp_path, free_port) -> Iterator[Callable[..., NginxRouter]]:
    """``make(weights, upstreams, active)`` starts a real nginx router; all are stopped at teardown."""
    started: list[NginxRouter] = []

    def make(weights: dict[str, float], upstreams: dict[str, list[str]], active: str = "blue",
             public: str = "bert") -> NginxRouter:
        router = NginxRouter(tmp_path / f"router{len(started)}")
        started.append(router)
        router.start(RouterSpec(free_port(), public, weights, upstreams, active))
        return router

    yield make
    for router in started:
        stop_comparator(router)
        router.stop()


# --- the real Triton server with synthetic echo_delay variants (fault injection) -------------------------------
BASELINE_DELAY_MS = 5.0
ECHO_VARIANTS = {
    # name: (delay_ms, error_rate) — synthetic python-backend models, not neural networks
    "bert_baseline": (BASELINE_DELAY_MS, 0.0),
    "bert_icd": (BASELINE_DELAY_MS, 0.0),
    "bert_icd_slow": (BASELINE_DELAY_MS + 295.0, 0.0),  # +295 ms: slower than any host noise seen here
    "bert_icd_slow20": (BASELINE_DELAY_MS * 1.2, 0.0),
    "bert_icd_flaky": (BASELINE_DELAY_MS, 0.05),
    "ab_a": (40.0, 0.0),
    "ab_a_twin": (40.0, 0.0),
    "ab_a_slow20": (48.0, 0.0),  # the configured +20 % delay
    "ab_a_slow": (140.0, 0.0),  # +100 ms: detected even at load 30 on 2 cores (sensitivity: bench/ab_power.py)
    "ab_b": (40.0, 0.0),  # a second reference, so two A/Bs can run at once on separate models
}


@pytest.fixture(scope="session")
def echo_triton(tmp_path_factory):
    """One real Triton serving the synthetic echo_delay variants of ECHO_VARIANTS (session-wide, read-only)."""
    from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model
    from tests.fixtures.triton import start_triton

    repo = tmp_path_factory.mktemp("echo_variants")
    for name, (delay, err) in ECHO_VARIANTS.items():
        write_echo_delay_model(repo, EchoDelaySpec(name=name, delay_ms=delay, error_rate=err, seed=7))
    server = start_triton(repo)
    yield server
    server.stop()
