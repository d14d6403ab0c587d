"""Headless Chromium: load a page (the embedded dashboard), dump its DOM after scripts ran, take a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from icd.errors import UserError

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
)


def chromium_binary() -> str:
    """Path of a Chromium executable.

    Raises:
        UserError: none installed (apt-get install chromium).
    """
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise UserError("chromium not found on PATH (apt-get install chromium)")


def _run(url: str, extra: list[str], budget_ms: int, timeout_s: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="icd-chromium-") as profile:
        argv = [chromium_binary(), *_FLAGS, f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}", *extra, url]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)  # noqa: S603


def dump_dom(url: str, budget_ms: int = 8000, width: int = 1400, height: int = 3000, timeout_s: float = 90) -> str:
    """The page's DOM after its scripts ran for ``budget_ms`` of virtual time (graphs drawn from live queries)."""
    result = _run(url, ["--dump-dom", f"--window-size={width},{height}"], budget_ms, timeout_s)
    if result.returncode != 0:
        raise UserError(f"chromium failed on {url} (rc {result.returncode}): {result.stderr[-400:]}")
    return result.stdout


def screenshot(url: str, out: Path, width: int = 1400, height: int = 3000, budget_ms: int = 8000,
               timeout_s: float = 90) -> Path:
    """Write a PNG screenshot of ``url`` to ``out``."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _run(url, [f"--screenshot={out}", f"--window-size={width},{height}"], budget_ms, timeout_s)
    if result.returncode != 0 or not out.is_file():
        raise UserError(f"chromium screenshot of {url} failed (rc {result.returncode}): {result.stderr[-400:]}")
    return out
