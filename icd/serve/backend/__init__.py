"""The python-backend files copied verbatim into every exported version folder.

``model.py`` (the Triton python model) and ``icd_runtime.py`` (checksums, correlation cache, settings, ICD log
lines) must stay self-contained — no ``import icd`` — because they also run inside an NGC Triton container where
icd is not installed. ``icd_runtime`` is importable here as ``icd.serve.backend.icd_runtime`` so the exporter and
tests use the very same code.
"""

from __future__ import annotations

from pathlib import Path

BACKEND_DIR = Path(__file__).resolve().parent
BACKEND_FILES = ("model.py", "icd_runtime.py")
