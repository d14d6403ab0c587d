"""BERT (``model_type: bert``; all-MiniLM-L6-v2 is one): the reference layout.

Post-LayerNorm layers; Q, K, V under ``attention.self``, the attention output Linear and its residual LayerNorm
under ``attention.output``; word, position and token-type embeddings. The classification head reads the pooler,
whose output is not the residual stream, so the head takes no permutation and its logits never move.
"""

from __future__ import annotations

from icd.model.families.base import Family

FAMILY = Family(
    model_type="bert",
    base_class="BertModel",
    classifier_class="BertForSequenceClassification",
    layers="encoder.layer",
    roles={
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    },
    layer_norms=("attention.output.LayerNorm", "output.LayerNorm"),
    embedding_tables=("embeddings.word_embeddings", "embeddings.position_embeddings",
                      "embeddings.token_type_embeddings"),
    # The classifier reads the pooler: a checkpoint without pooler weights gets both from model.init_seed.
    head_prefixes=("classifier.", "pooler."),
    unused_prefixes=("pooler.", "cls."),
    notes=("the classification head reads the pooler (not the residual stream): logits never move",),
)
