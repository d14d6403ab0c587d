"""The state of every model a Triton serves or should serve, with Triton's own reason when one is not READY.

Triton's repository index (``POST /v2/repository/index``) gives ``state`` and ``reason`` for models it tried to
load, but a folder it could not even read (a copied ``bert_icd`` still named ``bert_icd`` in its config.pbtxt, a
config without a version folder) appears with a name only, or not at all; the reason is then only in Triton's
log (``Poll failed for model directory 'bert_baseline': unexpected directory name ...``). This module merges
the folders on disk, the index, and those log lines, so no model is ever shown as ``v?: ?``.

Example:
    >>> for row in model_states(server.http_url, repo, server.log_text()):    # doctest: +SKIP
    ...     print(row.line())
    model bert_icd v1: READY
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from icd.errors import UserError

READY = "READY"
NOT_LOADED = "NOT LOADED"
"""Folder present, never loaded: explicit model control without a load, or Triton could not read the folder."""

_NEVER_LOADED = "not loaded: explicit model control loads models at start or through the repository API"
_ERROR_LINE = re.compile(r"^E\d{4} [\d:.]+\s+\d+\s+\S+\]\s*\"?(?P<message>.*?)\"?\s*$")


@dataclass(frozen=True)
class ModelState:
    """One model: ``state`` is Triton's (READY, UNAVAILABLE, LOADING, UNLOADING) or ``NOT LOADED``."""

    name: str
    version: str
    state: str
    reason: str

    @property
    def ready(self) -> bool:
        return self.state == READY

    def line(self) -> str:
        """``model bert_icd v1: READY`` or ``model bert_baseline: NOT LOADED (unexpected directory name ...)``."""
        version = f" v{self.version}" if self.version else ""
        reason = f" ({self.reason})" if self.reason and not self.ready else ""
        return f"model {self.name}{version}: {self.state}{reason}"


def repository_index(http_url: str, timeout_s: float = 10.0) -> list[dict[str, str]]:
    """Triton's repository index rows.

    Raises:
        UserError: Triton does not answer.
    """
    try:
        resp = httpx.post(f"{http_url}/v2/repository/index", json={}, timeout=timeout_s, trust_env=False)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        raise UserError(f"Triton at {http_url} does not answer its repository index ({exc})") from None
    return list(resp.json())


def log_reasons(log_text: str) -> dict[str, str]:
    """The last error Triton logged about each model name quoted in an error line (``'name'``)."""
    reasons: dict[str, str] = {}
    for line in log_text.splitlines():
        match = _ERROR_LINE.match(line.strip())
        if not match:
            continue
        message = match.group("message").replace('\\"', '"')
        names = re.findall(r"'([^']+)'", message)
        for name in names[:1]:  # the first quoted name is the model (or its folder) the error is about
            reasons[name] = message
    return reasons


def _folders(repository: Path | None) -> list[str]:
    if repository is None or not Path(repository).is_dir():
        return []
    return sorted(p.name for p in Path(repository).iterdir() if (p / "config.pbtxt").is_file())


def model_states(http_url: str, repository: Path | None = None, log_text: str = "") -> list[ModelState]:
    """Every model of ``repository`` and of Triton's index, with Triton's reason for each one not READY.

    Raises:
        UserError: Triton does not answer.
    """
    index = repository_index(http_url)
    from_log = log_reasons(log_text)
    rows: dict[str, list[ModelState]] = {}
    for row in index:
        name = str(row.get("name", ""))
        state = str(row.get("state") or NOT_LOADED)
        reason = (str(row.get("reason") or "").splitlines() or [""])[0]
        if state != READY and not reason:
            reason = from_log.get(name) or (_NEVER_LOADED if state == NOT_LOADED else "")
        rows.setdefault(name, []).append(ModelState(name, str(row.get("version") or ""), state, reason))
    for name in _folders(repository):
        if name not in rows:
            rows[name] = [ModelState(name, "", NOT_LOADED, from_log.get(name, "Triton did not list this folder"))]
    return [state for name in sorted(rows) for state in rows[name]]
