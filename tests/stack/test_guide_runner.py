"""The guide runner: parsing docs/guide.md's command blocks, the documented shortening, one shell session."""

from __future__ import annotations

from pathlib import Path

import pytest

from icd.errors import UserError
from icd.monitor.paths import state_dir
from icd.stack.guide_runner import RunOptions, parse_guide, rewrite, run_guide

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide.md"


def test_parse_joins_continuations_and_skips_other_blocks(tmp_path):
    page = tmp_path / "g.md"
    page.write_text("# Top\n```bash gpu-host\nnvidia-smi\n```\n## Load\n```bash\n# a comment\n"
                    "python x.py \\\n    --duration 300 \\\n    --report r.json  # the guide\n"
                    "echo '#not a comment' # (added) why\n```\n```yaml\nkey: 1\n```\n")
    commands = parse_guide(page)
    assert [(c.section, c.text, c.line) for c in commands] == [
        ("Load", "python x.py --duration 300 --report r.json", 8), ("Load", "echo '#not a comment'", 11)]
    assert commands[1].added and not commands[0].added
    page.write_text("```bash\necho a \\\n```\n")
    with pytest.raises(UserError, match="continues past the end"):
        parse_guide(page)


def test_the_guide_keeps_its_commands_as_written():
    texts = [c.text for c in parse_guide(GUIDE)]
    for command in ("python -m icd.cli.main run -c configs/bert.json --override pipeline.mode=iterative "
                    "--out runs/bert_production",
                    "python scripts/validate_deployment.py --endpoint http://localhost:8001 --model bert_icd "
                    "--test-duration 300",
                    "python scripts/switch_traffic.py --from blue --to green --validation-time 600",
                    "python scripts/compress_correlations.py --input-dir deploy/triton/models/ "
                    "--compression-ratio 0.1 --validate-accuracy"):
        assert any(text.startswith(command) for text in texts), command  # as written (an added flag after it)
    assert not any(t.startswith(("docker-compose up", "docker logs", "docker-compose restart", "nvidia-smi"))
                   for t in texts)


def test_rewrite_caps_durations_moves_ports_and_substitutes():
    options = RunOptions(cwd=Path("."), short_s=3, substitutions=[("configs/bert.json", "ci.json")],
                         ports={8000: 18000}, appends=[("optimize", "--endpoint E")],
                         flag_caps={"--validation-time": 12})
    assert rewrite("bench http://localhost:8000 m --duration 300 --test-duration=2", options) == \
        "bench http://localhost:18000 m --duration 3 --test-duration=2"
    assert rewrite("run -c configs/bert.json --monitor-duration 1h", options) == "run -c ci.json --monitor-duration 3"
    assert rewrite("optimize --x", options) == "optimize --x --endpoint E"
    assert rewrite("switch --validation-time 600", options) == "switch --validation-time 12"
    assert rewrite("curl localhost:80001", options) == "curl localhost:80001"


def test_run_keeps_cd_and_export_between_commands(tmp_path):
    (tmp_path / "sub").mkdir()
    page = tmp_path / "g.md"
    page.write_text("```bash\ncd sub\nexport GREETING=hi\necho $GREETING from $(basename $PWD)\nfalse\n"
                    "echo never\n```\n")
    results = run_guide(parse_guide(page), RunOptions(cwd=tmp_path), lambda r: r.returncode == 0)
    assert [r.returncode for r in results] == [0, 0, 0, 1]
    assert results[2].output_tail.strip() == "hi from sub"


def test_state_folder_is_found_from_a_subfolder(tmp_path, monkeypatch):
    monkeypatch.delenv("ICD_STATE_DIR", raising=False)
    project = tmp_path / "project"
    (project / "deploy" / "triton").mkdir(parents=True)
    (project / "pyproject.toml").write_text("")
    monkeypatch.chdir(project / "deploy" / "triton")
    assert state_dir() == project / ".icd"  # none yet: the project root's
    (project / ".icd").mkdir()
    assert state_dir() == project / ".icd"
    monkeypatch.chdir(project)
    assert state_dir() == Path(".icd")
    monkeypatch.setenv("ICD_STATE_DIR", str(tmp_path / "elsewhere"))
    assert state_dir() == tmp_path / "elsewhere"
