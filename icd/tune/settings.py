"""Everything one ``icd tune`` run is told, in one typed object (the CLI maps its flags onto these fields).

The report path names every file of a run: ``<stem>.json`` (report), ``<stem>.html`` (report with the Pareto
plot), ``<stem>.png`` (the plot), ``<stem>.checkpoint.json`` (resumable state), ``<stem>.config.pbtxt`` (the
winning configuration) and, in local launch mode, ``<stem>.triton.log`` (the private server's log).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from icd.defaults import LOOPBACK, TRITON_HTTP_PORT
from icd.errors import UserError
from icd.tune.cost_model import load_cost_model
from icd.tune.measure import LoadSpec
from icd.tune.measurement import Slo
from icd.tune.objective import CostBasis, Objective, ObjectiveKind
from icd.tune.server import LaunchMode
from icd.tune.space import SearchSpace
from icd.tune.strategy import SearchMode

DEFAULT_ENDPOINT = f"http://{LOOPBACK}:{TRITON_HTTP_PORT}"
DEFAULT_MODEL_REPOSITORY = Path("deploy/triton/models")
DEFAULT_UTILIZATION = 0.8


@dataclass(frozen=True)
class RunPaths:
    """The files of one run (see module docstring)."""

    report: Path

    def _sibling(self, suffix: str) -> Path:
        return self.report.with_name(self.report.stem + suffix)

    @property
    def html(self) -> Path:
        return self._sibling(".html")

    @property
    def plot(self) -> Path:
        return self._sibling(".png")

    @property
    def checkpoint(self) -> Path:
        return self._sibling(".checkpoint.json")

    @property
    def config(self) -> Path:
        return self._sibling(".config.pbtxt")

    @property
    def triton_log(self) -> Path:
        return self._sibling(".triton.log")


@dataclass
class TuneSettings:
    """One search (see the CLI's ``icd tune --help`` for each field's flag).

    Attributes:
        model: model to tune.
        slo: latency objective every counted point must meet.
        objective: throughput or cost.
        mode: brute or quick.
        space: configurations searched.
        load: what each measurement drives.
        endpoint: remote Triton (HTTP).
        model_repository: repository for local launch mode (and the auto fallback).
        launch_mode: auto, remote or local.
        cost_model: name in ``deploy/cost_models`` or a YAML path (required by the cost objective).
        instance_type: instance of the cost model (default: its first).
        utilization: planned fraction of measured capacity, (0, 1].
        demand_rps: expected demand; sizes the fleet in the report.
        report: report path (names every other file, see :class:`RunPaths`).
        fresh: ignore an existing checkpoint.
        progress: print progress on stderr.
    """

    model: str = "bert_icd"
    slo: Slo = field(default_factory=lambda: Slo(100.0))
    objective: ObjectiveKind = ObjectiveKind.THROUGHPUT
    mode: SearchMode = SearchMode.QUICK
    space: SearchSpace = field(default_factory=SearchSpace)
    load: LoadSpec = field(default_factory=LoadSpec)
    endpoint: str = DEFAULT_ENDPOINT
    model_repository: Path | None = DEFAULT_MODEL_REPOSITORY
    launch_mode: LaunchMode = LaunchMode.AUTO
    cost_model: str | None = None
    instance_type: str | None = None
    utilization: float = DEFAULT_UTILIZATION
    demand_rps: float | None = None
    report: Path = Path("tune_report.json")
    fresh: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.objective = ObjectiveKind(self.objective)
        self.mode = SearchMode(self.mode)
        self.launch_mode = LaunchMode(self.launch_mode)
        self.report = Path(self.report)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(Path(self.report))

    def validate(self) -> None:
        """Raise UserError naming the flag and value of the first bad setting."""
        checks = [("--target-utilization", self.utilization * 100, 0 < self.utilization <= 1),
                  ("--demand-rps", self.demand_rps, self.demand_rps is None or self.demand_rps > 0),
                  ("--report", str(self.report), Path(self.report).suffix == ".json"),
                  ("--objective cost needs --cost-model", self.cost_model,
                   self.objective != ObjectiveKind.COST or self.cost_model is not None)]
        for flag, value, ok in checks:
            if not ok:
                raise UserError(f"{flag}: invalid value {value!r}")
        try:
            self.load.settings(1)
        except ValueError as exc:
            raise UserError(str(exc)) from None

    def cost_basis(self) -> CostBasis | None:
        """The cost model entry (None without ``cost_model``); ConfigError for a bad file or instance type."""
        if self.cost_model is None:
            return None
        model, path = load_cost_model(self.cost_model)
        return CostBasis(model, path, model.instance(self.instance_type), self.utilization, os.cpu_count() or 1)

    def build_objective(self) -> Objective:
        return Objective(self.objective, self.slo, self.cost_basis())

    def fingerprint(self) -> dict[str, Any]:
        """What makes two runs' measurements comparable (a checkpoint is resumed only under the same one)."""
        return {"model": self.model, "slo": {"latency_ms": self.slo.latency_ms, "percentile": self.slo.percentile},
                "objective": self.objective.value, "mode": self.mode.value, "space": self.space.model_dump(),
                "load": self.load.to_dict(),
                "cost": None if self.cost_model is None else {"cost_model": self.cost_model,
                                                              "instance_type": self.instance_type,
                                                              "utilization": self.utilization}}


def settings_from_fingerprint(fingerprint: dict[str, Any]) -> TuneSettings:
    """The settings a checkpoint's fingerprint records (what ``icd tune-report`` renders with).

    Raises:
        ArtefactError: the fingerprint is incomplete or invalid.
    """
    from icd.errors import ArtefactError

    try:
        cost = fingerprint.get("cost") or {}
        return TuneSettings(
            model=fingerprint["model"], slo=Slo(**fingerprint["slo"]), objective=ObjectiveKind(fingerprint["objective"]),
            mode=SearchMode(fingerprint["mode"]), space=SearchSpace.model_validate(fingerprint["space"]),
            load=LoadSpec(**fingerprint["load"]), cost_model=cost.get("cost_model"),
            instance_type=cost.get("instance_type"), utilization=cost.get("utilization", DEFAULT_UTILIZATION),
            progress=False)
    except (KeyError, TypeError, ValueError) as exc:
        raise ArtefactError(f"checkpoint fingerprint: incomplete or invalid ({exc})") from None
