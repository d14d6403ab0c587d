"""The main job of ``make demo``: optimize → export → serve → monitor → A/B, then stop every server started.

1. ``icd run`` of the demo configuration (real MiniLM weights) into ``runs/demo``;
2. export ``bert_icd`` (the optimized model) and ``bert_baseline`` (the original) as a Triton model repository;
3. serve both on the real embedded ``tritonserver``; check one inference over HTTP;
4. start Prometheus scraping Triton;
5. A/B ``bert_icd`` against ``bert_baseline`` through the nginx router; print the verdict table (output agreement
   in the figures that fit the model's task: cosine / nearest-neighbour agreement for the demo's embedding model),
   the report path and the live KPI table; stop router, Prometheus and Triton (also on error or Ctrl-C).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from icd.config import load_config
from icd.defaults import LOOPBACK
from icd.io.ports import free_port


@dataclass(frozen=True)
class DemoOptions:
    config: Path = Path("configs/minilm.json")
    out: Path = Path("runs/demo")
    ab_duration_s: float = 30.0
    icd_model: str = "bert_icd"
    baseline_model: str = "bert_baseline"
    progress: bool = True




@contextlib.contextmanager
def _step(console: Console, title: str) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    began = time.perf_counter()
    yield
    console.log(f"{title}: {time.perf_counter() - began:.1f} s")


def run_demo(options: DemoOptions, console: Console | None = None) -> Path:
    """Run the main job; returns the A/B report path. Every server started here is stopped before returning."""
    from icd.export.options import ExportOptions
    from icd.export.repository import export_model
    from icd.monitor import stack
    from icd.pipeline.runner import run_config
    from icd.rollout.ab import ABSpec, conclusion_text, run_ab_at_endpoint, verdict_table_text
    from icd.rollout.payloads import text_payloads
    from icd.serve.serve_loop import describe
    from icd.serve.triton_local import TritonServer

    console = console or Console()
    cfg = load_config(options.config)
    run_dir = options.out / "run"
    models = options.out / "models"
    with _step(console, f"1/5 optimize {options.config} → {run_dir}, then profile its runtimes"):
        run_config(cfg, run_dir, progress=options.progress)
        from icd.runtimes.profile import profile_run, render_table

        profile = profile_run(run_dir, runs=5, progress=console.log)  # export below serves its choice
        console.print(render_table(profile))
    with _step(console, f"2/5 export {options.icd_model} and {options.baseline_model} → {models}"):
        export_model(run_dir, models, ExportOptions(model_name=options.icd_model))
        export_model(run_dir, models, ExportOptions(model_name=options.baseline_model, baseline=True))
    state = options.out / "state"
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    server = TritonServer(models, log_file=options.out / "triton.log", **ports)
    with _step(console, f"3/5 serve on Triton {server.http_url}"):
        server.start(timeout_s=180)
    try:
        for line in describe(server):
            console.print(line)
        with _step(console, "4/5 monitor: Prometheus scraping Triton"):
            record = stack.up(stack.StackOptions(prometheus_port=free_port(), alertmanager_port=None,
                                                 triton_metrics=[f"{LOOPBACK}:{ports['metrics_port']}"],
                                                 scrape_interval="2s", evaluation_interval="2s"), state)
            console.print(f"Prometheus {record.prometheus_url} (dashboard: {record.prometheus_url}/consoles/icd_overview.html)")
        try:
            with _step(console, f"5/5 A/B {options.baseline_model} vs {options.icd_model} through the router"):
                spec = ABSpec(model_a=options.baseline_model, model_b=options.icd_model,
                              duration_s=options.ab_duration_s)
                result, json_path, html_path = run_ab_at_endpoint(
                    server.http_url, spec, text_payloads(64, seq_len=cfg.model.max_length),
                    options.out / "ab_test_results.json")
                console.print(verdict_table_text(result.verdicts))
                console.print(f"latency: {conclusion_text(result)}")
                console.print(f"output agreement ({result.agreement.task.value}): {result.agreement.text()}")
                console.print(f"A/B report: {json_path} and {html_path}")
            from icd.cli.main import main as icd_main

            icd_main(["status", "--prometheus", record.prometheus_url])
        finally:
            stack.down(state)
    finally:
        server.stop()
    console.print(f"[green]demo done[/green]: run {run_dir}, models {models}, A/B {json_path}; all servers stopped")
    return json_path
