"""Encoder families icd supports, registered by ``config.model_type`` (as transformers' ``AutoModel`` does).

Each family is one module (``bert``, ``roberta``, ``distilbert``, ``mpnet``) holding one
:class:`~icd.model.families.base.Family`: where every permutable dimension lives and what each transform may
touch. :func:`family_of` finds the family of a model; :func:`family_for` of a ``model_type``.

Example:
    >>> from icd.model.families import family_for
    >>> family_for("mpnet").linears(0)["attn_out"]
    'encoder.layer.0.attention.attn.o'
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from icd.model.families import bert, distilbert, mpnet, roberta
from icd.model.families.base import ROLES, DimKind, Family, ModelShape

FAMILIES: dict[str, Family] = {module.FAMILY.model_type: module.FAMILY for module in (bert, roberta, distilbert, mpnet)}
"""``model_type`` → family, for every family icd supports."""

__all__ = ["FAMILIES", "ROLES", "DimKind", "Family", "ModelShape", "UnsupportedFamilyError", "base_model_of",
           "family_for", "family_of", "layer_name_pattern", "shared_input_pattern", "supported_model_types"]


class UnsupportedFamilyError(ValueError):
    """A ``model_type`` icd has no layout for (the message lists the supported ones)."""


def supported_model_types() -> list[str]:
    return sorted(FAMILIES)


def family_for(model_type: str) -> Family:
    """The family of ``model_type``.

    Raises:
        UnsupportedFamilyError: naming the model type and the supported ones.
    """
    family = FAMILIES.get(str(model_type))
    if family is None:
        raise UnsupportedFamilyError(
            f"model_type {model_type!r} is not supported; supported: {', '.join(supported_model_types())}")
    return family


def _config_of(model: nn.Module) -> Any:
    hf = getattr(model, "hf", model)
    config = getattr(hf, "config", None)
    if config is None or not hasattr(config, "model_type"):
        raise TypeError(f"not a Hugging Face encoder: {type(model).__name__} has no config.model_type")
    return config


def family_of(model: nn.Module) -> Family:
    """The family of an ``Encoder``, a Hugging Face task model or a base model."""
    return family_for(_config_of(model).model_type)


def base_model_of(model: nn.Module) -> nn.Module:
    """The base model (``BertModel``, ``RobertaModel``, ``DistilBertModel``, ``MPNetModel``) inside an ``Encoder``,
    a task model (``…ForSequenceClassification``) or a base model itself: the module the Linear paths are
    relative to."""
    hf = getattr(model, "hf", model)
    family_of(hf)
    base = getattr(hf, "base_model", hf)
    return base if isinstance(base, nn.Module) else hf


def shared_input_pattern() -> re.Pattern[str]:
    """Matches the end of a query / key / value Linear path of any family (they read the same input)."""
    paths = sorted({family.roles[role] for family in FAMILIES.values() for role in ("query", "key", "value")})
    return re.compile(r"\.(?:" + "|".join(re.escape(path) for path in paths) + r")$")


def layer_name_pattern() -> re.Pattern[str]:
    """``^<layers>.(\\d+).(rest)$`` for the layer lists of every family: layer index, path inside the layer."""
    lists = sorted({family.layers for family in FAMILIES.values()})
    return re.compile(r"^(?:" + "|".join(re.escape(path) for path in lists) + r")\.(\d+)\.(.+)$")
