"""``run_tune``: the thin coordinator of ``icd tune`` — config → search → measure → checkpoint → report.

The strategy (a generator) yields trials; each trial's concurrency sweep (another generator) yields levels; each
level is answered from the checkpoint when it holds it, else measured, appended to the checkpoint (written
atomically) and fed back. When the search ends, the winner's best level is measured once more (a 4-s
measurement right at the SLO is as often luck as capacity): a repeat that breaks the SLO refutes that level, and
the next winner is re-measured, at most :data:`CONFIRMATIONS` repeats in all. A remote server that dies stops the
search cleanly (status ``stopped``); a local one is restarted and the search goes on. Ctrl-C leaves status
``interrupted``. In every case the report is rendered from the checkpoint, and the same command resumes.

Example:
    >>> settings = TuneSettings(model="echo_delay", slo=Slo(50.0), launch_mode=LaunchMode.LOCAL,
    ...                         model_repository=Path("repo"), report=Path("tune/echo.json"))  # doctest: +SKIP
    >>> summary = run_tune(settings)                                                          # doctest: +SKIP
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from icd.load.report import check_writable
from icd.tune import model_config
from icd.tune.checkpoint import Checkpoint, RunStatus
from icd.tune.concurrency import PROBE_MARGIN, concurrency_sweep
from icd.tune.measure import Measurer, SearchInterrupted, SearchStopped
from icd.tune.measurement import ConfigResult, LoadPoint, PointStatus
from icd.tune.objective import Objective
from icd.tune.progress import TuneProgress
from icd.tune.report import results_of, write_reports
from icd.tune.reload import ConfigRejected, ServerGone
from icd.tune.server import LaunchMode, TuneServer, open_server
from icd.tune.settings import TuneSettings
from icd.tune.space import Candidate
from icd.tune.strategy import SearchMode, Strategy, Trial, brute_force, hill_climb
from icd.tune.variants import Variant, read_variants

PointHook = Callable[[LoadPoint], None]

CONFIRMATIONS = 3
"""Most repeat measurements of a winner's best level after the search (each refuted one names a new winner)."""


class PointMeasurer(Protocol):
    """Measures one candidate at one concurrency (:class:`icd.tune.measure.Measurer` on a live server)."""

    def measure(self, candidate: Candidate, concurrency: int) -> LoadPoint:
        """The point measured (failures recorded in it); raises SearchInterrupted on Ctrl-C."""


def host_info() -> dict[str, Any]:
    """CPU, cores and load average of this host (every report carries them)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"cpu": cpu, "cores": os.cpu_count(), "node": platform.node(), "load_average_at_start": load}


@dataclass
class _Search:
    """One run's state: checkpoint, measurer, progress."""

    settings: TuneSettings
    checkpoint: Checkpoint
    measurer: PointMeasurer
    server: TuneServer
    progress: TuneProgress
    on_point: PointHook | None
    objective: Objective

    def point(self, trial: Trial, level: int) -> LoadPoint:
        stored = self.checkpoint.lookup(trial.candidate.config_id, level)
        if stored is not None:
            self.progress.point(stored, replayed=True)
            return stored
        return self.measured(trial.candidate, level)

    def measured(self, candidate: Candidate, level: int) -> LoadPoint:
        """A new measurement, checkpointed and shown (SearchStopped when the server died for good)."""
        point = self.measurer.measure(candidate, level)
        self.checkpoint.add(point)
        self.progress.point(point, replayed=False)
        if self.on_point is not None:
            self.on_point(point)
        if point.status == PointStatus.SERVER_DIED and not self.server.restartable:
            raise SearchStopped(f"the server died: {point.detail}")
        return point

    def evaluate(self, trial: Trial) -> ConfigResult:
        self.progress.config(trial.candidate.config_id)
        result = ConfigResult(trial.candidate)
        beats = near = None
        if trial.incumbent is not None:
            beats = self.objective.beats(trial.incumbent)
            near = self.objective.beats(trial.incumbent, tolerance=1.0 - PROBE_MARGIN)
        sweep = concurrency_sweep(self.settings.space.concurrency, self.settings.slo, trial.start_level, beats, near)
        level = next(sweep)
        while True:
            point = self.point(trial, level)
            result.points.append(point)
            try:
                level = sweep.send(point)
            except StopIteration:
                break
        self.progress.config_done()
        return result

    def drive(self, strategy: Strategy) -> None:
        trial = next(strategy)
        while True:
            result = self.evaluate(trial)
            try:
                trial = strategy.send(result)
            except StopIteration:
                return

    def repeats(self) -> int:
        """Measurements of a level already measured (the winners' repeats so far)."""
        levels = [(p.config_id, p.concurrency) for p in self.checkpoint.points if p.concurrency is not None]
        return len(levels) - len(set(levels))

    def confirm(self) -> None:
        """Re-measure the winner's best level until a winner's level holds twice (at most CONFIRMATIONS repeats,
        those a resumed checkpoint holds included)."""
        while self.repeats() < CONFIRMATIONS:
            ranked = self.objective.rank(results_of(self.checkpoint))
            if not ranked:
                return
            winner = ranked[0]
            level = winner.best(self.settings.slo)
            if level is None or winner.times_measured(level.concurrency) > 1:
                return
            self.progress.say(f"re-measuring the winner {winner.config_id} at concurrency {level.concurrency}")
            self.measured(winner.candidate, level.concurrency)


def _strategy(settings: TuneSettings, base: Any) -> tuple[Strategy, int | None]:
    enumeration = settings.space.enumerate()
    if settings.mode == SearchMode.BRUTE:
        return brute_force(enumeration), len(enumeration.candidates)
    return hill_climb(settings.space, settings.build_objective(), model_config.candidate_of(base)), None


def _variants(settings: TuneSettings) -> dict[int, Variant]:
    """The runtime / precision of every searched version, read before any server starts (ConfigError if not)."""
    if not settings.space.versions:
        return {}
    config_path = Path(settings.model_repository or ".") / settings.model / "config.pbtxt"
    config = model_config.from_pbtxt(config_path) if config_path.is_file() else None
    backend = (config.backend or config.platform) if config is not None else ""
    return read_variants(settings.model_repository, settings.model, settings.space.versions, backend)


def run_tune(settings: TuneSettings, on_point: PointHook | None = None, *, server: TuneServer | None = None,
             measurer: PointMeasurer | None = None) -> dict[str, Any]:
    """Run (or resume) a search and write its reports; returns the report document.

    Args:
        settings: the run.
        on_point: called after each *new* measurement is checkpointed (tests use it to break servers).
        server: a server to use instead of the one ``settings.launch_mode`` opens (closed at the end).
        measurer: measures instead of a :class:`Measurer` on ``server`` (unit tests of the search logic).

    Raises:
        UserError: a bad setting, space, cost model or report path, or no usable server — before any load.
        KeyboardInterrupt: Ctrl-C (the checkpoint and reports are written first).
    """
    settings.validate()
    settings.build_objective()          # cost model errors before any server starts
    settings.space.enumerate()          # "no possible configuration" before any server starts
    paths = settings.paths
    for path in (paths.report, paths.checkpoint, paths.config):
        check_writable(path)
    variants = _variants(settings)
    checkpoint = Checkpoint.open(paths.checkpoint, settings.fingerprint(), settings.fresh)
    if server is None:
        server, note = open_server(settings.launch_mode, settings.endpoint, settings.model_repository,
                                   settings.model, paths.triton_log)
    else:
        note = f"measuring on the given server at {server.endpoint} ({server.launch_mode.value})"
    interrupted = False
    base = None
    try:
        base = (model_config.from_json(checkpoint.base_config, str(paths.checkpoint))
                if checkpoint.base_config is not None else server.base_config())
        kind, kind_note = model_config.resolve_kind(base, server_ran_it=server.launch_mode == LaunchMode.REMOTE)
        checkpoint.base_config, checkpoint.kind = model_config.to_json(base), kind
        checkpoint.notes = [n for n in (note, kind_note) if n]
        checkpoint.host = host_info()
        checkpoint.launch = {"mode": server.launch_mode.value, "endpoint": server.endpoint}
        checkpoint.variants = {str(v): variant.to_dict() for v, variant in variants.items()}
        checkpoint.save()
        strategy, total = _strategy(settings, base)
        with TuneProgress(settings.slo, total, settings.progress) as progress:
            progress.say(note)
            if checkpoint.resumed:
                progress.say(f"resuming {paths.checkpoint}: {checkpoint.resumed} measurement(s) already held")
            measurer = measurer or Measurer(server, settings.model, base, kind, settings.load, variants)
            search = _Search(settings, checkpoint, measurer, server, progress, on_point, settings.build_objective())
            search.drive(strategy)
            search.confirm()
        checkpoint.finish(RunStatus.COMPLETE)
    except SearchStopped as exc:
        checkpoint.finish(RunStatus.STOPPED, f"{exc}; rerun the same command to resume")
    except (SearchInterrupted, KeyboardInterrupt) as exc:
        interrupted = True
        checkpoint.finish(RunStatus.INTERRUPTED, f"{exc or 'interrupted'}; rerun the same command to resume")
    finally:
        try:
            server.close(restore=base)
        except (ServerGone, ConfigRejected) as exc:
            checkpoint.notes.append(f"could not restore the model's configuration: {exc}")
            checkpoint.save()
    summary = write_reports(checkpoint, settings, paths)
    if interrupted:
        raise KeyboardInterrupt
    return summary


def render_checkpoint(checkpoint_path: Path, report: Path | None = None) -> dict[str, Any]:
    """Re-render the reports of a checkpoint, offline (``icd tune-report``)."""
    from icd.tune.settings import settings_from_fingerprint

    checkpoint = Checkpoint.read(checkpoint_path)
    settings = settings_from_fingerprint(checkpoint.fingerprint)
    settings.report = report or Path(str(checkpoint_path).removesuffix(".checkpoint.json") + ".json")
    return write_reports(checkpoint, settings, settings.paths)
