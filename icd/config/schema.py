"""The schema of an icd run configuration (``configs/*.json``).

Every section rejects unknown keys, so a typo is an error naming the key, not a silently ignored setting.
Documented field by field in ``docs/config.md``.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from icd.data.corpus import DEFAULT_SOURCES
from icd.transforms.configs import CompactConfig, Int8Config, NMSparsityConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSource(str, Enum):
    """Where the weights come from."""

    HF = "hf"
    """A local Hugging Face BERT checkpoint (``model.path``; null means the MiniLM weights shipped offline)."""
    BERT_CONFIG = "bert_config"
    """Random weights with the shapes of ``model.bert_config`` (for speed work only; fidelity is meaningless)."""


class ModelTask(str, Enum):
    """What the model outputs, and so what fidelity compares."""

    EMBEDDING = "embedding"
    """Mean-pooled last hidden state (sentence embedding)."""
    SEQUENCE_CLASSIFICATION = "sequence_classification"
    """Logits of a classification head (``model.num_labels``)."""


class BertShape(_Section):
    hidden_size: int = Field(768, gt=0)
    num_hidden_layers: int = Field(12, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    vocab_size: int = Field(30522, gt=0)
    max_position_embeddings: int = Field(512, gt=0)


class ModelSection(_Section):
    source: ModelSource = ModelSource.HF
    path: str | None = None
    task: ModelTask = ModelTask.EMBEDDING
    num_labels: int = Field(2, gt=0)
    init_seed: int = 0
    max_length: int = Field(128, gt=0, le=512)
    bert_config: BertShape | None = None
    note: str | None = None

    @model_validator(mode="after")
    def _shape_for_bert_config(self) -> ModelSection:
        if self.source is ModelSource.BERT_CONFIG and self.bert_config is None:
            raise ValueError("model.bert_config is required when model.source is 'bert_config'")
        return self


class DataSection(_Section):
    calibration_texts: int = Field(512, gt=0)
    heldout_texts: int = Field(256, gt=0)
    batch_size: int = Field(32, gt=0)
    seed: int = 0
    sources: list[str] = Field(
        default_factory=lambda: list(DEFAULT_SOURCES),
        description="docstring sources (icd/data/corpus.py): 'stdlib' and installed packages, each optionally "
                    "pinned as name==version (config.lock.json records them pinned)",
    )

    @field_validator("heldout_texts")
    @classmethod
    def _two_heldout(cls, value: int) -> int:
        if value < 2:
            raise ValueError("at least 2 held-out texts are needed (nearest-neighbour agreement compares texts)")
        return value


class PipelineMode(str, Enum):
    """How the optimizer proceeds."""

    DENSE = "dense"
    """No change: the model as loaded (the reference)."""
    LINEAR = "linear"
    """Permute, then transform."""
    ITERATIVE = "iterative"
    """Permute, transform, re-permute under the transform's constraints, measure, accept or roll back."""


PermutableDim = Literal["hidden", "ffn", "heads", "head_dim"]


class AcceptSection(_Section):
    """Accept / roll back rule for a candidate (iterative mode): see docs/pipeline.md."""

    min_cos_mean: float = Field(0.99, ge=-1.0, le=1.0)
    min_gain: float = Field(0.0, ge=0.0)


class PipelineSection(_Section):
    mode: PipelineMode = PipelineMode.ITERATIVE
    dims: list[PermutableDim] = Field(default_factory=lambda: ["hidden", "ffn", "heads", "head_dim"])
    iterations: int = Field(1, ge=1, le=10)
    accept: AcceptSection = Field(default_factory=AcceptSection)


class SolverSection(_Section):
    method: Literal["spectral", "louvain", "identity"] = "spectral"
    refine: bool = True
    seed: int = 0
    time_limit_s: float = Field(20.0, gt=0)
    graph_top_k: int = Field(16, gt=0)
    objective: Literal["locality", "transform"] = "transform"


TransformSection = Annotated[NMSparsityConfig | Int8Config | CompactConfig, Field(discriminator="type")]


class LatencySection(_Section):
    batch_size: int = Field(8, gt=0)
    seq_len: int = Field(128, gt=0)
    warmup: int = Field(3, ge=0)
    runs: int = Field(10, gt=0)
    threads: int = Field(2, gt=0)


class MeasureSection(_Section):
    latency: LatencySection = Field(default_factory=LatencySection)
    fidelity: bool = True


class ServeSection(_Section):
    """What ``icd profile`` may choose to serve, and what an export must verify (docs/runtimes.md)."""

    min_cos: float = Field(0.999, ge=-1.0, le=1.0, description="fidelity floor: cos mean vs the fp32 model")
    min_nn: float = Field(0.98, ge=0.0, le=1.0, description="fidelity floor: nearest-neighbour agreement (embedding models) or argmax agreement (classifiers)")
    verify_min_cos: float = Field(0.99, ge=-1.0, le=1.0,
                                  description="an export fails below this cos mean vs fp32 (a broken conversion)")


class IcdConfig(_Section):
    """The whole run configuration."""

    name: str = "icd-run"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    pipeline: PipelineSection = Field(default_factory=PipelineSection)
    solver: SolverSection = Field(default_factory=SolverSection)
    transforms: list[TransformSection] = Field(default_factory=list)
    measure: MeasureSection = Field(default_factory=MeasureSection)
    serve: ServeSection = Field(default_factory=ServeSection)
