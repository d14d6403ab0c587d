"""The server under load: endpoint parsing, the pre-run check (live, model ready) and model metadata.

Everything that can be found wrong before the run is reported before it starts, as a one-line
:class:`icd.errors.UserError` naming the endpoint or model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from icd.errors import UserError
from icd.load.settings import Protocol

PREFLIGHT_TIMEOUT_S = 5.0
_DEFAULT_PORT = {Protocol.HTTP: 8000, Protocol.GRPC: 8001}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output as the server's metadata declares it."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelInfo:
    """A model's declared inputs/outputs (``GET /v2/models/{name}``) and its ``max_batch_size`` if known."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int | None = None


@dataclass(frozen=True)
class Target:
    """Where load goes: a KServe-v2 endpoint (HTTP ``http://host:port`` or gRPC ``host:port``) and model names.

    Example:
        >>> Target("http://127.0.0.1:18000", ("bert_icd",)).host_port(Protocol.HTTP)
        ('127.0.0.1', 18000)
    """

    endpoint: str
    models: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise UserError(f"endpoint {self.endpoint}: no model name given")
        for name in self.models:
            if not name or "/" in name:
                raise UserError(f"model name {name!r}: must be a non-empty name without '/'")

    def host_port(self, protocol: Protocol) -> tuple[str, int]:
        raw = self.endpoint if "://" in self.endpoint else f"{protocol.value}://{self.endpoint}"
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "grpc") or not parts.hostname:
            raise UserError(f"endpoint {self.endpoint!r}: expected http://HOST:PORT or HOST:PORT (grpc://HOST:PORT)")
        if parts.path not in ("", "/"):
            raise UserError(f"endpoint {self.endpoint!r}: give the server root, without a path")
        try:
            port = parts.port or _DEFAULT_PORT[protocol]
        except ValueError as exc:
            raise UserError(f"endpoint {self.endpoint!r}: bad port ({exc})") from None
        return parts.hostname, port

    def http_base(self) -> str:
        host, port = self.host_port(Protocol.HTTP)
        return f"http://{host}:{port}"

    def grpc_address(self) -> str:
        host, port = self.host_port(Protocol.GRPC)
        return f"{host}:{port}"


def check_target(target: Target, protocol: Protocol) -> dict[str, ModelInfo]:
    """Check the server is live and every model ready; return each model's metadata.

    Raises:
        UserError: endpoint unreachable, not live, a model missing / not ready, or metadata unusable.
    """
    if protocol == Protocol.GRPC:
        return _check_grpc(target)
    return _check_http(target)


def _check_http(target: Target) -> dict[str, ModelInfo]:
    import httpx

    base = target.http_base()
    infos: dict[str, ModelInfo] = {}
    with httpx.Client(base_url=base, timeout=PREFLIGHT_TIMEOUT_S) as client:
        try:
            live = client.get("/v2/health/live")
        except httpx.HTTPError as exc:
            raise UserError(f"endpoint {base}: unreachable ({type(exc).__name__}: {exc})") from None
        if live.status_code != 200:
            raise UserError(f"endpoint {base}: not a live KServe-v2 server (GET /v2/health/live → {live.status_code})")
        for name in target.models:
            try:
                ready = client.get(f"/v2/models/{name}/ready")
                meta = client.get(f"/v2/models/{name}")
                config = client.get(f"/v2/models/{name}/config")
            except httpx.HTTPError as exc:
                raise UserError(f"endpoint {base}: failed while checking model {name!r} ({exc})") from None
            if ready.status_code != 200:
                raise UserError(f"model {name!r} at {base}: not ready (HTTP {ready.status_code} {ready.text[:160]})")
            if meta.status_code != 200:
                raise UserError(f"model {name!r} at {base}: no metadata (HTTP {meta.status_code})")
            max_batch = config.json().get("max_batch_size") if config.status_code == 200 else None
            infos[name] = _model_info(name, meta.json(), max_batch, base)
    return infos


def _check_grpc(target: Target) -> dict[str, ModelInfo]:
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    address = target.grpc_address()
    infos: dict[str, ModelInfo] = {}
    client = grpcclient.InferenceServerClient(address)
    try:
        try:
            live = client.is_server_live(client_timeout=PREFLIGHT_TIMEOUT_S)
        except InferenceServerException as exc:
            raise UserError(f"endpoint grpc://{address}: unreachable ({exc.message()})") from None
        if not live:
            raise UserError(f"endpoint grpc://{address}: server is not live")
        for name in target.models:
            try:
                ready = client.is_model_ready(name, client_timeout=PREFLIGHT_TIMEOUT_S)
                meta = client.get_model_metadata(name, as_json=True, client_timeout=PREFLIGHT_TIMEOUT_S) if ready else None
                config = client.get_model_config(name, as_json=True, client_timeout=PREFLIGHT_TIMEOUT_S) if ready else None
            except InferenceServerException as exc:
                raise UserError(f"model {name!r} at grpc://{address}: {exc.message()}") from None
            if not ready or meta is None:
                raise UserError(f"model {name!r} at grpc://{address}: not ready")
            max_batch = (config or {}).get("config", {}).get("max_batch_size")
            infos[name] = _model_info(name, meta, int(max_batch) if max_batch is not None else None, f"grpc://{address}")
    finally:
        client.close()
    return infos


def _specs(items: list[dict]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(str(t["name"]), str(t["datatype"]), tuple(int(d) for d in t.get("shape", []))) for t in items)


def _model_info(name: str, meta: dict, max_batch: int | None, where: str) -> ModelInfo:
    inputs = _specs(meta.get("inputs", []))
    if not inputs:
        raise UserError(f"model {name!r} at {where}: metadata declares no inputs")
    return ModelInfo(name, inputs, _specs(meta.get("outputs", [])), max_batch)
