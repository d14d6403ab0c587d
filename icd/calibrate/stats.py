"""Streaming channel statistics and the container of a calibration's results (saved as named NPZ arrays)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from icd.errors import ArtefactError
from icd.io.atomic import atomic_open

NPZ_SCHEMA = "icd.calibration/v1"
_FIELDS = ("count", "sum", "sq_sum", "absmax", "gram")


@dataclass
class ChannelStats:
    """Running statistics of a stream of n-channel vectors (one per non-padding token).

    Attributes:
        count: number of vectors seen.
        sum: per-channel Σx (float64).
        sq_sum: per-channel Σx² (float64, equals ``diag(gram)``).
        absmax: per-channel max |x| (float64).
        gram: Σ x xᵀ (float64, n × n, symmetric positive semi-definite).
    """

    count: int
    sum: np.ndarray
    sq_sum: np.ndarray
    absmax: np.ndarray
    gram: np.ndarray

    @classmethod
    def zeros(cls, n: int) -> ChannelStats:
        return cls(0, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros((n, n)))

    @property
    def size(self) -> int:
        return int(self.sum.size)

    def update(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (tokens × n). The Gram product runs in float64."""
        if x.numel() == 0:
            return
        x64 = x.detach().to(torch.float64)
        self.count += int(x64.shape[0])
        self.sum += x64.sum(dim=0).numpy()
        self.sq_sum += (x64 * x64).sum(dim=0).numpy()
        np.maximum(self.absmax, x64.abs().amax(dim=0).numpy(), out=self.absmax)
        self.gram += (x64.T @ x64).numpy()

    def add(self, other: ChannelStats) -> None:
        """Merge ``other`` (same channels) into this one."""
        self.count += other.count
        self.sum += other.sum
        self.sq_sum += other.sq_sum
        np.maximum(self.absmax, other.absmax, out=self.absmax)
        self.gram += other.gram

    def copy(self) -> ChannelStats:
        return ChannelStats(self.count, self.sum.copy(), self.sq_sum.copy(), self.absmax.copy(), self.gram.copy())

    def reordered(self, origin: np.ndarray) -> ChannelStats:
        """These statistics with the channels reordered: channel ``j`` of the result is channel ``origin[j]``."""
        if origin.shape != (self.size,):
            raise ValueError(f"a reorder of {origin.size} channels for statistics of {self.size}")
        return ChannelStats(self.count, self.sum[origin], self.sq_sum[origin], self.absmax[origin],
                            self.gram[np.ix_(origin, origin)])

    def mean(self) -> np.ndarray:
        return self.sum / max(self.count, 1)

    def covariance(self) -> np.ndarray:
        """Population covariance E[xxᵀ] − E[x]E[x]ᵀ."""
        mean = self.mean()
        return self.gram / max(self.count, 1) - np.outer(mean, mean)

    def correlation(self, eps: float = 1e-12) -> np.ndarray:
        """Pearson correlation; a channel with (near) zero variance correlates 0 with every other and 1 with
        itself."""
        cov = self.covariance()
        std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        live = std > eps * max(float(std.max(initial=0.0)), 1.0)
        safe = np.where(live, std, 1.0)
        corr = cov / np.outer(safe, safe)
        corr[~live, :] = 0.0
        corr[:, ~live] = 0.0
        np.fill_diagonal(corr, 1.0)
        return np.clip(corr, -1.0, 1.0)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {
            f"{prefix}/count": np.asarray(self.count, dtype=np.int64),
            f"{prefix}/sum": self.sum,
            f"{prefix}/sq_sum": self.sq_sum,
            f"{prefix}/absmax": self.absmax,
            f"{prefix}/gram": self.gram,
        }

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str) -> ChannelStats:
        return cls(
            count=int(arrays[f"{prefix}/count"]),
            sum=np.asarray(arrays[f"{prefix}/sum"], dtype=np.float64),
            sq_sum=np.asarray(arrays[f"{prefix}/sq_sum"], dtype=np.float64),
            absmax=np.asarray(arrays[f"{prefix}/absmax"], dtype=np.float64),
            gram=np.asarray(arrays[f"{prefix}/gram"], dtype=np.float64),
        )


@dataclass
class CalibrationStats:
    """What :func:`icd.calibrate.calibrate` measured.

    Attributes:
        inputs: per ``nn.Linear`` (name as in ``encoder.bert.named_modules()``, or ``encoder.hf``'s for modules
            outside the BertModel, e.g. ``classifier``): statistics of its input.
        outputs: per query / key Linear: statistics of its output (the ``qk`` within-head dims; measured, not
            derived).
        hidden: the residual stream: the embedding LayerNorm output and every LayerNorm output of every layer.
        meta: texts, tokens, batch size, max length, seconds.
    """

    inputs: dict[str, ChannelStats]
    outputs: dict[str, ChannelStats]
    hidden: ChannelStats
    meta: dict[str, Any] = field(default_factory=dict)

    def to_arrays(self, prefix: str = "stats") -> dict[str, np.ndarray]:
        """Named arrays: ``{prefix}/inputs/{linear}/{field}``, ``{prefix}/outputs/...``, ``{prefix}/hidden/...``."""
        arrays: dict[str, np.ndarray] = {f"{prefix}/schema": np.asarray(NPZ_SCHEMA)}
        arrays.update(self.hidden.to_arrays(f"{prefix}/hidden"))
        for group, table in (("inputs", self.inputs), ("outputs", self.outputs)):
            for name, stats in table.items():
                arrays.update(stats.to_arrays(f"{prefix}/{group}/{name}"))
        for key, value in self.meta.items():
            arrays[f"{prefix}/meta/{key}"] = np.asarray(value)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Any, prefix: str = "stats") -> CalibrationStats:
        keys = list(arrays.keys())
        if f"{prefix}/schema" not in keys or str(arrays[f"{prefix}/schema"]) != NPZ_SCHEMA:
            raise ValueError(f"no {NPZ_SCHEMA} statistics under {prefix!r}")
        tables: dict[str, dict[str, ChannelStats]] = {"inputs": {}, "outputs": {}}
        for group, table in tables.items():
            start = f"{prefix}/{group}/"
            for key in keys:
                if key.startswith(start) and key.endswith("/count"):
                    name = key[len(start) : -len("/count")]
                    table[name] = ChannelStats.from_arrays(arrays, start + name)
        meta_start = f"{prefix}/meta/"
        meta = {key[len(meta_start) :]: np.asarray(arrays[key]).item() for key in keys if key.startswith(meta_start)}
        return cls(tables["inputs"], tables["outputs"], ChannelStats.from_arrays(arrays, f"{prefix}/hidden"), meta)

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """Write all statistics as one NPZ of named arrays, atomically."""
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **self.to_arrays())

    @classmethod
    def load_npz(cls, path: str | os.PathLike[str]) -> CalibrationStats:
        """Read what :meth:`save_npz` wrote. Raises ArtefactError naming the file if it is not that."""
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return cls.from_arrays(arrays)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtefactError(f"{path}: not an icd calibration NPZ ({exc})") from exc
