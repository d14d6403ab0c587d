"""``icd logs`` / scripts/analyze_icd_logs.py: the HTML report of one metric of the ICD log records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from icd.errors import UserError
from icd.ops.log_analysis import ANOMALY_Z, PERCENTILES, ModelSeries, percentiles_over_time, series_by_model
from icd.ops.logs import ParsedLog, TimeAxis, parse_file
from icd.report.html import Report, new_figure

MAX_ANOMALY_ROWS = 50


def analyze(parsed: ParsedLog, metric: str) -> tuple[dict[str, Any], dict[str, ModelSeries]]:
    """The JSON summary (and the series behind it).

    Raises:
        UserError: the log has ICD records and none has ``metric`` (a misspelt field), naming the numeric fields
            they do have.
    """
    series, missing = series_by_model(parsed, metric)
    if parsed.records and missing == len(parsed.records):
        raise UserError(f"--metric {metric!r}: no ICD record of the log has this field; numeric fields there: "
                        f"{', '.join(_numeric_fields(parsed))}")
    severities: dict[str, int] = {}
    for line in parsed.triton:
        severities[line.severity] = severities.get(line.severity, 0) + 1
    summary = {
        "metric": metric,
        "lines": parsed.total_lines,
        "icd_records": len(parsed.records),
        "records_without_metric": missing,
        "triton_lines": len(parsed.triton),
        "triton_lines_by_severity": severities,
        "malformed_lines": parsed.malformed,
        "malformed_samples": parsed.malformed_samples,
        "time_axis": parsed.time_axis.value,
        "models": [s.summary() for s in series.values()],
        "over_time": {m: percentiles_over_time(s) for m, s in series.items()},
        "anomaly_rule": f"robust z-score |x - median| / (1.4826 MAD) > {ANOMALY_Z:g} per model",
    }
    return summary, series


def _numeric_fields(parsed: ParsedLog) -> list[str]:
    """The numeric fields of the log's ICD records, nested ones as ``a.b``."""
    names: set[str] = set()
    for record in parsed.records:
        for key, value in record.fields.items():
            if isinstance(value, dict):
                names.update(f"{key}.{k}" for k, v in value.items() if _is_number(v))
            elif _is_number(value):
                names.add(key)
    return sorted(names)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _time_label(axis: TimeAxis) -> str:
    return "line number" if axis == TimeAxis.LINE else "seconds since first record"


def _figures(report: Report, series: dict[str, ModelSeries], metric: str, axis: TimeAxis) -> None:
    fig, ax = new_figure()
    for model, s in series.items():
        ax.hist(s.values, bins=min(50, max(5, s.values.size // 5)), alpha=0.6, label=model)
    ax.set_xlabel(metric)
    ax.set_ylabel("records")
    ax.legend()
    report.add_figure(f"Distribution of {metric}", fig)
    start = min(float(s.times.min()) for s in series.values())
    offset = 0.0 if axis == TimeAxis.LINE else start
    fig, ax = new_figure(9, 4)
    for model, s in series.items():
        rows = percentiles_over_time(s)
        t = np.array([r["start"] for r in rows]) - offset
        for p, style in zip(PERCENTILES, ("-", "--", ":")):
            ax.plot(t, [r[f"p{p:g}"] for r in rows], style, label=f"{model} p{p:g}")
        bad = s.anomalies
        if bad.any():
            ax.scatter(s.times[bad] - offset, s.values[bad], marker="x", color="red", zorder=3,
                       label=f"{model} anomalies")
    ax.set_xlabel(_time_label(axis))
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    report.add_figure(f"{metric}: percentiles over time (anomalies marked x)", fig)


def write_report(summary: dict[str, Any], series: dict[str, ModelSeries], path: Path, source: Path) -> Path:
    """Render the HTML report."""
    metric = summary["metric"]
    report = Report(f"ICD log analysis: {metric}", f"{source} — {summary['lines']} lines")
    report.add_table("Lines", [{
        "ICD records": summary["icd_records"], "with the metric": summary["icd_records"] - summary["records_without_metric"],
        "Triton lines": summary["triton_lines"], "malformed (skipped)": summary["malformed_lines"],
        "time axis": summary["time_axis"]}])
    if summary["malformed_samples"]:
        report.add_text("Malformed lines (first few)", " | ".join(summary["malformed_samples"]))
    if not series:
        report.add_text("No data", f"no ICD record carries a numeric {metric!r} field")
    else:
        report.add_table(f"{metric} per model", summary["models"])
        _figures(report, series, metric, TimeAxis(summary["time_axis"]))
        rows = [{"model": m, "line": int(s.lines[i]), metric: float(s.values[i])}
                for m, s in series.items() for i in np.flatnonzero(s.anomalies)]
        report.add_text("Anomalies", f"{len(rows)} record(s); rule: {summary['anomaly_rule']}")
        if rows:
            report.add_table("Anomalous records", rows[:MAX_ANOMALY_ROWS])
    report.add_json("Summary", {k: v for k, v in summary.items() if k != "over_time"})
    return report.write(path)


def analyze_log_file(log_file: Path, metric: str, report_path: Path) -> dict[str, Any]:
    """Parse, analyze and write the report; returns the summary."""
    parsed = parse_file(log_file)
    summary, series = analyze(parsed, metric)
    write_report(summary, series, report_path, log_file)
    summary["report"] = str(report_path)
    return summary
