"""``Encoder``: one nn.Module with a fixed signature, ``(input_ids, attention_mask) -> output``.

The output is the mean-pooled last hidden state (task ``embedding``) or the classification logits (task
``sequence_classification``). Every stage (fidelity, latency, export to TorchScript, serving) uses this one
signature, so what is measured is what is served.
"""

from __future__ import annotations

import torch
from torch import nn


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the token vectors where ``attention_mask`` is 1."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class Encoder(nn.Module):
    """Wraps a Hugging Face encoder of a supported family (:mod:`icd.model.families`): the base model
    (``BertModel``, ``RobertaModel``, ``DistilBertModel``, ``MPNetModel``) or its ``…ForSequenceClassification``."""

    def __init__(self, hf_model: nn.Module, task: str) -> None:
        super().__init__()
        if task not in ("embedding", "sequence_classification"):
            raise ValueError(f"task must be 'embedding' or 'sequence_classification', got {task!r}")
        self.hf = hf_model
        self.task = task
        self.output_index: torch.Tensor | None = None
        self.int8_weights: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        """icd's int8 codes and per-channel scales per Linear name when its int8 record rounds with GPTQ
        (:mod:`icd.transforms.int8_rounding`); the fp32 weights stay unrounded. Empty otherwise."""

    def set_output_index(self, index: torch.Tensor | None) -> None:
        """Gather the output's last axis with ``index`` (an embedding model whose hidden dim was permuted).

        The residual stream of an ``embedding`` model *is* its output, so a folded hidden permutation cannot
        be undone inside the weights: the only runtime permutation icd ever leaves is this one gather of H
        floats per text, and the served model reports the time it takes (``triton_icd_permutation_time_seconds``).
        """
        self.output_index = None if index is None else index.to(torch.long)

    @property
    def output_name(self) -> str:
        return "logits" if self.task == "sequence_classification" else "embedding"

    @property
    def base(self) -> nn.Module:
        """The base model inside (whatever the task): the module every Linear path is relative to."""
        from icd.model.families import base_model_of

        return base_model_of(self.hf)

    @property
    def bert(self) -> nn.Module:
        """The former name of :attr:`base` (the base model of any family, not only BERT)."""
        return self.base

    @property
    def family(self):
        """The model's :class:`icd.model.families.Family` (where every permutable dimension lives)."""
        from icd.model.families import family_of

        return family_of(self.hf)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.task == "sequence_classification":
            return self.hf(input_ids=input_ids, attention_mask=attention_mask).logits
        hidden = self.hf(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        if self.output_index is not None:
            pooled = pooled.index_select(-1, self.output_index)
        return pooled
