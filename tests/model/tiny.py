"""A tiny random BERT (real HF classes, random weights) for fast structural tests.

Shapes: 2 layers, hidden 64, 4 heads of 16, FFN 128, MiniLM's vocabulary (so MiniLM's tokenizer fits).
"""

from __future__ import annotations

import torch

from icd.model.encoder import Encoder

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def tiny_encoder(task: str = "embedding", seed: int = 0) -> Encoder:
    """A freshly built tiny encoder, eval mode, fp32 (``sequence_classification`` has a pooler and 3 labels)."""
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    torch.manual_seed(seed)
    config = BertConfig(**TINY, vocab_size=30522, num_labels=3, attn_implementation="eager")
    if task == "sequence_classification":
        hf = BertForSequenceClassification(config)
    else:
        hf = BertModel(config, add_pooling_layer=False)
    return Encoder(hf.eval(), task).eval()
