"""``icd demo`` (what ``make demo`` runs) end to end with a small run and a short A/B: it exits 0, writes its
reports, and leaves no server running (Triton, Prometheus, nginx all stopped)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

from icd.cli.main import main
from tests.served.conftest import TIMEOUT_S

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(TIMEOUT_S)]
REPO = Path(__file__).resolve().parents[2]


def _small_config(path: Path) -> Path:
    """configs/minilm.json (the demo default) with a small corpus, a linear run and a short int8 search."""
    doc = json.loads((REPO / "configs" / "minilm.json").read_text())
    doc["data"] = {"calibration_texts": 32, "heldout_texts": 16, "batch_size": 16, "seed": 0}
    doc["pipeline"]["mode"] = "linear"
    doc["solver"] = {"time_limit_s": 2}
    doc["measure"] = {"latency": {"batch_size": 2, "seq_len": 32, "warmup": 0, "runs": 1}}
    doc["transforms"] = [{"type": "int8", "search_texts": 16, "alpha_grid": [0.5]}]
    path.write_text(json.dumps(doc))
    return path


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention ``text`` (the demo's private folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def test_demo_with_a_short_ab_exits_0_writes_reports_and_stops_every_server(tmp_path, capsys, monkeypatch):
    out = tmp_path / "demo"
    config = _small_config(tmp_path / "demo.json")
    private = tmp_path / "tmp"  # the router's and Triton's work folders land here: every server mentions tmp_path
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    assert main(["demo", "-c", str(config), "--out", str(out), "--ab-duration", "3", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "demo done" in printed
    report = json.loads((out / "ab_test_results.json").read_text())
    assert report  # the A/B report, and its HTML page beside it
    assert (out / "ab_test_results.html").is_file()
    assert json.loads((out / "run" / "run.json").read_text())["status"] == "complete"
    for model in ("bert_icd", "bert_baseline"):
        assert (out / "models" / model / "config.pbtxt").is_file()
    assert (out / "triton.log").is_file()  # Triton ran, from the repository under tmp_path
    assert _processes_mentioning(str(tmp_path)) == [], "a server the demo started is still running"
