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

from rollout_common import BusyLoops, echo_triton, finish, provenance, router  # noqa: E402

from icd.load.routed import RoutedSpec, run_routed  # noqa: E402
from icd.rollout.payloads import synthetic_payloads  # noqa: E402
from icd.rollout.router_nginx import Routes  # noqa: E402
from icd.rollout.router_ops import ManagedRouter  # noqa: E402
from icd.rollout.shadow import SHADOW_LOG, ShadowLogReader  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--share", type=float, default=0.5)
    parser.add_argument("--busy-loops", type=int, default=0)
    args = parser.parse_args(argv)
    record = provenance(sys.argv[1:] if argv is None else argv)
    models = {"primary": (5.0, 0.0), "candidate": (8.0, 0.0)}
    payloads = synthetic_payloads(256, seq_len=16)
    with BusyLoops(args.busy_loops) as load, echo_triton(models) as server:
        record["background_load"] = load.describe()
        with router({"primary": 100.0, "candidate": 0.0}, f"127.0.0.1:{server.http_port}") as r:
            ManagedRouter(r).set_routes(Routes({"primary": 100.0, "candidate": 0.0},
                                               mirror=("candidate", args.share)))
            t0 = time.monotonic()
            records = run_routed(RoutedSpec(f"{r.url}/v2/models/bert/infer", lambda i: payloads[i % 256],
                                            concurrency=64, duration_s=args.duration, rate=args.rate,
                                            keep_bodies=True))
            wall = time.monotonic() - t0
            time.sleep(5)  # let the comparator drain its queue
            shadow = ShadowLogReader(r.workdir / SHADOW_LOG, keep_s=10 * args.duration).since(0)
    failed = [x for x in records if not x.ok]
    from_candidate = [x for x in records if x.variant != "primary" or (x.body or {}).get("model_name") != "primary"]
    outcomes = Counter(s.outcome for s in shadow)
    client_ids = {x.request_id for x in records}
    compared = [s for s in shadow if s.outcome == "compared"]
    lat = np.array([x.latency_ms for x in records if x.ok])
    record.update({
        "bench": "shadow",
        "design": (f"{args.duration:g}s of open-loop Poisson traffic at {args.rate:g} req/s through the nginx router to "
                   f"the primary; {args.share:.0%} of inference requests mirrored (nginx mirror) to icd's shadow "
                   f"comparator, which asks primary and candidate; synthetic echo_delay models on the real embedded "
                   f"Triton"),
        "models": {k: f"echo_delay {d:g} ms" for k, (d, _) in models.items()},
        "client": {"requests": len(records), "achieved_rate_rps": len(records) / wall, "failed_requests": len(failed),
                   "candidate_answers_returned": len(from_candidate), "latency_ms_p50": float(np.percentile(lat, 50)),
                   "latency_ms_p99": float(np.percentile(lat, 99)),
                   "max_send_lag_ms": max((x.lag_ms for x in records), default=0.0)},
        "comparator": {"outcomes": dict(outcomes), "mirrored_share": len(shadow) / len(records) if records else None,
                       "compared_from_client_requests": sum(s.rid in client_ids for s in compared),
                       "cosine_mean": float(np.mean([s.cosine for s in compared])) if compared else None,
                       "argmax_agreement": float(np.mean([bool(s.argmax_agree) for s in compared])) if compared else None,
                       "candidate_p95_ms": float(np.percentile([s.candidate_ms for s in compared], 95)) if compared else None,
                       "primary_p95_ms": float(np.percentile([s.primary_ms for s in compared], 95)) if compared else None},
        "target": "0 candidate answers returned and 0 failed client requests over 10 min at 100 req/s",
        "met": not failed and not from_candidate and args.duration >= 600 and args.rate >= 100,
    })
    path = finish(record, "shadow")
    print(f"{len(records)} client requests, {len(failed)} failed, {len(from_candidate)} candidate answers returned; "
          f"comparator {dict(outcomes)} -> {path}")
    return 0 if record["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
