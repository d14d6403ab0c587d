"""Runtime support of the exported python-backend model (self-contained: numpy and the standard library only).

* Checksum manifest ``checksums.sha256`` (``sha256sum -c`` format: ``<hex>  <relative path>``) of every file of
  a version folder, verified before the model loads.
* Correlation-cache settings from ``TRITON_ICD_CACHE_SIZE`` / ``TRITON_ICD_CACHE_TTL`` /
  ``TRITON_ICD_PRELOAD_CORRELATIONS`` (+ ``TRITON_ICD_CACHE_DIR``), validated: a bad value refuses the load.
* :class:`SharedFileCache`: a bounded, TTL'd cache of layout artefacts (correlation matrices, permutations) held
  as ``.npy`` files in one directory (``/dev/shm`` by default), so every instance process of every model on the
  host that uses the same directory shares it. Lookups and hits are what the ICD counters count.
* Padding trimmed from a batch (``icd_trim_padding``): :func:`trimmed_length`, :func:`trim_batch`.
* :func:`icd_log_line`: the structured ``ICD {json}`` log line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MANIFEST_NAME = "checksums.sha256"
LAYOUT_FILE = "icd_layout.json"
ICD_LOG_TAG = "ICD"
_SKIP_DIRS = {"__pycache__"}
_MANIFEST_LINE = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")

CACHE_SIZE_ENV = "TRITON_ICD_CACHE_SIZE"
CACHE_TTL_ENV = "TRITON_ICD_CACHE_TTL"
PRELOAD_ENV = "TRITON_ICD_PRELOAD_CORRELATIONS"
CACHE_DIR_ENV = "TRITON_ICD_CACHE_DIR"
PROFILE_ENV = "TRITON_ICD_PROFILE"
DEFAULT_CACHE_SIZE = "1024MB"
DEFAULT_CACHE_TTL_S = 3600.0
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024**2, "MB": 1024**2, "MIB": 1024**2,
          "G": 1024**3, "GB": 1024**3, "GIB": 1024**3, "T": 1024**4, "TB": 1024**4, "TIB": 1024**4}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ChecksumError(ValueError):
    """A version folder does not match its checksum manifest."""


class CacheConfigError(ValueError):
    """A ``TRITON_ICD_*`` setting is invalid."""


# ------------------------------------------------------------------------------------------------- checksums
def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def listed_files(folder: Path) -> list[str]:
    """Relative paths of every file under ``folder`` that the manifest covers (sorted)."""
    names = []
    for path in sorted(Path(folder).rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and rel.name != MANIFEST_NAME and not _SKIP_DIRS.intersection(rel.parts):
            if not rel.name.startswith("."):
                names.append(rel.as_posix())
    return names


def manifest_text(folder: Path) -> str:
    """The ``sha256sum``-format manifest of ``folder``."""
    return "".join(f"{sha256_file(Path(folder) / name)}  {name}\n" for name in listed_files(folder))


def read_manifest(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` from ``folder/checksums.sha256``.

    Raises:
        ChecksumError: the manifest is missing or has a malformed line.
    """
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        raise ChecksumError(f"checksum manifest missing: {path}")
    entries: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        match = _MANIFEST_LINE.match(line)
        if not match:
            raise ChecksumError(f"{path}:{number}: not a sha256sum line: {line[:80]!r}")
        entries[match.group(2)] = match.group(1)
    return entries


def verify_manifest(folder: Path) -> None:
    """Check every file of ``folder`` against its manifest (missing, changed and unlisted files all fail).

    Raises:
        ChecksumError: one line naming the first offending file(s).
    """
    folder = Path(folder)
    expected = read_manifest(folder)
    problems = []
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: sha256 mismatch (tampered or corrupted)")
    problems += [f"{name}: not in the manifest" for name in listed_files(folder) if name not in expected]
    if problems:
        raise ChecksumError(f"checksum verification failed in {folder}: " + "; ".join(problems[:5]))


def manifest_digest(folder: Path) -> str:
    """sha256 of the manifest itself: identifies this exact version's artefacts (the cache namespace)."""
    return sha256_file(Path(folder) / MANIFEST_NAME)


# ------------------------------------------------------------------------------------------------- settings
def parse_size(text: str, name: str = CACHE_SIZE_ENV) -> int:
    """``"1024MB"`` → bytes (K/M/G/T are powers of 1024; ``B``/``iB`` suffixes optional).

    Raises:
        CacheConfigError: not a size.
    """
    match = _SIZE.match(str(text))
    unit = match.group(2).upper() if match else None
    if not match or unit not in _UNITS:
        raise CacheConfigError(f"{name}={text!r}: expected a size like 1024MB, 512KiB, 2GB or a byte count")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_bool(text: str, name: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise CacheConfigError(f"{name}={text!r}: expected true or false")


def default_cache_dir() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return base / f"icd-correlation-cache-{os.getuid()}"


@dataclass(frozen=True)
class CacheSettings:
    """Correlation-cache settings (see docs/serving.md, "Cache configuration").

    Attributes:
        size_bytes: bound on the bytes held by the cache directory (0 disables caching: every lookup misses).
        ttl_s: an entry older than this is reloaded from the version folder (a miss).
        preload: load every correlation matrix and the layout entry at model load.
        directory: the shared cache directory.
        profile: ``TRITON_ICD_PROFILE``: per-phase timings in each ICD log line.
    """

    size_bytes: int
    ttl_s: float
    preload: bool
    directory: Path
    profile: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CacheSettings:
        """Read and validate the ``TRITON_ICD_*`` variables.

        Raises:
            CacheConfigError: one line naming the variable and its value.
        """
        size = parse_size(env.get(CACHE_SIZE_ENV, DEFAULT_CACHE_SIZE) or DEFAULT_CACHE_SIZE)
        ttl_text = env.get(CACHE_TTL_ENV, str(DEFAULT_CACHE_TTL_S)) or str(DEFAULT_CACHE_TTL_S)
        try:
            ttl = float(ttl_text)
        except ValueError:
            raise CacheConfigError(f"{CACHE_TTL_ENV}={ttl_text!r}: expected seconds (a number > 0)") from None
        if not ttl > 0 or ttl != ttl or ttl == float("inf"):
            raise CacheConfigError(f"{CACHE_TTL_ENV}={ttl_text!r}: expected seconds (a number > 0)")
        preload = parse_bool(env.get(PRELOAD_ENV, "false"), PRELOAD_ENV)
        profile = parse_bool(env.get(PROFILE_ENV, "false"), PROFILE_ENV)
        directory = Path(env[CACHE_DIR_ENV]) if env.get(CACHE_DIR_ENV) else default_cache_dir()
        return cls(size_bytes=size, ttl_s=ttl, preload=preload, directory=directory, profile=profile)


# ------------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class Lookup:
    """The result of one cache lookup; ``store_error``: why a miss's value could not be stored (the value is
    still returned: a cache that cannot store only misses)."""

    value: np.ndarray
    hit: bool
    store_error: str | None = None


class SharedFileCache:
    """A bounded cache of numpy arrays shared by processes through one directory.

    An entry is ``<directory>/<sha256(key)>.npy``. Its mtime is its creation time (TTL); its atime is set on
    every hit and orders LRU eviction. Writes are atomic (temporary file + rename), so concurrent instances
    never read half an entry; a race between two writers of the same key is benign (same content).

    A hit is decided by the entry file alone (present, younger than the TTL); the array it holds is read once per
    file and kept in memory for as long as the same file (inode, mtime, size) is there: a served batch looks up
    its request layout, and re-reading the file each time cost about 0.3 ms a batch in the python backend.

    Nothing the directory does after the load fails a lookup: removed (a tmpfs cleaned), it is made again on the
    next store; not writable or full, the value is returned unstored and the lookup says why (``store_error``).
    """

    def __init__(self, settings: CacheSettings, clock: Callable[[], float] = time.time) -> None:
        """Raises:
            CacheConfigError: the cache directory cannot be made (one line naming it and why).
        """
        self.settings = settings
        self.clock = clock
        self._read: dict[str, tuple[tuple[int, int, int], np.ndarray]] = {}  # key -> (file identity, its array)
        self.store_error: str | None = None  # why the last store failed; None after one that worked
        if settings.size_bytes > 0:
            try:
                settings.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CacheConfigError(f"{CACHE_DIR_ENV}={settings.directory}: cannot make the cache directory "
                                       f"({exc.strerror or exc})") from None

    def _path(self, key: str) -> Path:
        return self.settings.directory / (hashlib.sha256(key.encode()).hexdigest() + ".npy")

    def get(self, key: str, loader: Callable[[], np.ndarray]) -> Lookup:
        """The cached array for ``key`` (a hit), or ``loader()`` stored for next time (a miss)."""
        path = self._path(key)
        now = self.clock()
        if self.settings.size_bytes > 0:
            try:
                stat = path.stat()
                if now - stat.st_mtime <= self.settings.ttl_s:
                    value = self._contents(key, path, stat)
                    os.utime(path, ns=(int(now * 1e9), stat.st_mtime_ns))  # atime: LRU; mtime kept exactly
                    return Lookup(value, True)
            except (FileNotFoundError, ValueError, OSError):
                pass
        value = np.asarray(loader())
        stored = self.put(key, value)
        return Lookup(value, False, None if stored else self.store_error)

    def _contents(self, key: str, path: Path, stat: os.stat_result) -> np.ndarray:
        """The array in ``path``: read from the file unless this very file (inode, mtime, size) was read before."""
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        known = self._read.get(key)
        if known is not None and known[0] == identity:
            return known[1]
        value = np.load(path, allow_pickle=False)
        value.flags.writeable = False  # shared by every later hit of this file
        self._read[key] = (identity, value)
        return value

    def put(self, key: str, value: np.ndarray) -> bool:
        """Store ``value`` (evicting least-recently-used entries); False if it cannot fit the bound."""
        return self.put_many({key: value}) == 1

    def put_many(self, items: Mapping[str, np.ndarray]) -> int:
        """Store every entry of ``items`` after one eviction pass; returns how many were stored.

        Entries are taken in order until the next one would overflow the bound (one larger than the bound on its
        own is skipped): put first what matters most. The directory is scanned once, however many entries: a
        model's preload writes hundreds of them (one per correlation array), and a scan per entry made the load
        of a MiniLM export into a shared directory of ~12,000 entries take 18 s instead of 0.2 s
        (docs/serving.md, "Correlation cache").
        """
        self.store_error = None
        bound = self.settings.size_bytes
        chosen, total = [], 0
        for key, value in items.items():
            value = np.asarray(value)
            size = int(value.nbytes) + 128
            if size > bound:
                continue
            if total + size > bound:
                break
            chosen.append((key, value))
            total += size
        if not chosen:
            return 0
        stored = 0
        try:
            self._evict(bound - total)
            for key, value in chosen:
                self._write(key, value)
                stored += 1
        except OSError as exc:  # not writable, full, ...: serve without storing, say why
            self.store_error = f"{self.settings.directory}: cannot store cache entries ({exc.strerror or exc})"
        return stored

    def _write(self, key: str, value: np.ndarray) -> None:
        path = self._path(key)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=self.settings.directory)
        except FileNotFoundError:  # the directory was removed since: make it again
            self.settings.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=self.settings.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, value, allow_pickle=False)
            now = self.clock()
            os.utime(tmp, (now, now))
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def used_bytes(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[Path, int, float]]:
        rows = []
        for path in self.settings.directory.glob("*.npy"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            rows.append((path, stat.st_size, stat.st_atime))
        return rows

    def _evict(self, budget: int) -> None:
        entries = sorted(self._entries(), key=lambda row: row[2])
        total = sum(size for _, size, _ in entries)
        for path, size, _ in entries:
            if total <= budget:
                break
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            total -= size


# ------------------------------------------------------------------------------------------------- layout
PERMUTATION_FILE = "permutation.json"
ENCRYPTED_SUFFIX = ".enc"
ENCRYPTION_FORMAT = "icd-aes-256-gcm/1"
KEY_ENV = "ICD_PERMUTATION_KEY"
KEY_FILE_ENV = "ICD_PERMUTATION_KEY_FILE"


class DecryptionError(ValueError):
    """An encrypted permutation file cannot be decrypted (no key, wrong key, tampered). Never shows the key."""


def _permutation_key(env: Mapping[str, str]) -> bytes:
    if env.get(KEY_ENV):
        text, where = env[KEY_ENV], f"${KEY_ENV}"
    elif env.get(KEY_FILE_ENV):
        where = env[KEY_FILE_ENV]
        try:
            text = Path(where).read_text()
        except OSError as exc:
            raise DecryptionError(f"{where}: cannot read key file ({exc.strerror})") from None
    else:
        raise DecryptionError(f"{PERMUTATION_FILE}{ENCRYPTED_SUFFIX} is encrypted: set ${KEY_ENV} or ${KEY_FILE_ENV} "
                              "in Triton's environment (e.g. ICD_PERMUTATION_KEY_FILE=/abs/production.key "
                              "icd stack restart triton)")
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise DecryptionError(f"{where}: not a hex key") from None
    if len(key) != 32:
        raise DecryptionError(f"{where}: key has {len(key)} bytes, AES-256 needs 32")
    return key


def decrypt_permutation_file(path: Path, env: Mapping[str, str]) -> bytes:
    """Plaintext of an ``icd encrypt`` envelope (AES-256-GCM, file name bound as associated data)."""
    import base64

    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("format") != ENCRYPTION_FORMAT:
        raise DecryptionError(f"{path.name}: not an {ENCRYPTION_FORMAT} file")
    key = _permutation_key(env)
    try:
        nonce = base64.b64decode(doc["nonce"], validate=True)
        ciphertext = base64.b64decode(doc["ciphertext"], validate=True)
        return AESGCM(key).decrypt(nonce, ciphertext, str(doc["name"]).encode())
    except (KeyError, ValueError, InvalidTag):
        raise DecryptionError(f"{path.name}: refused — wrong key or tampered ciphertext") from None


def read_permutations(folder: Path, env: Mapping[str, str]) -> dict[str, list[int]]:
    """The version's permutations from ``permutation.json``, or its encrypted ``.enc`` (key from ``env``)."""
    plain = Path(folder) / PERMUTATION_FILE
    encrypted = plain.with_name(PERMUTATION_FILE + ENCRYPTED_SUFFIX)
    if plain.is_file():
        name, doc = plain.name, json_document(plain.name, plain.read_text())
    elif encrypted.is_file():
        name, doc = encrypted.name, json_document(f"{encrypted.name} (decrypted)",
                                                   decrypt_permutation_file(encrypted, env))
    else:
        return {}
    try:
        return {entry["name"]: list(entry["perm"]) for entry in doc.get("dims", [])}
    except (KeyError, TypeError, AttributeError) as exc:
        raise LayoutError(f"{name}: dims must be a list of {{name, perm}} entries ({type(exc).__name__}: {exc})"
                          ) from None


def json_document(name: str, text: str) -> dict:
    """``text`` parsed as a JSON object; :class:`LayoutError` naming ``name`` otherwise."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise LayoutError(f"{name}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise LayoutError(f"{name}: a JSON object is expected, got {type(doc).__name__}")
    return doc


OUTPUT_FROM_HIDDEN = "inverse:hidden"
"""``runtime_permutations.output`` value meaning: the gather index is the inverse of the ``hidden`` permutation in
permutation.json (so an encrypted permutation file is needed, and decrypted, to build it)."""


class LayoutError(ValueError):
    """``icd_layout.json`` names a run-time permutation this backend cannot build."""


@dataclass(frozen=True)
class LayoutRecord:
    """What ``icd_layout.json`` (written at export) says about this version's layout, with the permutations read
    from ``permutation.json`` (or decrypted from ``permutation.json.enc``)."""

    layout_efficiency: float
    permutations: dict[str, list[int]]
    correlation_file: str | None
    runtime_permutations: dict[str, object]

    @classmethod
    def load(cls, folder: Path, env: Mapping[str, str] | None = None) -> LayoutRecord:
        doc = json_document(LAYOUT_FILE, (Path(folder) / LAYOUT_FILE).read_text())
        value = doc.get("layout_efficiency")
        if value is not None and not isinstance(value, (int, float)):
            raise LayoutError(f"{LAYOUT_FILE}: layout_efficiency must be a number, got {value!r}")
        identity = bool(doc.get("identity_layout"))
        return cls(
            layout_efficiency=float("nan") if value is None else float(value),
            permutations={} if identity else read_permutations(Path(folder), os.environ if env is None else env),
            correlation_file=doc.get("correlation_file"),
            runtime_permutations=dict(doc.get("runtime_permutations", {})),
        )

    def layout_array(self) -> np.ndarray:
        """Every permutation, concatenated in name order (preloaded with the correlation matrices)."""
        parts = [np.asarray(self.permutations[name], dtype=np.int32) for name in sorted(self.permutations)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def output_index(self) -> np.ndarray:
        """The output gather index the request path applies (int64; empty = no gather).

        Raises:
            LayoutError: an unknown run-time permutation, or ``inverse:hidden`` without a hidden permutation.
        """
        unknown = sorted(set(self.runtime_permutations) - {"output"})
        if unknown:
            raise LayoutError(f"unsupported run-time permutations {unknown} in {LAYOUT_FILE} (only 'output')")
        spec = self.runtime_permutations.get("output")
        if spec is None:
            return np.zeros(0, dtype=np.int64)
        if spec == OUTPUT_FROM_HIDDEN:
            if "hidden" not in self.permutations:
                raise LayoutError(f"{LAYOUT_FILE}: output gather {OUTPUT_FROM_HIDDEN} but no hidden permutation")
            return np.argsort(np.asarray(self.permutations["hidden"], dtype=np.int64)).astype(np.int64)
        if isinstance(spec, list):  # exports before icd 0.1.0's runtimes: the index itself
            return np.asarray(spec, dtype=np.int64)
        raise LayoutError(f"{LAYOUT_FILE}: runtime_permutations.output {spec!r} is neither an index nor "
                          f"{OUTPUT_FROM_HIDDEN!r}")


def request_layout(folder: Path, env: Mapping[str, str]) -> np.ndarray:
    """What the request path needs from the version's layout: the output gather index (see
    :meth:`LayoutRecord.output_index`). Building it reads ``icd_layout.json`` and ``permutation.json`` (decrypting
    ``permutation.json.enc`` with the key from ``env``) — the work a correlation-cache miss costs."""
    return LayoutRecord.load(folder, env).output_index()


# ------------------------------------------------------------------------------------------------- threads
THREADS_ENV = "ICD_THREADS_PER_INSTANCE"
"""Threads per model instance chosen by ``icd serve`` / the embedded server (the thread budget)."""


class ThreadsError(ValueError):
    """A thread setting is not a whole number >= 0."""


def _whole_number(text: str, name: str, error: type[ValueError], expected: str) -> int:
    """``text`` as an integer ``>= 0``, else ``error`` naming ``name``, the value and what was ``expected``."""
    try:
        value = int(str(text).strip())
    except ValueError:
        value = -1
    if value < 0:
        raise error(f"{name}={text!r}: expected {expected}")
    return value


def parse_threads(text: str, name: str) -> int:
    """A thread count ``>= 0`` (0 = the thread budget) from a config parameter or variable.

    Raises:
        ThreadsError: one line naming ``name`` and the value.
    """
    return _whole_number(text, name, ThreadsError, "a whole number of threads >= 0 (0 = the thread budget)")


def instance_threads(params: Mapping[str, str], env: Mapping[str, str]) -> tuple[int, str]:
    """``(threads, where it came from)`` for one instance: the ``icd_threads`` parameter (``icd_torch_threads`` in
    older exports) when > 0, else ``$ICD_THREADS_PER_INSTANCE`` (set by the server's thread budget), else every
    core.

    Raises:
        ThreadsError: a non-integer or negative value (names the parameter or variable).
    """
    for key in ("icd_threads", "icd_torch_threads"):
        if key in params:
            value = parse_threads(params[key], key)
            if value > 0:
                return value, f"parameter {key}"
            break
    if env.get(THREADS_ENV):
        value = parse_threads(env[THREADS_ENV], THREADS_ENV)
        if value > 0:
            return value, f"${THREADS_ENV}"
    return max(1, os.cpu_count() or 1), "all cores (no budget set)"


# ------------------------------------------------------------------------------------------ padding
TRIM_PARAMETER = "icd_trim_padding"
"""config.pbtxt parameter: trim a batch's trailing padding to a multiple of this many tokens (0 = never)."""


class TrimError(ValueError):
    """The ``icd_trim_padding`` parameter is not a whole number >= 0."""


def trim_multiple(params: Mapping[str, str]) -> int:
    """The ``icd_trim_padding`` multiple of a model's parameters (0 when absent: exports older than it).

    Raises:
        TrimError: one line naming the parameter and the value.
    """
    return _whole_number(params.get(TRIM_PARAMETER, "0"), TRIM_PARAMETER, TrimError,
                         "a whole number of tokens >= 0 (0 = never trim)")


def trimmed_length(mask: np.ndarray, multiple: int) -> int:
    """Columns of a ``[batch, seq]`` batch to run: through the last column any row attends to, rounded up to
    ``multiple`` (at most ``seq``).

    Only trailing columns that no row attends to are cut, so every token's positions, its attention (padding is
    masked out of it) and a masked pooling see the same tokens: the outputs are those of the padded batch, up to
    the arithmetic of other shapes. The full length when ``multiple`` is 0 or a row attends to nothing (the
    output of such a row depends on how much padding it has).
    """
    seq = int(mask.shape[1])
    attended = np.asarray(mask) != 0
    if multiple <= 0 or seq == 0 or not attended.any(axis=1).all():
        return seq
    last = int(np.flatnonzero(attended.any(axis=0))[-1]) + 1
    return min(seq, -(-last // multiple) * multiple)


def trim_batch(ids: np.ndarray, mask: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """The batch as the python backend runs it: both arrays cut to :func:`trimmed_length` columns, contiguous
    int64."""
    keep = trimmed_length(mask, multiple)
    return (np.ascontiguousarray(ids[:, :keep], dtype=np.int64),
            np.ascontiguousarray(mask[:, :keep], dtype=np.int64))


# ------------------------------------------------------------------------------------------------- input limits
MAX_TOKENS_PARAMETER = "icd_max_tokens"
"""config.pbtxt parameter: the most tokens per text the model reads (its positions; 0 or absent = not checked)."""
VOCAB_PARAMETER = "icd_vocab_size"
"""config.pbtxt parameter: the model's vocabulary size; token ids run from 0 to this - 1 (0 or absent = not checked)."""


class LimitsError(ValueError):
    """An ``icd_max_tokens`` / ``icd_vocab_size`` parameter is not a whole number >= 0."""


@dataclass(frozen=True)
class InputLimits:
    """What one request may hold, checked before it joins a batch: a request past them gets its own error and
    the requests batched with it are served. Unchecked, a runtime fails the whole batch (TorchScript, with its
    interpreter's traceback) or answers wrongly without a word (OpenVINO gathers no row for a position past its
    table: an empty output; an id past the vocabulary reads whatever its gather returns)."""

    max_tokens: int = 0
    vocab_size: int = 0

    @classmethod
    def from_parameters(cls, params: Mapping[str, str]) -> InputLimits:
        """The limits a model's config.pbtxt parameters record (none for exports older than them).

        Raises:
            LimitsError: one line naming the parameter and the value.
        """
        return cls(*(_whole_number(params.get(name, "0"), name, LimitsError, "a whole number >= 0 (0 = not checked)")
                     for name in (MAX_TOKENS_PARAMETER, VOCAB_PARAMETER)))

    def problem(self, ids: np.ndarray, mask: np.ndarray) -> str | None:
        """Why the request ``ids`` / ``mask`` (``[batch, seq]``) cannot run, in one line naming the input, the
        value and where it is; None when it can."""
        if self.max_tokens and ids.shape[1] > self.max_tokens:
            return f"input_ids has {ids.shape[1]} tokens per text; this model reads at most {self.max_tokens}"
        outside = (ids < 0) | (ids >= self.vocab_size) if self.vocab_size else ids < 0
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            top = f"0..{self.vocab_size - 1}" if self.vocab_size else "0 and up"
            return f"input_ids holds token id {int(ids[where])} at {list(where)}: this model's ids run {top}"
        not_binary = (mask != 0) & (mask != 1)
        if not_binary.any():
            where = tuple(int(i) for i in np.argwhere(not_binary)[0])
            return f"attention_mask holds {int(mask[where])} at {list(where)}: expected 0 or 1"
        return None


def icd_log_line(fields: Mapping[str, object]) -> str:
    """``ICD {"tag": "ICD", ...}`` — one line, greppable by ``grep ICD`` and parseable after the tag."""
    record = {"tag": ICD_LOG_TAG, "ts": round(time.time(), 6), **fields}
    return f"{ICD_LOG_TAG} " + json.dumps(record, sort_keys=False, separators=(",", ":"))
