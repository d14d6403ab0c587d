"""What the in-process benches of one run share: the run's model as runtimes see it, its held-out texts and the
original fp32 model's outputs on them (bench/int8_padding.py, bench/padding_consistency.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunHeldout:
    """``cfg``: the run's config; ``source``: its ``ModelSource``; ``texts``: its held-out texts; ``reference``: the
    original fp32 model's outputs on them, truncated to the bench's ``seq_len`` (a torch tensor)."""

    cfg: Any
    source: Any
    texts: list[str]
    reference: Any


def run_heldout(run_dir: Path, seq_len: int) -> RunHeldout:
    from icd.config.schema import IcdConfig
    from icd.data.corpus import load_split
    from icd.export.run_inputs import read_run
    from icd.measure.encode import encode
    from icd.model.loader import load_encoder
    from icd.runtimes.source import ModelSource

    cfg = IcdConfig.model_validate(read_run(run_dir).config_lock)
    source = ModelSource.from_run(run_dir)
    texts = list(load_split(cfg.data.calibration_texts, cfg.data.heldout_texts, cfg.data.seed,
                            cfg.data.sources).heldout)
    reference = encode(load_encoder(cfg.model).eval(), source.tokenizer, texts, cfg.data.batch_size, seq_len)
    return RunHeldout(cfg, source, texts, reference)
