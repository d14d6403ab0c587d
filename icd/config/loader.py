"""Load a configuration file (JSON or YAML), apply ``--override a.b.c=VALUE`` and validate.

Errors are :class:`icd.errors.ConfigError` naming the file, the key path and the offending value.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from icd.config.schema import IcdConfig
from icd.errors import ConfigError


def read_config_file(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Parse a JSON (``.json``) or YAML (``.yaml``/``.yml``) file into a dict.

    Raises:
        ConfigError: naming ``what`` and the path — missing, a directory, unreadable, not UTF-8 text, not valid
            JSON / YAML, or not a mapping at the top.
    """
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p}: is a directory; give a JSON or YAML file")
    if not p.is_file():
        raise ConfigError(f"{what} not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{what} {p}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {p}: not UTF-8 text (byte {exc.start}); expected JSON or YAML") from None
    try:
        data = yaml.safe_load(text) if p.suffix.lower() in {".yaml", ".yml"} else json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping, got {type(data).__name__}")
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what the YAML parser found wrong, and where (1-based line and column)."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=VALUE`` → (["a","b","c"], value). VALUE is JSON when it parses as JSON, else a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad override {text!r}: expected KEY.PATH=VALUE, e.g. pipeline.mode=iterative")
    parts = key.strip().split(".")
    if any(not part for part in parts):
        raise ConfigError(f"bad override {text!r}: empty component in key {key!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each override set (intermediate mappings created as needed)."""
    merged = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node: Any = merged
        for i, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _list_item(node, part, text)
                continue
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict | list):
                raise ConfigError(f"bad override {text!r}: {'.'.join(parts[: i + 1])} is not a mapping")
        if isinstance(node, list):
            index = _list_index(node, parts[-1], text)
            node[index] = value
        else:
            node[parts[-1]] = value
    return merged


def _list_index(node: list[Any], part: str, text: str) -> int:
    if not part.isdigit() or int(part) >= len(node):
        raise ConfigError(f"bad override {text!r}: {part!r} is not an index of a list of {len(node)}")
    return int(part)


def _list_item(node: list[Any], part: str, text: str) -> Any:
    return node[_list_index(node, part, text)]


def validate_config(data: dict[str, Any], source: str = "config") -> IcdConfig:
    try:
        return IcdConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        if first["type"] == "extra_forbidden":
            msg = f"{source}: unknown key {where!r}"
        else:
            given = first.get("input")
            shown = "" if isinstance(given, dict | list) else f" (got {given!r})"  # a whole section is no help
            msg = f"{source}: {where}: {first['msg']}{shown}"
        more = len(exc.errors()) - 1
        raise ConfigError(msg + (f" (+{more} more problem{'s' if more > 1 else ''})" if more else "")) from None


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> IcdConfig:
    """Read, override and validate a configuration file."""
    data = apply_overrides(read_config_file(path), overrides)
    return validate_config(data, source=str(path))
