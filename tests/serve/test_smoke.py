"""The short serve check `make demo` runs (export both models, serve, compare)."""

from __future__ import annotations

import pytest

from icd.serve.smoke import export_and_check

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_export_and_check_serves_both_models_like_in_process(identity_run_dir, tmp_path):
    result = export_and_check(identity_run_dir, tmp_path / "models")
    assert result.ok, result.lines()
    assert [check.name for check in result.checks] == ["bert_icd", "bert_baseline"]
    assert any(line.startswith("triton_icd_correlation_total{") for line in result.metrics_lines)
    assert (tmp_path / "models" / "bert_icd" / "1" / "model.pt").is_file()
