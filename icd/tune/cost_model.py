"""Cost-model files (``deploy/cost_models/<name>.yaml``): instance type → list price per hour, accelerators, vCPUs.

Every instance entry carries its ``source`` (URL) and ``as_of`` note; prices are list prices as published, not
measurements. Reports copy the entry they used, so every price is traceable to its file and line item.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icd.errors import ConfigError

COST_MODEL_DIR = Path(__file__).resolve().parents[2] / "deploy" / "cost_models"


class InstancePrice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    """Provider's instance / machine type name."""
    price_per_hour: float = Field(gt=0)
    """On-demand list price per instance-hour, as published (currency of the file)."""
    accelerators: int = Field(ge=0)
    """GPUs per instance (0 for CPU-only)."""
    accelerator: str = ""
    """Accelerator model."""
    vcpus: int | None = Field(None, ge=1)
    """vCPUs of the instance: a CPU-only configuration is priced at the share of them it occupies."""
    region: str
    """Region the price applies to."""
    source: str
    """URL of the published price."""
    as_of: str
    """When / how the price was taken."""


class CostModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    provider: str
    currency: str
    note: str = "list price as published"
    instances: list[InstancePrice] = Field(min_length=1)

    def instance(self, type_name: str | None) -> InstancePrice:
        """The entry for ``type_name`` (the first when None).

        Raises:
            ConfigError: unknown type.
        """
        if type_name is None:
            return self.instances[0]
        for entry in self.instances:
            if entry.type == type_name:
                return entry
        known = ", ".join(e.type for e in self.instances)
        raise ConfigError(f"--instance-type {type_name!r}: not in cost model {self.name} ({known})")


def cost_model_path(name_or_path: str) -> Path:
    """``deploy/cost_models/<name>.yaml`` for a bare name, else the path itself."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"}:
        return candidate
    return COST_MODEL_DIR / f"{name_or_path}.yaml"


def available_cost_models() -> list[str]:
    return sorted(p.stem for p in COST_MODEL_DIR.glob("*.yaml"))


def load_cost_model(name_or_path: str) -> tuple[CostModel, Path]:
    """Load and validate a cost model.

    Raises:
        ConfigError: missing file (lists the shipped ones), bad YAML or schema violation (names the field).
    """
    path = cost_model_path(name_or_path)
    if not path.is_file():
        raise ConfigError(f"--cost-model {name_or_path!r}: {path} not found (shipped: "
                          f"{', '.join(available_cost_models())})")
    try:
        doc = yaml.safe_load(path.read_text())
        return CostModel.model_validate(doc), path
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
