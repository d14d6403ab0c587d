"""Real English text with no download: first paragraphs of docstrings of the installed Python and packages,
deduplicated and hash-split into calibration and held-out sets.

Sources (``data.sources`` of a run config):

* ``stdlib`` — the modules of :data:`~icd.data.docstrings.STDLIB_MODULES` of the running Python;
* a package of :data:`~icd.data.docstrings.PACKAGE_MODULES` (``numpy``, ``scipy``, ``torch``, ``transformers``,
  ``networkx``, the defaults; ``sympy``, ``matplotlib``, ``scikit-learn`` on request) — the listed modules of the
  installed package (a source is named by its distribution: ``scikit-learn``, read from ``sklearn``).

Each source is extracted in a fresh interpreter (``python -m icd.data.docstrings``; see there why) and cached on
disk per source and version (``$ICD_CACHE_DIR``, else ``$XDG_CACHE_HOME/icd`` or ``~/.cache/icd``). Texts are
pooled over the sources, deduplicated and sorted; a text is held-out when a hash of the text alone says so, so
the two sets are disjoint whatever the sources, and a text keeps its side when sources are added.

Determinism: with the same sources at the same versions the pool, and so the seeded samples, are identical on
every machine (CI installs the same pinned packages). A source may carry its version (``numpy==1.26.4``, which
is how a run's ``config.lock.json`` records it): when the installed version differs, :func:`load_split` refuses
with a one-line :class:`~icd.errors.ConfigError` instead of silently sampling other texts. Without a version the
installed one is used and recorded; a different version then gives a different pool (``CorpusSplit.pool_sha256``
tells two runs apart).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from icd.data.docstrings import EXTRACTION_VERSION, PACKAGE_MODULES, STDLIB, STDLIB_MODULES, modules_of
from icd.defaults import CACHE_DIR_ENV
from icd.errors import ConfigError
from icd.io.atomic import write_json_atomic

__all__ = ["DEFAULT_SOURCES", "STDLIB_MODULES", "CorpusSplit", "Source", "corpus_pool", "load_split",
           "resolve_source", "stdlib_docstrings"]

DEFAULT_SOURCES = (STDLIB, "numpy", "scipy", "torch", "transformers", "networkx")
"""What a run reads unless ``data.sources`` says otherwise; ``["stdlib"]`` is the corpus icd used before."""

HELDOUT_FRACTION = 0.3
EXTRACT_TIMEOUT_S = 600


@dataclass(frozen=True)
class Source:
    """One corpus source at the version installed here; ``name==version`` is how a lock records it."""

    name: str
    version: str

    @property
    def pinned(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class CorpusSplit:
    """Disjoint text sets: ``calibration`` feeds statistics, ``heldout`` only evaluation.

    Attributes:
        calibration: the calibration sample.
        heldout: the held-out sample (never used for calibration).
        sources: the sources read, pinned (``numpy==1.26.4``), in the order given.
        pool_sizes: texts available in each pool (``{"calibration": n, "heldout": m}``).
        pool_sha256: hash of the whole sorted pool (equal hashes: sampled from the same texts).
    """

    calibration: list[str]
    heldout: list[str]
    sources: list[str] = field(default_factory=list)
    pool_sizes: dict[str, int] = field(default_factory=dict)
    pool_sha256: str = ""


def known_sources() -> list[str]:
    return [STDLIB, *sorted(PACKAGE_MODULES)]


def resolve_source(spec: str) -> Source:
    """``name`` or ``name==version`` → the installed :class:`Source`.

    Raises:
        ConfigError: unknown name, package not installed, or a pinned version that is not the installed one.
    """
    name, _, wanted = (part.strip() for part in spec.partition("=="))
    if name != STDLIB and name not in PACKAGE_MODULES:
        raise ConfigError(f"data.sources: unknown source {spec!r}; known: {', '.join(known_sources())}")
    if name == STDLIB:
        version = platform.python_version()
    else:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise ConfigError(f"data.sources: {name!r} is not installed in this environment") from None
    if wanted and wanted != version:
        raise ConfigError(
            f"data.sources: {spec!r} is pinned but {name} {version} is installed here; its docstrings (and so the "
            f"sampled texts) would differ — install {name}=={wanted} or drop the pin"
        )
    return Source(name, version)


def cache_dir() -> Path:
    """Where extracted sources are cached (see the module docstring)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "icd"


def _cache_file(source: Source) -> Path:
    key = json.dumps([source.pinned, EXTRACTION_VERSION, list(modules_of(source.name)), sys.version])
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "corpus" / f"{source.name}-{digest}.json"


def _read_cached(path: Path, source: Source) -> tuple[str, ...] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("source") != source.pinned or not isinstance(data.get("texts"), list):
        return None
    return tuple(data["texts"])


def _extract_fresh(names: Sequence[str]) -> dict[str, list[str]]:
    """Run ``python -m icd.data.docstrings NAME`` for each name, concurrently, each in its own interpreter."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = {
        name: subprocess.Popen([sys.executable, "-m", "icd.data.docstrings", name], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
        for name in names
    }
    out: dict[str, list[str]] = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=EXTRACT_TIMEOUT_S)
        if proc.returncode != 0:
            raise RuntimeError(f"corpus: extracting source {name!r} failed (exit {proc.returncode}): "
                               f"{stderr.strip()[-500:]}")
        out[name] = list(json.loads(stdout)["texts"])
    return out


@functools.lru_cache(maxsize=None)
def _source_texts(source: Source) -> tuple[str, ...]:
    cached = _read_cached(_cache_file(source), source)
    if cached is None:
        _warm([source])
        cached = _read_cached(_cache_file(source), source)
    if cached is None:
        raise RuntimeError(f"corpus: the cache of {source.pinned} could not be written under {cache_dir()}")
    return cached


def _warm(sources: Sequence[Source]) -> None:
    """Extract every uncached source at once (one interpreter each, in parallel) and cache them."""
    missing = [s for s in sources if _read_cached(_cache_file(s), s) is None]
    if not missing:
        return
    fresh = _extract_fresh([s.name for s in missing])
    for source in missing:
        write_json_atomic(_cache_file(source), {"source": source.pinned, "extraction_version": EXTRACTION_VERSION,
                                                "texts": fresh[source.name]}, indent=None)


def corpus_pool(sources: Sequence[str] = DEFAULT_SOURCES) -> tuple[list[Source], tuple[str, ...]]:
    """The resolved sources and their pooled, deduplicated, sorted texts.

    Raises:
        ConfigError: an empty source list, or a source :func:`resolve_source` refuses.
    """
    if not sources:
        raise ConfigError("data.sources: empty; name at least one of " + ", ".join(known_sources()))
    resolved = [resolve_source(spec) for spec in sources]
    unique = list(dict.fromkeys(resolved))
    _warm(unique)
    texts: set[str] = set()
    for source in unique:
        texts.update(_source_texts(source))
    return resolved, tuple(sorted(texts))


def stdlib_docstrings() -> tuple[str, ...]:
    """All distinct stdlib first paragraphs (see :mod:`icd.data.docstrings`), sorted."""
    return corpus_pool([STDLIB])[1]


def _is_heldout(text: str) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < HELDOUT_FRACTION


def load_split(calibration: int, heldout: int, seed: int = 0, sources: Sequence[str] = DEFAULT_SOURCES) -> CorpusSplit:
    """Return ``calibration`` and ``heldout`` texts (a seeded sample of each disjoint pool).

    Args:
        calibration: calibration texts wanted (0 allowed).
        heldout: held-out texts wanted (0 allowed).
        seed: sampling seed.
        sources: ``data.sources`` entries (see the module docstring).

    Raises:
        ConfigError: a pool is smaller than asked (naming the field, the value and what exists), or a source is
            refused by :func:`resolve_source`.
    """
    resolved, texts = corpus_pool(sources)
    cal_pool = [t for t in texts if not _is_heldout(t)]
    held_pool = [t for t in texts if _is_heldout(t)]
    names = ", ".join(s.pinned for s in resolved)
    for name, wanted, pool in (("calibration_texts", calibration, cal_pool), ("heldout_texts", heldout, held_pool)):
        if wanted > len(pool):
            raise ConfigError(f"data.{name}={wanted}: the corpus has only {len(pool)} such texts (sources {names}); "
                              f"ask for at most {len(pool)} or add sources (data.sources)")
    rng = random.Random(seed)
    return CorpusSplit(
        calibration=rng.sample(cal_pool, calibration),
        heldout=rng.sample(held_pool, heldout),
        sources=[s.pinned for s in resolved],
        pool_sizes={"calibration": len(cal_pool), "heldout": len(held_pool)},
        pool_sha256=hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest(),
    )
