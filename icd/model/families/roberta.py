"""RoBERTa (``model_type: roberta``): BERT's module names, with a position offset and a head on the residual stream.

Position ids start at ``padding_idx + 1`` (2 for RoBERTa's pad id 1), so a model with
``max_position_embeddings`` 514 reads at most 512 tokens. The permutations do not care (positions are rows of the
table; ``hidden`` moves its columns). The classification head (``classifier.dense``, then ``out_proj``) reads the
first token's residual vector, so it takes the ``hidden`` permutation on its columns. The single token-type row
(``type_vocab_size`` 1) is permuted like every embedding table.
"""

from __future__ import annotations

from icd.model.families.base import Family
from icd.model.families.bert import FAMILY as BERT

FAMILY = Family(
    model_type="roberta",
    base_class="RobertaModel",
    classifier_class="RobertaForSequenceClassification",
    layers=BERT.layers,
    roles=BERT.roles,
    layer_norms=BERT.layer_norms,
    embedding_tables=BERT.embedding_tables,
    head_hidden_readers=("classifier.dense",),
    head_prefixes=("classifier.",),
    unused_prefixes=("pooler.", "lm_head."),
    position_offset=2,
    notes=("positions start at padding_idx + 1: at most max_position_embeddings - 2 tokens",
           "the classification head reads the residual stream: classifier.dense takes the hidden permutation"),
)
