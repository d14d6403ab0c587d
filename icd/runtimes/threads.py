"""The thread budget: threads per instance × instances × models ≤ the host's cores, for every runtime.

Two served models that each take every core stall each other for seconds (measured, docs/runtimes.md): ONNX
Runtime and OpenVINO sessions, like torch, take every core unless told. By default each model instance gets
``cores // (sum of instance counts over the repository's models)`` threads (at least 1). The embedded server
passes it to every instance as ``$ICD_THREADS_PER_INSTANCE``; a model's ``icd_threads`` parameter (export
``--threads``) or the variable set by the user overrides it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from icd.serve.backend.icd_runtime import THREADS_ENV


def host_cores() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadBudget:
    """``threads`` per instance for ``instances`` (model → instance count) on ``cores`` cores."""

    cores: int
    instances: Mapping[str, int]
    threads: int
    source: str = "budget"

    def describe(self) -> str:
        total = sum(self.instances.values())
        models = ", ".join(f"{name} {count}" for name, count in sorted(self.instances.items())) or "none"
        if self.source != "budget":
            return f"threads per instance: {self.threads} (from {self.source})"
        return (f"thread budget: {self.cores} cores / {total} model instances ({models}) = {self.threads} "
                f"thread{'s' if self.threads != 1 else ''} per instance (override: ${THREADS_ENV} or the model's "
                "icd_threads parameter)")


def thread_budget(instances: Mapping[str, int], cores: int | None = None) -> ThreadBudget:
    """:class:`ThreadBudget` for these instance counts (``cores`` defaults to :func:`host_cores`)."""
    cores = host_cores() if cores is None else cores
    total = max(1, sum(instances.values()))
    return ThreadBudget(cores, dict(instances), max(1, cores // total))


def repository_instances(repository: Path, extra: Mapping[str, int] | None = None) -> dict[str, int]:
    """``{model: instance count}`` of every model folder with a readable config.pbtxt (+ ``extra``)."""
    from icd.errors import ArtefactError
    from icd.export.config_pbtxt import read_config

    counts: dict[str, int] = {}
    root = Path(repository)
    for config_path in sorted(root.glob("*/config.pbtxt")) if root.is_dir() else []:
        try:
            config = read_config(config_path)
        except ArtefactError:
            continue  # Triton refuses it too; it runs no instance
        counts[config_path.parent.name] = sum(max(1, g.count) for g in config.instance_group) or 1
    counts.update(extra or {})
    return counts


def repository_budget(repository: Path, env: Mapping[str, str] | None = None,
                      extra: Mapping[str, int] | None = None) -> ThreadBudget:
    """The budget for serving ``repository``; ``$ICD_THREADS_PER_INSTANCE`` in ``env`` overrides it."""
    from icd.errors import ConfigError
    from icd.serve.backend.icd_runtime import ThreadsError, parse_threads

    instances = repository_instances(repository, extra)
    env = os.environ if env is None else env
    if env.get(THREADS_ENV):
        try:
            value = parse_threads(env[THREADS_ENV], THREADS_ENV)
        except ThreadsError as exc:
            raise ConfigError(str(exc)) from None
        if value > 0:
            return ThreadBudget(host_cores(), instances, value, f"${THREADS_ENV}")
    return thread_budget(instances)
