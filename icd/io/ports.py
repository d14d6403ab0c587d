"""TCP ports on the loopback interface: a free one, and whether one is taken.

A port the OS picks (bind to port 0) comes from the kernel's *ephemeral* range, the range it also hands to every
outgoing connection. A port picked that way and bound later (a server started after its configuration was
written) can be taken in between by a client's connection: on a busy machine, one of the thousands of short
connections a load test opens. :func:`free_port` therefore picks below that range, where the kernel assigns no
port by itself, and never hands out the same port twice in one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from icd.defaults import LOOPBACK

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PICK = 10000
"""Lowest port :func:`free_port` picks (above the registered ports most services listen on)."""
_ATTEMPTS = 200

_handed_out: set[int] = set()
_random = random.SystemRandom()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's ephemeral port range (Linux's default 32768–60999 when the file cannot be read)."""
    try:
        low, high = (int(value) for value in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def _os_pick(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now, below the ephemeral range (see the module's text) and not handed
    out before by this process; the OS's pick when no such port is free."""
    low, _high = ephemeral_range()
    if low - 1 > LOWEST_PICK:
        for _ in range(_ATTEMPTS):
            port = _random.randint(LOWEST_PICK, low - 1)
            if port not in _handed_out and not port_in_use(port, host):
                _handed_out.add(port)
                return port
    port = _os_pick(host)
    _handed_out.add(port)
    return port


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """Whether a TCP listener cannot be bound on ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False
