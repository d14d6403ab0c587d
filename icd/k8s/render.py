"""``icd k8s render``: a copy of one manifest or values file with ``--set`` overrides, validated before it is written.

``--set path=value`` follows Helm: dots separate keys (``\\.`` is a literal dot, as in annotation names),
``[i]`` indexes a list, and the value is read as YAML (``3`` is an integer, ``"3"`` a string, ``true`` a
boolean). The result is validated like the file it came from (:mod:`icd.k8s.validate`); any problem is a
:class:`icd.errors.UserError` naming the file, the resource and the field, and nothing is written. A valid result is
written atomically.

Example:
    icd k8s render deploy/kserve/inferenceservice.yaml \\
        --set spec.predictor.model.storageUri=s3://models/icd --out isvc.yaml
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from icd.errors import UserError
from icd.io.atomic import write_text_atomic
from icd.k8s.validate import validate_documents

_INDEX = re.compile(r"^(?P<key>.*?)\[(?P<index>\d+)\]$")


def _keys(dotted: str) -> list[str | int]:
    parts = re.split(r"(?<!\\)\.", dotted)
    out: list[str | int] = []
    for part in parts:
        part = part.replace("\\.", ".")
        indexes = []
        while (match := _INDEX.match(part)) is not None:
            indexes.insert(0, int(match["index"]))
            part = match["key"]
        if part:
            out.append(part)
        out += indexes
    if not out:
        raise UserError(f"--set {dotted!r}: empty path")
    return out


def apply_set(doc: Any, assignment: str) -> Any:
    """A copy of ``doc`` with one ``path=value`` assignment applied (missing mappings are created)."""
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected PATH=VALUE")
    dotted, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError as exc:
        raise UserError(f"--set {assignment!r}: value is not YAML ({exc})") from None
    keys = _keys(dotted)
    result = copy.deepcopy(doc)
    node = result
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(str(k) for k in keys[:depth + 1])
        if isinstance(key, int):
            if not isinstance(node, list) or key >= len(node):
                raise UserError(f"--set {dotted}: {where} is not an existing list item")
        elif not isinstance(node, dict):
            raise UserError(f"--set {dotted}: {where} is inside a {type(node).__name__}, not a mapping")
        if last:
            node[key] = value
        else:
            if isinstance(key, str) and key not in node:
                node[key] = {}
            node = node[key]
    return result


def render(source: Path, assignments: list[str], out: Path) -> Path:
    """Write ``source`` with ``assignments`` to ``out`` after validating it (see module docstring).

    Raises:
        UserError: unreadable source, several documents, a bad assignment, or a validation problem — nothing is
            written then.
    """
    source, out = Path(source), Path(out)
    try:
        docs = [d for d in yaml.safe_load_all(source.read_text()) if d is not None]
    except OSError as exc:
        raise UserError(f"{source}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: invalid YAML ({exc})") from None
    if len(docs) != 1:
        raise UserError(f"{source}: holds {len(docs)} documents; render takes a file with one")
    doc = docs[0]
    for assignment in assignments:
        doc = apply_set(doc, assignment)
    findings = validate_documents(source, [doc])
    if findings:
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        raise UserError(f"{findings[0]}{more}; nothing written to {out}")
    write_text_atomic(out, f"# rendered by icd k8s render from {source} ({len(assignments)} --set)\n"
                      + yaml.safe_dump(doc, sort_keys=False))
    return out
