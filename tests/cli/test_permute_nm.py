from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from icd.cli.main import main
from icd.solver import kept_nm
from icd.solver.nm_file import read_nm_permutation


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["permute-nm", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_writes_perm_json_and_prints_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights = np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32)
    np.save(tmp_path / "W.npy", weights)
    out = tmp_path / "perm.json"
    code, stdout, _ = _run(capsys, "--weights", str(tmp_path / "W.npy"), "--time-limit", "20", "--out", str(out))
    assert code == 0
    lines = stdout.strip().splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert set(line) == {"rows", "cols", "kept_plain", "kept_permuted", "kept_upper", "efficacy", "seconds"}
    assert (line["rows"], line["cols"]) == (16, 32)
    doc = read_nm_permutation(out)
    assert doc["schema"] == "icd.nm_permutation/v1" and (doc["n"], doc["m"]) == (2, 4)
    perm = np.array(doc["perm"])
    assert kept_nm(np.abs(weights.astype(np.float64))[:, perm], 2, 4) == pytest.approx(line["kept_permuted"], rel=1e-6)
    assert line["kept_plain"] <= line["kept_permuted"] <= line["kept_upper"]
    assert line["efficacy"] >= 0


def test_other_pattern(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "W.npy", np.random.default_rng(1).random((8, 24)))
    code, stdout, _ = _run(capsys, "--weights", str(tmp_path / "W.npy"), "--n", "1", "--m", "3", "--seed", "2",
                           "--out", str(tmp_path / "p.json"))
    assert code == 0
    assert read_nm_permutation(tmp_path / "p.json")["m"] == 3
    assert json.loads(stdout)["cols"] == 24


@pytest.mark.parametrize(
    ("make", "args", "message"),
    [
        (None, [], "no such file"),
        (lambda p: np.save(p, np.ones(8)), [], "2-D"),
        (lambda p: np.save(p, np.ones((4, 10))), [], "not divisible by --m 4"),
        (lambda p: np.save(p, np.ones((4, 8))), ["--n", "4"], "--n"),
        (lambda p: np.save(p, np.ones((4, 8))), ["--m", "1", "--n", "1"], "--m"),
        (lambda p: np.save(p, np.ones((4, 8))), ["--time-limit", "0"], "--time-limit"),
        (lambda p: p.write_bytes(b"not numpy"), [], "not a .npy"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str], make, args,
                                               message: str) -> None:
    weights = tmp_path / "W.npy"
    if make is not None:
        make(weights)
    out = tmp_path / "perm.json"
    code, stdout, err = _run(capsys, "--weights", str(weights), *args, "--out", str(out))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert stdout == ""
    assert not out.exists()
    assert list(tmp_path.glob(".perm.json*")) == []
