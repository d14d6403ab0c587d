"""Fixtures of the load tests: the synthetic injected-latency KServe-v2 server (icd.load.testserver)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from icd.load.testserver import InjectedLatencyServer


@pytest.fixture
def injected_server(free_port) -> Iterator[Callable[..., InjectedLatencyServer]]:
    """Factory ``(delay=..., models=..., seq=..., stall_after_s=..., stall_ms=...) -> started server``; stopped after."""
    started: list[InjectedLatencyServer] = []

    def factory(**kwargs) -> InjectedLatencyServer:
        server = InjectedLatencyServer(free_port(), **kwargs).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_server() -> Iterator[InjectedLatencyServer]:
    """One server (fixed 2 ms, models ``bert_icd``/``bert_baseline``, seq 128) for a whole module."""
    from tests.conftest import _free_port

    server = InjectedLatencyServer(_free_port(), delay="fixed:2", models=("bert_icd", "bert_baseline"), seq=128).start()
    yield server
    server.stop()
