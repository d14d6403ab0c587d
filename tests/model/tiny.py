"""Tiny random encoders of every supported family (real HF classes, random weights) for fast structural tests.

Shapes: 2 layers, hidden 64, 4 heads of 16, FFN 128, MiniLM's vocabulary size (so MiniLM's tokenizer fits).
"""

from __future__ import annotations

from pathlib import Path

import torch

from icd.model.encoder import Encoder

TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
VOCAB = 30522
FAMILY_TYPES = ("bert", "roberta", "distilbert", "mpnet")


def tiny_config(model_type: str = "bert", **overrides):
    """A tiny config of ``model_type`` (eager attention, 3 labels)."""
    import transformers

    if model_type == "distilbert":
        sizes = {"dim": TINY["hidden_size"], "n_layers": TINY["num_hidden_layers"],
                 "n_heads": TINY["num_attention_heads"], "hidden_dim": TINY["intermediate_size"]}
    else:
        sizes = dict(TINY)
    classes = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
               "distilbert": transformers.DistilBertConfig, "mpnet": transformers.MPNetConfig}
    extra = {"max_position_embeddings": 130} if model_type in ("roberta", "mpnet") else {}
    return classes[model_type](**{**sizes, **extra, "vocab_size": VOCAB, "num_labels": 3,
                                  "attn_implementation": "eager", **overrides})


def tiny_hf(model_type: str = "bert", task: str = "embedding", seed: int = 0, vocab: int = VOCAB):
    """A freshly built tiny Hugging Face model of ``model_type``, eval mode, fp32."""
    import transformers

    from icd.model.families import family_for

    family = family_for(model_type)
    torch.manual_seed(seed)
    config = tiny_config(model_type, vocab_size=vocab)
    if task == "sequence_classification":
        return getattr(transformers, family.classifier_class)(config).eval()
    return getattr(transformers, family.base_class)(config, **family.base_kwargs).eval()


def tiny_encoder(task: str = "embedding", seed: int = 0, model_type: str = "bert", vocab: int = VOCAB) -> Encoder:
    """A freshly built tiny encoder, eval mode, fp32 (``sequence_classification`` has a head and 3 labels)."""
    return Encoder(tiny_hf(model_type, task, seed, vocab), task).eval()


def save_tiny_checkpoint(folder: Path, model_type: str = "bert", task: str = "embedding", seed: int = 0) -> Path:
    """Save a tiny random checkpoint of ``model_type`` (safetensors + config.json) into ``folder``."""
    tiny_hf(model_type, task, seed).save_pretrained(str(folder), safe_serialization=True)
    return Path(folder)


def random_batches(seed: int, count: int = 3, rows: int = 4, tokens: int = 12, padded_row: int = 0,
                   padded_from: int = 8) -> list:
    """``count`` batches of random token ids (MiniLM's vocabulary range), one row of each padded from a position."""
    from icd.measure.encode import Batch

    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(1000, 30000, (rows, tokens), generator=gen)
        mask = torch.ones_like(ids)
        mask[padded_row, padded_from:] = 0
        out.append(Batch(ids, mask))
    return out


def outputs(model, batches) -> torch.Tensor:
    """``model``'s outputs for ``batches``, concatenated (inference mode)."""
    with torch.inference_mode():
        return torch.cat([model(b.input_ids, b.attention_mask) for b in batches])
