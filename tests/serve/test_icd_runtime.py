"""The python backend's runtime: checksum manifest, TRITON_ICD_* settings, the shared bounded cache (no server)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from icd.serve.backend import icd_runtime as rt


def _version(tmp_path: Path) -> Path:
    folder = tmp_path / "1"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights" * 100)
    (folder / "permutation.json").write_text('{"a": 1}\n')
    (folder / "sub" / "extra.bin").write_bytes(b"\x00\x01")
    (folder / rt.MANIFEST_NAME).write_text(rt.manifest_text(folder))
    return folder


@pytest.mark.binary
def test_manifest_is_sha256sum_compatible_and_verifies(tmp_path):
    folder = _version(tmp_path)
    rt.verify_manifest(folder)
    done = subprocess.run(["sha256sum", "-c", rt.MANIFEST_NAME], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "model.pt: OK" in done.stdout and "sub/extra.bin: OK" in done.stdout


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "model.pt").write_bytes(b"tampered"), "model.pt: sha256 mismatch"),
        (lambda f: (f / "permutation.json").unlink(), "permutation.json: missing"),
        (lambda f: (f / "intruder.py").write_text("x = 1\n"), "intruder.py: not in the manifest"),
        (lambda f: (f / rt.MANIFEST_NAME).unlink(), "checksum manifest missing"),
        (lambda f: (f / rt.MANIFEST_NAME).write_text("nonsense\n"), "not a sha256sum line"),
    ],
)
def test_manifest_rejects_damage(tmp_path, damage, message):
    folder = _version(tmp_path)
    damage(folder)
    with pytest.raises(rt.ChecksumError, match=message):
        rt.verify_manifest(folder)


def test_pycache_is_ignored(tmp_path):
    folder = _version(tmp_path)
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"cache")
    rt.verify_manifest(folder)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1024MB", 1024**3), ("512KiB", 512 * 1024), ("2GB", 2 * 1024**3), ("100", 100), ("0", 0), ("1.5k", 1536)],
)
def test_parse_size(text, expected):
    assert rt.parse_size(text) == expected


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["", "B", "KB", "MB", "GiB", "kb", "m"]))
def test_parse_size_scales_by_unit(number, unit):
    assert rt.parse_size(f"{number}{unit}") == number * rt._UNITS[unit.upper()]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({rt.CACHE_SIZE_ENV: "lots"}, "TRITON_ICD_CACHE_SIZE='lots'"),
        ({rt.CACHE_SIZE_ENV: "-5MB"}, "TRITON_ICD_CACHE_SIZE='-5MB'"),
        ({rt.CACHE_TTL_ENV: "soon"}, "TRITON_ICD_CACHE_TTL='soon'"),
        ({rt.CACHE_TTL_ENV: "0"}, "TRITON_ICD_CACHE_TTL='0'"),
        ({rt.PRELOAD_ENV: "maybe"}, "TRITON_ICD_PRELOAD_CORRELATIONS='maybe'"),
    ],
)
def test_invalid_settings_name_the_variable(env, message):
    with pytest.raises(rt.CacheConfigError, match=message):
        rt.CacheSettings.from_env(env)


def test_settings_defaults_and_values(tmp_path):
    settings = rt.CacheSettings.from_env(
        {rt.CACHE_SIZE_ENV: "512MB", rt.CACHE_TTL_ENV: "60", rt.PRELOAD_ENV: "true", rt.CACHE_DIR_ENV: str(tmp_path)}
    )
    assert (settings.size_bytes, settings.ttl_s, settings.preload, settings.directory) == (512 * 1024**2, 60.0, True,
                                                                                           tmp_path)
    default = rt.CacheSettings.from_env({})
    assert default.size_bytes == 1024**3 and default.ttl_s == 3600.0 and not default.preload


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _cache(tmp_path: Path, size: str = "1MB", ttl: float = 10.0) -> tuple[rt.SharedFileCache, _Clock]:
    clock = _Clock()
    settings = rt.CacheSettings.from_env(
        {rt.CACHE_SIZE_ENV: size, rt.CACHE_TTL_ENV: str(ttl), rt.CACHE_DIR_ENV: str(tmp_path / "cache")}
    )
    return rt.SharedFileCache(settings, clock=clock), clock


def test_cache_miss_then_hit_then_ttl_expiry(tmp_path):
    cache, clock = _cache(tmp_path)
    loads = []

    def loader():
        loads.append(1)
        return np.arange(10)

    assert not cache.get("k", loader).hit
    second = cache.get("k", loader)
    assert second.hit and np.array_equal(second.value, np.arange(10)) and len(loads) == 1
    clock.now += 11.0
    assert not cache.get("k", loader).hit and len(loads) == 2


def test_cache_is_shared_through_its_directory(tmp_path):
    first, _ = _cache(tmp_path)
    other, _ = _cache(tmp_path)  # another instance process would build its own object on the same directory
    first.get("layout", lambda: np.ones(5))
    assert other.get("layout", lambda: np.zeros(5)).hit


def test_hits_read_an_entry_file_once_and_follow_its_replacement_and_eviction(tmp_path, monkeypatch):
    cache, clock = _cache(tmp_path)
    other, _ = _cache(tmp_path)  # a second instance on the same directory
    cache.get("layout", lambda: np.arange(4))
    reads = []
    load = np.load
    monkeypatch.setattr(rt.np, "load", lambda *a, **k: reads.append(1) or load(*a, **k))
    created = cache._path("layout").stat().st_mtime_ns
    for _ in range(3):
        clock.now += 1
        lookup = cache.get("layout", lambda: np.zeros(4))
        assert lookup.hit and np.array_equal(lookup.value, np.arange(4)) and not lookup.value.flags.writeable
    assert len(reads) == 1  # one read of the file, however many hits
    assert cache._path("layout").stat().st_mtime_ns == created  # a hit moves the atime (LRU) only: TTL unchanged
    other.put("layout", np.arange(4) * 2)  # the file replaced: read again
    assert np.array_equal(cache.get("layout", lambda: np.zeros(4)).value, np.arange(4) * 2) and len(reads) == 2
    cache._path("layout").unlink()  # evicted by another instance: a miss, never the array held in memory
    lookup = cache.get("layout", lambda: np.full(4, 7))
    assert not lookup.hit and np.array_equal(lookup.value, np.full(4, 7))


def test_a_removed_cache_directory_is_made_again_and_the_lookup_still_answers(tmp_path):
    cache, _ = _cache(tmp_path)
    cache.get("layout", lambda: np.arange(4))
    shutil.rmtree(tmp_path / "cache")  # a tmpfs cleaned under a serving model
    lookup = cache.get("layout", lambda: np.arange(4))
    assert not lookup.hit and np.array_equal(lookup.value, np.arange(4)) and lookup.store_error is None
    assert cache.get("layout", lambda: np.zeros(4)).hit  # stored again in the new directory


def test_a_cache_that_cannot_store_returns_the_value_and_says_why(tmp_path):
    cache, _ = _cache(tmp_path)
    shutil.rmtree(tmp_path / "cache")
    (tmp_path / "cache").write_text("not a directory")  # neither writable nor makeable as a directory
    for _ in range(2):
        lookup = cache.get("layout", lambda: np.arange(4))
        assert not lookup.hit and np.array_equal(lookup.value, np.arange(4))
        assert lookup.store_error.startswith(f"{tmp_path / 'cache'}: cannot store cache entries (")
    assert cache.put_many({"a": np.zeros(2), "b": np.zeros(2)}) == 0 and cache.store_error
    (tmp_path / "cache").unlink()  # repaired: the next store works and clears the error
    assert cache.put("a", np.zeros(2)) and cache.store_error is None


def test_a_cache_directory_that_cannot_be_made_is_a_config_error(tmp_path):
    (tmp_path / "file").write_text("")
    settings = rt.CacheSettings.from_env({rt.CACHE_DIR_ENV: str(tmp_path / "file" / "cache")})
    with pytest.raises(rt.CacheConfigError, match=rf"^TRITON_ICD_CACHE_DIR={tmp_path}/file/cache: cannot make the "
                                                   r"cache directory \("):
        rt.SharedFileCache(settings)
    assert isinstance(rt.SharedFileCache(rt.CacheSettings.from_env(
        {rt.CACHE_DIR_ENV: str(tmp_path / "file" / "cache"), rt.CACHE_SIZE_ENV: "0"})), rt.SharedFileCache)


def test_cache_stays_within_its_bound_and_evicts_least_recently_used(tmp_path):
    cache, clock = _cache(tmp_path, size="10KB")
    block = np.zeros(3 * 1024 // 8)  # 3 KiB each
    for key in ("a", "b", "c"):
        cache.get(key, lambda: block)
        clock.now += 1
    cache.get("a", lambda: block)  # touch a: b is now the least recently used
    clock.now += 1
    cache.get("d", lambda: block)
    assert cache.used_bytes() <= 10 * 1024
    assert cache.get("a", lambda: block).hit
    assert not cache.get("b", lambda: block).hit


def test_entry_larger_than_the_bound_is_never_stored(tmp_path):
    cache, _ = _cache(tmp_path, size="1KB")
    big = np.zeros(1024)
    assert not cache.get("big", lambda: big).hit
    assert not cache.get("big", lambda: big).hit
    assert cache.used_bytes() == 0


def test_put_many_stores_a_preload_with_one_directory_scan(tmp_path, monkeypatch):
    cache, clock = _cache(tmp_path, size="10KB")
    block = np.zeros(3 * 1024 // 8)  # 3 KiB each
    for key in ("old", "older"):
        cache.put(key, block)
        clock.now += 1
    cache.get("older", lambda: block)  # touched: "old" is the least recently used
    clock.now += 1
    scans = []
    entries = cache._entries
    monkeypatch.setattr(cache, "_entries", lambda: scans.append(1) or entries())
    small = {f"corr:{i}": np.full(16, i, dtype=np.float32) for i in range(25)}  # 25 x 192 bytes
    assert cache.put_many({**small, "too-big": np.zeros(2048)}) == 25
    assert len(scans) == 1
    assert cache.used_bytes() <= 10 * 1024
    assert all(cache.get(key, lambda: np.zeros(1)).hit for key in small)
    assert np.array_equal(cache.get("corr:7", lambda: np.zeros(1)).value, np.full(16, 7, dtype=np.float32))
    assert cache.get("older", lambda: block).hit and not cache.get("old", lambda: block).hit


def test_put_many_stores_what_fits_in_order_and_nothing_in_a_disabled_cache(tmp_path):
    cache, _ = _cache(tmp_path, size="4KB")
    block = np.zeros(1024 // 8)  # 1 KiB + 128 bytes of header allowance each
    assert cache.put_many({k: block for k in "abcde"}) == 3
    assert [cache.get(k, lambda: block).hit for k in "abc"] == [True] * 3
    disabled, _ = _cache(tmp_path / "off", size="0")
    assert disabled.put_many({"a": block}) == 0 and not disabled.put("a", block)


def test_log_line_is_tagged_json():
    import json

    line = rt.icd_log_line({"model": "m", "batch_size": 3})
    assert line.startswith("ICD ")
    record = json.loads(line[4:])
    assert isinstance(record.pop("ts"), float)
    assert record == {"tag": "ICD", "model": "m", "batch_size": 3}


@st.composite
def _masks(draw) -> np.ndarray:
    rows, seq = draw(st.integers(1, 6)), draw(st.integers(1, 40))
    lengths = draw(st.lists(st.integers(0, seq), min_size=rows, max_size=rows))
    mask = np.zeros((rows, seq), dtype=np.int64)
    for row, length in enumerate(lengths):
        mask[row, :length] = 1
    return mask


@given(mask=_masks(), multiple=st.integers(0, 20))
def test_trimmed_length_cuts_only_trailing_padding_and_rounds_up(mask, multiple):
    seq = mask.shape[1]
    keep = rt.trimmed_length(mask, multiple)
    assert 1 <= keep <= seq and not mask[:, keep:].any(), "nothing a row attends to is cut"
    if multiple == 0 or not mask.any(axis=1).all():
        assert keep == seq, "off, or a row that attends to nothing: the batch runs as sent"
    else:
        last = int(mask.sum(axis=1).max())
        assert keep == seq or keep % multiple == 0
        assert keep - last < multiple, "the shortest multiple that holds every attended token"


def test_trimmed_length_keeps_interior_padding_and_left_padding():
    mask = np.array([[0, 0, 1, 1, 0, 1, 0, 0, 0, 0]])
    assert rt.trimmed_length(mask, 1) == 6
    assert rt.trimmed_length(mask, 4) == 8


@pytest.mark.parametrize(("params", "expected"), [({}, 0), ({"icd_trim_padding": "8"}, 8),
                                                  ({"icd_trim_padding": " 0 "}, 0)])
def test_trim_multiple_from_parameters(params, expected):
    assert rt.trim_multiple(params) == expected


@pytest.mark.parametrize("value", ["-1", "eight", "2.5"])
def test_bad_trim_parameter_names_itself_and_the_value(value):
    with pytest.raises(rt.TrimError, match=rf"icd_trim_padding='{re.escape(value)}': expected a whole number"):
        rt.trim_multiple({"icd_trim_padding": value})


def test_trim_batch_cuts_both_arrays_to_the_trimmed_length_as_contiguous_int64():
    mask = np.array([[1, 1, 1, 0, 0, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.int32)
    ids = np.arange(20, dtype=np.int32).reshape(2, 10)
    got_ids, got_mask = rt.trim_batch(ids, mask, 4)
    assert got_ids.shape == got_mask.shape == (2, 4)
    assert got_ids.dtype == got_mask.dtype == np.int64 and got_ids.flags.c_contiguous and got_mask.flags.c_contiguous
    np.testing.assert_array_equal(got_ids, ids[:, :4])
    np.testing.assert_array_equal(got_mask, mask[:, :4])


@given(st.integers(1, 4), st.integers(1, 12), st.integers(0, 10_000), st.data())
def test_input_limits_name_the_first_bad_value_and_pass_good_requests(rows, seq, seed, data):
    limits = rt.InputLimits(max_tokens=12, vocab_size=100)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 100, size=(rows, seq))
    mask = rng.integers(0, 2, size=(rows, seq))
    assert limits.problem(ids, mask) is None
    row, col = data.draw(st.integers(0, rows - 1)), data.draw(st.integers(0, seq - 1))
    bad = data.draw(st.sampled_from([-1, 100, 10**9]))
    ids[:row] = 0
    ids[row, :col] = 0
    ids[row, col] = bad  # the first bad value in row-major order
    assert limits.problem(ids, mask) == f"input_ids holds token id {bad} at [{row}, {col}]: this model's ids run 0..99"
    ids[row, col] = 5
    mask[row, col] = 3
    assert limits.problem(ids, mask).startswith("attention_mask holds 3 at [")


def test_input_limits_length_and_unchecked_parameters():
    limits = rt.InputLimits(max_tokens=8, vocab_size=100)
    long = np.zeros((2, 9), dtype=np.int64)
    assert limits.problem(long, np.ones_like(long)) == "input_ids has 9 tokens per text; this model reads at most 8"
    older = rt.InputLimits.from_parameters({})  # exports made before the parameters: length and vocabulary unchecked
    assert older == rt.InputLimits(0, 0) and older.problem(np.full((1, 900), 10**6), np.ones((1, 900))) is None
    assert older.problem(np.array([[-3]]), np.array([[1]])) == (
        "input_ids holds token id -3 at [0, 0]: this model's ids run 0 and up")
    recorded = rt.InputLimits.from_parameters({"icd_max_tokens": "512", "icd_vocab_size": "30522"})
    assert recorded == rt.InputLimits(512, 30522)


@pytest.mark.parametrize("name", ["icd_max_tokens", "icd_vocab_size"])
@pytest.mark.parametrize("value", ["-1", "lots", "1.5", ""])
def test_bad_limit_parameters_name_themselves_and_the_value(name, value):
    with pytest.raises(rt.LimitsError, match=rf"^{name}={value!r}: expected a whole number >= 0 \(0 = not checked\)$"):
        rt.InputLimits.from_parameters({name: value})
