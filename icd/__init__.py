"""icd — iterative layout co-design for transformers, shipped to Triton.

The data flow, one sub-package per stage:
config → model → calibrate → graph → solver → transforms → measure → pipeline (run) → export → serve →
monitor → load / rollout → report.

Nothing heavy is imported here: ``import icd`` stays cheap, and ``icd.optimize_`` is resolved lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "optimize_"]


def __getattr__(name: str):
    if name == "optimize_":
        from icd.transforms.api import optimize_

        return optimize_
    raise AttributeError(f"module 'icd' has no attribute {name!r}")
