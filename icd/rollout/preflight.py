"""Checks before a rollout or an A/B touches the router: every named model is READY where the router sends
traffic, and the router really routes to it. A typo or a model that failed to load is a one-line
:class:`icd.errors.UserError` naming the model, the server and what it does serve — never a verdict.

Example:
    check_ready("127.0.0.1:8000", ["bert_baseline", "bert_icd"], where="the router's active upstream (blue)")
    check_routed(router, ["bert_baseline", "bert_icd"])
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from icd.errors import UserError
from icd.rollout.router_nginx import NginxRouter

TIMEOUT_S = 5.0


def repository_index(upstream: str) -> dict[str, str]:
    """``model → "STATE (reason)"`` from Triton's repository index (``{}`` when the server has none)."""
    try:
        resp = httpx.post(f"http://{upstream}/v2/repository/index", json={}, timeout=TIMEOUT_S, trust_env=False)
    except httpx.HTTPError:
        return {}
    if resp.status_code != 200:
        return {}
    out = {}
    for entry in resp.json() if isinstance(resp.json(), list) else []:
        state = entry.get("state") or "UNKNOWN"
        reason = entry.get("reason") or ""
        out[str(entry.get("name"))] = f"{state} ({reason})" if reason else state
    return out


def check_ready(upstream: str, models: Sequence[str], where: str) -> None:
    """Raise :class:`UserError` unless every model answers ready on ``upstream`` (``host:port``)."""
    for model in models:
        url = f"http://{upstream}/v2/models/{model}/ready"
        try:
            code = httpx.get(url, timeout=TIMEOUT_S, trust_env=False).status_code
        except httpx.HTTPError as exc:
            raise UserError(f"{where} http://{upstream} is not reachable ({type(exc).__name__}): nothing was "
                            f"changed") from None
        if code == 200:
            continue
        index = repository_index(upstream)
        state = index.get(model, "not in the model repository")
        served = ", ".join(f"{k} {v}" for k, v in sorted(index.items())) or "(no repository index)"
        raise UserError(f"model {model!r} is not READY on {where} http://{upstream}: {state}; served there: {served}")


def active_upstream(router: NginxRouter) -> str:
    """``host:port`` of the first server of the router's active colour."""
    spec = router.spec
    return spec.upstreams[spec.active][0]


def check_routed(router: NginxRouter, models: Sequence[str]) -> None:
    """Raise :class:`UserError` unless a request pinned to each model goes through the router and answers ready.

    The models must be pinnable in the router's current spec (weighted above 0 or listed as pinnable).
    """
    spec = router.spec
    for model in models:
        url = f"{router.url}/v2/models/{spec.public_model}/ready"
        try:
            resp = httpx.get(url, headers={spec.sticky_header: model}, timeout=TIMEOUT_S, trust_env=False)
        except httpx.HTTPError as exc:
            raise UserError(f"router {router.url} is not reachable ({type(exc).__name__})") from None
        routed = resp.headers.get("X-ICD-Variant", "")
        if resp.status_code != 200 or routed != model:
            raise UserError(f"router {router.url} does not route to {model!r} (routed to {routed or 'nothing'!r}, "
                            f"HTTP {resp.status_code}); its variants: {sorted(spec.weights)}")
