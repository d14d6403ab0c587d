"""Run configuration: schema (pydantic, unknown keys rejected), loading from JSON/YAML, ``--override``."""

from __future__ import annotations

from icd.config.loader import apply_overrides, load_config, parse_override
from icd.config.schema import IcdConfig

__all__ = ["IcdConfig", "apply_overrides", "load_config", "parse_override"]
