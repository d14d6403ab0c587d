"""Webhooks of the rollout loop (Flagger's ``webhook.go``): where checks and traffic plug in.

A hook is called at its point of the loop (``pre-rollout``, ``rollout``, ``confirm-promotion``,
``post-rollout``) and passes or fails:

* a URL hook is POSTed ``{"name", "strategy", "phase", "primary", "canary", "metadata"}``; a 2xx answer passes; any
  other status, a refused connection or no answer within ``timeout_s`` fails — with the reason in the decision;
* ``validate`` runs ``validate_deployment.py``'s checks (health, readiness, metadata, golden outputs, latency SLO)
  on the canary where it is served; settings in ``metadata`` (``test_duration``, ``golden``, ``model_repository``,
  ``slo_p95_ms``, ``max_error_rate``);
* ``ready`` checks the canary model answers ready on its upstream;
* ``load-test`` generates traffic through the router while the rollout runs (Flagger's load tester): ``rate``
  (req/s), ``concurrency``, ``inputs`` (``text`` or ``synthetic``), ``seq_len``. It always passes; its
  requests are counted in the decision so the output says where the judged traffic came from.

Example:
    hooks = HookRunner(spec, HookContext(router_url="http://127.0.0.1:8080", upstream="127.0.0.1:8000"))
    results = hooks.run(HookType.PRE_ROLLOUT, RolloutPhase.INITIALIZED)
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from icd.rollout.canary_spec import BuiltinHook, CanarySpec, HookType, Strategy, Webhook
from icd.rollout.phase import RolloutPhase

DEFAULT_LOAD_RATE = 20.0
DEFAULT_LOAD_CONCURRENCY = 8


@dataclass(frozen=True)
class HookResult:
    """One webhook call."""

    name: str
    type: str
    ok: bool
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HookContext:
    """Where the rollout's traffic and models are."""

    router_url: str
    """The router clients call (``http://127.0.0.1:8080``)."""
    upstream: str
    """``host:port`` of the Triton serving the canary (blue-green: the canary colour's)."""
    public_model: str = "bert"


class HookRunner:
    """Runs a spec's webhooks; owns the load-test traffic it starts (stop it with :meth:`stop`)."""

    def __init__(self, spec: CanarySpec, context: HookContext) -> None:
        self.spec = spec
        self.context = context
        self._load = None

    @property
    def canary_model(self) -> str:
        return self.spec.model if self.spec.strategy is Strategy.BLUEGREEN else self.spec.canary

    def run(self, hook_type: HookType, phase: RolloutPhase) -> list[HookResult]:
        """Call every hook of ``hook_type`` (in spec order); one result each."""
        return [self._call(hook, phase) for hook in self.spec.webhooks if hook.type is hook_type]

    def _call(self, hook: Webhook, phase: RolloutPhase) -> HookResult:
        t0 = time.monotonic()
        if hook.builtin is BuiltinHook.VALIDATE:
            ok, detail = self._validate(hook)
        elif hook.builtin is BuiltinHook.READY:
            ok, detail = self._ready(hook)
        elif hook.builtin is BuiltinHook.LOAD_TEST:
            ok, detail = self._load_test(hook)
        else:
            ok, detail = self._post(hook, phase)
        return HookResult(hook.name, hook.type.value, ok, detail, time.monotonic() - t0)

    def _post(self, hook: Webhook, phase: RolloutPhase) -> tuple[bool, str]:
        payload = {"name": self.spec.canary, "strategy": self.spec.strategy.value, "phase": phase.value,
                   "primary": self.spec.primary, "canary": self.spec.canary, "metadata": hook.metadata}
        try:
            resp = httpx.post(hook.url, json=payload, timeout=hook.timeout_s, trust_env=False)
        except httpx.TimeoutException:
            return False, f"{hook.url}: no answer within {hook.timeout_s:g}s (a timeout is not a pass)"
        except httpx.HTTPError as exc:
            return False, f"{hook.url}: {type(exc).__name__}: {exc}"
        if not 200 <= resp.status_code < 300:
            return False, f"{hook.url}: HTTP {resp.status_code} {resp.text[:160]!r}"
        return True, f"{hook.url}: HTTP {resp.status_code}"

    def _ready(self, hook: Webhook) -> tuple[bool, str]:
        url = f"http://{self.context.upstream}/v2/models/{self.canary_model}/ready"
        try:
            code = httpx.get(url, timeout=hook.timeout_s, trust_env=False).status_code
        except httpx.HTTPError as exc:
            return False, f"{self.context.upstream} not reachable: {type(exc).__name__}"
        return code == 200, f"GET {url} -> {code}"

    def _validate(self, hook: Webhook) -> tuple[bool, str]:
        from icd.load.timespan import parse_timespan
        from icd.rollout.validation import ValidationSpec, validate_deployment

        meta = hook.metadata
        spec = ValidationSpec(
            f"http://{self.context.upstream}", self.canary_model,
            test_duration_s=parse_timespan(meta.get("test_duration", "10")),
            slo_p95_ms=float(meta.get("slo_p95_ms", 250.0)), max_error_rate=float(meta.get("max_error_rate", 0.0)),
            golden_file=Path(meta["golden"]) if meta.get("golden") else None,
            model_repository=Path(meta["model_repository"]) if meta.get("model_repository") else None)
        report = validate_deployment(spec)
        summary = "; ".join(f"{'PASS' if c.passed else 'FAIL'} {c.name}: {c.detail}" for c in report.checks)
        return report.passed, summary

    def _load_test(self, hook: Webhook) -> tuple[bool, str]:
        from icd.load.routed import BackgroundRouted, RoutedSpec
        from icd.rollout.payloads import payloads_for

        meta = hook.metadata
        if self._load is None:
            payloads = payloads_for(meta.get("inputs", "text"), 32, int(meta.get("seq_len", 64)))
            rate = float(meta.get("rate", DEFAULT_LOAD_RATE))
            self._load = BackgroundRouted(RoutedSpec(
                f"{self.context.router_url}/v2/models/{self.context.public_model}/infer",
                lambda i: payloads[i % len(payloads)],
                concurrency=int(meta.get("concurrency", DEFAULT_LOAD_CONCURRENCY)),
                duration_s=float("inf"), rate=rate)).start()
            return True, f"started {rate:g} req/s through {self.context.router_url}"
        return True, f"{self.load_rate_text()} through {self.context.router_url}"

    def load_rate_text(self) -> str:
        if self._load is None:
            return "no load test"
        return f"load test running ({self._load.spec.rate:g} req/s)"

    def stop(self) -> list[Any]:
        """Stop the load test's traffic (if any); returns its records."""
        if self._load is None:
            return []
        records, self._load = self._load.stop(), None
        return records
