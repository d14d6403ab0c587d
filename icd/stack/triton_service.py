"""A compose ``tritonserver`` service run as the bundled ``tritonserver`` on 127.0.0.1.

The service's ``command`` flags are kept (model control mode, ``--load-model``, ``--log-verbose``,
``--trace-config``, ...) with container paths mapped through its volumes; its ``environment`` reaches the python
backend (``TRITON_ICD_*``); its published ports become the listen ports (container 8000/8001/8002 → HTTP, gRPC,
metrics). GPU reservations, ``shm_size`` and ``ulimits`` have no meaning here and are ignored.

The guide starts the stack first and exports models afterwards: ``icd export-triton`` into a repository that a
running stack Triton serves in explicit model control loads the model there through the repository API
(:func:`load_into_running_stacks`), as the guide's order needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from icd.errors import ConfigError, UserError
from icd.serve.model_states import ModelState, model_states
from icd.serve.triton_local import ModelControlMode, TritonServer, load_model_at, stop_tritonserver_pid
from icd.stack.compose_file import ComposeService
from icd.stack.state import ServiceRecord, StackState
from icd.stack.volumes import ensure_bind_sources, host_path, translate_paths

CONTAINER_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
"""Triton's ports inside its container (its defaults), published by the compose file."""
START_TIMEOUT_S = 600.0
_OWN_FLAGS = {"model-repository", "model-control-mode", "load-model", "log-verbose", "exit-on-error",
              "http-port", "grpc-port", "metrics-port", "http-address", "grpc-address", "metrics-address",
              "strict-readiness", "allow-gpu-metrics", "exit-timeout-secs"}
"""Flags :class:`TritonServer` sets itself (from the values read here); every other flag passes through."""
_KEPT_DEFAULT_FLAGS = {"--metrics-config=summary_latencies=true"}


@dataclass
class TritonFlags:
    """What the service's ``command`` says."""

    model_repository: str = "/models"
    model_control_mode: str = ModelControlMode.NONE.value
    load_models: list[str] = field(default_factory=list)
    log_verbose: int = 0
    exit_on_error: bool = True
    extra: list[str] = field(default_factory=list)


def parse_command(command: tuple[str, ...], where: str) -> TritonFlags:
    """Triton flags of a compose ``command`` (``tritonserver --flag=value ...``).

    Raises:
        ConfigError: the command does not run ``tritonserver`` or a value is malformed.
    """
    args = list(command)
    if not args or Path(args[0]).name != "tritonserver":
        raise ConfigError(f"{where}: command must start with tritonserver, got {args[:1]}")
    flags = TritonFlags()
    i = 1
    while i < len(args):
        arg = args[i]
        name, sep, value = arg.removeprefix("--").partition("=")
        if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        i += 1
        if name not in _OWN_FLAGS:
            flags.extra.append(f"--{name}={value}" if value else f"--{name}")
            continue
        try:
            if name == "model-repository":
                flags.model_repository = value
            elif name == "model-control-mode":
                flags.model_control_mode = ModelControlMode(value).value
            elif name == "load-model":
                flags.load_models.append(value)
            elif name == "log-verbose":
                flags.log_verbose = int(value or 0)
            elif name == "exit-on-error":
                flags.exit_on_error = value.lower() in ("true", "1", "yes")
        except ValueError:
            raise ConfigError(f"{where}: --{name}={value!r} is not valid") from None
    flags.extra = [f for f in flags.extra if f not in _KEPT_DEFAULT_FLAGS]
    return flags


class TritonService:
    """One compose Triton service on this host."""

    kind = "triton"

    def __init__(self, service: ComposeService, state: StackState, compose_file: Path) -> None:
        self.service = service
        self.name = service.name
        self.state = state
        self.compose_file = compose_file
        where = f"{compose_file}: services.{service.name}"
        self.flags = parse_command(service.command, f"{where}.command")
        self.ports = {}
        for role, container in CONTAINER_PORTS.items():
            host = service.host_port(container)
            if host is None:
                raise ConfigError(f"{where}.ports: container port {container} ({role}) is not published")
            self.ports[role] = host

    def port_variables(self) -> dict[str, str | None]:
        """The variable that sets each published port (for messages)."""
        return {role: next((p.variable for p in self.service.ports if p.host == port), None)
                for role, port in self.ports.items()}

    def _named(self, name: str) -> Path:
        return self.state.volume_dir(name)

    @property
    def model_repository(self) -> Path:
        return Path(host_path(self.flags.model_repository, self.service.volumes, self._named))

    def server(self) -> TritonServer:
        """The :class:`TritonServer` this service runs (not started)."""
        env = {k: translate_paths(v, self.service.volumes, self._named) for k, v in self.service.environment.items()}
        extra = [translate_paths(arg, self.service.volumes, self._named) for arg in self.flags.extra]
        return TritonServer(
            self.model_repository, self.ports["http"], self.ports["grpc"], self.ports["metrics"],
            log_file=self.state.log_file(self.service.name), log_verbose=self.flags.log_verbose,
            extra_args=extra, env=env, model_control_mode=self.flags.model_control_mode,
            load_models=self.flags.load_models or ("*",), exit_on_error=self.flags.exit_on_error,
            die_with_parent=False, workdir=self.state.work_dir(self.service.name),
        )

    def prepare(self) -> None:
        """Create what Docker would create: bind-mount folders (the model repository, the trace folder)."""
        ensure_bind_sources(self.service.volumes, self._named)
        for arg in self.flags.extra:
            if arg.startswith("--trace-config=") and "file=" in arg:
                trace = translate_paths(arg.split("file=", 1)[1], self.service.volumes, self._named)
                from icd.serve.trace_file import prepare_trace_file

                prepare_trace_file(Path(trace))

    def start(self) -> ServiceRecord:
        """Start the server (and its repository watcher); return its record once ``/v2/health/ready`` answers.

        Raises:
            UserError: the server exited or was not ready in time (with the end of its log).
        """
        self.prepare()
        log_file = self.state.log_file(self.service.name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        offset = log_file.stat().st_size if log_file.is_file() else 0
        server = self.server()
        server.start(timeout_s=START_TIMEOUT_S)
        return ServiceRecord(
            service=self.service.name, kind=self.kind, project=self.state.project,
            compose_file=str(self.compose_file), pids=[server.pid or 0], ports=dict(self.ports),
            log_file=str(server.log_file), started=time.time(), log_offset=offset,
            urls={"http": server.http_url, "grpc": server.grpc_url, "metrics": server.metrics_url,
                  "repository": str(self.model_repository.resolve()),
                  "model_control_mode": self.flags.model_control_mode},
        )


def stop(record: ServiceRecord) -> bool:
    """Stop the recorded server by PID (and its python backend stubs); returns whether it was running."""
    return stop_tritonserver_pid(record.pids[0]) if record.pids else False


def states(record: ServiceRecord) -> list[ModelState]:
    """Every model of the service's repository with its state and Triton's reason."""
    return model_states(record.urls["http"], Path(record.urls["repository"]), record.log_text())


def load_into_running_stacks(repository: Path, model: str, state_dir: Path | None = None) -> tuple[list[str], bool]:
    """Load ``model`` into every running stack Triton that serves ``repository`` in explicit model control.

    Returns:
        (one line per server: loaded with its state, or Triton's reason), whether every load succeeded.
    """
    from icd.monitor.paths import state_dir as default_state_dir
    from icd.serve.model_states import model_states
    from icd.stack.state import STACK_SUBDIR, StackState

    root = (state_dir or default_state_dir()) / STACK_SUBDIR
    target = str(Path(repository).resolve())
    lines, ok = [], True
    for project in sorted(p.name for p in root.iterdir()) if root.is_dir() else []:
        for record in StackState(root.parent, project).records():
            if record.kind != "triton" or record.urls.get("repository") != target or not record.alive():
                continue
            where = f"{record.service} ({record.urls['http']})"
            if record.urls.get("model_control_mode") != ModelControlMode.EXPLICIT.value:
                lines.append(f"  {where}: serves this repository without explicit model control; restart it "
                             f"(`icd stack restart {record.service}`) to load {model}")
                continue
            try:
                load_model_at(record.urls["http"], model)
            except UserError as exc:
                ok = False
                reasons = [s for s in model_states(record.urls["http"], None, record.log_text()) if s.name == model]
                reason = reasons[0].reason if reasons and reasons[0].reason else str(exc)
                lines.append(f"  {where}: {model} NOT loaded: {reason}")
                continue
            lines.append(f"  {where}: {model} loaded (READY)")
    return lines, ok
