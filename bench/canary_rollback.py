"""Bench: does the canary roll back a bad candidate every time? (and promote a healthy one)

Each trial runs a full progressive canary through icd's rollout loop (``RolloutScheduler`` + the real nginx router
+ the router-log analysis) against the real embedded Triton serving *synthetic* echo_delay models: the primary
(``--base-ms`` per batch), a candidate failing 5 % of its requests, a candidate +50 % slower (a delay of half the
primary's client-measured median, calibrated first on this host), and a healthy twin (control). Traffic: open loop
at ``--rate`` req/s through the router for the whole trial. The spec is the one
``deploy_canary.py`` builds: p95 increase ≤ ``--alert-threshold`` %, error-rate difference ≤ 1 pp, ``threshold``
failed analyses before rollback.

Target: rollback in 100 % of ≥ 20 trials against each bad candidate.

Run: ``.venv/bin/python bench/canary_rollback.py [--trials 20] [--healthy-trials 5] [--interval 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_common import (  # noqa: E402
    BusyLoops,
    client_median_ms,
    echo_triton,
    exit_on_sigterm,
    finish,
    provenance,
    router,
)

from icd.load.routed import BackgroundRouted, RoutedSpec  # noqa: E402
from icd.rollout.canary_build import CanaryFlags, build_canary_spec  # noqa: E402
from icd.rollout.payloads import synthetic_payloads  # noqa: E402
from icd.rollout.providers import AccessLogProvider  # noqa: E402
from icd.rollout.router_ops import ManagedRouter  # noqa: E402
from icd.rollout.scheduler import RolloutScheduler  # noqa: E402


def trial(server_port: int, candidate: str, args: argparse.Namespace, state: Path, seed: int) -> dict:
    spec = build_canary_spec(CanaryFlags(primary="primary", canary=candidate, step=20, max_weight=60,
                                         interval_s=args.interval, monitor_duration_s=4 * args.interval,
                                         threshold=2, alert_threshold=args.alert_threshold, min_samples=10))
    payloads = synthetic_payloads(32, seq_len=16, seed=seed)
    with router({"primary": 100.0, candidate: 0.0}, f"127.0.0.1:{server_port}") as r:
        scheduler = RolloutScheduler(ManagedRouter(r), AccessLogProvider(r.access_log), state)
        scheduler.begin(spec)
        t0 = time.monotonic()
        with BackgroundRouted(RoutedSpec(f"{r.url}/v2/models/bert/infer", lambda i: payloads[i % 32],
                                         concurrency=32, duration_s=3600, rate=args.rate, seed=seed)) as load:
            status = scheduler.tick()
            while not status.phase.is_terminal:
                time.sleep(args.interval)
                status = scheduler.tick()
            records = load.stop()
        decisions = scheduler.log.read()
    failed_checks = [c["name"] for d in decisions if d.analysis for c in d.analysis["checks"] if c["verdict"] == "fail"]
    return {"candidate": candidate, "outcome": status.outcome, "ticks": status.tick, "seconds": round(
        time.monotonic() - t0, 1), "max_weight_reached": max(d.weight_after for d in decisions if d.action.value !=
                                                             "rollback"), "failed_checks": failed_checks,
            "client_requests": len(records), "client_failures": sum(not x.ok for x in records),
            "load_1m": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--healthy-trials", type=int, default=5)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--base-ms", type=float, default=20.0)
    parser.add_argument("--calibration-s", type=float, default=15.0)
    parser.add_argument("--alert-threshold", type=float, default=20.0, help="max p95 increase (%%)")
    parser.add_argument("--busy-loops", type=int, default=0)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    record = provenance(sys.argv[1:] if argv is None else argv)
    plan = [c for _ in range(args.trials) for c in ("failing5", "slow50")] + ["healthy"] * args.healthy_trials
    rows = []
    with BusyLoops(args.busy_loops) as load:
        median = client_median_ms({"primary": (args.base_ms, 0.0)}, {"primary": 100.0}, "primary", args.rate,
                                  args.calibration_s)
        print(f"calibration: primary median {median:.1f} ms through the router; slow50 gets +{0.5 * median:.1f} ms",
              flush=True)
        models = {"primary": (args.base_ms, 0.0), "failing5": (args.base_ms, 0.05),
                  "slow50": (args.base_ms + 0.5 * median, 0.0), "healthy": (args.base_ms, 0.0)}
        record["background_load"] = load.describe()
        record["calibration"] = {"primary_client_median_ms": median, "slow50_delay_ms": args.base_ms + 0.5 * median}
        with echo_triton(models) as server, tempfile.TemporaryDirectory(prefix="icd-canary-bench-") as tmp:
            for i, candidate in enumerate(plan):
                row = trial(server.http_port, candidate, args, Path(tmp) / str(i), seed=i)
                rows.append(row)
                print(f"{i}: {candidate}: {row['outcome']} after {row['ticks']} ticks ({row['seconds']}s), max "
                      f"weight {row['max_weight_reached']:g}%, failed checks {row['failed_checks']}, "
                      f"load {row['load_1m']}", flush=True)
    summary = {}
    for candidate in ("failing5", "slow50", "healthy"):
        outcomes = Counter(r["outcome"] for r in rows if r["candidate"] == candidate)
        n = sum(outcomes.values())
        summary[candidate] = {"trials": n, "outcomes": dict(outcomes),
                              "rollback_rate": outcomes.get("rolled back", 0) / n if n else None,
                              "promotion_rate": outcomes.get("promoted", 0) / n if n else None}
    met = all(summary[c]["rollback_rate"] == 1.0 and summary[c]["trials"] >= 20 for c in ("failing5", "slow50"))
    record.update({
        "bench": "canary_rollback",
        "design": (f"progressive canary (step 20%, max 60%, 2 passing analyses at 60% before promotion, "
                   f"{args.interval:g}s interval, threshold 2, p95 increase "
                   f"<= {args.alert_threshold:g}%, error-rate difference <= 1 pp, >= 10 requests per side per "
                   f"window) through the nginx router; open-loop traffic {args.rate:g} req/s; synthetic echo_delay "
                   f"models on the real embedded Triton"),
        "models": {k: f"echo_delay {d:g} ms, error rate {e:g}" for k, (d, e) in models.items()},
        "summary": summary, "target": "rollback in 100% of >= 20 trials for failing5 and slow50", "met": met,
        "trials_detail": rows,
    })
    path = finish(record, "canary_rollback")
    print({k: v["outcomes"] for k, v in summary.items()}, "->", path)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
