"""``free_port``: free now, outside the kernel's ephemeral range (where a client's connection could take it before
the server binds it), never the same twice in a process."""

from __future__ import annotations

import socket

from icd.io import ports


def test_free_ports_are_bindable_distinct_and_below_the_ephemeral_range():
    low, _high = ports.ephemeral_range()
    picked = [ports.free_port() for _ in range(50)]
    assert len(set(picked)) == len(picked)
    if low - 1 > ports.LOWEST_PICK:
        assert all(ports.LOWEST_PICK <= port < low for port in picked)
    for port in picked[:5]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))
            sock.listen()
            assert ports.port_in_use(port)


def test_a_port_taken_by_a_listener_is_not_handed_out(monkeypatch):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (taken + 1, 60999))
        monkeypatch.setattr(ports, "LOWEST_PICK", taken - 1)
        monkeypatch.setattr(ports, "_handed_out", {taken - 1})
        picked = ports.free_port()
        assert picked != taken and picked != taken - 1  # neither the taken port nor one handed out before
