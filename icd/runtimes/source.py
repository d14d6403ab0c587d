"""What a runtime exports from: a run's fp32 model (every foldable transform folded) and its runtime records.

Family-agnostic: a runtime sees an ``Encoder`` with ``(input_ids, attention_mask) -> output``; the only
per-family knowledge used here is the Linear names in icd's int8 record (``data.quantized``, ``input_scale_log2``),
which the record itself carries.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from icd.model.encoder import Encoder
from icd.runtimes.base import Precision

INT8_RECORD = "int8"


@dataclass
class ModelSource:
    """A run's model as runtimes need it.

    Attributes:
        fp32: the fp32 Encoder (permutations, scalings and sparsity folded in; no runtime transform applied).
        records: the run's runtime-transform records (``model/icd_model.json`` ``runtime_transforms``).
        tokenizer: the model's tokenizer.
        calibration_texts: calibration texts of the run's split (never held-out ones).
        max_length: token limit per text.
    """

    fp32: Encoder
    records: list[dict[str, Any]] = field(default_factory=list)
    tokenizer: Any = None
    calibration_texts: Sequence[str] = ()
    max_length: int = 128

    @classmethod
    def from_run(cls, run_dir: Path, baseline: bool = False) -> ModelSource:
        """The run's optimized model (``RUN/model``), or the baseline rebuilt from ``config.lock.json``."""
        from icd.config.schema import IcdConfig
        from icd.data.corpus import load_split
        from icd.io.json_artefact import read_json_artefact
        from icd.model.loader import load_encoder, load_tokenizer

        run_dir = Path(run_dir)
        cfg = IcdConfig.model_validate(read_json_artefact(run_dir / "config.lock.json"))
        split = load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed, cfg.data.sources)
        if baseline:
            fp32, records = load_encoder(cfg.model), []
        else:
            from icd.pipeline.model_store import load_run_encoder, read_icd_model

            fp32 = load_run_encoder(run_dir / "model", runtime_transforms=False)
            records = list(read_icd_model(run_dir / "model").get("runtime_transforms", []))
        return cls(fp32.eval(), records, load_tokenizer(cfg.model), split.calibration, cfg.model.max_length)

    @property
    def int8_record(self) -> dict[str, Any] | None:
        """icd's int8 record of the run, if it has one."""
        return next((r for r in self.records if r.get("type") == INT8_RECORD), None)

    @property
    def output_name(self) -> str:
        return self.fp32.output_name

    @property
    def output_width(self) -> int:
        if self.fp32.task == "sequence_classification":
            return int(self.fp32.hf.config.num_labels)
        return int(self.fp32.bert.config.hidden_size)

    def torch_encoder(self, precision: Precision, output_gather: bool = True) -> Encoder:
        """A copy of the model at ``precision`` in torch: fp32, or int8 = the run's runtime records replayed.

        Raises:
            UserError: int8 asked of a run without an int8 record.
        """
        from icd.errors import UserError
        from icd.transforms.runtime import apply_runtime_transforms_

        model = copy.deepcopy(self.fp32)
        if precision == Precision.INT8:
            if self.int8_record is None:
                raise UserError("precision int8 on torchscript needs a run with an int8 transform "
                                "(its model/icd_model.json has no int8 runtime record)")
            apply_runtime_transforms_(model, self.records)
        elif precision != Precision.FP32:
            raise UserError(f"torch has no precision {precision.value!r}")
        if not output_gather:
            model.set_output_index(None)
        return model.eval()

    def smoothed_encoder(self, output_gather: bool = True) -> Encoder:
        """The fp32 model with icd's unfoldable smoothing as explicit input scalings (function-preserving).

        The int8 record's ``input_scale_log2`` Linears get ``W·2**k`` and an input multiply by ``2**-k`` (exact in
        floating point), so a runtime quantizer sees icd's easier-to-quantize weights and activations.
        """
        from icd.transforms.runtime import decode_exponents
        from icd.transforms.smoothing import smooth_linear_input_

        model = copy.deepcopy(self.fp32)
        record = self.int8_record
        for name, text in sorted(((record or {}).get("data", {}).get("input_scale_log2") or {}).items()):
            smooth_linear_input_(model.bert, name, decode_exponents(text))
        if not output_gather:
            model.set_output_index(None)
        return model.eval()

    def int8_linears(self) -> tuple[list[str], list[str]]:
        """``(quantized, kept fp32)`` Linear names (as in ``encoder.bert.named_modules()``) per icd's int8 record;
        without a record every Linear is quantized."""
        names = [n for n, m in self.fp32.bert.named_modules() if isinstance(m, torch.nn.Linear)]
        record = self.int8_record
        if record is None:
            return names, []
        quantized = set(record["data"].get("quantized", []))
        return [n for n in names if n in quantized], [n for n in names if n not in quantized]

    def per_token_linears(self) -> list[str]:
        """Linears icd quantizes with per-token activation scales (its hardest: the FFN-out Linears)."""
        record = self.int8_record
        return list((record or {}).get("data", {}).get("per_token") or [])

    def calibration_inputs(self, count: int, batch_size: int = 8) -> list[dict[str, np.ndarray]]:
        """``count`` calibration texts as ``{"input_ids", "attention_mask"}`` numpy batches."""
        from icd.measure.encode import tokenize

        texts = list(self.calibration_texts)[:count]
        if not texts or self.tokenizer is None:
            raise ValueError("ModelSource: calibration needs a tokenizer and calibration texts")
        return [{"input_ids": b.input_ids.numpy(), "attention_mask": b.attention_mask.numpy()}
                for b in tokenize(self.tokenizer, texts, batch_size, self.max_length)]
