"""Production traffic simulation: one load shape per model (constant, bursty, realistic, stress) driving an open
loop, with a per-second series per model, the stress verdict, a JSON report and an HTML report next to it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icd.load.report import LoadReport, write_report_json
from icd.load.runner import run_load
from icd.load.settings import Arrival, LoadSettings
from icd.load.shapes import STRESS_SLO_P95_MS, StressShape, TrafficPattern, make_shape
from icd.load.target import Target

DEFAULT_SIM_RATE = 10.0


@dataclass
class SimulationSettings:
    """A simulation: the pattern, its reference rate (constant/bursty base, realistic peak, stress start) per model."""

    pattern: TrafficPattern
    rate: float = DEFAULT_SIM_RATE
    slo_p95_ms: float = STRESS_SLO_P95_MS
    step_s: float | None = None


@dataclass
class SimulationResult:
    """The load report plus the pattern's own evidence (stress steps)."""

    sim: SimulationSettings
    report: LoadReport
    shapes: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        out = self.report.to_dict()
        out = {"traffic_pattern": self.sim.pattern.value, "reference_rate_rps": self.sim.rate, **out}
        out["shapes"] = {name: _shape_params(shape) for name, shape in self.shapes.items()}
        if self.sim.pattern == TrafficPattern.STRESS:
            out["stress"] = {name: shape.result() for name, shape in self.shapes.items() if isinstance(shape, StressShape)}
        return out


def _shape_params(shape: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(shape):
        return {"type": type(shape).__name__, **dataclasses.asdict(shape)}
    keep = ("start_rate", "growth", "step_s", "slo_p95_ms", "max_error_rate", "duration_s")
    return {"type": type(shape).__name__, **{k: getattr(shape, k) for k in keep}}


def run_simulation(sim: SimulationSettings, load: LoadSettings, target: Target, *, progress: bool = False,
                   metrics_port: int | None = None) -> SimulationResult:
    """Run ``sim.pattern`` on every model of ``target`` for ``load.duration_s`` (no warm-up: the shape is the run).

    Raises:
        UserError: unknown pattern, bad rate/duration, and everything :func:`run_load` checks before the run.
    """
    shapes = {m: make_shape(sim.pattern, sim.rate, load.duration_s, slo_p95_ms=sim.slo_p95_ms, step_s=sim.step_s)
              for m in target.models}
    arrival = Arrival.POISSON if sim.pattern == TrafficPattern.REALISTIC else load.arrival
    settings = dataclasses.replace(load, rate=sim.rate, warmup_s=0.0, arrival=arrival)
    report = run_load(settings, target, shapes=shapes, progress=progress, metrics_port=metrics_port)
    return SimulationResult(sim, report, shapes)


def write_simulation(result: SimulationResult, json_path: str | Path) -> Path:
    """Write the JSON report and the HTML report next to it (same name, ``.html``); return the HTML path."""
    from icd.load.sim_html import simulation_html

    json_path = Path(json_path)
    data = result.to_dict()
    write_report_json(json_path, data)
    html_path = json_path.with_suffix(".html")
    simulation_html(data).write(html_path)
    return html_path
