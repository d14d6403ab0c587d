"""Measurements every stage shares: encode texts, fidelity against a reference, in-process latency, and the
one table of metric specs (``metrics.py``) that metrics.json, reports and Prometheus names follow."""

from __future__ import annotations
