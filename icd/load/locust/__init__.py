"""icd's Triton payloads for Locust: distributed load from many machines (master / worker mode).

``LOCUSTFILE`` is the shipped locustfile; ``python -m icd.load.locust [locust options]`` runs Locust with it.
``icd bench`` stays the single-node generator (docs/scaling.md says when to use which).
"""

from __future__ import annotations

from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
"""Path of the shipped locustfile (``locust -f <this> ...``)."""
