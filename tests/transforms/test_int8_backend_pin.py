"""The int8 kernels' dependency on the deprecated torch.ao path: pinned, and said once per process."""

from __future__ import annotations

import re
import tomllib
import warnings
from pathlib import Path

import torch

from icd.transforms import int8_kernels
from icd.transforms.int8_kernels import PINNED_TORCH, DynamicInt8Linear, Int8BackendDeprecation

ROOT = Path(__file__).resolve().parents[2]


def test_torch_is_pinned_to_the_release_the_int8_path_is_tested_with():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"torch=={PINNED_TORCH}" in dependencies
    assert torch.__version__.split("+")[0] == PINNED_TORCH
    assert "Dependency on torch.ao.quantization" in (ROOT / "docs" / "int8.md").read_text()


def test_deprecation_is_warned_once_and_torch_warnings_are_not_silenced_globally():
    int8_kernels.warn_deprecated_backend.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            DynamicInt8Linear(torch.nn.Linear(8, 4), per_token=True)(torch.randn(2, 8))
        warnings.warn("another warning still shows", UserWarning)
    ours = [w for w in caught if issubclass(w.category, Int8BackendDeprecation)]
    assert len(ours) == 1 and "docs/int8.md" in str(ours[0].message)
    assert not [w for w in caught if re.search(r"quantize_per_(tensor|channel)", str(w.message))]
    assert any("another warning still shows" in str(w.message) for w in caught)
