"""Sentences from the docstrings of Python's standard library, split into calibration and held-out sets.

Each public object's ``inspect.getdoc`` first paragraph is one text. The split is by a hash of the text, so it
is stable across runs and machines with the same Python, and a text is never in both sets.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import random
import sys
import warnings
from dataclasses import dataclass

# Modules that import cleanly and quickly everywhere, with plenty of prose in their docstrings.
STDLIB_MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "configparser",
    "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fnmatch",
    "fractions", "ftplib", "functools", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "logging",
    "mailbox", "math", "mimetypes", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil", "platform",
    "plistlib", "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics", "string",
    "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize",
    "traceback", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave",
    "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
)

MIN_CHARS = 40
MAX_CHARS = 600
HELDOUT_FRACTION = 0.3


@dataclass(frozen=True)
class CorpusSplit:
    """Disjoint text sets: ``calibration`` feeds statistics, ``heldout`` only evaluation."""

    calibration: list[str]
    heldout: list[str]


def _first_paragraph(doc: str) -> str:
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def _docs_of(module_name: str) -> list[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return []
    texts = []
    objects = [module] + [getattr(module, name, None) for name in sorted(dir(module)) if not name.startswith("_")]
    for obj in objects:
        if obj is None:
            continue
        doc = inspect.getdoc(obj)
        if doc:
            texts.append(_first_paragraph(doc))
    return texts


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[str, ...]:
    """All distinct first paragraphs between MIN_CHARS and MAX_CHARS characters, sorted."""
    seen: set[str] = set()
    for name in STDLIB_MODULES:
        for text in _docs_of(name):
            if MIN_CHARS <= len(text) <= MAX_CHARS:
                seen.add(text)
    return tuple(sorted(seen))


def _is_heldout(text: str) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION


def load_split(calibration: int, heldout: int, seed: int = 0) -> CorpusSplit:
    """Return ``calibration`` and ``heldout`` texts (a seeded sample of each disjoint pool).

    Raises ValueError when the pools are smaller than asked.
    """
    texts = stdlib_docstrings()
    cal_pool = [t for t in texts if not _is_heldout(t)]
    held_pool = [t for t in texts if _is_heldout(t)]
    if calibration > len(cal_pool) or heldout > len(held_pool):
        raise ValueError(
            f"corpus too small on Python {sys.version.split()[0]}: asked {calibration} calibration / {heldout} "
            f"held-out texts, have {len(cal_pool)} / {len(held_pool)}"
        )
    rng = random.Random(seed)
    return CorpusSplit(calibration=rng.sample(cal_pool, calibration), heldout=rng.sample(held_pool, heldout))
