"""Ctrl-C inside a command: exit 130 with one line, whichever layer (typer or icd's main) sees it first."""

from __future__ import annotations

import icd.ops.checksums
from icd.cli.main import main


def test_ctrl_c_inside_a_command_says_interrupted(tmp_path, monkeypatch, capsys):
    def interrupted(path):  # what SIGINT's default handler raises in the middle of the command
        raise KeyboardInterrupt

    monkeypatch.setattr(icd.ops.checksums, "verify_path", interrupted)
    rc = main(["verify", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 130 and err.strip() == "icd: interrupted" and "Traceback" not in err
