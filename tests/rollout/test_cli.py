"""CLI error paths of the rollout commands: one line, exit 2, nothing started, no state left behind."""

from __future__ import annotations

import socket

import pytest

from icd.cli.main import main


@pytest.mark.parametrize("argv,needle", [
    (["canary", "deploy", "--traffic-percentage", "0"], "--traffic-percentage"),
    (["canary", "deploy", "--traffic-percentage", "20", "--max-weight", "10"], "step_weight"),
    (["canary", "deploy", "--interval", "soon"], "--interval"),
    (["canary", "deploy", "--mirror-share", "1.5"], "--mirror-share"),
    (["canary", "deploy", "--strategy", "ab"], "match"),
    (["canary", "deploy", "--strategy", "sideways"], "--strategy"),
    (["canary", "deploy", "--webhook", "sometime=http://127.0.0.1:1/"], "--webhook"),
    (["canary", "deploy", "--match-header", "X-Canary", "--strategy", "ab"], "--match-header"),
    (["canary", "deploy", "--endpoint", "http://127.0.0.1:1"], "not reachable"),
    (["ab", "--traffic-split", "x"], "--traffic-split"),
    (["ab", "--traffic-split", "100:0"], "both variants need traffic"),
    (["ab", "--model-a", "m", "--model-b", "m"], "both 'm'"),
    (["ab", "--duration", "forever"], "--duration"),
    (["ab", "--task", "regression"], "--task"),
    (["switch", "--from", "blue", "--to", "green"], "no router running"),
    (["router", "mirror", "--share", "0.5"], "no router running"),
    (["router", "up", "--variant", "bert=abc"], "--variant"),
    (["router", "up", "--upstream", "blue"], "--upstream"),
    (["router", "up", "--active", "purple", "--port", "1"], "active colour"),
    (["canary", "status"], "no canary state"),
    (["canary", "monitor", "--prometheus-url", "http://127.0.0.1:1"], "--prometheus-url: Prometheus not reachable"),
    (["canary", "monitor", "--baseline", "m", "--canary", "m"], "canary must differ"),
    (["canary", "deploy", "--prometheus-url", "http://127.0.0.1:1"], "--prometheus-url: Prometheus not reachable"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, tmp_path, capsys):
    assert main([*argv, "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "router").exists()


def test_router_up_on_a_busy_port_leaves_no_state(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["router", "up", "--port", str(port), "--exporter-port", "0", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"port {port}" in err and "in use" in err
    assert not (tmp_path / "router").exists()
