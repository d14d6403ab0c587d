"""Reload a model on a live Triton with an overridden configuration (repository API, explicit model control).

``POST /v2/repository/models/<m>/load`` with ``{"parameters": {"config": <JSON model config>}}`` loads the model
with that configuration without touching files. A later load *without* ``config`` keeps the override when the
files did not change (seen on Triton 2.51), so a sweep restores by loading the configuration it found first.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx

from icd.errors import UserError

LOAD_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class BatchingConfig:
    """One point of the sweep."""

    instance_count: int
    max_batch_size: int
    queue_delay_us: int

    @property
    def config_id(self) -> str:
        return f"inst{self.instance_count}_mbs{self.max_batch_size}_delay{self.queue_delay_us}us"


def get_config(client: httpx.Client, endpoint: str, model: str) -> dict[str, Any]:
    """The model's live configuration (JSON).

    Raises:
        UserError: unreachable / unknown model.
    """
    try:
        resp = client.get(f"{endpoint}/v2/models/{model}/config")
    except httpx.HTTPError as exc:
        raise UserError(f"--endpoint {endpoint}: cannot reach Triton ({exc})") from None
    if resp.status_code != 200:
        raise UserError(f"--model {model}: Triton at {endpoint} answered {resp.status_code}: {resp.text[:200]}")
    return resp.json()


def apply_batching(base: dict[str, Any], point: BatchingConfig) -> dict[str, Any]:
    """``base`` with instance count, max batch size and dynamic-batching delay replaced (kind etc. kept)."""
    cfg = copy.deepcopy(base)
    groups = cfg.get("instance_group") or [{"kind": "KIND_CPU"}]
    first = {k: v for k, v in groups[0].items() if k in {"kind", "gpus", "name"}}
    first["count"] = point.instance_count
    cfg["instance_group"] = [first]
    cfg["max_batch_size"] = point.max_batch_size
    batching = dict(cfg.get("dynamic_batching") or {})
    batching["max_queue_delay_microseconds"] = point.queue_delay_us
    preferred = [int(s) for s in batching.get("preferred_batch_size", []) if int(s) <= point.max_batch_size]
    batching["preferred_batch_size"] = preferred
    cfg["dynamic_batching"] = batching
    return cfg


def _wait_ready(client: httpx.Client, endpoint: str, model: str, ready: bool = True) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if (client.get(f"{endpoint}/v2/models/{model}/ready").status_code == 200) == ready:
            return
        time.sleep(0.1)
    raise UserError(f"{model} not {'ready' if ready else 'unloaded'} {READY_TIMEOUT_S:.0f} s after the request")


def _post(client: httpx.Client, url: str, body: dict[str, Any], model: str) -> None:
    resp = client.post(url, json=body, timeout=LOAD_TIMEOUT_S)
    if resp.status_code != 200:
        raise UserError(f"Triton refused to reload {model!r} ({resp.text.strip()[:200]}); the sweep needs a server "
                        "started with --model-control-mode explicit")


def load_with_config(client: httpx.Client, endpoint: str, model: str, config: dict[str, Any] | None) -> None:
    """Unload ``model``, load it with ``config`` (None: from the repository files) and wait until ready.

    Unload first: an in-place reload of a torch python-backend model crashed Triton 2.51 here (glibc
    "unaligned tcache chunk detected" while the new instance loaded next to the old one).

    Raises:
        UserError: Triton refused (e.g. not started with ``--model-control-mode explicit``) or went away.
    """
    body = {} if config is None else {"parameters": {"config": json.dumps(config)}}
    base = f"{endpoint}/v2/repository/models/{model}"
    try:
        _post(client, f"{base}/unload", {}, model)
        _wait_ready(client, endpoint, model, ready=False)
        _post(client, f"{base}/load", body, model)
        _wait_ready(client, endpoint, model)
    except httpx.HTTPError as exc:
        raise UserError(f"Triton at {endpoint} stopped answering while reloading {model!r} ({exc}); "
                        "check its log (did the server exit?)") from None
