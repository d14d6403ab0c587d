"""Tune bench: ``icd tune`` quick vs brute force, and the tuned configuration vs the default export.

    .venv/bin/python bench/tune.py [--slo-ms 300] [--input-shape 128] [--duration 4] [--rounds 5]
                                   [--variants openvino:bf16] [--report bench/results/tune.json]

1. The real MiniLM classifier (an identity-permutation sample run, labelled as such) is exported with icd's
   default export options (torchscript fp32, 1 instance, the thread budget, max batch 32, preferred 4/8,
   2000 µs): the *default export*, alone in its repository. A second repository holds the same export as
   version 1 and, as versions 2.., the same model exported on each ``--variants`` runtime / precision (the
   runtime-target issue's choices; each export verifies its fidelity against fp32, recorded in the JSON).
2. ``icd tune`` searches the space, versions included, twice on a private embedded Triton (local launch mode,
   fresh checkpoints): brute force, then quick (hill climbing). Objective: max throughput with p99 <= ``--slo-ms``.
3. The default export's own concurrency sweep finds its throughput under the same SLO.
4. Fair comparison at each configuration's capacity: the default, brute force's winner, quick's winner and brute
   force's best configuration of version 1 (the default's runtime and precision: what tuning alone buys) are
   loaded on private servers (idle while the others are measured) and measured ``--rounds`` times, interleaved,
   at the concurrency where its search peaked and at the level below it; a configuration's capacity is the
   better of the two medians of throughput within the SLO (a round over the SLO counts 0). A peak found by one
   4-s measurement can sit right at the SLO; the level below is what such a configuration sustains.

Targets: quick within 5 % of brute force's best throughput under the SLO with <= 1/3 of its measurements; the
tuned configuration >= 1.3x the default export's throughput at the same SLO. The machine is shared (2 cores, 7
engineers): the JSON records the load average of every measurement; figures are what this machine did.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from icd.io.bench_result import load_average, load_is_high

QUICK_MAX_GAP = 0.05
QUICK_MAX_MEASUREMENT_SHARE = 1 / 3
TUNED_MIN_RATIO = 1.3


def _machine() -> dict[str, Any]:
    import torch

    from icd.tune.run import host_info

    info = host_info()
    info.update({"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                 "tritonserver": "2.51.0 (nvidia-pytriton 0.7.0, python backend)"})
    return info


def _git_head() -> str:
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parents[1])
    return done.stdout.strip() or "unknown"


def _search(mode: str, repo: Path, work: Path, args: argparse.Namespace, space) -> dict[str, Any]:
    from icd.tune.measure import LoadSpec
    from icd.tune.measurement import Slo
    from icd.tune.run import run_tune
    from icd.tune.settings import TuneSettings

    settings = TuneSettings(model="bert_icd", slo=Slo(args.slo_ms), mode=mode, space=space,
                            load=LoadSpec(args.duration, args.warmup, args.input_shape), launch_mode="local",
                            model_repository=repo, report=work / f"{mode}.json", fresh=True)
    started, load_before = time.monotonic(), load_average()
    doc = run_tune(settings)
    return {"mode": mode, "measurements": doc["measurements"], "configurations": doc["configurations_measured"],
            "wall_s": round(time.monotonic() - started, 1), "load_average_before": load_before,
            "load_average_after": load_average(), "recommendation": doc["recommendation"], "verdict": doc["verdict"],
            "candidates": [{k: r.get(k) for k in ("config_id", "status", "concurrency", "throughput_rps", "p99_ms",
                                                  "points_measured", "instance_count", "threads", "max_batch_size",
                                                  "preferred_batch_sizes", "queue_delay_us", "version", "runtime",
                                                  "precision") if k in r} for r in doc["candidates"]]}


def _default_sweep(repo: Path, args: argparse.Namespace, levels: list[int]) -> dict[str, Any]:
    from icd.tune import model_config
    from icd.tune.concurrency import concurrency_sweep
    from icd.tune.measure import LoadSpec, Measurer
    from icd.tune.measurement import ConfigResult, Slo
    from icd.tune.server import LocalServer

    slo = Slo(args.slo_ms)
    server = LocalServer(repo, "bert_icd")
    try:
        base = server.base_config()
        measurer = Measurer(server, "bert_icd", base, model_config.KIND_CPU,
                            LoadSpec(args.duration, args.warmup, args.input_shape))
        candidate = model_config.candidate_of(base)
        result = ConfigResult(candidate)
        sweep = concurrency_sweep(levels, slo)
        level = next(sweep)
        while True:
            result.points.append(measurer.measure(candidate, level))
            print(f"  default {candidate.config_id} c={level}: {result.points[-1].throughput:.1f} req/s "
                  f"p99 {result.points[-1].value(slo.tag)}", file=sys.stderr)
            try:
                level = sweep.send(result.points[-1])
            except StopIteration:
                break
    finally:
        server.close(None)
    best = result.best(slo)
    return {"candidate": candidate.to_dict(), "config_id": candidate.config_id,
            "points": [{"concurrency": p.concurrency, "throughput_rps": p.throughput, "p99_ms": p.value(slo.tag),
                        "errors": p.errors, "load_average": p.load_average} for p in result.points],
            "best": None if best is None else {"concurrency": best.concurrency, "throughput_rps": best.throughput,
                                               "p99_ms": best.value(slo.tag)}}


def _interleaved(entries: dict[str, tuple[Path, Any, list[int]]], variants: dict[int, Any],
                 args: argparse.Namespace) -> dict[str, Any]:
    """Each configuration on its own private server, measured round-robin ``--rounds`` times at each of its levels."""
    from icd.tune import model_config
    from icd.tune.measure import LoadSpec, Measurer
    from icd.tune.measurement import Slo
    from icd.tune.server import LocalServer

    slo = Slo(args.slo_ms)
    load = LoadSpec(args.duration, args.warmup, args.input_shape)
    servers: dict[str, LocalServer] = {}
    measurers: dict[str, Measurer] = {}
    rows: dict[str, dict[int, list[dict[str, Any]]]] = {name: {c: [] for c in levels}
                                                         for name, (_, _, levels) in entries.items()}
    try:
        for name, (repo, candidate, _) in entries.items():
            servers[name] = LocalServer(repo, "bert_icd")
            measurers[name] = Measurer(servers[name], "bert_icd", servers[name].base_config(), model_config.KIND_CPU,
                                       load, variants if candidate.version is not None else None)
            failed = measurers[name].apply(candidate)
            if failed is not None:
                raise RuntimeError(f"{name}: {failed.detail}")
        names = list(entries)
        for round_index in range(args.rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for name in order:
                _, candidate, levels = entries[name]
                for concurrency in levels:
                    point = measurers[name].measure(candidate, concurrency)
                    within = point.throughput if point.meets(slo) else 0.0
                    rows[name][concurrency].append({
                        "round": round_index, "throughput_rps": point.throughput, "throughput_within_slo_rps": within,
                        "p99_ms": point.value(slo.tag), "errors": point.errors, "meets_slo": point.meets(slo),
                        "load_average": point.load_average})
                    print(f"  round {round_index} {name} {candidate.config_id} c={concurrency}: "
                          f"{point.throughput:.1f} req/s p99 {point.value(slo.tag)}", file=sys.stderr)
    finally:
        for server in servers.values():
            server.close(None)
    return {name: _capacity(entries[name][1], rows[name]) for name in entries}


def _capacity(candidate: Any, by_level: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per level: medians of the interleaved rounds; the capacity is the best level's median within the SLO."""
    levels = []
    for concurrency, runs in by_level.items():
        p99s = [r["p99_ms"] for r in runs if r["p99_ms"] is not None]
        levels.append({"concurrency": concurrency, "rounds": runs,
                       "median_throughput_rps": statistics.median(r["throughput_rps"] for r in runs),
                       "median_throughput_within_slo_rps": statistics.median(r["throughput_within_slo_rps"]
                                                                             for r in runs),
                       "median_p99_ms": statistics.median(p99s) if p99s else None,
                       "rounds_meeting_slo": sum(r["meets_slo"] for r in runs)})
    best = max(levels, key=lambda level: (level["median_throughput_within_slo_rps"], level["median_throughput_rps"]))
    return {"config_id": candidate.config_id, "levels": levels, "capacity_concurrency": best["concurrency"],
            "capacity_within_slo_rps": best["median_throughput_within_slo_rps"],
            "capacity_throughput_rps": best["median_throughput_rps"]}


def _levels(peak: int, concurrency: list[int]) -> list[int]:
    """The peak level and the one below it (the peak alone when it is the lowest)."""
    index = concurrency.index(peak) if peak in concurrency else 0
    return concurrency[max(index - 1, 0):index + 1][::-1]


def _export_variants(run_dir: Path, default_repo: Path, repo: Path, variants: list[str]) -> list[dict[str, Any]]:
    """``repo`` = the default export (copied as version 1) and, as versions 2.., the run exported on each
    ``runtime:precision``, with the fidelity each export verified."""
    import shutil

    from icd.export.options import ExportOptions
    from icd.export.repository import export_model

    shutil.copytree(default_repo, repo)
    out = []
    for version, spec in enumerate(variants, start=2):
        runtime, _, precision = spec.partition(":")
        started = time.monotonic()
        result = export_model(run_dir, repo, ExportOptions(model_name="bert_icd", version=version, runtime=runtime,
                                                           precision=precision or "fp32"))
        out.append({"version": version, "runtime": runtime, "precision": precision or "fp32",
                    "export_s": round(time.monotonic() - started, 1), "verification": result.verification})
    return out


def _best_of_version(search: dict[str, Any], version: int) -> dict[str, Any] | None:
    rows = [r for r in search["candidates"] if r.get("status") == "meets_slo" and r.get("version") == version]
    return max(rows, key=lambda r: r["throughput_rps"]) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slo-ms", type=float, default=300.0, help="p99 latency SLO (ms)")
    parser.add_argument("--input-shape", type=int, default=128)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--report", type=Path, default=Path("bench/results/tune.json"))
    parser.add_argument("--variants", default="openvino:bf16",
                        help="runtime:precision versions searched besides the default export (comma-separated; "
                             "'' = configurations of the default export only)")
    parser.add_argument("--check", action="store_true", help="tiny space, to check the bench runs (not a result)")
    args = parser.parse_args(argv)

    from icd.export.options import ExportOptions
    from icd.export.repository import export_model
    from icd.export.sample_run import write_identity_run_dir
    from icd.io.atomic import write_json_atomic
    from icd.tune.space import Candidate, SearchSpace

    variant_specs = [v for v in args.variants.split(",") if v]
    versions = list(range(1, len(variant_specs) + 2)) if variant_specs else []
    space = SearchSpace(instance_counts=[1, 2], threads=[1, 2], max_batch_sizes=[1, 8, 32],
                        preferred_batch_sizes=[[]], queue_delays_us=[0, 2000], versions=versions,
                        concurrency=[1, 2, 4, 8, 16])
    if args.check:
        space = SearchSpace(instance_counts=[1, 2], threads=[1], max_batch_sizes=[8], queue_delays_us=[0],
                            versions=versions, concurrency=[1, 2])
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    load_start = load_average()
    with tempfile.TemporaryDirectory(prefix="icd-bench-tune-") as tmp:
        work = Path(tmp)
        run_dir = write_identity_run_dir(work / "run")
        repo = work / "repo"
        export_model(run_dir, repo, ExportOptions(model_name="bert_icd"))
        searched, exported = repo, []
        if variant_specs:
            searched = work / "repo_versions"
            exported = _export_variants(run_dir, repo, searched, variant_specs)
        brute = _search("brute", searched, work, args, space)
        quick = _search("quick", searched, work, args, space)
        default = _default_sweep(repo, args, space.concurrency)
        entries: dict[str, tuple[Path, Any, list[int]]] = {}
        # the default at its best level under the SLO, or at its lowest level when it meets the SLO at none
        default_peak = default["best"]["concurrency"] if default["best"] else space.concurrency[0]
        entries["default"] = (repo, Candidate.from_dict(default["candidate"]), _levels(default_peak, space.concurrency))
        winners = {"brute_winner": brute["recommendation"], "quick_winner": quick["recommendation"]}
        if versions:
            winners["brute_best_version_1"] = _best_of_version(brute, 1)
        for name, row in winners.items():
            if row is not None:
                entries[name] = (searched, Candidate.from_dict(row), _levels(row["concurrency"], space.concurrency))
        from icd.tune.variants import read_variants

        variants = read_variants(searched, "bert_icd", versions, "python") if versions else {}
        comparison = _interleaved(entries, variants, args) if entries else {}
    load_end = load_average()

    def capacity(name: str, key: str = "capacity_within_slo_rps") -> float | None:
        return comparison[name][key] if name in comparison else None

    brute_tp, quick_tp, default_tp = capacity("brute_winner"), capacity("quick_winner"), capacity("default")
    v1_tp = capacity("brute_best_version_1")
    share = quick["measurements"] / brute["measurements"] if brute["measurements"] else None
    quick_ratio = quick_tp / brute_tp if quick_tp and brute_tp else None
    tuned_ratio = (brute_tp / default_tp) if brute_tp and default_tp else None
    raw_brute = capacity("brute_winner", "capacity_throughput_rps")
    raw_default = capacity("default", "capacity_throughput_rps")
    default_note = ("the default export met the SLO in none of the interleaved rounds: its throughput within the SLO "
                    f"is 0, so any tuned throughput within it is above 1.3x; without the SLO, "
                    f"tuned/default = {raw_brute}/{raw_default} req/s"
                    if default_tp == 0 and brute_tp else "")
    high = load_is_high(load_start[0], load_end[0])
    doc = {
        "bench": "tune",
        "command": "python " + " ".join(["bench/tune.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": started,
        "code": _git_head(),
        "machine": _machine(),
        "load_average": {"start": load_start, "end": load_end,
                         "note": ("HIGH: the 1-minute load average exceeded the core count + 1 during the run (other "
                                  "jobs shared the machine); figures are what this machine did under that load")
                         if high else "at most the core count + 1 (this bench's own server and load generator)"},
        "load_high": high,
        "model": "bert_icd: real all-MiniLM-L6-v2 classifier, identity-permutation sample run (not an optimizer "
                 "output), exported with icd's default export options, python backend, torch fp32 (version 1); "
                 "versions 2..: the same model on --variants, each verified against fp32 at export",
        "versions": [{"version": 1, "runtime": "torchscript", "precision": "fp32", "note": "the default export"},
                     *exported],
        "default_export": "1 instance, icd_threads 0 (the server's thread budget: 2 cores / 1 instance = 2 threads), "
                          "max_batch_size 32, preferred [4, 8], max_queue_delay_microseconds 2000",
        "slo": {"percentile": 99, "latency_ms": args.slo_ms},
        "how": f"icd load generator, closed loop, {args.duration:g} s after {args.warmup:g} s warm-up per "
               f"measurement, random token ids x {args.input_shape} tokens, batch 1 per request",
        "space": space.model_dump(),
        "brute": brute, "quick": quick, "default_sweep": default, "interleaved": comparison,
        "targets": {
            "quick_measurement_share": {"value": None if share is None else round(share, 3),
                                        "limit": round(QUICK_MAX_MEASUREMENT_SHARE, 3),
                                        "met": share is not None and share <= QUICK_MAX_MEASUREMENT_SHARE},
            "quick_vs_brute_throughput": {"value": None if quick_ratio is None else round(quick_ratio, 3),
                                          "limit": 1 - QUICK_MAX_GAP,
                                          "how": "capacities: the better level's interleaved median within the SLO",
                                          "met": quick_ratio is not None and quick_ratio >= 1 - QUICK_MAX_GAP},
            "tuned_vs_default_throughput": {
                "value": None if tuned_ratio is None else round(tuned_ratio, 3), "limit": TUNED_MIN_RATIO,
                "how": "capacities: the better level's interleaved median of throughput within the SLO (a round over "
                       "the SLO counts 0), brute winner vs the default export",
                "met": (tuned_ratio is not None and tuned_ratio >= TUNED_MIN_RATIO) or bool(default_note),
                "note": default_note,
                "without_slo": None if not (raw_brute and raw_default) else round(raw_brute / raw_default, 3),
                "same_version_as_default": None if not (v1_tp and default_tp) else round(v1_tp / default_tp, 3),
                "same_version_how": "brute force's best configuration of version 1 (torchscript fp32, the default's "
                                    "runtime and precision) vs the default export: what configuration alone buys"},
        },
    }
    write_json_atomic(args.report, doc)
    for name, target in doc["targets"].items():
        print(f"{name}: {target['value']} (limit {target['limit']}) {'MET' if target['met'] else 'NOT MET'}")
    print(f"load average start {load_start} end {load_end}; report {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
