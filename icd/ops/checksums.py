"""``icd verify``: check exported model folders against their ``checksums.sha256`` manifests.

Unlike the serving model (which refuses at the first problem), this reports *every* mismatch of every version
folder it finds under the given path (a repository, a model folder or one version folder), and parses the
``config.pbtxt`` next to each of them (in the model folder) as Triton's ``ModelConfig`` (the manifest covers the
version folder only: a config that Triton cannot read would pass the checksums and fail at load).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from icd.errors import ArtefactError
from icd.serve.backend.icd_runtime import MANIFEST_NAME, ChecksumError, listed_files, read_manifest, sha256_file


class Problem(str, Enum):
    """Kinds of checksum problem."""

    MISMATCH = "sha256 mismatch"
    """The file's sha256 differs from the manifest (tampered or corrupted)."""
    MISSING = "missing"
    """Listed in the manifest but not on disk."""
    UNLISTED = "not in the manifest"
    """On disk but not listed (an added file is refused by the serving model too)."""
    BAD_MANIFEST = "manifest unreadable"
    """The manifest is missing or has a malformed line."""
    BAD_CONFIG = "not a valid Triton config"
    """The model folder's config.pbtxt does not parse as ``ModelConfig``."""


@dataclass(frozen=True)
class Finding:
    folder: Path
    name: str
    problem: Problem
    detail: str = ""

    def line(self) -> str:
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.folder}/{self.name}: {self.problem.value}{extra}"


@dataclass
class VerifyReport:
    folders: list[Path] = field(default_factory=list)
    files_checked: int = 0
    configs: list[Path] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def version_folders(path: Path) -> list[Path]:
    """Every folder holding a manifest under ``path`` (itself included), sorted.

    Raises:
        ArtefactError: ``path`` does not exist or holds no manifest at all.
    """
    path = Path(path)
    if not path.exists():
        raise ArtefactError(f"{path}: no such file or directory")
    if (path / MANIFEST_NAME).is_file():
        return [path]
    found = sorted(p.parent for p in path.rglob(MANIFEST_NAME))
    if not found:
        raise ArtefactError(f"{path}: no {MANIFEST_NAME} found (not an icd export?)")
    return found


def verify_folder(folder: Path) -> tuple[int, list[Finding]]:
    """Check one version folder; returns (files checked, findings)."""
    try:
        expected = read_manifest(folder)
    except ChecksumError as exc:
        return 0, [Finding(folder, MANIFEST_NAME, Problem.BAD_MANIFEST, str(exc))]
    findings: list[Finding] = []
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            findings.append(Finding(folder, name, Problem.MISSING))
            continue
        actual = sha256_file(path)
        if actual != digest:
            findings.append(Finding(folder, name, Problem.MISMATCH, f"expected {digest[:12]}…, got {actual[:12]}…"))
    findings += [Finding(folder, n, Problem.UNLISTED) for n in listed_files(folder) if n not in expected]
    return len(expected), findings


def verify_path(path: Path) -> VerifyReport:
    """Verify every version folder under ``path``; never stops at the first problem."""
    report = VerifyReport()
    for folder in version_folders(Path(path)):
        checked, findings = verify_folder(folder)
        report.folders.append(folder)
        report.files_checked += checked
        report.findings += findings
        config = folder.parent / "config.pbtxt"
        if config.exists() and config not in report.configs:  # a bare folder with a manifest has none
            report.configs.append(config)
            report.findings += verify_config(config)
    return report


def verify_config(config: Path) -> list[Finding]:
    """The model folder's ``config.pbtxt`` parsed as Triton's ``ModelConfig``: no finding, or one naming why not."""
    from icd.export.config_pbtxt import read_config

    try:
        read_config(config)
    except ArtefactError as exc:
        detail = str(exc).removeprefix(f"{config}: ")
        return [Finding(config.parent, config.name, Problem.BAD_CONFIG, detail)]
    return []
