"""Bench: shadow traffic for ``--duration`` at ``--rate`` req/s — no candidate answer reaches a client, no client
request fails, and the comparator judges the mirrored share.

Clients send open-loop traffic (Poisson) through the real nginx router to the primary on the real embedded Triton
(*synthetic* echo_delay models); the router mirrors ``--share`` of the inference requests to icd's shadow
comparator, which asks the primary and the candidate (a slower echo_delay model) and compares their answers.
Every client response is checked: ``X-ICD-Variant`` and the response's ``model_name`` must be the primary's.

Target: 10 minutes at 100 req/s with 0 candidate answers returned and 0 failed client requests (the short CI
version is tests/rollout/test_shadow_e2e.py).

Run: ``.venv/bin/python bench/shadow.py [--duration 600] [--rate 100] [--share 0.5]``
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_common import BusyLoops, echo_triton, exit_on_sigterm, finish, provenance, router  # noqa: E402

from concurrent.futures import ProcessPoolExecutor  # noqa: E402

from icd.load.routed import RoutedSpec, run_routed  # noqa: E402
from icd.rollout.payloads import synthetic_payloads  # noqa: E402
from icd.rollout.router_nginx import Routes  # noqa: E402
from icd.rollout.router_ops import ManagedRouter  # noqa: E402
from icd.rollout.shadow import SHADOW_LOG, ShadowLogReader  # noqa: E402


def _client(url: str, rate: float, seconds: float, seed: int) -> dict:
    """One client process: open-loop traffic, every answer checked (never the candidate's)."""
    payloads = synthetic_payloads(256, seq_len=16, seed=seed)
    records = run_routed(RoutedSpec(url, lambda i: payloads[i % 256], concurrency=64, duration_s=seconds, rate=rate,
                                    keep_bodies=True, seed=seed))
    return {"requests": len(records), "failed": sum(not x.ok for x in records),
            "from_candidate": sum(x.variant != "primary" or (x.body or {}).get("model_name") != "primary"
                                  for x in records if x.ok),
            "latency_ms": [x.latency_ms for x in records if x.ok], "request_ids": [x.request_id for x in records],
            "max_lag_ms": max((x.lag_ms for x in records), default=0.0)}


def _comparator_summary(shadow: list, compared: list, requests: int, client_ids: set[str]) -> dict:
    out = {"outcomes": dict(Counter(s.outcome for s in shadow)),
           "mirrored_share": len(shadow) / requests if requests else None,
           "compared_from_client_requests": sum(s.rid in client_ids for s in compared)}
    if compared:
        out.update(cosine_mean=float(np.mean([s.cosine for s in compared])),
                   argmax_agreement=float(np.mean([bool(s.argmax_agree) for s in compared])),
                   candidate_p95_ms=float(np.percentile([s.candidate_ms for s in compared], 95)),
                   primary_p95_ms=float(np.percentile([s.primary_ms for s in compared], 95)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--busy-loops", type=int, default=0)
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the rate")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    record = provenance(sys.argv[1:] if argv is None else argv)
    models = {"primary": (5.0, 0.0), "candidate": (8.0, 0.0)}
    with BusyLoops(args.busy_loops) as load, echo_triton(models) as server:
        record["background_load"] = load.describe()
        with router({"primary": 100.0, "candidate": 0.0}, f"127.0.0.1:{server.http_port}") as r:
            ManagedRouter(r).set_routes(Routes({"primary": 100.0, "candidate": 0.0},
                                               mirror=("candidate", args.share)))
            t0 = time.monotonic()
            url = f"{r.url}/v2/models/bert/infer"
            with ProcessPoolExecutor(args.clients) as pool:
                parts = list(pool.map(_client, [url] * args.clients, [args.rate / args.clients] * args.clients,
                                      [args.duration] * args.clients, range(args.clients)))
            wall = time.monotonic() - t0
            time.sleep(5)  # let the comparator drain its queue
            shadow = ShadowLogReader(r.workdir / SHADOW_LOG, keep_s=10 * args.duration).since(0)
    requests = sum(p["requests"] for p in parts)
    failed = sum(p["failed"] for p in parts)
    from_candidate = sum(p["from_candidate"] for p in parts)
    client_ids = {rid for p in parts for rid in p["request_ids"]}
    compared = [s for s in shadow if s.outcome == "compared"]
    lat = np.array([x for p in parts for x in p["latency_ms"]])
    achieved = requests / wall  # planned sends that went out late stretch the run: the rate really achieved
    record.update({
        "bench": "shadow",
        "design": (f"{args.duration:g}s of open-loop Poisson traffic at {args.rate:g} req/s through the nginx "
                   f"router to the primary; {args.share:.0%} of inference requests mirrored (nginx mirror) to icd's "
                   f"shadow comparator, which asks primary and candidate; synthetic echo_delay models on the real "
                   f"embedded Triton"),
        "models": {k: f"echo_delay {d:g} ms" for k, (d, _) in models.items()},
        "client": {"processes": args.clients, "requests": requests, "achieved_rate_rps": achieved,
                   "wall_s": wall, "failed_requests": failed, "candidate_answers_returned": from_candidate,
                   "latency_ms_p50": float(np.percentile(lat, 50)), "latency_ms_p99": float(np.percentile(lat, 99)),
                   "max_send_lag_ms": max(p["max_lag_ms"] for p in parts),
                   "latency_note": "client-measured, send to last byte; on a loaded host it includes the client's "
                                   "own scheduling delay (the comparator's per-side latencies are the server view)",
                   "how": "each client response checked: X-ICD-Variant and the body's model_name are the primary's"},
        "comparator": _comparator_summary(shadow, compared, requests, client_ids),
        "target": "0 candidate answers returned and 0 failed client requests over 10 min at 100 req/s",
        "met": (not failed and not from_candidate and args.duration >= 600 and args.rate >= 100
                and achieved >= 0.95 * args.rate),
    })
    path = finish(record, "shadow")
    print(f"{requests} client requests ({achieved:.1f} req/s), {failed} failed, {from_candidate} candidate answers "
          f"returned; comparator {record['comparator']['outcomes']} -> {path}")
    return 0 if record["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
