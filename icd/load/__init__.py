"""Load generation against KServe-v2 servers (Triton): closed/open loop, HDR histograms, traffic shapes.

Library use (see docs/load.md)::

    from icd.load import LoadSettings, Target, run_load
    report = run_load(LoadSettings(rate=200, duration_s=10, workers=1), Target("http://127.0.0.1:18000", ["bert_icd"]))
    print(report.to_dict()["latency_ms"]["p95"])
"""

from __future__ import annotations

from icd.load.aggregate import IntervalRow
from icd.load.hooks import EventHook, Hooks
from icd.load.report import LoadReport
from icd.load.runner import run_load
from icd.load.settings import Arrival, InputSource, LoadMode, LoadSettings, Protocol
from icd.load.shapes import LoadShape, TrafficPattern, make_shape
from icd.load.stats import RequestRecord
from icd.load.target import Target
from icd.load.timespan import parse_timespan

__all__ = [
    "Arrival", "EventHook", "Hooks", "InputSource", "IntervalRow", "LoadMode", "LoadReport", "LoadSettings",
    "LoadShape", "Protocol", "RequestRecord", "Target", "TrafficPattern", "make_shape", "parse_timespan", "run_load",
]
