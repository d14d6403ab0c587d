"""End to end on the real exported MiniLM (bert_icd / bert_baseline) served by the embedded Triton: the guide's
Troubleshooting, Security, Log Analysis and Correlation commands."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest

from icd.ops.crypto import generate_key
from tests.ops.helpers import infer_body, run_script


@pytest.mark.e2e
@pytest.mark.slow
def test_verify_encrypt_serve_and_analyze_logs(tmp_path, triton_repo_bert, triton_server, capsys):
    from tests.ops.helpers import run_icd

    repo = tmp_path / "deploy" / "triton" / "models"
    shutil.copytree(triton_repo_bert, repo)
    version = repo / "bert_icd" / "1"
    # Troubleshooting: permutation.json exists and is valid JSON
    json.load(open(version / "permutation.json"))
    assert run_icd(capsys, "verify", str(repo)).returncode == 0
    # Security: encrypt with a key made by keygen, the folder still verifies, the plaintext is gone
    generate_key(tmp_path / "production.key")
    done = run_script("encrypt_permutation.py", "--input", "deploy/triton/models/bert_icd/1/permutation.json",
                      "--key-file", "production.key", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (version / "permutation.json").exists() and (version / "permutation.json.enc").is_file()
    assert run_icd(capsys, "verify", str(repo)).returncode == 0
    log_file = tmp_path / "triton.log"
    # the serving model decrypts permutation.json.enc with the key file named in its environment
    server = triton_server(repo, log_file=log_file, env={"TRITON_ICD_PROFILE": "true",
                                                         "ICD_PERMUTATION_KEY_FILE": str(tmp_path / "production.key")})
    with httpx.Client(trust_env=False, timeout=30) as client:
        for model in ("bert_icd", "bert_baseline"):
            for batch in (1, 2, 1):
                resp = client.post(f"{server.http_url}/v2/models/{model}/infer", json=infer_body(batch, 16))
                assert resp.status_code == 200, resp.text
        stats = client.get(f"{server.http_url}/v2/models/bert_icd/stats").json()
    assert stats["model_stats"][0]["inference_stats"]["success"]["count"] == 3
    # Log analysis on Triton's real log, grepped for ICD as the guide does
    icd_lines = [line for line in log_file.read_text().splitlines() if "ICD" in line]
    assert all('"profile"' in line for line in icd_lines if line.startswith("ICD {"))  # TRITON_ICD_PROFILE=true
    (tmp_path / "icd_performance.log").write_text("\n".join(icd_lines + ["ICD {broken"]) + "\n")
    done = run_script("analyze_icd_logs.py", "--log-file", "icd_performance.log", "--metric", "permutation_time",
                      "--report", "icd_analysis.html", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "6 ICD records, 1 malformed" in done.stdout and "bert_icd: n=3" in done.stdout
    assert (tmp_path / "icd_analysis.html").is_file()
    # tampering after the fact: every mismatch is reported
    (version / "model.pt").write_bytes(b"tampered")
    (version / "icd_layout.json").write_text("{}")
    bad = run_icd(capsys, "verify", str(repo))
    assert bad.returncode == 1 and bad.stdout.count("FAIL") == 2


@pytest.mark.e2e
@pytest.mark.slow
def test_compress_guide_command_then_model_still_loads(tmp_path, triton_repo_bert, triton_server):
    repo = tmp_path / "deploy" / "triton" / "models"
    shutil.copytree(triton_repo_bert, repo)
    done = run_script("compress_correlations.py", "--input-dir", "deploy/triton/models/", "--compression-ratio",
                      "0.1", "--validate-accuracy", cwd=tmp_path, timeout=600)
    print(done.stdout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "compressed, validated, backup removed" in done.stdout
    server = triton_server(repo, load_models=("bert_icd",))
    assert server.model_ready("bert_icd")
    resp = httpx.post(f"{server.http_url}/v2/models/bert_icd/infer", json=infer_body(1, 8), trust_env=False,
                      timeout=30)
    assert resp.status_code == 200, resp.text
