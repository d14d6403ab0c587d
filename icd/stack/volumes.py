"""Container paths of a compose service → host paths, the way its volumes mount them.

A bind mount ``./models:/models`` makes ``/models/x`` mean ``<compose folder>/models/x``; a named volume
``prometheus-data:/prometheus`` becomes a folder of the stack's state. Like Docker, a missing bind-mount source
folder is created.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from icd.stack.compose_file import VolumeMount


def volume_source(volume: VolumeMount, named_dir: Callable[[str], Path]) -> Path:
    """The host folder (or file) behind ``volume``."""
    return named_dir(volume.source) if volume.named else Path(volume.source)


def host_path(container_path: str, volumes: Sequence[VolumeMount], named_dir: Callable[[str], Path]) -> str:
    """``container_path`` as seen on the host (unchanged when no volume covers it)."""
    for volume in sorted(volumes, key=lambda v: len(v.target), reverse=True):
        target = volume.target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            return str(volume_source(volume, named_dir)) + container_path[len(target):]
    return container_path


def translate_paths(text: str, volumes: Sequence[VolumeMount], named_dir: Callable[[str], Path]) -> str:
    """Every container path inside ``text`` (a flag value like ``triton,file=/traces/trace.json``) on the host."""

    def replace(match: re.Match[str]) -> str:
        return host_path(match.group(0), volumes, named_dir)

    return re.sub(r"(?<![\w.])/[^\s,;:=]*", replace, text)


def ensure_bind_sources(volumes: Sequence[VolumeMount], named_dir: Callable[[str], Path]) -> None:
    """Create missing bind-mount source folders and named volume folders (Docker creates them too)."""
    for volume in volumes:
        source = volume_source(volume, named_dir)
        if not source.exists() and (volume.named or not Path(volume.target).suffix):
            source.mkdir(parents=True, exist_ok=True)
