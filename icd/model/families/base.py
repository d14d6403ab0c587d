"""The shared interface of a model family: where every permutable dimension lives, by module path.

One :class:`Family` per Hugging Face ``model_type`` (``bert``, ``roberta``, ``distilbert``, ``mpnet``), each in its
own module of this package, registered by ``model_type`` in :mod:`icd.model.families`. Module paths are relative
to the *base* model (``BertModel``, ``RobertaModel``, ``DistilBertModel``, ``MPNetModel``: what
``hf_model.base_model`` returns, what ``Encoder.base`` is), except :attr:`Family.head_hidden_readers`, which are
relative to the task model (``Encoder.hf``), as the classification head lives outside the base model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

ROLES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
"""The six Linears of one encoder layer, by role (what every family has, under its own names)."""

ROLE_GROUPS = {
    "ffn": ("ffn_in", "ffn_out"),
    "attention": ("query", "key", "value", "attn_out"),
    "qkv": ("query", "key", "value"),
}


class DimKind(str, Enum):
    """What a permutable dimension is."""

    HIDDEN = "hidden"
    """The residual stream (embeddings, every LayerNorm, every Linear reading or writing it)."""
    FFN = "ffn"
    """FFN intermediate channels: rows of the FFN input Linear, columns of the FFN output Linear."""
    HEADS = "heads"
    """Whole attention heads: blocks of d rows of Q, K, V and d columns of the attention output Linear."""
    QK = "qk"
    """Within-head dims of Q and K together (attention scores unchanged)."""
    VO = "vo"
    """Within-head dims of V together with the attention output Linear's input columns."""


ALL_KINDS = frozenset(DimKind)


@dataclass(frozen=True)
class ModelShape:
    """The sizes that define the permutable dimensions of an encoder (any family)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


@dataclass(frozen=True)
class Family:
    """Where everything of one encoder family lives, and what each transform may touch.

    Attributes:
        model_type: ``config.model_type`` of the family's checkpoints.
        base_class: transformers class of the bare encoder (the ``embedding`` task).
        classifier_class: transformers class with a sequence-classification head.
        base_kwargs: extra ``from_pretrained`` / constructor arguments of the bare encoder (no pooler).
        layers: path of the ``nn.ModuleList`` of layers.
        roles: role (:data:`ROLES`) → path of that Linear inside one layer.
        layer_norms: paths inside one layer of the residual LayerNorms: after attention, after the FFN.
        embedding_tables: paths of the embedding tables whose columns are the residual stream.
        embedding_norm: path of the LayerNorm after the embeddings.
        head_hidden_readers: Linears of the classification head that read the residual stream (paths in the task
            model): they take the ``hidden`` permutation on their columns so logits do not move. Empty when the
            head reads the pooler (BERT), whose output is not the residual stream.
        head_prefixes: state-dict prefixes (task model) of the classification head: the only keys a checkpoint
            may lack (then initialised from ``model.init_seed``).
        unused_prefixes: state-dict prefixes a checkpoint may hold that icd's models never use (pre-training
            heads, a pooler the embedding model is built without); any other unexpected key is refused.
        config_names: :class:`ModelShape` field → attribute of the family's config.
        permutable: the kinds of permutable dims the family admits.
        shared_head_table: path of a table indexed by head that *every* layer shares (MPNet's relative attention
            bias), or ``None``.
        position_offset: first position id of a real token (RoBERTa and MPNet count positions from
            ``padding_idx + 1``), so a model reads at most ``max_position_embeddings - position_offset`` tokens.
        token_types: whether the model takes token-type ids (a ``token_type_embeddings`` table).
        notes: one line per constraint, for people (docs/families.md renders them).
    """

    model_type: str
    base_class: str
    classifier_class: str
    layers: str
    roles: Mapping[str, str]
    layer_norms: tuple[str, str]
    embedding_tables: tuple[str, ...]
    embedding_norm: str = "embeddings.LayerNorm"
    base_kwargs: Mapping[str, Any] = field(default_factory=lambda: {"add_pooling_layer": False})
    head_hidden_readers: tuple[str, ...] = ()
    head_prefixes: tuple[str, ...] = ("classifier.",)
    unused_prefixes: tuple[str, ...] = ("pooler.",)
    config_names: Mapping[str, str] = field(default_factory=lambda: {
        "layers": "num_hidden_layers", "hidden": "hidden_size", "intermediate": "intermediate_size",
        "heads": "num_attention_heads"})
    permutable: frozenset[DimKind] = ALL_KINDS
    shared_head_table: str | None = None
    position_offset: int = 0
    token_types: bool = True
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if set(self.roles) != set(ROLES):
            raise ValueError(f"family {self.model_type}: roles must be exactly {ROLES}, got {sorted(self.roles)}")

    @property
    def base_prefix(self) -> str:
        """The attribute holding the base model in a task model (``bert``, ``roberta``, …): transformers'
        ``base_model_prefix``, which is also the family's ``model_type``."""
        return self.model_type

    # -- shapes ------------------------------------------------------------------------------------------------
    def shape(self, config: Any) -> ModelShape:
        """The :class:`ModelShape` of a config of this family."""
        return ModelShape(**{key: int(getattr(config, name)) for key, name in self.config_names.items()})

    def max_tokens(self, config: Any) -> int:
        """The longest input (tokens, special tokens included) a model of this config reads."""
        return int(config.max_position_embeddings) - self.position_offset

    # -- module paths ------------------------------------------------------------------------------------------
    def layer_path(self, layer: int) -> str:
        return f"{self.layers}.{layer}"

    def linears(self, layer: int) -> dict[str, str]:
        """Role → path (relative to the base model) of the six Linears of ``layer``."""
        prefix = self.layer_path(layer)
        return {role: f"{prefix}.{self.roles[role]}" for role in ROLES}

    def layer_norm_paths(self, layer: int) -> tuple[str, str]:
        """Paths of ``layer``'s residual LayerNorms (after attention, after the FFN)."""
        prefix = self.layer_path(layer)
        return f"{prefix}.{self.layer_norms[0]}", f"{prefix}.{self.layer_norms[1]}"

    def residual_norms(self, layers: int) -> list[str]:
        """Every LayerNorm whose output is the residual stream: the embedding one, then two per layer."""
        names = [self.embedding_norm]
        for layer in range(layers):
            names.extend(self.layer_norm_paths(layer))
        return names

    def roles_by_name(self, layers: int) -> dict[str, tuple[int, str]]:
        """Linear path → (layer, role) for every per-layer Linear, in forward order."""
        return {name: (layer, role) for layer in range(layers) for role, name in self.linears(layer).items()}

    # -- transform scopes --------------------------------------------------------------------------------------
    def scope_pattern(self, scope: str) -> str:
        """A regex over Linear paths for a named scope (``all``, ``ffn``, ``attention``, ``ffn_in``,
        ``ffn_out``, ``qkv``); only per-layer Linears match, never the pooler or a classification head."""
        if scope == "all":
            roles: tuple[str, ...] = ROLES
        elif scope in ROLE_GROUPS:
            roles = ROLE_GROUPS[scope]
        elif scope in ROLES:
            roles = (scope,)
        else:
            raise ValueError(f"unknown named scope {scope!r}; known: {sorted([*ROLE_GROUPS, 'all', *ROLES])}")
        alternatives = "|".join(re.escape(self.roles[role]) for role in roles)
        return rf"^{re.escape(self.layers)}\.\d+\.(?:{alternatives})$"

    def layer_pattern(self) -> re.Pattern[str]:
        """``^<layers>.(\\d+).(rest)$``: the layer index and the path inside the layer of a per-layer module."""
        return re.compile(rf"^{re.escape(self.layers)}\.(\d+)\.(.+)$")
