"""HTML report of a simulation (or a load test): summary table, rate / latency / error plots per model."""

from __future__ import annotations

from typing import Any

from icd.report.html import Report, new_figure

_SUMMARY_COLS = ("requests", "throughput_rps", "mean", "p50", "p95", "p99", "max", "errors", "late_sends")


def _summary_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, m in data["models"].items():
        lat = m["latency_ms"]
        rows.append({"model": name, "requests": m["requests"], "throughput_rps": m["throughput_rps"],
                     **{k: lat[k] for k in ("mean", "p50", "p95", "p99", "max")},
                     "errors": m["errors"]["total"], "late_sends": m["late_sends"]})
    return rows


def _series_figure(data: dict[str, Any], keys: tuple[str, ...], ylabel: str, title: str):
    fig, ax = new_figure()
    for name, m in data["models"].items():
        ts = m["timeseries"]
        t = [r["t_s"] for r in ts]
        for key in keys:
            ys = [r[key] for r in ts]
            if any(y is not None for y in ys):
                ax.plot(t, [float("nan") if y is None else y for y in ys], label=f"{name} {key}", linewidth=1.2)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    return fig


def simulation_html(data: dict[str, Any]) -> Report:
    """A :class:`Report` of a simulation's (or load test's) JSON dict."""
    pattern = data.get("traffic_pattern", "load test")
    report = Report(f"icd simulate — {pattern}", subtitle=f"{data['endpoint']} · models {', '.join(data['models'])}")
    report.add_text("How measured", (
        f"Client-side latency from the {data['latency_from']} to the end of the answer, recorded in HDR histograms "
        f"by the icd load generator ({data['generator']['workers']} worker process(es), {data['settings']['protocol']}). "
        f"Each point is one interval (about 1 s) of completed requests. Interrupted: {data['interrupted']}."))
    report.add_table("Summary per model", _summary_rows(data), ["model", *_SUMMARY_COLS])
    report.add_figure("Request rate", _series_figure(data, ("target_rate", "sent_rps", "ok_rps"), "requests/s",
                                                     "target, sent and answered rate"))
    report.add_figure("Latency", _series_figure(data, ("p50_ms", "p95_ms", "p99_ms"), "ms", "latency percentiles"))
    report.add_figure("Errors", _series_figure(data, ("error_rps",), "errors/s", "errors per second"))
    for name, stress in data.get("stress", {}).items():
        report.add_text(f"Stress verdict — {name}", (
            f"Highest rate sustained within SLO (p95 ≤ {stress['slo_p95_ms']} ms, errors ≤ "
            f"{stress['max_error_rate']:.1%}): {stress['max_rate_within_slo_rps']} req/s target, "
            f"{stress['achieved_rps_at_max']} req/s achieved. Break: {stress['break_reason'] or 'none before the end'}."))
        report.add_table(f"Stress steps — {name}", stress["steps"])
    report.add_json("Settings", data["settings"])
    return report
