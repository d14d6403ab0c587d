"""Locations of the monitoring files shipped in ``deploy/triton/monitoring/``."""

from __future__ import annotations

import os
from pathlib import Path

from icd.defaults import DEFAULT_STATE_DIR, STATE_DIR_ENV
from icd.errors import ArtefactError

MONITORING_DIR_ENV = "ICD_MONITORING_DIR"
"""Environment variable overriding the folder with the shipped monitoring files."""

_REPO_ROOT = Path(__file__).resolve().parents[2]

RULES_FILE = "prometheus_rules.yml"
RULE_TESTS_DIR = "tests"
ALERTMANAGER_FILE = "alertmanager.yml"
PROMETHEUS_FILE = "prometheus.yml"
CONSOLES_DIR = "consoles"
CONSOLE_LIBRARIES_DIR = "console_libraries"
DASHBOARD_FILE = Path("grafana") / "dashboards" / "json" / "triton_overview.json"
CONSOLE_PAGE = "icd_overview.html"
"""The embedded dashboard's page: ``http://<prometheus>/consoles/icd_overview.html``."""


def monitoring_dir() -> Path:
    """The folder with ``prometheus_rules.yml``, ``alertmanager.yml``, consoles and the Grafana files.

    Raises:
        ArtefactError: the folder (``$ICD_MONITORING_DIR`` or ``deploy/triton/monitoring``) does not exist.
    """
    folder = Path(os.environ.get(MONITORING_DIR_ENV, _REPO_ROOT / "deploy" / "triton" / "monitoring"))
    if not (folder / RULES_FILE).is_file():
        raise ArtefactError(f"monitoring files not found: {folder / RULES_FILE} (set {MONITORING_DIR_ENV})")
    return folder


def state_dir(explicit: Path | None = None) -> Path:
    """The icd state folder — pids, logs, data of what icd started.

    ``--state-dir``, else ``$ICD_STATE_DIR``, else the nearest ``.icd`` folder in the current folder or above it
    up to the project root (the first folder with ``.git`` or ``pyproject.toml``), else ``.icd`` at that project
    root, else ``./.icd``. So ``cd deploy/triton && icd stack up`` and a later ``icd switch`` from the repository
    root share one state folder, as the guide's commands expect.
    """
    if explicit is not None:
        return Path(explicit)
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / DEFAULT_STATE_DIR).is_dir():
            return _relative_if_below(folder / DEFAULT_STATE_DIR, here)
        if any((folder / marker).exists() for marker in _PROJECT_MARKERS):
            return _relative_if_below(folder / DEFAULT_STATE_DIR, here)
    return Path(DEFAULT_STATE_DIR)


_PROJECT_MARKERS = (".git", "pyproject.toml")


def _relative_if_below(path: Path, here: Path) -> Path:
    """``path`` relative to ``here`` when it lies below it (``.icd``), else absolute."""
    try:
        return path.relative_to(here)
    except ValueError:
        return path
