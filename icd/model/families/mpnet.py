"""MPNet (``model_type: mpnet``; all-mpnet-base-v2 is one): one relative-attention bias shared by every layer.

Q, K, V and the attention output are ``attention.attn.q`` / ``k`` / ``v`` / ``o``; the attention's residual
LayerNorm is ``attention.LayerNorm``; the FFN is BERT's. No token types; positions start at ``padding_idx + 1``
(= 2), so ``max_position_embeddings`` 514 reads at most 512 tokens.

**Heads are not permuted.** ``encoder.relative_attention_bias`` (buckets × heads) adds one bias per head to the
attention scores of *every* layer. Reordering the heads of one layer would need that layer's bias columns
reordered too, which a shared table cannot do unless every layer takes the same head order; icd's solver orders
each layer's heads on their own, so MPNet admits no ``layer{i}.heads`` dims (a permutation file naming one is
refused). Within-head dims (``qk``, ``vo``) and ``hidden`` / ``ffn`` leave the bias untouched and stay exact.
The classification head's ``classifier.dense`` reads the first token's residual vector and takes the ``hidden``
permutation on its columns.
"""

from __future__ import annotations

from icd.model.families.base import ALL_KINDS, DimKind, Family
from icd.model.families.bert import FAMILY as BERT

FAMILY = Family(
    model_type="mpnet",
    base_class="MPNetModel",
    classifier_class="MPNetForSequenceClassification",
    layers="encoder.layer",
    roles={
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attn_out": "attention.attn.o",
        "ffn_in": BERT.roles["ffn_in"],
        "ffn_out": BERT.roles["ffn_out"],
    },
    layer_norms=("attention.LayerNorm", "output.LayerNorm"),
    embedding_tables=("embeddings.word_embeddings", "embeddings.position_embeddings"),
    head_hidden_readers=("classifier.dense",),
    head_prefixes=("classifier.",),
    unused_prefixes=("pooler.", "lm_head."),
    permutable=ALL_KINDS - {DimKind.HEADS},
    shared_head_table="encoder.relative_attention_bias",
    position_offset=2,
    token_types=False,
    notes=("heads are not permuted: encoder.relative_attention_bias is one table shared by every layer",
           "positions start at padding_idx + 1: at most max_position_embeddings - 2 tokens",
           "the classification head reads the residual stream: classifier.dense takes the hidden permutation"),
)
