"""The one client of Prometheus' HTTP API in icd (``/api/v1/query``, ``query_range``, ``alerts``, ``rules``).

Used by ``icd status`` / the monitoring tests and by the rollout analysis (:mod:`icd.rollout.providers`). Failures
are typed: :class:`PrometheusUnavailable` (not reachable, or the answer is not Prometheus' JSON — e.g. a URL that
points at another server, or JSON of another shape than the endpoint's documented one) and
:class:`PrometheusQueryError` (Prometheus rejected the query).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeVar

import httpx

from icd.errors import UserError


class PrometheusQueryError(ValueError):
    """Prometheus rejected a query (bad PromQL, ...): carries its ``errorType`` and ``error``."""


class PrometheusUnavailable(UserError):
    """Prometheus did not answer, or answered with something that is not its API's JSON."""


_T = TypeVar("_T")


class AlertState(str, Enum):
    """State of an alert as Prometheus reports it."""

    PENDING = "pending"
    """The condition holds but not yet for the rule's ``for:`` duration."""
    FIRING = "firing"
    """The condition held for ``for:``; sent to Alertmanager."""


@dataclass(frozen=True)
class Sample:
    """One series of an instant-query result."""

    labels: dict[str, str]
    value: float

    @property
    def is_number(self) -> bool:
        """False for NaN / ±Inf (e.g. a ratio of two zero rates)."""
        return math.isfinite(self.value)


@dataclass(frozen=True)
class Series:
    """One series of a range-query result."""

    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Alert:
    """An active alert (pending or firing)."""

    name: str
    state: AlertState
    labels: dict[str, str]
    value: float


class PrometheusClient:
    """Queries one Prometheus server.

    Args:
        url: base URL, e.g. ``http://127.0.0.1:9090``.
        timeout_s: per-request timeout.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout_s, trust_env=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PrometheusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str, params: dict[str, str] | None = None) -> dict:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusUnavailable(f"Prometheus not reachable at {self.url}: {type(exc).__name__}: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type").split(";")[0]
            raise PrometheusUnavailable(
                f"{self.url}{path}: not a Prometheus API answer (HTTP {response.status_code}, {kind}, "
                f"{response.text[:60]!r}); is this URL the Prometheus server?") from None
        if not isinstance(body, dict) or "status" not in body:
            raise PrometheusUnavailable(f"{self.url}{path}: JSON without Prometheus' status field "
                                        f"(HTTP {response.status_code}); is this URL the Prometheus server?")
        if body.get("status") != "success":
            raise PrometheusQueryError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
        if "data" not in body:
            raise PrometheusUnavailable(f"{self.url}{path}: success without data (HTTP {response.status_code})")
        return body["data"]

    def _read(self, path: str, params: dict[str, str] | None, parse: Callable[[dict], _T]) -> _T:
        """``parse`` the data of ``path``; data of another shape than Prometheus' is :class:`PrometheusUnavailable`."""
        return self._read_data(path, self._get(path, params), parse)

    def _read_data(self, path: str, data: dict, parse: Callable[[dict], _T]) -> _T:
        try:
            return parse(data)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise PrometheusUnavailable(
                f"{self.url}{path}: the answer is not shaped as Prometheus' API documents it "
                f"({type(exc).__name__}: {exc}); is this URL the Prometheus server?") from None

    def ready(self) -> bool:
        """Whether ``/-/ready`` answers 200."""
        try:
            return self._http.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, expr: str) -> list[Sample]:
        """Instant query; a scalar result becomes one sample without labels.

        Raises:
            PrometheusQueryError: the expression does not parse or cannot be evaluated.
            UserError: Prometheus is not reachable.
        """
        data = self._get("/api/v1/query", {"query": expr})
        kind = self._read_data("/api/v1/query", data, lambda d: d["resultType"])
        if kind not in ("scalar", "vector"):
            raise PrometheusQueryError(f"expected an instant vector from {expr!r}, got {kind}")
        if kind == "scalar":
            return self._read_data("/api/v1/query", data, lambda d: [Sample({}, float(d["result"][1]))])
        return self._read_data("/api/v1/query", data, lambda d: [
            Sample(dict(item["metric"]), float(item["value"][1])) for item in d["result"]])

    def query_range(self, expr: str, start: float, end: float, step_s: float) -> list[Series]:
        """Range query between unix times ``start`` and ``end``."""
        return self._read(
            "/api/v1/query_range", {"query": expr, "start": str(start), "end": str(end), "step": str(step_s)},
            lambda data: [Series(dict(item["metric"]), [(float(t), float(v)) for t, v in item["values"]])
                          for item in data["result"]])

    def alerts(self) -> list[Alert]:
        """Active alerts (pending and firing)."""
        return self._read("/api/v1/alerts", None, lambda data: [
            Alert(a["labels"]["alertname"], AlertState(a["state"]), dict(a["labels"]), float(a.get("value", "nan")))
            for a in data["alerts"]])

    def recording_rule_names(self) -> set[str]:
        """Names of the recording rules this Prometheus evaluates."""
        return self._read("/api/v1/rules", {"type": "record"},
                          lambda data: {rule["name"] for group in data["groups"] for rule in group["rules"]})

    def target_health(self) -> dict[str, str]:
        """``job/instance`` → health ("up", "down", "unknown") of every active scrape target."""
        return self._read("/api/v1/targets", {"state": "active"}, lambda data: {
            f"{t['labels'].get('job')}/{t['labels'].get('instance')}": t["health"] for t in data["activeTargets"]})
