"""End-to-end distillation of a transformed encoder towards the model it was made from, on calibration text.

Least-squares reconstruction (:mod:`icd.transforms.refit`) re-fits one Linear at a time; what it cannot undo —
the error that passes through attention and the GELU, and the layers' interplay — is left. Distillation trains
the transformed model (the *student*) for a fixed number of Adam steps to reproduce the model it was made from
(the *teacher*, kept frozen) on the calibration texts:

    loss = mean(1 − cos(student output, teacher output))
           + hidden_weight · Σ_layers mean_tokens(‖h_s − h_t‖²) / (width · var(h_t))

— the encoder's output (the pooled embedding, or the logits of a classifier) and every encoder layer's hidden
states, padding masked out, each layer's squared error divided by the teacher's variance there so the layers
weigh alike. The token embeddings stay frozen (a few thousand texts touch a fraction of the vocabulary); the
encoder layers and the rest train. Batches are the calibration texts in length-sorted chunks, visited in a
seeded shuffled order, the learning rate cosine-annealed to zero.

``token_noise`` > 0 is consistent input noise (function matching, Beyer et al. 2022, "Knowledge distillation: A
good teacher is patient and consistent"): at each step that fraction of a text's tokens, drawn afresh, is replaced
by tokens drawn from the calibration texts' own, and teacher and student see the same noised text — the student
learns the teacher's function around the calibration texts, not only at them. The first and last real token of
each text (``[CLS]`` / ``[SEP]``, ``<s>`` / ``</s>``) and the padding stay as they are.

This is training, not a post-training re-fit: it costs minutes (MiniLM: about 0.26 s per step of 16 texts on 2
cores) and it can over-fit the calibration texts — held-out fidelity, measured by the caller, is what counts
(docs/transforms.md, ``bench/compaction.py``'s ``distill`` group).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from icd.measure.encode import Batch
from icd.transforms.compact_slice import encoder_layers


@dataclass(frozen=True)
class DistillSettings:
    """How to distill: Adam ``steps`` at peak ``lr`` (cosine to 0), the hidden states' weight, the seed (batch
    order, token noise), the fraction of tokens replaced at each step (``token_noise``, 0: none)."""

    steps: int
    lr: float = 3e-4
    hidden_weight: float = 1.0
    seed: int = 0
    token_noise: float = 0.0


@dataclass(frozen=True)
class DistillReport:
    """What distillation did: steps, trained parameters, the loss over the first and last tenth of the steps."""

    steps: int
    trained_parameters: int
    loss_first: float
    loss_last: float
    seconds: float

    def to_dict(self) -> dict[str, float | int]:
        return {"steps": self.steps, "trained_parameters": self.trained_parameters,
                "loss_first": round(self.loss_first, 6), "loss_last": round(self.loss_last, 6),
                "seconds": round(self.seconds, 1)}


class _LayerOutputs:
    """Forward hooks that keep each encoder layer's output hidden states (the first element of a tuple)."""

    def __init__(self, encoder: nn.Module) -> None:
        self.outputs: list[torch.Tensor] = []
        self._handles = [layer.register_forward_hook(self._keep) for layer in encoder_layers(encoder)]

    def _keep(self, _module: nn.Module, _inputs: object, output: object) -> None:
        self.outputs.append(output[0] if isinstance(output, tuple) else output)

    def take(self) -> list[torch.Tensor]:
        out, self.outputs = self.outputs, []
        return out

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def _trainable(student: nn.Module) -> list[nn.Parameter]:
    """The student's parameters outside the embeddings table(s), set to train; the embeddings frozen."""
    params = []
    for name, param in student.named_parameters():
        train = "embeddings" not in name
        param.requires_grad_(train)
        if train:
            params.append(param)
    return params


def _hidden_loss(student: list[torch.Tensor], teacher: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Σ over layers of the masked mean squared error per channel, over the teacher's variance at that layer."""
    weights = mask.unsqueeze(-1).to(student[0].dtype)
    tokens = weights.sum()
    total = student[0].new_zeros(())
    for hs, ht in zip(student, teacher, strict=True):
        error = ((hs - ht) ** 2 * weights).sum() / (tokens * ht.shape[-1])
        total = total + error / ht.var().clamp_min(1e-12)
    return total


def _interior(batch: Batch) -> torch.Tensor:
    """Mask of each text's real tokens other than its first and last (the special tokens a tokenizer adds),
    padding on either side."""
    real = batch.attention_mask.bool()
    position = torch.arange(real.shape[1]).expand_as(real)
    first = real.int().argmax(dim=1, keepdim=True)
    last = real.shape[1] - 1 - real.flip(1).int().argmax(dim=1, keepdim=True)
    return real & (position > first) & (position < last)


class TokenNoise:
    """Replaces a ``fraction`` of each text's interior tokens, drawn afresh per call, by tokens drawn from the
    interior tokens of ``batches`` (so with their frequencies); seeded, so the same settings noise alike."""

    def __init__(self, batches: Sequence[Batch], fraction: float, seed: int) -> None:
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"distill: token_noise must be in [0, 1), got {fraction}")
        self.fraction = fraction
        self.vocabulary = (torch.cat([b.input_ids[_interior(b)] for b in batches]) if fraction
                           else torch.empty(0, dtype=torch.long))
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, batch: Batch) -> Batch:
        if not self.fraction or not len(self.vocabulary):
            return batch
        chosen = _interior(batch) & (torch.rand(batch.input_ids.shape, generator=self.generator) < self.fraction)
        drawn = torch.randint(len(self.vocabulary), (int(chosen.sum()),), generator=self.generator)
        ids = batch.input_ids.clone()
        ids[chosen] = self.vocabulary[drawn]
        return Batch(ids, batch.attention_mask)


def distill_(student: nn.Module, teacher: nn.Module, batches: Sequence[Batch], settings: DistillSettings,
             progress: bool = True) -> DistillReport:
    """Train ``student`` in place towards ``teacher`` on ``batches`` (see the module docstring).

    Raises:
        ValueError: no batches, steps < 1, or token_noise outside [0, 1).
    """
    if not batches:
        raise ValueError("distill: no calibration batches")
    if settings.steps < 1:
        raise ValueError(f"distill: steps must be >= 1, got {settings.steps}")
    noise = TokenNoise(batches, settings.token_noise, settings.seed)
    start = time.perf_counter()
    teacher.eval()
    student.eval()  # dropout off: the student learns the function the teacher computes at inference
    flags = {name: param.requires_grad for name, param in student.named_parameters()}
    params = _trainable(student)
    optimizer = torch.optim.Adam(params, lr=settings.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps)
    order: list[int] = []
    rng = random.Random(settings.seed)
    losses: list[float] = []
    student_hooks, teacher_hooks = _LayerOutputs(student), _LayerOutputs(teacher)
    columns = (TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(), TextColumn("steps"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, transient=True, disable=not progress) as bar:
            task = bar.add_task("distill", total=settings.steps)
            for _ in range(settings.steps):
                if not order:
                    order = list(range(len(batches)))
                    rng.shuffle(order)
                batch = noise(batches[order.pop()])
                with torch.no_grad():
                    target = teacher(batch.input_ids, batch.attention_mask).float()
                    target_hidden = teacher_hooks.take()
                output = student(batch.input_ids, batch.attention_mask).float()
                loss = (1.0 - nn.functional.cosine_similarity(output, target, dim=-1)).mean()
                hidden = student_hooks.take()
                if settings.hidden_weight:
                    loss = loss + settings.hidden_weight * _hidden_loss(hidden, target_hidden, batch.attention_mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
                bar.advance(task)
    finally:
        student_hooks.close()
        teacher_hooks.close()
        for name, param in student.named_parameters():
            param.requires_grad_(flags[name])
    tenth = max(1, len(losses) // 10)
    return DistillReport(settings.steps, sum(p.numel() for p in params), sum(losses[:tenth]) / tenth,
                         sum(losses[-tenth:]) / tenth, time.perf_counter() - start)
