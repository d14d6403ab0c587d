"""`icd serve` tells the truth: "ready" only when every model is; Triton's reason for each model that is not;
a trace folder that cannot be written is refused before the server starts (real tritonserver)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icd.cli.main import main
from icd.serve.model_states import log_reasons
from icd.serve.synthetic_model import EchoDelaySpec, write_echo_delay_model

pytestmark = pytest.mark.e2e


def _serve(repo: Path, free_port, *extra: str, env: dict | None = None) -> subprocess.Popen:
    import os

    return subprocess.Popen(
        [sys.executable, "-m", "icd.cli.main", "serve", "--model-repository", str(repo), "--http-port",
         str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})})


def _until(proc: subprocess.Popen, marker: str, timeout_s: float = 300) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if marker in line:
            return lines
    raise AssertionError(f"{marker!r} not printed:\n" + "\n".join(lines))


def test_reasons_come_from_triton_log_lines():
    log = ('E1129 11:26:08.144210 16554 model_repository_manager.cc:1460] "Poll failed for model directory '
           "'bert_baseline': unexpected directory name 'bert_baseline' for model 'bert_icd', directory name must "
           'equal model name"\nI1129 11:26:08 1 x.cc:1] "noise"\n')
    assert log_reasons(log) == {"bert_baseline": "Poll failed for model directory 'bert_baseline': unexpected "
                                                 "directory name 'bert_baseline' for model 'bert_icd', directory "
                                                 "name must equal model name"}


def test_partly_ready_names_the_broken_model_and_its_reason(tmp_path, free_port):
    repo = tmp_path / "repo"
    write_echo_delay_model(repo, EchoDelaySpec(delay_ms=1.0))
    (repo / "broken").mkdir()
    (repo / "broken" / "config.pbtxt").write_text('backend: "python"\nmax_batch_size: 8\n')  # no version folder
    proc = _serve(repo, free_port)
    try:
        lines = _until(proc, "Ctrl-C or SIGTERM stops it")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    text = "\n".join(lines)
    assert "model echo_delay v1: READY" in text
    assert "model broken: NOT LOADED (failed to load model 'broken': at least one version must be available" in text
    assert "partly ready: 1 of 2 models READY, not ready: broken" in text
    assert "v?: ?" not in text and proc.returncode == 0


@pytest.mark.slow
def test_no_ready_model_is_an_error_not_ready(tmp_path, free_port, triton_repo_bert):
    proc = _serve(triton_repo_bert, free_port, "--model", "bert_icd", env={"TRITON_ICD_CACHE_SIZE": "lots"})
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2, out
    assert "ready;" not in out and "partly ready" not in out
    assert "icd: error: no model is READY — bert_icd: UNAVAILABLE (" in out and "TRITON_ICD_CACHE_SIZE" in out


def test_trace_folder_is_created_or_refused_before_the_server_starts(tmp_path, free_port, triton_repo_small, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    code = main(["serve", "--model-repository", str(triton_repo_small), *ports,
                 "--trace-file", str(blocker / "traces" / "trace.json")])
    captured = capsys.readouterr()
    assert code == 2 and "--trace-file folder" in captured.err and "cannot create the folder" in captured.err
    assert "starting tritonserver" not in captured.out
    proc = _serve(triton_repo_small, free_port, "--trace-file", str(tmp_path / "new" / "deeper" / "trace.json"))
    try:
        _until(proc, "ready; Ctrl-C or SIGTERM stops it")
        assert (tmp_path / "new" / "deeper").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
