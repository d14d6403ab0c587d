"""Must show 1: the guide's export command, then `icd serve`, then real inference over HTTP and gRPC."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.serve.helpers import in_process, infer_concurrently, infer_grpc, infer_http, references, tokenize

REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _export(work: Path, *flags: str) -> None:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "export_triton_model.py"), *flags],
                          cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


class _Output:
    """Collects a subprocess's stdout lines in a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float, proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed; output:\n" + "\n".join(self.lines))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_guide_export_then_icd_serve_then_http_and_grpc(tmp_path, identity_run_dir, free_port, minilm_tokenizer,
                                                         corpus_split):
    work = tmp_path
    (work / "runs").mkdir()
    os.symlink(identity_run_dir, work / "runs" / "bert_production")
    _export(work, "--input-dir", "runs/bert_production", "--model-name", "bert_icd",
            "--output-dir", "deploy/triton/models")
    _export(work, "--input-dir", "runs/bert_production", "--model-name", "bert_baseline",
            "--output-dir", "deploy/triton/models", "--baseline")

    http, grpc, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "icd.cli.main", "serve", "--model-repository", "deploy/triton/models",
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    output = _Output(proc)
    try:
        output.wait_for("ready; Ctrl-C or SIGTERM stops it", 240, proc)
        assert "model bert_icd v1: READY" in output.text and "model bert_baseline v1: READY" in output.text
        http_url, grpc_url = f"http://127.0.0.1:{http}", f"127.0.0.1:{grpc}"
        ids, mask = tokenize(minilm_tokenizer, corpus_split.heldout[:8])
        for name, model in references(identity_run_dir).items():
            expected = in_process(model, ids, mask)
            np.testing.assert_allclose(infer_http(http_url, name, ids[:1], mask[:1]), expected[:1], atol=1e-5, rtol=0)
            np.testing.assert_allclose(infer_grpc(grpc_url, name, ids[1:2], mask[1:2]), expected[1:2], atol=1e-5,
                                       rtol=0)
            np.testing.assert_allclose(infer_grpc(grpc_url, name, ids, mask), expected, atol=1e-5, rtol=0)
            np.testing.assert_allclose(infer_concurrently(http_url, name, ids, mask), expected, atol=1e-5, rtol=0)
            stats = httpx.get(f"{http_url}/v2/models/{name}/stats", trust_env=False).json()["model_stats"][0]
            assert stats["inference_count"] == 1 + 1 + 8 + 8
            assert max(row["batch_size"] for row in stats["batch_stats"]) > 1, "dynamic batching formed a batch"

        # The guide's troubleshooting commands.
        curl = subprocess.run(["curl", "-sf", "--noproxy", "*", f"{http_url}/v2/models/bert_icd/stats"],
                              capture_output=True, text=True, timeout=30)
        assert curl.returncode == 0 and '"name":"bert_icd"' in curl.stdout
        listing = subprocess.run(["ls", "-la", "deploy/triton/models/bert_icd/1/"], cwd=work, capture_output=True,
                                 text=True)
        assert "model.pt" in listing.stdout and "permutation.json" in listing.stdout
        check = subprocess.run([sys.executable, "-c", "import json; json.load(open("
                                "'deploy/triton/models/bert_icd/1/permutation.json'))"], cwd=work)
        assert check.returncode == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, output.text
    assert "Triton stopped" in output.text
    pid = int(output.text.split("Triton (pid ", 1)[1].split(")", 1)[0])
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
