from __future__ import annotations

import os
import stat

import pytest

from icd.io.atomic import atomic_open, write_bytes_atomic, write_json_atomic


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_file_gets_what_open_would_give_not_the_temporary_0600(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    write_json_atomic(tmp_path / "report.json", {"a": 1})
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    assert _mode(tmp_path / "report.json") == _mode(plain) == 0o666 & ~mask


def test_a_replaced_file_keeps_its_mode_and_secrets_are_0600(tmp_path):
    kept = tmp_path / "kept.json"
    kept.write_text("{}")
    kept.chmod(0o640)
    write_json_atomic(kept, {"b": 2})
    assert _mode(kept) == 0o640
    write_bytes_atomic(tmp_path / "tls.key", b"secret", file_mode=0o600)
    assert _mode(tmp_path / "tls.key") == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("stop")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.json"]
