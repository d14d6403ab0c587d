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
    """The icd state folder (``--state-dir``, else ``$ICD_STATE_DIR``, else ``.icd``) — pids, logs, data."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(STATE_DIR_ENV, DEFAULT_STATE_DIR))
