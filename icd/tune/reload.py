"""Reload a model on a live Triton with an overridden configuration (repository API, explicit model control).

``POST /v2/repository/models/<m>/load`` with ``{"parameters": {"config": <JSON model config>}}`` loads the model
with that configuration without touching files. A later load *without* ``config`` keeps the override when the
files did not change (seen on Triton 2.51), so a search restores by loading the configuration it found first.
A server in model-control mode ``none`` or ``poll`` answers 503 "explicit model load / unload is not allowed".
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

LOAD_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0
_NOT_EXPLICIT = "not allowed if polling is enabled"


class ReloadNotAllowed(Exception):
    """The server's model-control mode does not allow load / unload through the API."""


class ConfigRejected(Exception):
    """Triton refused to load the model with a configuration; the message is Triton's reason."""


class ServerGone(Exception):
    """The server stopped answering while the model was being reloaded."""


def _error_text(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("error", resp.text)).strip()
    except ValueError:
        return resp.text.strip()


def get_config(client: httpx.Client, endpoint: str, model: str) -> dict[str, Any] | None:
    """The model's live configuration (JSON), or None when the model is not loaded (any other answer)."""
    resp = client.get(f"{endpoint}/v2/models/{model}/config")
    return resp.json() if resp.status_code == 200 else None


def reload_allowed(client: httpx.Client, endpoint: str, model: str) -> bool:
    """Whether the server takes repository load requests (an unchanged model's load is a no-op in explicit mode).

    Raises:
        httpx.HTTPError: the server did not answer.
    """
    resp = client.post(f"{endpoint}/v2/repository/models/{model}/load", json={}, timeout=LOAD_TIMEOUT_S)
    return not (resp.status_code == 503 and _NOT_EXPLICIT in resp.text)


def _wait_ready(client: httpx.Client, endpoint: str, model: str, ready: bool) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if (client.get(f"{endpoint}/v2/models/{model}/ready").status_code == 200) == ready:
            return
        time.sleep(0.1)
    raise ConfigRejected(f"{model} not {'ready' if ready else 'unloaded'} {READY_TIMEOUT_S:.0f} s after the request")


def _post(client: httpx.Client, url: str, body: dict[str, Any]) -> None:
    resp = client.post(url, json=body, timeout=LOAD_TIMEOUT_S)
    if resp.status_code == 503 and _NOT_EXPLICIT in resp.text:
        raise ReloadNotAllowed(_error_text(resp))
    if resp.status_code != 200:
        raise ConfigRejected(_error_text(resp).splitlines()[0][:300] if _error_text(resp) else f"HTTP {resp.status_code}")


def load_with_config(client: httpx.Client, endpoint: str, model: str, config: dict[str, Any] | None) -> None:
    """Unload ``model``, load it with ``config`` (None: from the repository files) and wait until ready.

    Unload first: an in-place reload of a torch python-backend model crashed Triton 2.51 here (glibc
    "unaligned tcache chunk detected" while the new instance loaded next to the old one).

    Raises:
        ReloadNotAllowed: the server is not in explicit model-control mode.
        ConfigRejected: Triton refused the configuration (its reason), or the model did not become ready.
        ServerGone: the server stopped answering.
    """
    body = {} if config is None else {"parameters": {"config": json.dumps(config)}}
    base = f"{endpoint}/v2/repository/models/{model}"
    try:
        if client.get(f"{endpoint}/v2/models/{model}/ready").status_code == 200:
            _post(client, f"{base}/unload", {})
            _wait_ready(client, endpoint, model, ready=False)
        _post(client, f"{base}/load", body)
        _wait_ready(client, endpoint, model, ready=True)
    except httpx.HTTPError as exc:
        raise ServerGone(f"Triton at {endpoint} stopped answering while reloading {model!r} "
                         f"({type(exc).__name__}: {exc})") from None
