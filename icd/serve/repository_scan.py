"""What a model repository on disk holds (before any server reads it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from icd.errors import ArtefactError, UserError


def repository_models(repository: Path) -> list[str]:
    """Names of the model folders (those with a ``config.pbtxt``) in ``repository``, sorted.

    Raises:
        ArtefactError: the repository does not exist or holds no model.
    """
    repository = Path(repository)
    if not repository.is_dir():
        raise ArtefactError(f"model repository not found: {repository}")
    names = sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file())
    if not names:
        raise ArtefactError(f"no model (no */config.pbtxt) in the model repository {repository}")
    return names


def check_model_names(repository: Path, requested: Sequence[str]) -> list[str]:
    """``requested`` after checking each names a model of ``repository``.

    Raises:
        UserError: an unknown model name (the message lists the known ones).
    """
    known = repository_models(repository)
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise UserError(f"unknown model name {unknown[0]!r} in {repository} (models: {', '.join(known)})")
    return list(requested)
