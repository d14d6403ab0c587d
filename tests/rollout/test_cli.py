"""CLI error paths of the rollout commands: one line, exit 2, nothing started."""

from __future__ import annotations

import pytest

from icd.cli.main import main


@pytest.mark.parametrize("argv,needle", [
    (["canary", "deploy", "--traffic-percentage", "0"], "--traffic-percentage"),
    (["canary", "deploy", "--traffic-percentage", "20", "--max-weight", "10"], "step_weight"),
    (["canary", "deploy", "--interval", "soon"], "--interval"),
    (["ab", "--traffic-split", "x"], "--traffic-split"),
    (["ab", "--duration", "forever"], "--duration"),
    (["switch", "--from", "blue", "--to", "green"], "no router running"),
    (["router", "up", "--variant", "bert=abc"], "--variant"),
    (["router", "up", "--upstream", "blue"], "--upstream"),
    (["router", "up", "--active", "purple", "--port", "1"], "active colour"),
    (["canary", "status"], "no canary state"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    assert main([*argv, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "router" / "nginx.pid").exists()
