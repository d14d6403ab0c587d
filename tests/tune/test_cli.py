"""`icd tune` bad input: one line, exit 2, nothing written — all before any server is contacted."""

from __future__ import annotations

import pytest

from tests.ops.helpers import run_icd


@pytest.mark.parametrize(("args", "message"), [
    (["--max-batch-sizes", "4,8", "--preferred-batch-sizes", "16"],
     "no possible configuration: preferred_batch_size [16] > max_batch_size 4"),
    (["--instance-counts", "0"], "instance_counts: Value error, values must be >= 1"),
    (["--threads", "one"], "--threads: expected comma-separated integers"),
    (["--preferred-batch-sizes", "big"], "--preferred-batch-sizes: 'big' is not"),
    (["--objective", "latency"], "--objective: 'latency' is not one of ['throughput', 'cost']"),
    (["--objective", "cost"], "--objective cost needs --cost-model"),
    (["--cost-model", "azure-nd"], "(shipped: aws-g5, aws-p4d, cpu, gcp-a2)"),
    (["--mode", "smart"], "--mode: 'smart' is not one of ['brute', 'quick']"),
    (["--launch-mode", "docker"], "--launch-mode: 'docker' is not one of"),
    (["--slo-percentile", "90"], "SLO percentile must be one of (50, 95, 99)"),
    (["--target-utilization", "120"], "--target-utilization: invalid value 120"),
    (["--duration", "0"], "--duration: invalid value 0.0"),
    (["--report", "tune.txt"], "--report: invalid value 'tune.txt'"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    done = run_icd(capsys, "tune", "--endpoint", "http://127.0.0.1:1", "--report", "out/tune.json", *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_space_file_errors_name_the_file_and_field(capsys, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("max_batch_sizes: [8, big]\n")
    done = run_icd(capsys, "tune", "--space", str(space), "--report", str(tmp_path / "out" / "t.json"))
    assert done.returncode == 2 and f"{space}: max_batch_sizes.1" in done.stderr


def test_tune_report_of_a_missing_or_foreign_checkpoint(capsys, tmp_path):
    done = run_icd(capsys, "tune-report", str(tmp_path / "none.checkpoint.json"))
    assert done.returncode == 2 and "not found" in done.stderr
    foreign = tmp_path / "x.checkpoint.json"
    foreign.write_text('{"schema": "something else"}')
    done = run_icd(capsys, "tune-report", str(foreign))
    assert done.returncode == 2 and "schema is not icd.tune.checkpoint/1" in done.stderr
