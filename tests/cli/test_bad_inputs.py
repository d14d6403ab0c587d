"""Bad input across the CLI and the guide's scripts: exit 2, one line naming file / field / value, nothing written.

Each row runs one command in its own empty folder (the working directory, so state folders and relative outputs
land there too) and checks:

* exit code 2 (``icd.errors.UserError`` or a usage error), no exception escaping ``main`` (a traceback for the user);
* stderr is exactly one line, ``icd: error: ...``, naming what was wrong (every needle of the row appears in it);
* the folder holds exactly what the row put there before the command: no partial artefact, no state left behind.

Rows run in-process (``icd.cli.main.main``, or the script file itself through ``runpy`` for the guide's
``scripts/*.py``): the same code path as a shell, seconds instead of minutes. ``test_script_process_*`` runs one
row as a real process to hold the exit code, the single stderr line and the absence of a traceback there too.

Rows whose fix lands on another engineer's branch carry ``xfail(strict=True)`` naming the branch: the lead removes
the mark when that branch merges (strict, so a fixed row cannot silently stay marked).
"""

from __future__ import annotations

import http.server
import json
import runpy
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from icd.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
MINILM = str(ROOT / "configs" / "minilm.json")
KEY_HEX = "00" * 32  # a well-formed AES-256 key (64 hex characters)
OTHER_KEY_HEX = "11" * 32


@dataclass(frozen=True)
class Case:
    """One bad input: the command (``{d}`` = the case folder, ``{closed}`` = a URL nothing listens on,
    ``{html}`` = a server answering HTML to everything, ``{otherjson}`` / ``{refusing}`` = Prometheus' envelope around
    other data / its error), what its error line must name, and the files it needs."""

    id: str
    argv: tuple[str, ...]
    needles: tuple[str, ...]
    script: str | None = None
    setup: Callable[[Path], None] | None = None
    fixed_on: str | None = None
    marks: tuple = field(default_factory=tuple)
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables the row sets (``ICD_LOAD_*`` values instead of flags)."""


# -- inputs the rows need --------------------------------------------------------------------------------------
def _write(name: str, text: str) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)

    return setup


def _bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)

    return setup


def _two_correlation_files_one_empty(folder: Path) -> None:
    """``repo/a``: a readable correlation file; ``repo/b``: an empty one (a truncated copy)."""
    for name in ("a", "b"):
        (folder / "repo" / name / "1").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "repo" / "a" / "1" / "correlation_matrix.npz", hidden=rng.standard_normal((64, 64)))
    (folder / "repo" / "b" / "1" / "correlation_matrix.npz").write_bytes(b"")


def _all(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        for step in setups:
            step(folder)

    return setup


def _npy(name: str, array: np.ndarray) -> Callable[[Path], None]:
    def setup(folder: Path) -> None:
        np.save(folder / name, array)

    return setup


def _encrypted_permutation(folder: Path) -> None:
    from icd.ops.crypto import encrypt_file, read_key

    (folder / "key.hex").write_text(KEY_HEX)
    (folder / "other.hex").write_text(OTHER_KEY_HEX)
    (folder / "permutation.json").write_text(json.dumps({"hidden": [1, 0]}))
    encrypt_file(folder / "permutation.json", read_key(folder / "key.hex"), folder / "permutation.json.enc")


def _canary_state_with_corrupt_decision(folder: Path) -> None:
    from icd.rollout.canary_spec import CanarySpec
    from icd.rollout.status_store import DECISIONS_FILE, CanaryStatus, StatusStore

    canary = folder / "state" / "canary"
    canary.mkdir(parents=True)
    StatusStore(canary).save(CanarySpec.progressive("bert_baseline", "bert_icd"), CanaryStatus())
    (canary / DECISIONS_FILE).write_text('{"tick": 1, "action": "hold"\nnot json at all\n')


def _repository_without_checksums(folder: Path) -> None:
    version = folder / "repo" / "bert_icd" / "1"
    version.mkdir(parents=True)
    (folder / "repo" / "bert_icd" / "config.pbtxt").write_text('name: "bert_icd"\nbackend: "python"\n')
    (version / "model.py").write_text("# no checksums.sha256 next to me\n")


NOT_UTF8 = b"\xff\xfe{\x00\x81 not text"
ICD_LOG = _write("icd.log", 'ICD {"tag":"ICD","model":"m","version":"1","permutation_time":0.0,"infer_ms":3.2}\n')
CONFIG_TYPO = _write("config.json", '{"name": "x", "data": {"calibration_text": 16}}')
BAD_JSON = _write("config.json", '{"name": "x",\n "data": {')
BAD_YAML = _write("config.yaml", "name: x\ndata: [calibration_texts: 16\n")
LOAD_CONFIG_BAD = _write("load.yaml", "concurrency: many\n")

CASES = [
    # -- icd run / pair / config: the config loader and the pipeline ------------------------------------------
    Case("run-config-missing", ("run", "-c", "{d}/absent.json", "--out", "{d}/run"), ("absent.json", "not found")),
    Case("run-config-not-json", ("run", "-c", "{d}/config.json", "--out", "{d}/run"), ("config.json", "line 2"),
         setup=BAD_JSON),
    Case("run-config-not-yaml", ("run", "-c", "{d}/config.yaml", "--out", "{d}/run"), ("config.yaml", "line 3"),
         setup=BAD_YAML),
    Case("run-config-unknown-key", ("run", "-c", "{d}/config.json", "--out", "{d}/run"),
         ("config.json", "data.calibration_text"), setup=CONFIG_TYPO),
    Case("run-override-unknown-key", ("run", "-c", MINILM, "--override", "pipeline.nope=1", "--out", "{d}/run"),
         ("pipeline.nope",)),
    Case("run-override-not-a-number", ("run", "-c", MINILM, "--override", "data.batch_size=big", "--out", "{d}/run"),
         ("data.batch_size", "big")),
    Case("run-override-no-equals", ("run", "-c", MINILM, "--override", "oops", "--out", "{d}/run"), ("oops",)),
    Case("run-override-bad-index", ("run", "-c", MINILM, "--override", "transforms.3.n=2", "--out", "{d}/run"),
         ("transforms.3.n", "3")),
    Case("run-mode-unknown", ("run", "-c", MINILM, "--override", "pipeline.mode=bogus", "--out", "{d}/run"),
         ("pipeline.mode", "bogus")),
    Case("run-latency-runs-zero", ("run", "-c", MINILM, "--override", "measure.latency.runs=0", "--out", "{d}/run"),
         ("measure.latency.runs", "0")),
    Case("run-transform-unknown", ("run", "-c", MINILM, "--override", 'transforms=[{"type":"prune"}]',
                                   "--out", "{d}/run"), ("transforms.0", "prune")),
    Case("run-nm-n-above-m", ("run", "-c", MINILM, "--override", 'transforms=[{"type":"nm_sparsity","n":4,"m":2}]',
                              "--out", "{d}/run"), ("nm_sparsity", "n=4", "m=2")),
    Case("run-dims-unknown", ("run", "-c", MINILM, "--override", 'pipeline.dims=["bogus"]', "--out", "{d}/run"),
         ("pipeline.dims", "bogus")),
    Case("run-bert-config-missing", ("run", "-c", MINILM, "--override", "model.source=bert_config", "--out",
                                     "{d}/run", "--no-progress"), ("model.bert_config",)),
    Case("run-checkpoint-missing", ("run", "-c", MINILM, "--override", "model.path={d}/nockpt", "--out", "{d}/run"),
         ("model.path", "nockpt")),
    Case("run-out-is-a-file", ("run", "-c", MINILM, "--out", "{d}/taken"), ("--out", "taken"),
         setup=_write("taken", "a file")),
    Case("run-out-foreign-folder", ("run", "-c", MINILM, "--out", "{d}/notarun"), ("notarun", "not a previous icd run"),
         setup=_write("notarun/keep.txt", "precious")),
    Case("run-calibration-texts-too-many",
         ("run", "-c", MINILM, "--override", "data.calibration_texts=100000", "--out", "{d}/run", "--no-progress"),
         ("data.calibration_texts", "100000")),
    Case("run-heldout-texts-one",
         ("run", "-c", MINILM, "--override", "data.heldout_texts=1", "--out", "{d}/run", "--no-progress"),
         ("data.heldout_texts", "1")),
    Case("pair-config-missing", ("pair", "-c", "{d}/absent.json", "--out", "{d}/pair"), ("absent.json",)),
    Case("config-show-not-json", ("config", "show", "-c", "{d}/config.json"), ("config.json",), setup=BAD_JSON),
    Case("permute-nm-weights-missing", ("permute-nm", "-w", "{d}/w.npy", "-o", "{d}/perm.json"), ("w.npy",)),
    Case("permute-nm-weights-1d", ("permute-nm", "-w", "{d}/w.npy", "-o", "{d}/perm.json"), ("w.npy", "2-D"),
         setup=_npy("w.npy", np.ones(8, dtype=np.float32))),
    Case("permute-nm-n-above-m", ("permute-nm", "-w", "{d}/w.npy", "--n", "4", "--m", "2", "-o", "{d}/perm.json"),
         ("4", "2"), setup=_npy("w.npy", np.ones((4, 8), dtype=np.float32))),
    # -- export / serve (the guide's export script) -------------------------------------------------------------
    Case("export-run-missing", ("--input-dir", "{d}/runs/none", "--model-name", "bert_icd", "--output-dir",
                                "{d}/models"), ("runs/none",), script="export_triton_model.py"),
    Case("export-not-a-run", ("--input-dir", "{d}/runs", "--model-name", "bert_icd", "--output-dir", "{d}/models"),
         ("runs",), script="export_triton_model.py", setup=_write("runs/notes.txt", "no run here")),
    Case("serve-repository-missing", ("serve", "--model-repository", "{d}/models"), ("models", "not found")),
    Case("export-torch-threads-not-integer", ("export-triton", "--input-dir", "{d}/runs", "--model-name", "m",
                                              "--output-dir", "{d}/models", "--torch-threads", "two"),
         ("--torch-threads", "two")),
    # -- load: the guide's benchmark and simulation scripts -------------------------------------------------------
    Case("bench-duration-not-a-duration", ("{closed}", "bert_icd", "--duration", "abc", "--report", "{d}/r.json"),
         ("--duration", "abc"), script="production_benchmark.py"),
    Case("bench-endpoint-unreachable", ("{closed}", "bert_icd", "--duration", "1", "--report", "{d}/r.json"),
         ("unreachable",), script="production_benchmark.py"),
    Case("bench-rate-negative", ("{closed}", "bert_icd", "--rate", "-5", "--duration", "1", "--report", "{d}/r.json"),
         ("--rate", "-5"), script="production_benchmark.py"),
    Case("bench-input-shape-zero", ("{closed}", "bert_icd", "--input-shape", "0", "--report", "{d}/r.json"),
         ("--input-shape", "0"), script="production_benchmark.py"),
    Case("bench-load-config-bad-value", ("{closed}", "bert_icd", "--config", "{d}/load.yaml", "--report",
                                         "{d}/r.json"), ("load.yaml", "concurrency", "many"),
         script="production_benchmark.py", setup=LOAD_CONFIG_BAD),
    Case("simulate-pattern-unknown", ("--endpoint", "{closed}", "--models", "a,b", "--traffic-pattern", "bogus",
                                      "--duration", "1", "--report", "{d}/sim.json"), ("--traffic-pattern", "bogus"),
         script="production_simulation.py"),
    Case("simulate-endpoint-unreachable", ("--endpoint", "{closed}", "--models", "a", "--duration", "1",
                                           "--report", "{d}/sim.json"), ("unreachable",),
         script="production_simulation.py"),
    # -- monitor -------------------------------------------------------------------------------------------------
    Case("status-prometheus-unreachable", ("status", "--prometheus", "{closed}"), ("not reachable",)),
    Case("status-prometheus-answers-html", ("status", "--prometheus", "{html}"), ("not a Prometheus API answer",)),
    Case("status-prometheus-answers-other-json", ("status", "--prometheus", "{otherjson}"),
         ("/api/v1/rules", "not shaped as Prometheus' API documents it", "KeyError")),
    Case("status-prometheus-refuses-queries", ("status", "--prometheus", "{refusing}"),
         ("--prometheus", "refused a KPI query", "bad_data: nope")),
    Case("monitor-up-bad-scrape-interval", ("monitor", "up", "--scrape-interval", "often", "--state-dir",
                                            "{d}/state"), ("scrape", "often")),
    # -- rollout ------------------------------------------------------------------------------------------------
    Case("canary-threshold-not-a-number", ("--baseline", "a", "--canary", "b", "--alert-threshold", "abc"),
         ("--alert-threshold", "abc"), script="monitor_canary.py"),
    Case("canary-prometheus-answers-html", ("--baseline", "a", "--canary", "b", "--prometheus-url", "{html}",
                                            "--state-dir", "{d}/state"), ("Prometheus",),
         script="monitor_canary.py"),
    Case("canary-decision-log-corrupt", ("canary", "status", "--state-dir", "{d}/state"),
         ("decisions.jsonl", "line 2"), setup=_canary_state_with_corrupt_decision),
    Case("switch-no-router", ("--from", "blue", "--to", "green", "--state-dir", "{d}/state"), ("router",),
         script="switch_traffic.py"),
    # -- ops: checksums, crypto, logs, traces, compression, cost ------------------------------------------------
    Case("verify-path-missing", ("verify", "{d}/models"), ("models",)),
    Case("verify-no-checksums", ("verify", "{d}/repo"), ("checksums",), setup=_repository_without_checksums),
    Case("encrypt-key-malformed", ("--input", "{d}/permutation.json", "--key-file", "{d}/key.hex"),
         ("key.hex", "hex"), script="encrypt_permutation.py",
         setup=_all(_write("key.hex", "short"), _write("permutation.json", "{}"))),
    Case("encrypt-input-missing", ("--input", "{d}/permutation.json", "--key-file", "{d}/key.hex"),
         ("permutation.json",), script="encrypt_permutation.py", setup=_write("key.hex", KEY_HEX)),
    Case("decrypt-wrong-key", ("decrypt", "--input", "{d}/permutation.json.enc", "--key-file", "{d}/other.hex",
                               "--output", "{d}/plain.json"), ("permutation.json.enc",),
         setup=_encrypted_permutation),
    Case("logs-file-missing", ("--log-file", "{d}/icd.log", "--report", "{d}/report.html"), ("icd.log",),
         script="analyze_icd_logs.py"),
    Case("trace-folder-missing", ("{d}/traces",), ("traces", "not found"), script="analyze_performance_trace.py"),
    Case("compress-folder-missing", ("--input-dir", "{d}/models", "--compression-ratio", "0.1"), ("models",),
         script="compress_correlations.py"),
    Case("compress-ratio-above-one", ("--input-dir", "{d}", "--compression-ratio", "2"),
         ("--compression-ratio", "2"), script="compress_correlations.py"),
    # -- paths that are not what they must be, values past their range, files that are not text ---------------
    Case("run-out-under-a-file", ("run", "-c", MINILM, "--out", "{d}/taken/sub"), ("taken", "not a directory"),
         setup=_write("taken", "a file")),
    Case("run-checkpoint-relative-names-the-working-directory", ("run", "-c", MINILM, "--override",
                                                                 "model.path=nockpt", "--out", "{d}/run"),
         ("model.path", "nockpt", "relative to the working directory")),
    Case("run-fails-under-new-parents", ("run", "-c", MINILM, "--override", "model.path={d}/nockpt", "--out",
                                         "{d}/new/deeper/run"), ("model.path", "nockpt")),
    Case("run-override-infinite", ("run", "-c", MINILM, "--override", "solver.time_limit_s=Infinity", "--out",
                                   "{d}/run"), ("solver.time_limit_s", "finite")),
    Case("run-config-not-utf8", ("run", "-c", "{d}/config.json", "--out", "{d}/run"), ("config.json", "UTF-8"),
         setup=_bytes("config.json", NOT_UTF8)),
    Case("bench-load-config-not-utf8", ("{closed}", "bert_icd", "--config", "{d}/load.json", "--report",
                                        "{d}/r.json"), ("--config", "load.json", "UTF-8"),
         script="production_benchmark.py", setup=_bytes("load.json", NOT_UTF8)),
    Case("export-config-not-yaml", ("export-triton", "--input-dir", "{d}/runs", "--output-dir", "{d}/models",
                                    "--export-config", "{d}/e.yaml"), ("e.yaml", "YAML"),
         setup=_write("e.yaml", "max_batch_size: [8\n")),
    Case("keygen-path-is-a-directory", ("keygen", "{d}/keys", "--force"), ("keys", "directory"),
         setup=_write("keys/readme.txt", "keys live here")),
    Case("keygen-parent-is-a-file", ("keygen", "{d}/afile/k.key"), ("afile", "not a directory"),
         setup=_write("afile", "a file")),
    Case("encrypt-input-not-json", ("--input", "{d}/permutation.json", "--key-file", "{d}/key.hex"),
         ("permutation.json", "not valid JSON"), script="encrypt_permutation.py",
         setup=_all(_write("key.hex", KEY_HEX), _write("permutation.json", '{"hidden": [1, 0'))),
    Case("logs-report-is-a-directory", ("--log-file", "{d}/icd.log", "--report", "{d}/out"), ("out", "directory"),
         script="analyze_icd_logs.py", setup=_all(ICD_LOG, _write("out/keep.txt", "a folder"))),
    Case("logs-metric-misspelt", ("--log-file", "{d}/icd.log", "--metric", "permutaton_time", "--report",
                                  "{d}/r.html"), ("--metric", "permutaton_time", "permutation_time"),
         script="analyze_icd_logs.py", setup=ICD_LOG),
    Case("compress-one-file-unreadable", ("--input-dir", "{d}/repo", "--compression-ratio", "0.5"),
         ("b/1/correlation_matrix.npz", "not a readable .npz"), script="compress_correlations.py",
         setup=_two_correlation_files_one_empty),
    Case("serve-port-out-of-range", ("serve", "--http-port", "70000", "--model-repository", "{d}"),
         ("--http-port", "70000")),
    Case("status-prometheus-port-not-a-port", ("status", "--prometheus", "http://127.0.0.1:99999"),
         ("--prometheus", "99999")),
    Case("validate-endpoint-port-not-a-number", ("validate", "--endpoint", "http://localhost:abc"),
         ("--endpoint", "localhost:abc")),
    Case("validate-repository-missing", ("validate", "--endpoint", "{closed}", "--model-repository", "{d}/nope"),
         ("--model-repository", "nope")),
    Case("ab-report-is-a-directory", ("--model-a", "a", "--model-b", "b", "--report", "{d}/out"),
         ("--report", "directory"), script="ab_test_framework.py", setup=_write("out/keep.txt", "a folder")),
    Case("ab-seq-len-zero", ("--model-a", "a", "--model-b", "b", "--seq-len", "0", "--report", "{d}/ab.json"),
         ("--seq-len", "0"), script="ab_test_framework.py"),
    Case("simulate-rate-nan", ("--endpoint", "{closed}", "--models", "a", "--rate", "nan", "--duration", "1",
                               "--report", "{d}/sim.json"), ("--rate", "nan"), script="production_simulation.py"),
    Case("simulate-slo-negative", ("--endpoint", "{closed}", "--models", "a", "--traffic-pattern", "stress",
                                   "--slo-p95-ms", "-5", "--duration", "1", "--report", "{d}/sim.json"),
         ("--slo-p95-ms", "-5"), script="production_simulation.py"),
    Case("router-variant-weight-nan", ("router", "up", "--variant", "bert_icd=nan", "--state-dir", "{d}/state"),
         ("--variant", "nan")),
    Case("canary-traffic-percentage-nan", ("canary", "deploy", "--traffic-percentage", "nan", "--state-dir",
                                           "{d}/state"), ("--traffic-percentage", "nan")),
    Case("canary-load-inputs-unknown", ("canary", "deploy", "--load-rate", "2", "--load-inputs", "images",
                                        "--state-dir", "{d}/state"), ("--load-inputs", "images")),
    Case("canary-match-header-not-a-regex", ("canary", "deploy", "--strategy", "ab", "--match-header", "X-User=~[(",
                                             "--state-dir", "{d}/state"), ("--match-header", "regular expression")),
    Case("canary-match-header-pcre-refuses", ("canary", "deploy", "--strategy", "ab", "--match-header",
                                              "X-User=~(?a)x", "--state-dir", "{d}/state"),
         ("X-User=~(?a)x", "nginx refuses", "pcre")),
    Case("bench-env-concurrency-not-an-integer", ("bench", "{closed}", "bert_icd"), ("ICD_LOAD_CONCURRENCY", "'abc'"),
         env=(("ICD_LOAD_CONCURRENCY", "abc"),)),
    Case("optimize-instances-inputs-unknown", ("--inputs", "images", "--report", "{d}/opt.json"),
         ("--inputs", "images"), script="optimize_instances.py"),
    Case("optimize-instances-duration-negative", ("--duration", "-1", "--report", "{d}/opt.json"),
         ("--duration", "-1"), script="optimize_instances.py"),
    Case("optimize-instances-cost-model-unknown", ("--cost-model", "bogus", "--report", "{d}/opt.json"),
         ("--cost-model", "bogus"), script="optimize_instances.py"),
]


# -- fixtures ----------------------------------------------------------------------------------------------------
class _HtmlHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request with a 200 HTML page (a proxy's maintenance page where Prometheus should be)."""

    body = b"<html><body>maintenance</body></html>"
    content_type = "text/html"

    def _answer(self) -> None:
        body = self.body
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:  # noqa: D102 - quiet
        pass


class _OtherJsonHandler(_HtmlHandler):
    """Prometheus' envelope around data of another shape (another service's API on Prometheus' port)."""

    body = b'{"status": "success", "data": {"foo": 1}}'
    content_type = "application/json"


class _RefusingHandler(_HtmlHandler):
    """Prometheus' error envelope for every query."""

    body = b'{"status": "error", "errorType": "bad_data", "error": "nope"}'
    content_type = "application/json"


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    servers = {name: http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) for name, handler in
               (("html", _HtmlHandler), ("otherjson", _OtherJsonHandler), ("refusing", _RefusingHandler))}
    for server in servers.values():
        threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    try:
        yield {"closed": f"http://127.0.0.1:{closed}",
               **{name: f"http://127.0.0.1:{server.server_address[1]}" for name, server in servers.items()}}
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def _argv(case: Case, folder: Path, urls: dict[str, str]) -> list[str]:
    values = {"{d}": str(folder), **{f"{{{name}}}": url for name, url in urls.items()}}
    out = []
    for arg in case.argv:
        for placeholder, value in values.items():
            arg = arg.replace(placeholder, value)
        out.append(arg)
    return out


def _run(case: Case, argv: list[str], monkeypatch) -> int:
    if case.script is None:
        return main(argv)
    script = ROOT / "scripts" / case.script
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    with pytest.raises(SystemExit) as exited:
        runpy.run_path(str(script), run_name="__main__")
    return exited.value.code


def _params():
    for case in CASES:
        marks = list(case.marks)
        if case.fixed_on:
            marks.append(pytest.mark.xfail(strict=True, reason=f"fixed on branch {case.fixed_on}"))
        yield pytest.param(case, id=case.id, marks=marks)


def test_the_table_covers_the_cli_and_the_guide_scripts():
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    assert len({case.script for case in CASES if case.script}) >= 10


@pytest.mark.parametrize("case", _params())
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, urls, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICD_STATE_DIR", str(tmp_path / "state"))
    for name, value in case.env:
        monkeypatch.setenv(name, value)
    if case.setup is not None:
        case.setup(tmp_path)
    before = _snapshot(tmp_path)
    rc = _run(case, _argv(case, tmp_path, urls), monkeypatch)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("icd: error: "), err
    assert "Traceback" not in err
    for needle in case.needles:
        assert needle in lines[0], f"{needle!r} not named in: {lines[0]}"
    assert _snapshot(tmp_path) == before, "a partial artefact or state was left behind"


def test_script_process_exits_2_with_one_line_and_no_traceback(tmp_path, urls):
    """One row as a real process: the exit status and stderr a shell sees."""
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "production_benchmark.py"), urls["closed"],
                           "bert_icd", "--duration", "abc", "--report", str(tmp_path / "r.json")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "--duration" in lines[0] and "abc" in lines[0]
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
