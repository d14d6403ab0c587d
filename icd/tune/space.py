"""The search space of ``icd tune``: what a Triton model configuration may be, and the candidates it holds.

A :class:`SearchSpace` lists the values tried per dimension (one declaration: CLI flags, a ``--space`` YAML file
and the checkpoint all use these field names). A :class:`Candidate` is one point: instance count, threads per
instance, ``max_batch_size``, ``preferred_batch_size`` and ``max_queue_delay_microseconds``.

Combinations Triton would refuse are *impossible* and skipped with their reason (a preferred batch size above
``max_batch_size``); combinations that mean the same configuration collapse into one (with ``max_batch_size`` 1
the dynamic batcher forms no batch, so delays and preferred sizes are moot). A space with no possible combination
is a :class:`icd.errors.ConfigError` naming the fields.

Example:
    >>> space = SearchSpace(instance_counts=[1, 2], threads=[1], max_batch_sizes=[1, 8], queue_delays_us=[0, 500])
    >>> [c.config_id for c in space.enumerate().candidates]
    ['i1_t1_b1', 'i1_t1_b8_d0', 'i1_t1_b8_d500', 'i2_t1_b1', 'i2_t1_b8_d0', 'i2_t1_b8_d500']
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from icd.errors import ConfigError

PREFERRED_MAX = "max"
"""A ``preferred_batch_sizes`` option meaning ``[max_batch_size]`` of the same candidate."""

DEFAULT_CONCURRENCY_LEVELS = (1, 2, 4, 8, 16, 32)

PreferredOption = list[int] | Literal["max"]


@dataclass(frozen=True, order=True)
class Candidate:
    """One model configuration the search may measure.

    Attributes:
        instance_count: ``instance_group.count`` (model instances; each runs requests in parallel).
        threads: threads per instance (the ``icd_threads`` parameter; 0 = the server's thread budget).
        max_batch_size: ``max_batch_size`` (largest batch the dynamic batcher forms).
        preferred_batch_sizes: ``dynamic_batching.preferred_batch_size`` (empty: none).
        queue_delay_us: ``dynamic_batching.max_queue_delay_microseconds``.
        version: the model version served (a runtime / precision variant, :mod:`icd.tune.variants`); None = the
            version the base configuration serves.
    """

    instance_count: int
    threads: int
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    queue_delay_us: int = 0
    version: int | None = None

    @property
    def config_id(self) -> str:
        """Short stable name, e.g. ``v2_i2_t1_b32_p4-8_d2000`` (batching fields only when batches form)."""
        text = "" if self.version is None else f"v{self.version}_"
        text += f"i{self.instance_count}_t{self.threads}_b{self.max_batch_size}"
        if self.max_batch_size > 1:
            if self.preferred_batch_sizes:
                text += "_p" + "-".join(str(s) for s in self.preferred_batch_sizes)
            text += f"_d{self.queue_delay_us}"
        return text

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preferred_batch_sizes"] = list(self.preferred_batch_sizes)
        return out

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> Candidate:
        version = obj.get("version")
        return cls(int(obj["instance_count"]), int(obj["threads"]), int(obj["max_batch_size"]),
                   tuple(int(s) for s in obj.get("preferred_batch_sizes", ())), int(obj.get("queue_delay_us", 0)),
                   None if version is None else int(version))


@dataclass
class Enumeration:
    """What a space holds: the possible candidates (ordered, unique) and the skipped combinations."""

    candidates: list[Candidate]
    skipped: Counter[str] = field(default_factory=Counter)
    """Reason → number of combinations skipped for it."""

    def skipped_lines(self) -> list[str]:
        return [f"{n} x {reason}" for reason, n in sorted(self.skipped.items())]


class SearchSpace(BaseModel):
    """Values tried per dimension (each list non-empty; numeric ones are sorted and de-duplicated).

    Attributes:
        instance_counts: model instances (``instance_group.count``), each >= 1.
        threads: intra-op threads per instance, each >= 0 (0 = runtime default).
        max_batch_sizes: ``max_batch_size`` values, each >= 1.
        preferred_batch_sizes: options for ``preferred_batch_size``: a list of sizes (``[]`` = none) or ``"max"``.
        queue_delays_us: ``max_queue_delay_microseconds`` values, each >= 0.
        versions: model versions to try, each a runtime / precision export of the model (empty: the version the
            configuration serves).
        concurrency: closed-loop client counts tried per configuration, ascending.
    """

    model_config = ConfigDict(extra="forbid")

    instance_counts: list[int] = Field(default_factory=lambda: [1, 2])
    threads: list[int] = Field(default_factory=lambda: [1, 2])
    max_batch_sizes: list[int] = Field(default_factory=lambda: [1, 8, 32])
    preferred_batch_sizes: list[PreferredOption] = Field(default_factory=lambda: [[]])
    queue_delays_us: list[int] = Field(default_factory=lambda: [0, 2000])
    versions: list[int] = Field(default_factory=list)
    concurrency: list[int] = Field(default_factory=lambda: list(DEFAULT_CONCURRENCY_LEVELS))

    @field_validator("instance_counts", "max_batch_sizes", "concurrency")
    @classmethod
    def _positive(cls, values: list[int]) -> list[int]:
        return _sorted_unique(values, minimum=1)

    @field_validator("threads", "queue_delays_us")
    @classmethod
    def _non_negative(cls, values: list[int]) -> list[int]:
        return _sorted_unique(values, minimum=0)

    @field_validator("versions")
    @classmethod
    def _versions(cls, values: list[int]) -> list[int]:
        return _sorted_unique(values, minimum=1) if values else []

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _preferred(cls, values: list[PreferredOption]) -> list[PreferredOption]:
        if not values:
            raise ValueError("must list at least one option ([] for none)")
        out: list[PreferredOption] = []
        for option in values:
            if option != PREFERRED_MAX:
                if any(size < 1 for size in option):
                    raise ValueError(f"preferred batch sizes must be >= 1, got {option}")
                option = sorted(set(option))
            if option not in out:
                out.append(option)
        return out

    # --------------------------------------------------------------------------------------------- candidates
    CATEGORICAL: ClassVar[tuple[int, ...]] = (3, 5)
    """Dimensions without an order (preferred sizes, versions): every other value is a neighbour."""

    def dimensions(self) -> list[list[Any]]:
        """The value lists in coordinate order (what hill climbing steps along)."""
        return [self.instance_counts, self.threads, self.max_batch_sizes, self.preferred_batch_sizes,
                self.queue_delays_us, self.versions or [None]]

    def make(self, point: tuple[Any, ...]) -> tuple[Candidate | None, str]:
        """The candidate at ``point`` (one value per dimension), normalised; or None and why it is impossible."""
        instances, threads, max_batch, preferred, delay, version = point
        if max_batch == 1:  # the batcher forms no batch: delay and preferred sizes change nothing
            return Candidate(instances, threads, 1, version=version), ""
        sizes = (max_batch,) if preferred == PREFERRED_MAX else tuple(preferred)
        too_big = [s for s in sizes if s > max_batch]
        if too_big:
            return None, f"preferred_batch_size {list(too_big)} > max_batch_size {max_batch}"
        return Candidate(instances, threads, max_batch, sizes, delay, version), ""

    def at(self, index: tuple[int, ...]) -> tuple[Candidate | None, str]:
        """The candidate at coordinate ``index`` (one index per dimension)."""
        return self.make(tuple(dim[i] for dim, i in zip(self.dimensions(), index, strict=True)))

    def enumerate(self) -> Enumeration:
        """Every possible candidate in grid order, duplicates collapsed, impossible ones counted by reason.

        Raises:
            ConfigError: no combination of the space is possible.
        """
        seen: dict[Candidate, None] = {}
        skipped: Counter[str] = Counter()
        for point in itertools.product(*self.dimensions()):
            candidate, reason = self.make(point)
            if candidate is None:
                skipped[reason] += 1
            else:
                seen.setdefault(candidate)
        if not seen:
            raise ConfigError(
                "search space: no possible configuration: "
                + "; ".join(f"{reason} ({n} combinations)" for reason, n in sorted(skipped.items()))
                + f" — preferred_batch_sizes {self.preferred_batch_sizes} vs max_batch_sizes {self.max_batch_sizes}")
        return Enumeration(list(seen), skipped)

    def index_of(self, candidate: Candidate) -> tuple[int, ...] | None:
        """A coordinate of ``candidate`` in this space (None when it is not in it)."""
        for index in itertools.product(*(range(len(d)) for d in self.dimensions())):
            if self.at(index)[0] == candidate:
                return index
        return None


def _sorted_unique(values: list[int], minimum: int) -> list[int]:
    if not values:
        raise ValueError("must list at least one value")
    bad = [v for v in values if v < minimum]
    if bad:
        raise ValueError(f"values must be >= {minimum}, got {bad}")
    return sorted(set(values))


def build_space(source: Path | None = None, overrides: dict[str, Any] | None = None) -> SearchSpace:
    """The space from a YAML file (optional) with ``overrides`` (CLI flags) on top.

    Raises:
        ConfigError: unreadable or invalid YAML, an unknown field, or a value of the wrong type or range — the
            message names the file (or flag) and the field.
    """
    data: dict[str, Any] = {}
    where = "search space"
    if source is not None:
        where = str(source)
        if not Path(source).is_file():
            raise ConfigError(f"--space {source}: file not found")
        try:
            loaded = yaml.safe_load(Path(source).read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{source}: invalid YAML ({exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source}: expected a mapping of search-space fields, got {type(loaded).__name__}")
        data.update(loaded)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return SearchSpace.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field_name = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{where}: {field_name}: {first['msg']} (got {first.get('input')!r})") from None


def parse_preferred_option(text: str) -> PreferredOption:
    """A CLI token for one preferred-batch-size option: ``none``, ``max`` or sizes joined by ``:`` (``4:8``)."""
    token = text.strip().lower()
    if token == "none":
        return []
    if token == PREFERRED_MAX:
        return PREFERRED_MAX
    try:
        return [int(part) for part in token.split(":")]
    except ValueError:
        raise ConfigError(f"--preferred-batch-sizes: {text!r} is not 'none', 'max' or sizes like 4:8") from None
