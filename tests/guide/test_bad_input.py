"""Bad input in the guide's scripts of this area: a wrong model name is one line naming it, exit 2, nothing
written (real Triton with the synthetic echo_delay model)."""

from __future__ import annotations

import pytest

from tests.ops.helpers import run_script

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("script,args", [
    ("production_benchmark.py", ["{url}", "bert_bse", "--duration", "300", "--report", "results/r.json"]),
    ("production_simulation.py", ["--endpoint", "{url}", "--models", "bert_bse", "--duration", "300", "--report",
                                  "results/r.json"]),
    ("collect_performance_trace.py", ["--endpoint", "{url}", "--model", "bert_bse", "--duration", "300", "--output",
                                      "results/traces"]),
])
def test_wrong_model_name_is_refused_before_any_load(script, args, tmp_path, triton_small_server):
    done = run_script(script, *[a.format(url=triton_small_server.http_url) for a in args], cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "bert_bse" in done.stderr and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "results").exists()
