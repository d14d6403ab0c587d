"""Served throughput on the embedded Triton: bert_icd (its chosen runtime) vs bert_baseline, alone and together.

    .venv/bin/python bench/serving.py --run-dir runs/bert_production [--runtime openvino --precision int8]
        [--concurrency 16] [--duration 20] [--seq-len 128] [--report bench/results/serving.json]

1. Export ``bert_icd`` from the run (runtime / precision: the flags, else the run's ``icd profile`` choice, else
   torchscript at the run's precision — as ``icd export-triton`` resolves it) and ``bert_baseline`` (torch fp32
   TorchScript, as the guide exports it) into a temporary repository; start the real ``tritonserver`` on free
   ports. Both are loaded; the thread budget gives each instance ``cores // instances`` threads.
2. **Alone**: icd's load generator (``icd.load.run_load``, closed loop, ``--concurrency`` clients, real tokenized
   text, one text per request) on one model at a time, the other idle; Triton's dynamic batcher forms batches.
3. **Together**: both models under the same load at once; per-second completions of each model come from the
   generator's interval series (a second with zero completions inside the load window is reported; the drain
   after it — no new sends, in-flight requests finishing, as long as the slower model's take — is kept apart in
   ``drain_completions_per_interval``). ``--max-batch-size`` bounds Triton's batches and so how long one takes.
4. **In-process**: bert_icd's exported artefact loaded in this process through the same runtime with the served
   instance's thread count runs exactly the multiset of batch sizes Triton formed in step 2 (statistics API) on
   the same texts, each batch cut to the length the server runs (``--trim-padding``, the python backend's
   ``icd_trim_padding``: trailing padding no row attends to, to a multiple of that many tokens; 8 unless given, as
   ``icd export-triton``). Ratio = served / in-process throughput (target >= 0.85).
5. **Outputs**: the served outputs of bert_icd equal the in-process outputs of its runtime on the batch as the
   server runs it (max |diff|), and what the same runtime gives for the batch as sent, padding included.

``served_breakdown`` says where a served batch's time went in step 2: Triton's milliseconds per execution in
compute_input / compute_infer (the python backend's ``execute`` and the transfers to and from its stub) /
compute_output (statistics API), the medians of the backend's own ``TRITON_ICD_PROFILE`` timings (cache lookup,
request gather, forward, whole ``execute``), and the in-process milliseconds per batch of step 4.

Writes JSON (``--report``) with the command, machine, date, load averages and every figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from icd.export.options import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US, DEFAULT_PREFERRED_BATCH_SIZES
from icd.io.bench_result import load_is_high
from icd.serve.backend.icd_runtime import trim_batch

TARGET_RATIO = 0.85
TARGET_TOGETHER = 0.90
TARGET_ICD_OVER_BASELINE = 4.0


PHASES = ("compute_input", "compute_infer", "compute_output")
"""Triton's per-execution phases (statistics API ``batch_stats``): inputs to the backend, ``execute``, outputs back."""


def _batch_stats(http_url: str, model: str) -> dict[int, dict[str, tuple[int, int]]]:
    """Triton's ``batch_stats`` of ``model``: per batch size, per phase, (executions, nanoseconds) so far."""
    stats = httpx.get(f"{http_url}/v2/models/{model}/stats", trust_env=False, timeout=10).json()["model_stats"][0]
    return {int(row["batch_size"]): {phase: (int(row[phase]["count"]), int(row[phase]["ns"])) for phase in PHASES}
            for row in stats["batch_stats"]}


def _batch_counts(before: dict, after: dict) -> Counter:
    """Executions per batch size between two :func:`_batch_stats`."""
    return +Counter({size: rows["compute_infer"][0] - before.get(size, {}).get("compute_infer", (0, 0))[0]
                     for size, rows in after.items()})  # unary +: sizes not run in between dropped


def _served_breakdown(before: dict, after: dict, log: str, window: tuple[float, float]) -> dict[str, Any]:
    """Where a served batch's time went while bert_icd ran alone: Triton's mean milliseconds per execution in each
    phase, and the median of the python backend's own timings (``TRITON_ICD_PROFILE`` lines of the window)."""
    from icd.ops.logs import parse_lines

    executions = sum(_batch_counts(before, after).values())
    phases = {}
    for phase in PHASES:
        ns = sum(rows[phase][1] - before.get(size, {}).get(phase, (0, 0))[1] for size, rows in after.items())
        phases[phase] = ns / 1e6 / executions if executions else None
    mine = [r.fields for r in parse_lines(log.splitlines()).records  # time: the record's own "ts"
            if r.model == "bert_icd" and "profile" in r.fields and window[0] <= r.time <= window[1]]
    backend = {}
    for key in ("cache_lookup_ms", "gather_ms", "forward_ms", "counters_wait_ms"):
        values = [r["profile"][key] for r in mine if key in r["profile"]]
        backend[key] = float(np.median(values)) if values else None
    backend["execute_ms"] = float(np.median([r["total_ms"] for r in mine])) if mine else None
    return {"executions": executions, "triton_ms_per_execution": phases, "backend_median_ms": backend,
            "backend_lines": len(mine)}


def _load(server, models: tuple[str, ...], settings) -> dict[str, Any]:
    from icd.load.runner import run_load
    from icd.load.target import Target

    report = run_load(settings, Target(server.http_url, models))
    window_end = settings.warmup_s + settings.duration_s + 1e-6
    out = {}
    for name in models:
        summary = report.model_summary(name)
        rows = [row for row in report.series.get(name, []) if not row.warmup]
        per_second = [row.ok for row in rows if row.t_s <= window_end]
        out[name] = {"throughput_rps": summary["throughput_rps"], "latency_ms": summary["latency_ms"],
                     "errors": summary["errors"]["total"], "completions_per_interval": per_second,
                     "zero_completion_intervals": sum(1 for n in per_second if n == 0),
                     "drain_completions_per_interval": [row.ok for row in rows if row.t_s > window_end]}
    return out


def _in_process(session, batches, histogram: Counter, trim: int) -> tuple[float, float]:
    """Run the batch-size multiset ``histogram`` through ``session`` as the server runs each batch; returns the
    summed seconds and the mean length run."""
    ids = np.concatenate([b.input_ids for b in batches])
    mask = np.concatenate([b.attention_mask for b in batches])
    plan, cursor = [], 0
    for size, count in sorted(histogram.items()):
        for _ in range(count):
            rows = [(cursor + k) % len(ids) for k in range(size)]
            cursor += size
            plan.append(trim_batch(ids[rows], mask[rows], trim))
    for shape in sorted({batch[0].shape for batch in plan}):
        session.numpy(*next(batch for batch in plan if batch[0].shape == shape))  # warm-up of every shape
    total = 0.0
    for batch in plan:
        start = time.perf_counter()
        session.numpy(*batch)
        total += time.perf_counter() - start
    return total, float(np.mean([batch[0].shape[1] for batch in plan]))


def _served_vs_in_process(server, version_dir: Path, runtime_name: str, threads: int, batches, output: str,
                          trim: int) -> tuple[float, float]:
    import tritonclient.http as httpclient

    from icd.runtimes.registry import get_runtime
    from icd.serve.backend.icd_runtime import LayoutRecord

    session = get_runtime(runtime_name).load(version_dir, threads)
    index = LayoutRecord.load(version_dir, {}).output_index()
    worst = padded_worst = 0.0
    with httpclient.InferenceServerClient(server.http_url.removeprefix("http://")) as client:
        for batch in batches[:8]:
            ids, mask = batch.input_ids, batch.attention_mask
            inputs = [httpclient.InferInput("input_ids", list(ids.shape), "INT64"),
                      httpclient.InferInput("attention_mask", list(mask.shape), "INT64")]
            inputs[0].set_data_from_numpy(ids)
            inputs[1].set_data_from_numpy(mask)
            served = client.infer("bert_icd", inputs).as_numpy(output)
            local, padded = session.numpy(*trim_batch(ids, mask, trim)), session.numpy(ids, mask)
            local, padded = (local[:, index], padded[:, index]) if index.size else (local, padded)
            worst = max(worst, float(np.abs(served - local).max()))
            padded_worst = max(padded_worst, float(np.abs(served - padded).max()))
    return worst, padded_worst


def _machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    import onnxruntime
    import openvino
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory (icd run --out)")
    parser.add_argument("--runtime", help="bert_icd's runtime [the run's icd profile choice, else torchscript]")
    parser.add_argument("--precision", help="bert_icd's precision [profile choice, else the run's own]")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients per model")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per text (padded / truncated)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help=f"both models' max_batch_size [{DEFAULT_MAX_BATCH_SIZE}, as icd export-triton]")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_MAX_QUEUE_DELAY_US,
                        help=f"dynamic batching delay [{DEFAULT_MAX_QUEUE_DELAY_US}, as icd export-triton]")
    parser.add_argument("--preferred-batch-sizes",
                        help="comma-separated preferred batch sizes of Triton's dynamic batcher, 'none' for none "
                             f"[{','.join(map(str, DEFAULT_PREFERRED_BATCH_SIZES))} up to --max-batch-size: icd "
                             "export-triton's and the guide's]")
    parser.add_argument("--trim-padding", type=int,
                        help="both models: run each batch without its trailing padding, to a multiple of this many "
                             "tokens (0 = never) [8, as icd export-triton]")
    parser.add_argument("--report", type=Path, help="write the result as JSON here")
    args = parser.parse_args(argv)

    from icd.export.options import ExportOptions
    from icd.export.repository import export_model, padding_trim
    from icd.io.ports import free_port
    from icd.load.inputs import token_batches
    from icd.load.settings import LoadSettings
    from icd.runtimes.registry import get_runtime
    from icd.serve.triton_local import TritonServer

    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="icd-bench-serving-"))
    try:
        common = {"max_batch_size": args.max_batch_size, "max_queue_delay_us": args.max_queue_delay_us,
                  "trim_padding": args.trim_padding}
        if args.preferred_batch_sizes is not None:  # else icd export-triton's defaults
            common["preferred_batch_sizes"] = () if args.preferred_batch_sizes == "none" else tuple(
                int(size) for size in args.preferred_batch_sizes.split(",") if size)
        icd_options = ExportOptions(model_name="bert_icd", runtime=args.runtime, precision=args.precision, **common)
        common["preferred_batch_sizes"] = icd_options.preferred_batch_sizes  # recorded as exported
        icd = export_model(args.run_dir, work / "models", icd_options)
        base = export_model(args.run_dir, work / "models", ExportOptions(
            model_name="bert_baseline", baseline=True, runtime="torchscript", precision="fp32", **common))
        trim = padding_trim(icd_options)[0]
        settings = LoadSettings(duration_s=args.duration, warmup_s=args.warmup, concurrency=args.concurrency,
                                input_shape=args.seq_len, workers=0)
        server = TritonServer(work / "models", free_port(), free_port(), free_port(),
                              env={"TRITON_ICD_PROFILE": "true"})  # per-phase timings in each ICD log line
        with server.start(timeout_s=600):
            threads = _threads_from_log(server.log_text())
            before, started = _batch_stats(server.http_url, "bert_icd"), time.time()
            alone = _load(server, ("bert_icd",), settings)
            after, ended = _batch_stats(server.http_url, "bert_icd"), time.time()
            histogram = _batch_counts(before, after)
            breakdown = _served_breakdown(before, after, server.log_text(), (started, ended))
            alone.update(_load(server, ("bert_baseline",), settings))
            together = _load(server, ("bert_icd", "bert_baseline"), settings)
            batches = token_batches(LoadSettings(input_shape=args.seq_len, pool_size=64, batch_size=1, workers=0))
            max_diff, padded_diff = _served_vs_in_process(server, icd.version_dir, icd.variant.runtime, threads,
                                                          batches, icd.output_name, trim)
        session = get_runtime(icd.variant.runtime).load(icd.version_dir, threads)
        served_texts = sum(size * count for size, count in histogram.items())
        in_process_s, run_len = _in_process(session, batches, histogram, trim)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    icd_rps, base_rps = alone["bert_icd"]["throughput_rps"], alone["bert_baseline"]["throughput_rps"]
    in_process_rps = served_texts / in_process_s
    ratio = icd_rps / in_process_rps
    summed_alone = icd_rps + base_rps
    summed_together = together["bert_icd"]["throughput_rps"] + together["bert_baseline"]["throughput_rps"]
    zero = {name: together[name]["zero_completion_intervals"] for name in together}
    report = {
        "bench": "serving", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/serving.py " + " ".join(sys.argv[1:] if argv is None else argv).replace(
            str(args.run_dir), f"runs/{args.run_dir.name}"),
        "machine": _machine(), "load_average": {"start": load_start, "end": load_end,
                                                "high_load": load_is_high(load_start[0], load_end[0])},
        "run": {"name": args.run_dir.name, **_run_meta(args.run_dir)},
        "bert_icd": {"variant": icd.variant.name, "chosen_by": icd.variant_source, "padding": icd.padding},
        "bert_baseline": {"variant": base.variant.name, "padding": base.padding}, "threads_per_instance": threads,
        "settings": settings.to_dict(), "export": common,
        "alone": alone, "together": together,
        "icd_over_baseline": icd_rps / base_rps, "target_icd_over_baseline": TARGET_ICD_OVER_BASELINE,
        "triton_over_in_process": ratio, "target_ratio": TARGET_RATIO,
        "in_process_texts_per_s": in_process_rps, "in_process_compute_s": in_process_s,
        "served_breakdown": {**breakdown, "in_process_ms_per_execution": (
            in_process_s * 1e3 / breakdown["executions"] if breakdown["executions"] else None),
            "how": "bert_icd alone, warm-up included: Triton's statistics API (batch_stats) per execution; the python "
                   "backend's TRITON_ICD_PROFILE timings (cache lookup, request gather, forward, wait for the cache "
                   "counters, whole execute); the in-process replay of the same batches"},
        "in_process_mean_tokens_run": run_len,
        "batch_size_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "together_over_alone": summed_together / summed_alone, "target_together": TARGET_TOGETHER,
        "zero_completion_intervals_together": zero,
        "served_vs_in_process_max_abs_diff": max_diff, "served_vs_padded_in_process_max_abs_diff": padded_diff,
        "how": "icd.load closed loop over HTTP, one real tokenized text per request, in this process (workers=0); "
               "in-process: the exported artefact through the same runtime and threads on Triton's batch sizes; "
               "this machine's cores are shared by the server, the generator and the in-process run",
    }
    print(f"bert_icd ({icd.variant.name}, {icd.variant_source}) alone: {icd_rps:.1f} req/s; bert_baseline "
          f"(torchscript:fp32) alone: {base_rps:.1f} req/s; ratio {icd_rps / base_rps:.2f} (target >= "
          f"{TARGET_ICD_OVER_BASELINE})")
    print(f"Triton / in-process ({icd.variant.name}, {threads} thread(s)): {icd_rps:.1f} / {in_process_rps:.1f} = "
          f"{ratio:.3f} (target >= {TARGET_RATIO})")
    print(f"together: {summed_together:.1f} req/s vs {summed_alone:.1f} alone summed = "
          f"{summed_together / summed_alone:.3f} (target >= {TARGET_TOGETHER}); intervals with zero completions: {zero}")
    phases, backend = breakdown["triton_ms_per_execution"], breakdown["backend_median_ms"]
    if breakdown["executions"] and backend["forward_ms"] is not None:
        triton = ", ".join(f"{phase} {ms:.2f} ms" for phase, ms in phases.items())
        local_ms = in_process_s * 1e3 / breakdown["executions"]
        print(f"per served batch (bert_icd alone): Triton {triton}; backend execute {backend['execute_ms']:.2f} ms "
              f"(forward {backend['forward_ms']:.2f}); in-process {local_ms:.2f} ms")
    print(f"served vs in-process outputs: max |diff| {max_diff:.2e} (batch as run), {padded_diff:.2e} (as sent, "
          f"padded to {args.seq_len}); in-process batches ran {run_len:.1f} tokens on average")
    if args.report:
        from icd.io.atomic import write_json_atomic

        write_json_atomic(args.report, report)
        print(f"report: {args.report}")
    return 0


def _run_meta(run_dir: Path) -> dict[str, Any]:
    """What kind of run it was (run.json's mode and times, the config's name) — not where it lies on disk."""
    import json

    meta = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    return {key: meta.get(key) for key in ("mode", "name", "started", "finished")}


def _threads_from_log(log: str) -> int:
    import re

    match = re.search(r"icd: loaded bert_icd v\d+ \([^)]*\): runtime \w+, (\d+) thread", log)
    return int(match.group(1)) if match else 1


if __name__ == "__main__":
    sys.exit(main())
