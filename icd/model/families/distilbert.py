"""DistilBERT (``model_type: distilbert``): its own module names, no token types, no pooler.

Layers under ``transformer.layer``; Q, K, V and the attention output are ``attention.q_lin`` / ``k_lin`` /
``v_lin`` / ``out_lin``; the FFN is ``ffn.lin1`` / ``ffn.lin2``; the residual LayerNorms are ``sa_layer_norm``
and ``output_layer_norm``. Config names differ (``n_layers``, ``dim``, ``hidden_dim``, ``n_heads``). The
classification head's ``pre_classifier`` reads the first token's residual vector, so it takes the ``hidden``
permutation on its columns. Neither output projection sits in a module with its LayerNorm, so the N:M transform's
residual feedback and LayerNorm re-fit (which need BERT's ``dense`` + ``LayerNorm`` output block) do not apply.
"""

from __future__ import annotations

from icd.model.families.base import Family

FAMILY = Family(
    model_type="distilbert",
    base_class="DistilBertModel",
    classifier_class="DistilBertForSequenceClassification",
    base_kwargs={},
    layers="transformer.layer",
    roles={
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    },
    layer_norms=("sa_layer_norm", "output_layer_norm"),
    embedding_tables=("embeddings.word_embeddings", "embeddings.position_embeddings"),
    head_hidden_readers=("pre_classifier",),
    head_prefixes=("pre_classifier.", "classifier."),
    unused_prefixes=("vocab_transform.", "vocab_layer_norm.", "vocab_projector."),
    config_names={"layers": "n_layers", "hidden": "dim", "intermediate": "hidden_dim", "heads": "n_heads"},
    token_types=False,
    notes=("no token types, no pooler; pre_classifier reads the residual stream and takes the hidden permutation",
           "N:M residual feedback / LayerNorm re-fit do not apply (no dense + LayerNorm output block)"),
)
