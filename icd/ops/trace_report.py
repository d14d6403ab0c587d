"""``scripts/analyze_performance_trace.py``: phase breakdown, bottleneck and plot of a collected trace folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from icd.io.atomic import write_json_atomic
from icd.ops.traces import breakdown, load_folder
from icd.report.html import new_figure

ANALYSIS_JSON = "trace_analysis.json"
PLOT_PNG = "trace_breakdown.png"


def _client_mean(folder: Path) -> float | None:
    path = folder / "client_summary.json"
    if not path.is_file():
        return None
    latency = json.loads(path.read_text()).get("latency_ms") or {}
    value = latency.get("mean")
    return float(value) if isinstance(value, (int, float)) else None


def plot(result: dict[str, Any], path: Path) -> Path:
    """Horizontal bar chart of the mean time per phase, bottleneck in red."""
    phases = result["phases"]
    names = list(phases)
    fig, ax = new_figure(8, 3.6)
    colours = ["tab:red" if n == result["bottleneck"] else "tab:blue" for n in names]
    ax.barh(names, [phases[n]["mean_ms"] for n in names], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("mean ms per request")
    ax.set_title(f"{', '.join(result['models'])}: {result['requests']} traced requests; bottleneck "
                 f"{result['bottleneck']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def analyze_folder(folder: Path) -> dict[str, Any]:
    """Analyze, write ``trace_analysis.json`` and ``trace_breakdown.png`` into ``folder``; return the result."""
    folder = Path(folder)
    requests, files, incomplete = load_folder(folder)
    result = breakdown(requests, _client_mean(folder))
    result.update({"trace_files": files, "incomplete_traces": incomplete})
    result["plot"] = str(plot(result, folder / PLOT_PNG))
    write_json_atomic(folder / ANALYSIS_JSON, result)
    return result


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table for the terminal."""
    lines = [f"{result['requests']} traced requests of {', '.join(result['models'])} "
             f"({result['trace_files']} files, {result['incomplete_traces']} incomplete)",
             f"{'phase':<16}{'mean ms':>10}{'p50 ms':>10}{'p95 ms':>10}{'share':>8}"]
    for name, row in result["phases"].items():
        p50 = "-" if row["p50_ms"] is None else f"{row['p50_ms']:.3f}"
        p95 = "-" if row["p95_ms"] is None else f"{row['p95_ms']:.3f}"
        lines.append(f"{name:<16}{row['mean_ms']:>10.3f}{p50:>10}{p95:>10}{row['share']:>8.1%}")
    lines.append(f"bottleneck: {result['bottleneck']}")
    lines.append(f"plot: {result['plot']}")
    return "\n".join(lines)
