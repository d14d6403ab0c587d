from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icd.errors import UserError
from icd.ops.log_analysis import mark_anomalies, series_by_model
from icd.ops.log_report import analyze_log_file
from icd.ops.logs import TimeAxis, parse_lines
from tests.ops.helpers import run_icd, run_script


def _icd(model: str, value: float, **extra) -> str:
    return "ICD " + json.dumps({"tag": "ICD", "model": model, "version": "1", "permutation_time": value, **extra})


def _log_lines() -> list[str]:
    lines = ["I1127 07:00:00.000001 42 server.cc:1] Started HTTPService at 127.0.0.1:8000"]
    for i in range(60):
        lines.append(_icd("bert_icd", 0.001 + 0.00001 * (i % 5), profile={"forward_ms": 3.0 + i % 3}))
        if i % 10 == 0:
            lines.append(f"I1127 07:00:{i:02d}.000001 42 model.cc:9] tick")
    lines.append(_icd("bert_icd", 0.5))  # the anomaly
    lines += [_icd("bert_baseline", 0.0) for _ in range(20)]
    lines += ["ICD {not json", "ICD {\"tag\": \"ICD\"}", "garbage \x00 line", "ICD"]
    return lines


def test_parse_counts_malformed_and_uses_triton_time():
    parsed = parse_lines(_log_lines())
    assert len(parsed.records) == 81
    assert parsed.malformed == 3  # bad JSON, no model, bare tag; the garbage line is just "other"
    assert parsed.time_axis == TimeAxis.TRITON
    assert len(parsed.triton) == 7
    assert parsed.records[0].value("profile.forward_ms") == 3.0


def test_anomaly_is_marked_per_model():
    series, missing = series_by_model(parse_lines(_log_lines()), "permutation_time")
    assert missing == 0
    icd = series["bert_icd"]
    assert icd.anomalies.sum() == 1 and icd.values[icd.anomalies][0] == 0.5
    assert series["bert_baseline"].anomalies.sum() == 0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=50))
def test_anomaly_mask_shape_and_median_never_flagged(values):
    arr = np.array(values)
    mask = mark_anomalies(arr)
    assert mask.shape == arr.shape
    assert not mask[arr == np.median(arr)].any()


def test_guide_command_writes_report(tmp_path):
    log = tmp_path / "icd_performance.log"
    log.write_text("\n".join(_log_lines()) + "\n")
    done = run_script("analyze_icd_logs.py", "--log-file", "icd_performance.log", "--metric", "permutation_time",
                      "--report", "icd_analysis.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "3 malformed lines skipped" in done.stdout and "anomalies=1" in done.stdout
    html = (tmp_path / "icd_analysis.html").read_text()
    assert "percentiles over time" in html and "Anomalous records" in html and "data:image/png" in html


def test_missing_log_file_is_user_error(tmp_path, capsys):
    done = run_icd(capsys, "logs", "--log-file", str(tmp_path / "nope.log"), "--report", str(tmp_path / "r.html"))
    assert done.returncode == 2 and "nope.log" in done.stderr and "Traceback" not in done.stderr


def test_a_metric_no_record_has_is_refused_naming_the_fields_there(tmp_path):
    """A misspelt --metric (or profile.* with TRITON_ICD_PROFILE off) gave an empty report and exit 0."""
    log = tmp_path / "x.log"
    log.write_text(_icd("m", 1.0) + "\n")
    with pytest.raises(UserError, match=r"^--metric 'no_such_field': no ICD record of the log has this field; "
                                        r"numeric fields there: .*permutation_time"):
        analyze_log_file(log, "no_such_field", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_a_metric_some_records_lack_still_writes_the_report(tmp_path):
    log = tmp_path / "x.log"
    log.write_text(_icd("m", 1.0) + "\n" + 'ICD {"tag": "ICD", "model": "m"}\n')
    summary = analyze_log_file(log, "permutation_time", tmp_path / "r.html")
    assert summary["records_without_metric"] == 1 and (tmp_path / "r.html").is_file()


def test_docker_logs_prefix_and_own_timestamps():
    lines = ['triton_1  | ICD {"tag": "ICD", "model": "bert_icd", "ts": 100.0, "permutation_time": 0.0}',
             'triton_1  | ICD {"tag": "ICD", "model": "bert_icd", "ts": 101.5, "permutation_time": 0.0}']
    parsed = parse_lines(lines)
    assert parsed.time_axis == TimeAxis.FIELD and [r.time for r in parsed.records] == [100.0, 101.5]
    assert parsed.malformed == 0
