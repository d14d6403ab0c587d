"""Bench: false-positive rate and power of icd's blocked A/B test on a loaded host.

Each trial sends open-loop traffic (Poisson arrivals) through the real nginx router to the real embedded Triton,
split at random per request between three *synthetic* echo_delay models: A, A' (identical to A) and A+10 % (a
delay injected so that its client-measured median is 10 % above A's, calibrated first on this host). Two
comparisons come out of every trial, each with exactly the samples of a 50:50 A/B at ``--pair-rate`` req/s for
``--duration`` seconds: A' vs A (an A/A test: any better / worse verdict is a false positive) and A+10 % vs A
(power: a "worse" verdict is a detection). Both use the A/B's own analysis (:mod:`icd.rollout.blocked`: blocks of
2 s, α = 0.01, 5 % material effect). ``--busy-loops`` processes spin on the CPU for the whole run (the
documented background load).

Targets: A/A false-positive rate ≤ 5 % over ≥ 40 trials; power ≥ 80 % against +10 % at 50 req/s for 60 s.

Run: ``.venv/bin/python bench/ab_power.py [--trials 40] [--duration 60] [--pair-rate 50] [--busy-loops 2]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rollout_common import (  # noqa: E402
    BusyLoops,
    client_median_ms,
    echo_triton,
    exit_on_sigterm,
    finish,
    provenance,
    routed_in_processes,
    router,
)

from icd.rollout.blocked import block_length, compare_latency_blocked  # noqa: E402
from icd.rollout.stats import Verdict  # noqa: E402

BASE_MS = 20.0
SHIFT = 0.10


def _traffic(r, rate: float, seconds: float, seed: int, processes: int) -> tuple[list, float]:
    return routed_in_processes(f"{r.url}/v2/models/bert/infer", rate, seconds, seed, processes)


def _num(x: float) -> float | None:
    return None if x != x else round(x, 4)


def _weights() -> dict[str, float]:
    third = 100.0 / 3
    return {"A": third, "A_twin": third, "A_slow10": 100.0 - 2 * third}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--pair-rate", type=float, default=50.0, help="req/s of each pairwise A/B (A + other)")
    parser.add_argument("--busy-loops", type=int, default=2)
    parser.add_argument("--calibration-s", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the rate")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    record = provenance(sys.argv[1:] if argv is None else argv)
    rate = 1.5 * args.pair_rate  # three variants, each at pair_rate / 2
    aa, power, trials = Counter(), Counter(), []
    with BusyLoops(args.busy_loops) as load:
        record["background_load"] = load.describe()
        same = {name: (BASE_MS, 0.0) for name in ("A", "A_twin", "A_slow10")}  # the trials' setup, third = A
        median = client_median_ms(same, _weights(), "A", rate, args.calibration_s)
        slow_ms = BASE_MS + SHIFT * median
        print(f"calibration: A median {median:.1f} ms through the router; A+10% gets {slow_ms:.1f} ms of delay",
              flush=True)
        models = {"A": (BASE_MS, 0.0), "A_twin": (BASE_MS, 0.0), "A_slow10": (slow_ms, 0.0)}
        with echo_triton(models) as server:
            with router(_weights(), f"127.0.0.1:{server.http_port}") as r:
                _traffic(r, rate, 5, seed=1000, processes=args.clients)  # warm-up
                for trial in range(args.trials):
                    t0 = time.time()
                    sent, wall = _traffic(r, rate, args.duration, seed=trial, processes=args.clients)
                    recs = [x for x in sent if x.ok]
                    span = sent[-1].t - sent[0].t if sent else 0.0
                    row = {"trial": trial, "requests": len(sent), "failed": len(sent) - len(recs),
                           "send_span_s": round(span, 1), "wall_s": round(wall, 1),
                           "sends_late_over_1s": sum(x.lag_ms > 1000 for x in sent),
                           "load_1m": round(os.getloadavg()[0], 2)}
                    for name, other, counter in (("aa", "A_twin", aa), ("shift10", "A_slow10", power)):
                        pair = [x for x in recs if x.variant in ("A", other)]
                        cmp = compare_latency_blocked([x.t for x in pair], [x.latency_ms for x in pair],
                                                      [x.variant == other for x in pair],
                                                      block_s=block_length(args.duration), seed=trial)
                        counter[cmp.verdict.value] += 1
                        row[name] = {"verdict": cmp.verdict.value, "shift_rel": _num(cmp.shift_rel),
                                     "ci": [_num(c) for c in cmp.shift_rel_ci], "p": cmp.p_value,
                                     "n": [cmp.n_a, cmp.n_b], "blocks": cmp.blocks_used}
                    trials.append(row)
                    print(f"trial {trial}: A/A {row['aa']['verdict']} ({row['aa']['shift_rel']}), +10% "
                          f"{row['shift10']['verdict']} ({row['shift10']['shift_rel']}), "
                          f"{len(recs)} requests in {time.time() - t0:.0f}s, load {row['load_1m']}", flush=True)
    n = len(trials)
    fpr = (aa[Verdict.BETTER.value] + aa[Verdict.WORSE.value]) / n
    pwr = power[Verdict.WORSE.value] / n
    record.update({
        "bench": "ab_power",
        "design": (f"{n} trials of {args.duration:g}s open-loop Poisson traffic at {rate:g} req/s through the nginx "
                   f"router, split at random per request over A, A' and A+10% (synthetic echo_delay models on the "
                   f"real embedded Triton); each pairwise comparison has the samples of a 50:50 A/B at "
                   f"{args.pair_rate:g} req/s"),
        "latency_measured_at": "client (httpx), through the nginx router",
        "models": {"A": f"echo_delay {BASE_MS:g} ms", "A_twin": f"echo_delay {BASE_MS:g} ms",
                   "A_slow10": f"echo_delay {slow_ms:.2f} ms = {BASE_MS:g} + 10% of A's calibrated client median "
                               f"{median:.2f} ms"},
        "analysis": {"blocks_s": block_length(args.duration), "alpha": 0.01, "min_relative_effect": 0.05,
                     "test": "van Elteren within blocks + block-bootstrap CI of the median per-block HL shift"},
        "aa": {"trials": n, "verdicts": dict(aa), "false_positive_rate": fpr, "target": "<= 0.05",
               "met": fpr <= 0.05},
        "power_shift10": {"trials": n, "verdicts": dict(power), "power": pwr, "target": ">= 0.80", "met": pwr >= 0.8},
        "generator": {"client_processes": args.clients, "planned_requests_per_trial": rate * args.duration,
                      "median_send_span_s": float(np.median([t["send_span_s"] for t in trials])) if trials else None,
                      "note": "open loop: a starved client sends late (lag recorded), which stretches the send span "
                              "beyond the planned duration but keeps every planned request"},
        "trials_detail": trials,
    })
    path = finish(record, "ab_power")
    print(f"A/A false-positive rate {fpr:.3f} ({dict(aa)}); power vs +10% {pwr:.3f} ({dict(power)}) -> {path}")
    return 0 if record["aa"]["met"] and record["power_shift10"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
