"""``icd pair``: dense, linear and iterative runs of one configuration on the same splits, compared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from icd.config.schema import IcdConfig, PipelineMode
from icd.io.atomic import write_json_atomic
from icd.pipeline.run_dir import check_output_dir
from icd.pipeline.runner import run_config
from icd.report.html import Report, new_figure

PAIR_SCHEMA = "icd.pair/v1"


def run_pair(cfg: IcdConfig, out: Path, progress: bool = True) -> list[dict[str, Any]]:
    out = Path(out)
    for mode in PipelineMode:
        check_output_dir(out / mode.value)
    rows: list[dict[str, Any]] = []
    for mode in PipelineMode:
        mode_cfg = cfg.model_copy(deep=True)
        mode_cfg.pipeline.mode = mode
        result = run_config(mode_cfg, out / mode.value, progress=progress)
        # speed-up against the dense model measured in the same run (adjacent in time, same harness)
        rows.append(result.final.row(result.dense) | {"variant": mode.value, "run_dir": str(out / mode.value)})
    write_json_atomic(out / "pair.json", {"schema": PAIR_SCHEMA, "config": cfg.name, "rows": rows})
    _write_html(out / "pair.html", cfg.name, rows)
    return rows


def _write_html(path: Path, name: str, rows: list[dict[str, Any]]) -> None:
    report = Report(f"icd pair — {name}", subtitle="dense vs linear vs iterative, same calibration / held-out splits")
    report.add_table("Comparison", rows, ["variant", "cos_mean", "cos_min", "nn_agreement", "argmax_agreement",
                                          "latency_median_ms", "latency_p95_ms", "speedup", "run_dir"])
    fig, (ax1) = new_figure(8, 3.2)
    ax1.bar([r["variant"] for r in rows], [r["latency_median_ms"] for r in rows], color="tab:blue")
    ax1.set_ylabel("median latency (ms)")
    ax2 = ax1.twinx()
    ax2.plot([r["variant"] for r in rows], [r["cos_mean"] for r in rows], "o-", color="tab:red")
    ax2.set_ylabel("cos mean vs dense", color="tab:red")
    report.add_figure("Latency and fidelity", fig)
    report.write(path)
