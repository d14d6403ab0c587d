"""The Triton server a search measures on: one interface, a *remote* and a *local* implementation.

As Model Analyzer's launch modes: **remote** uses the server at ``--endpoint`` (the stack's, ``icd serve
--explicit``, or a cluster's); it must be in explicit model-control mode, and it is never restarted: if it dies
the search stops cleanly. **local** starts a private ``tritonserver`` from ``--model-repository`` on free
loopback ports (explicit mode, nothing loaded until the first candidate), restarts it when it dies, and stops it
at the end. **auto** (the default) takes the remote server when it can reload the model, else a local one when
the repository holds the model, and says which it took.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import httpx

from icd.errors import UserError
from icd.tune import model_config
from icd.tune.reload import ConfigRejected, ServerGone, get_config, load_with_config

PROBE_MODEL = "__icd_tune_probe__"
"""A name no repository holds: unloading it is a no-op in explicit mode and refused in the others."""
_NOT_EXPLICIT = "not allowed if polling is enabled"
LOCAL_START_TIMEOUT_S = 180.0


class LaunchMode(str, Enum):
    """Where the measured Triton comes from."""

    AUTO = "auto"
    """Remote when the endpoint's server can reload the model, else local from the model repository."""
    REMOTE = "remote"
    """The server at the endpoint (explicit model control); never restarted."""
    LOCAL = "local"
    """A private server started from the model repository on free ports; restarted if it dies."""


class TuneServer(Protocol):
    """What the search needs from a server."""

    launch_mode: LaunchMode
    endpoint: str
    restartable: bool

    def base_config(self) -> Any:
        """The configuration the model has before the search (a ``ModelConfig`` message)."""

    def apply(self, config: dict[str, Any] | None) -> None:
        """Reload the model with ``config`` (JSON); raises ConfigRejected / ServerGone / ReloadNotAllowed."""

    def alive(self) -> bool:
        """Whether the server answers ``/v2/health/live``."""

    def restart(self) -> None:
        """Start the server again after it died (local only)."""

    def close(self, restore: Any | None) -> None:
        """End the search: reload ``restore`` (remote) or stop the server (local)."""


def _client() -> httpx.Client:
    return httpx.Client(timeout=30.0, trust_env=False)


def _live(endpoint: str) -> bool:
    try:
        with _client() as client:
            return client.get(f"{endpoint}/v2/health/live").status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class RemoteServer:
    """The server at ``endpoint`` (see module docstring)."""

    endpoint: str
    model: str
    launch_mode: LaunchMode = LaunchMode.REMOTE
    restartable: bool = False

    def base_config(self) -> Any:
        with _client() as client:
            doc = get_config(client, self.endpoint, self.model)
            if doc is None:  # in the repository but not loaded: load it as its files say
                try:
                    load_with_config(client, self.endpoint, self.model, None)
                except (ConfigRejected, ServerGone) as exc:
                    raise UserError(f"--model {self.model}: Triton at {self.endpoint} cannot load it ({exc})") from None
                doc = get_config(client, self.endpoint, self.model)
        if doc is None:
            raise UserError(f"--model {self.model}: not loaded on Triton at {self.endpoint}")
        return model_config.from_json(doc, f"{self.endpoint}/v2/models/{self.model}/config")

    def apply(self, config: dict[str, Any] | None) -> None:
        with _client() as client:
            load_with_config(client, self.endpoint, self.model, config)

    def alive(self) -> bool:
        return _live(self.endpoint)

    def restart(self) -> None:
        raise ServerGone(f"Triton at {self.endpoint} is not icd tune's to restart")

    def close(self, restore: Any | None) -> None:
        if restore is not None and self.alive():
            self.apply(model_config.to_json(restore))


class LocalServer:
    """A private ``tritonserver`` serving ``repository`` (see module docstring)."""

    launch_mode = LaunchMode.LOCAL
    restartable = True

    def __init__(self, repository: Path, model: str, log_file: Path | None = None) -> None:
        from icd.io.ports import free_port
        from icd.serve.triton_local import ModelControlMode, TritonServer

        self.repository = Path(repository)
        self.model = model
        self.server = TritonServer(self.repository, free_port(), free_port(), free_port(), log_file=log_file,
                                   model_control_mode=ModelControlMode.EXPLICIT, load_models=())
        self.server.start(timeout_s=LOCAL_START_TIMEOUT_S)

    @property
    def endpoint(self) -> str:
        return self.server.http_url

    def base_config(self) -> Any:
        return model_config.from_pbtxt(self.repository / self.model / "config.pbtxt")

    def apply(self, config: dict[str, Any] | None) -> None:
        with _client() as client:
            load_with_config(client, self.endpoint, self.model, config)

    def alive(self) -> bool:
        return self.server.running and _live(self.endpoint)

    def restart(self) -> None:
        self.server.stop()
        self.server.start(timeout_s=LOCAL_START_TIMEOUT_S)

    def close(self, restore: Any | None) -> None:
        self.server.stop()


def _remote_state(endpoint: str) -> str:
    """``ok``, ``unreachable`` or ``not_explicit``."""
    try:
        with _client() as client:
            if client.get(f"{endpoint}/v2/health/live").status_code != 200:
                return "unreachable"
            resp = client.post(f"{endpoint}/v2/repository/models/{PROBE_MODEL}/unload", json={})
    except httpx.HTTPError:
        return "unreachable"
    return "not_explicit" if resp.status_code == 503 and _NOT_EXPLICIT in resp.text else "ok"


def _repository_has(repository: Path | None, model: str) -> bool:
    return repository is not None and (Path(repository) / model / "config.pbtxt").is_file()


def open_server(mode: LaunchMode, endpoint: str, repository: Path | None, model: str,
                log_file: Path | None = None) -> tuple[TuneServer, str]:
    """The server to measure on, and a note saying which one and why.

    Raises:
        UserError: remote asked for but unusable, or no usable server at all — one line naming the command to run.
    """
    local_hint = f"--launch-mode local --model-repository {repository or 'MODEL_REPOSITORY'}"
    if mode != LaunchMode.LOCAL:
        state = _remote_state(endpoint)
        if state == "ok":
            return RemoteServer(endpoint, model), f"measuring on the Triton at {endpoint} (remote, explicit model control)"
        why = (f"no Triton answers at {endpoint}" if state == "unreachable" else
               f"the Triton at {endpoint} cannot reload models (model-control mode is not explicit)")
        if mode == LaunchMode.REMOTE or not _repository_has(repository, model):
            fix = (f"run the same command with {local_hint} (a private server), or serve with explicit model "
                   f"control: icd serve --model-repository {repository or 'MODEL_REPOSITORY'} --explicit")
            if mode == LaunchMode.AUTO and repository is not None:
                why += f", and {repository}/{model}/config.pbtxt does not exist"
            raise UserError(f"{why}: {fix}")
        note = f"{why}: measuring on a private Triton started from {repository} (local launch mode)"
    else:
        if not _repository_has(repository, model):
            raise UserError(f"--model-repository {repository}: no {model}/config.pbtxt in it")
        note = f"measuring on a private Triton started from {repository} (local launch mode)"
    assert repository is not None
    return LocalServer(Path(repository), model, log_file), note
