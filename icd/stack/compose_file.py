"""Read a compose file the way ``docker-compose`` does: ``.env`` next to it, shell variables first, interpolation.

Interpolation follows the compose specification: ``$$`` is a literal ``$``; ``$VAR`` and ``${VAR}``;
``${VAR:-default}`` (unset or empty → default), ``${VAR-default}`` (unset → default), ``${VAR:?message}`` /
``${VAR?message}`` (refuse), ``${VAR:+alt}`` / ``${VAR+alt}``. Values are interpolated when a field is read, so a
service the embedded stack does not run (Grafana's required credentials) does not stop the others.

Example:
    >>> project = load_compose(Path("deploy/triton/docker-compose.yml"))      # doctest: +SKIP
    >>> project.service("triton").ports                                       # doctest: +SKIP
    (PortMapping(host=8000, container=8000), ...)
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from icd.errors import ConfigError

ROUTER_KEY = "x-icd-router"
"""Top-level extension field: the nginx router the embedded stack runs on the host (not a container)."""
ROUTER_SERVICE = "router"
"""Name of the router in ``icd stack`` commands (``icd stack restart router``)."""

_VAR = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose ``.env`` file (comments and blank lines skipped, quotes removed).

    Raises:
        ConfigError: a line that is not ``KEY=VALUE``.
    """
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {raw!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(text: str, env: Mapping[str, str], where: str) -> str:
    """``text`` with every ``$VAR`` / ``${VAR...}`` replaced from ``env`` (compose rules, see module docstring).

    Raises:
        ConfigError: ``${VAR:?message}`` with VAR unset/empty, or a malformed ``${...}``.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group("dollar"):
            return "$"
        if match.group("named"):
            return env.get(match.group("named"), "")
        body = _BRACED.match(match.group("braced"))
        if body is None:
            raise ConfigError(f"{where}: invalid interpolation {match.group(0)!r}")
        name, op, arg = body.group("name"), body.group("op"), body.group("arg") or ""
        value = env.get(name)
        empty = value is None or value == ""
        if op in (":-", "-"):
            return arg if (empty if op == ":-" else value is None) else value  # type: ignore[return-value]
        if op in (":?", "?"):
            if empty if op == ":?" else value is None:
                raise ConfigError(f"{where}: {arg or f'${name} is required'}")
            return value  # type: ignore[return-value]
        if op in (":+", "+"):
            return "" if (empty if op == ":+" else value is None) else arg
        return value or ""

    return _VAR.sub(replace, text)


@dataclass(frozen=True)
class PortMapping:
    """One published port: ``host`` on 127.0.0.1 (embedded) or the host (Docker) → ``container``."""

    host: int
    container: int
    variable: str | None = None
    """The variable that sets the host port (``TRITON_HTTP_PORT`` in ``${TRITON_HTTP_PORT:-8000}:8000``)."""


@dataclass(frozen=True)
class VolumeMount:
    """A mount: ``source`` is a host path (bind mount) or a volume name (``named``); ``target`` the container path."""

    source: str
    target: str
    named: bool


@dataclass(frozen=True)
class ComposeService:
    """One service of a compose file, interpolated."""

    name: str
    image: str
    command: tuple[str, ...]
    environment: dict[str, str]
    ports: tuple[PortMapping, ...]
    volumes: tuple[VolumeMount, ...]

    def host_port(self, container: int) -> int | None:
        """The host port publishing ``container`` (None when it is not published)."""
        return next((p.host for p in self.ports if p.container == container), None)


@dataclass(frozen=True)
class RouterSection:
    """``x-icd-router``: the nginx router in front of the Triton colours (runs on the host, see docs/guide.md)."""

    port: int
    exporter_port: int
    public_model: str
    variants: dict[str, float]
    upstreams: dict[str, list[str]]
    active: str


@dataclass
class ComposeProject:
    """A compose file with the environment it is interpolated with.

    Attributes:
        file: the compose file (absolute).
        name: the project name (``-p``, ``$COMPOSE_PROJECT_NAME`` or the folder name, as docker-compose).
        env: ``.env`` values overlaid by the process environment.
        raw: the parsed YAML document.
    """

    file: Path
    name: str
    env: dict[str, str]
    raw: dict[str, Any] = field(repr=False)

    @property
    def folder(self) -> Path:
        return self.file.parent

    @property
    def service_names(self) -> list[str]:
        """Services in file order, then ``router`` when the file has an ``x-icd-router`` section."""
        names = list((self.raw.get("services") or {}).keys())
        return names + ([ROUTER_SERVICE] if ROUTER_KEY in self.raw else [])

    def _value(self, value: Any, where: str) -> Any:
        if isinstance(value, str):
            return interpolate(value, self.env, where)
        if isinstance(value, list):
            return [self._value(v, where) for v in value]
        if isinstance(value, dict):
            return {k: self._value(v, f"{where}.{k}") for k, v in value.items()}
        return value

    def image(self, name: str) -> str:
        """The service's image (interpolated), '' when it has none."""
        return str(self._value(self._raw_service(name).get("image", ""), f"{self.file}: services.{name}.image"))

    def _raw_service(self, name: str) -> dict[str, Any]:
        services = self.raw.get("services") or {}
        if name not in services:
            known = ", ".join(self.service_names) or "none"
            raise ConfigError(f"{self.file}: no service {name!r} (services: {known})")
        return services[name] or {}

    def service(self, name: str, environment: bool = True) -> ComposeService:
        """The interpolated service ``name`` (``environment=False``: leave its environment out, e.g. Grafana's
        required credentials for a service whose environment the embedded stack does not use).

        Raises:
            ConfigError: unknown service, malformed port / volume, or a required variable unset.
        """
        raw = self._raw_service(name)
        where = f"{self.file}: services.{name}"
        command = self._value(raw.get("command", []), f"{where}.command")
        if isinstance(command, str):
            command = shlex.split(command)
        environment = self._value(raw.get("environment", {}) if environment else {}, f"{where}.environment")
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        return ComposeService(
            name=name,
            image=self.image(name),
            command=tuple(str(c) for c in command),
            environment={str(k): "" if v is None else str(v) for k, v in environment.items()},
            ports=tuple(_port(self._value(p, f"{where}.ports"), f"{where}.ports", _host_variable(p))
                        for p in raw.get("ports", [])),
            volumes=tuple(self._volume(v, f"{where}.volumes") for v in self._value(raw.get("volumes", []),
                                                                                     f"{where}.volumes")),
        )

    def _volume(self, item: Any, where: str) -> VolumeMount:
        if isinstance(item, dict):
            source, target = str(item.get("source", "")), str(item.get("target", ""))
        else:
            parts = str(item).split(":")
            if len(parts) < 2:
                raise ConfigError(f"{where}: expected SOURCE:TARGET[:MODE], got {item!r}")
            source, target = parts[0], parts[1]
        if not target.startswith("/"):
            raise ConfigError(f"{where}: container path must be absolute, got {target!r}")
        named = not source.startswith((".", "/", "~"))
        if not named:
            source = str((self.folder / os.path.expanduser(source)).resolve())
        return VolumeMount(source, target, named)

    def default_router_exporter_port(self) -> int | None:
        """The exporter port ``x-icd-router`` gives with no variable set (what the static prometheus.yml scrapes)."""
        if ROUTER_KEY not in self.raw:
            return None
        raw = (self.raw[ROUTER_KEY] or {}).get("exporter_port")
        try:
            return int(interpolate(str(raw), {}, f"{self.file}: {ROUTER_KEY}.exporter_port"))
        except (TypeError, ValueError):
            return None

    def router(self) -> RouterSection | None:
        """The ``x-icd-router`` section, interpolated (None when the file has none).

        Raises:
            ConfigError: a field is missing or malformed.
        """
        if ROUTER_KEY not in self.raw:
            return None
        where = f"{self.file}: {ROUTER_KEY}"
        doc = self._value(self.raw[ROUTER_KEY] or {}, where)
        try:
            return RouterSection(
                port=int(doc["port"]),
                exporter_port=int(doc.get("exporter_port", 0)),
                public_model=str(doc["public_model"]),
                variants={str(k): float(v) for k, v in doc["variants"].items()},
                upstreams={str(k): [a.strip() for a in str(v).split("+")] for k, v in doc["upstreams"].items()},
                active=str(doc["active"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{where}: expected port, public_model, variants, upstreams, active ({exc})") from None


def _host_variable(item: Any) -> str | None:
    """The variable named in the host part of an uninterpolated short-syntax port (``${VAR:-8000}:8000``)."""
    if not isinstance(item, str):
        return None
    match = re.match(r"^(?:[^:]*:)?\$\{?([A-Za-z_][A-Za-z0-9_]*)", item)
    return match.group(1) if match else None


def _port(item: Any, where: str, variable: str | None = None) -> PortMapping:
    if isinstance(item, dict):
        host, container = item.get("published"), item.get("target")
    else:
        parts = str(item).split(":")
        if len(parts) == 1:
            host = container = parts[0]
        else:
            host, container = parts[-2], parts[-1]
    try:
        mapping = PortMapping(int(str(host)), int(str(container).split("/")[0]), variable)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected HOST:CONTAINER port numbers, got {item!r}") from None
    if not (0 < mapping.host < 65536 and 0 < mapping.container < 65536):
        raise ConfigError(f"{where}: port out of range in {item!r}")
    return mapping


def load_compose(path: Path, project_name: str | None = None, environ: Mapping[str, str] | None = None
                 ) -> ComposeProject:
    """Parse ``path`` with ``.env`` of its folder under the process environment (docker-compose's precedence).

    Raises:
        ConfigError: the file is missing, not YAML, or has no ``services``.
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise ConfigError(f"compose file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ConfigError(f"{path}: no 'services' mapping")
    env = {**read_env_file(path.parent / ".env"), **dict(os.environ if environ is None else environ)}
    name = project_name or env.get("COMPOSE_PROJECT_NAME") or path.parent.name
    return ComposeProject(path, re.sub(r"[^a-z0-9_-]", "", name.lower()) or "default", env, raw)
