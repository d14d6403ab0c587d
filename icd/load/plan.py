"""Turn settings + a checked target into worker plans (payloads built once, load split across workers)."""

from __future__ import annotations

from icd.load.engine import ModelPlan, WorkerPlan
from icd.load.inputs import check_shapes, http_request_bytes, infer_body, named_arrays, token_batches
from icd.load.settings import LoadSettings, Protocol
from icd.load.target import ModelInfo, Target


def _split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def build_worker_plans(settings: LoadSettings, target: Target, infos: dict[str, ModelInfo]) -> list[WorkerPlan]:
    """One plan per worker (at least one: ``workers=0`` runs a single in-process engine)."""
    for info in infos.values():
        check_shapes(info, settings)
    batches = token_batches(settings)
    host, port = target.host_port(settings.protocol)
    payloads: dict[str, list[object]] = {}
    for name in target.models:
        arrays = [named_arrays(infos[name], b) for b in batches]
        if settings.protocol == Protocol.HTTP:
            payloads[name] = [http_request_bytes(host, port, name, infer_body(a)) for a in arrays]
        else:
            payloads[name] = list(arrays)
    n = max(1, settings.workers)
    if settings.rate is None:
        n = min(n, settings.concurrency)  # no idle workers in a closed loop
    grpc_address = target.grpc_address() if settings.protocol == Protocol.GRPC else ""
    plans = []
    for w in range(n):
        models = [
            ModelPlan(name, i, settings.protocol, host, port, grpc_address, payloads[name],
                      _split(settings.concurrency, n, w))
            for i, name in enumerate(target.models)
        ]
        plans.append(WorkerPlan(
            worker=w, n_workers=n, models=models, mode=settings.mode, arrival=settings.arrival,
            warmup_s=settings.warmup_s, duration_s=settings.duration_s, timeout_s=settings.timeout_s,
            late_s=settings.late_ms / 1000.0, max_connections=max(1, settings.max_connections // n), seed=settings.seed,
        ))
    return plans
