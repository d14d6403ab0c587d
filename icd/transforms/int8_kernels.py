"""The int8 Linear that icd serves on CPU: int8 weights, activations quantized on every call.

:class:`DynamicInt8Linear` replaces one ``nn.Linear`` (``y = W x + b``):

* **weights**: int8, one symmetric scale per output channel (or one per tensor), packed once for a torch quantized
  engine (oneDNN by default) by ``torch.ao``'s dynamic Linear.
* **activations, per tensor** (``per_token=False``): torch's dynamic int8 GEMM
  (``quantized::linear_dynamic``) quantizes the whole input with one range per call.
* **activations, per token** (``per_token=True``): each row (token) ``x_t`` is divided by its own absmax
  ``r_t = max_j |x_tj|`` first, so every row spans [-1, 1]; the dynamic GEMM's one range then fits every token
  alike (8 bits per token, whatever the other tokens' ranges), and ``y_t = r_t · W_q (x_t / r_t) + b``. The
  per-token rescale costs two reductions and one multiply on the input and one multiply-add on the output.
* **smoothing** (``inv_scale``, :mod:`icd.transforms.smoothing`): the input is multiplied by ``2**-k`` per
  channel first (the weight columns were multiplied by ``2**k`` before packing); with per-token scales the
  division by ``r_t`` is then done in place on that product.
* **fp32 channels** (``fp32_channels``): a few input channels (the widest ranges, LLM.int8()'s outliers) are
  left out of the int8 product and multiplied in fp32: their weight columns are zeroed before packing, the
  input's copy has them zeroed (in the same multiply as the smoothing), and ``x[..., idx] @ W[:, idx]ᵀ`` is added
  to the output. The int8 range of every call / token is then set by the remaining channels.
* ``reduce_range``: quantize activations to 7 bits (torch's own dynamic Linear always does; it avoids int16
  saturation in u8·s8 kernels of CPUs without VNNI). With VNNI (oneDNN / fbgemm use ``vpdpbusd``) 8 bits are
  exact, and halve the activation rounding error.

Measured alternative (not used): per-token quantization to int8 by hand and ``torch._int_mm`` (int8 GEMM with
int32 output) followed by ``float · r_t · s_w + b``. It needs two more passes over the (often 1536-wide) output
than letting the dynamic GEMM dequantize in its epilogue, and was slower end to end on MiniLM-L6 8x128 (1 thread,
same process, interleaved: 1.30-1.37x vs 1.43-1.53x over fp32 with every Linear per-token; docs/int8.md).

Everything is plain torch ops: the module traces with ``torch.jit.trace`` (shape-generic) and deep-copies.

Deprecated upstream: the packing goes through ``torch.ao.quantization`` / ``torch.ao.nn.quantized.dynamic``
and quantized tensors (``torch.quantize_per_channel``), which PyTorch deprecates in favour of torchao. icd pins
torch (:data:`PINNED_TORCH`, pyproject.toml), says so once per process (:func:`warn_deprecated_backend`, an
:class:`Int8BackendDeprecation`) and hides only torch's own notice for the packing call; docs/int8.md
("Dependency on torch.ao.quantization") gives the migration path.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Iterator

import torch
from torch import nn

ZERO_ROW_FLOOR = 1e-12
"""Per-token absmax floor: an all-zero row is divided by this (giving zeros), never by 0 (NaN)."""

PINNED_TORCH = "2.13.0"
"""The torch release the ``torch.ao`` int8 path is pinned to and tested with (pyproject.toml pins the same)."""

_TORCH_QUANTIZED_TENSOR_NOTICE = r"torch\.quantize_per_tensor, torch\.quantize_per_channel .* are deprecated"
"""torch's own deprecation notice raised while packing (replaced by :func:`warn_deprecated_backend`)."""


class Int8BackendDeprecation(FutureWarning):
    """icd's int8 kernels rely on ``torch.ao.quantization``, deprecated upstream (see docs/int8.md)."""


@functools.cache
def warn_deprecated_backend() -> None:
    """Warn, once per process, that the int8 kernels use the deprecated ``torch.ao`` dynamic Linear."""
    warnings.warn(
        f"icd int8 kernels pack weights with torch.ao.quantization's dynamic Linear, deprecated upstream; icd pins "
        f"torch {PINNED_TORCH} (running {torch.__version__}). Migration path: docs/int8.md, section "
        "'Dependency on torch.ao.quantization'.", Int8BackendDeprecation, stacklevel=3)


def vnni_supported() -> bool:
    """Whether this CPU has VNNI (u8·s8 dot products without int16 saturation)."""
    probe = getattr(torch.cpu, "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else False


def default_reduce_range() -> bool:
    """7-bit activations where the CPU lacks VNNI, 8-bit where it has it."""
    return not vnni_supported()


@contextlib.contextmanager
def quantized_engine(engine: str | None) -> Iterator[None]:
    """Pack weights for ``engine`` inside the block (the global setting is restored afterwards).

    A packed int8 Linear keeps the kernels of the engine it was packed for, whatever the global setting later.

    Raises:
        ValueError: ``engine`` is not supported by this torch build.
    """
    if engine is None:
        yield
        return
    supported = torch.backends.quantized.supported_engines
    if engine not in supported:
        raise ValueError(f"int8 engine {engine!r} is not supported by this torch build (supported: {supported})")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


def pack_dynamic_linear(linear: nn.Linear, per_channel: bool, engine: str | None, with_bias: bool = True,
                        weight_codes: tuple[torch.Tensor, torch.Tensor] | None = None) -> nn.Module:
    """A torch dynamic int8 Linear (``torch.ao.nn.quantized.dynamic.Linear``) with ``linear``'s weight.

    ``linear`` is not changed. ``with_bias=False`` packs the weight alone (the per-token path adds the bias after
    its rescale). ``weight_codes``: ``(int8 codes [out, in], float32 scales [out])`` packed as they are (per
    output channel, zero point 0) instead of torch's observer rounding ``linear``'s weight
    (:mod:`icd.transforms.int8_rounding`); needs ``per_channel``.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    if with_bias:
        source = copy.copy(linear)  # shares the parameters; only the qconfig attribute is added to the copy
    else:
        source = nn.Linear(linear.in_features, linear.out_features, bias=False)
        source.weight = nn.Parameter(linear.weight.detach(), requires_grad=False)
    source.qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    warn_deprecated_backend()
    with warnings.catch_warnings(), quantized_engine(engine):
        # only torch's quantized-tensor notice, once replaced by ours above; every other warning passes
        warnings.filterwarnings("ignore", message=_TORCH_QUANTIZED_TENSOR_NOTICE, category=UserWarning)
        packed = DynamicLinear.from_float(source)
        if weight_codes is not None:
            if not per_channel:
                raise ValueError("int8 weight codes need per-channel weight scales (qscheme per_token or per_channel)")
            codes, scales = weight_codes
            qweight = torch._make_per_channel_quantized_tensor(
                codes.to(torch.int8), scales.double(), torch.zeros(codes.shape[0], dtype=torch.long), 0)
            packed.set_weight_bias(qweight, packed.bias())
        return packed


def _channel_index(channels: torch.Tensor | None, width: int) -> torch.Tensor | None:
    """``channels`` as a sorted int64 index (None when empty); ValueError when out of range or repeated."""
    if channels is None or channels.numel() == 0:
        return None
    index = torch.as_tensor(channels, dtype=torch.int64).flatten()
    if int(index.min()) < 0 or int(index.max()) >= width or index.unique().numel() != index.numel():
        raise ValueError(f"DynamicInt8Linear: fp32_channels must be distinct input channels in [0, {width}), "
                         f"got {index.tolist()[:8]}{'...' if index.numel() > 8 else ''}")
    return index.sort().values


def _without_columns(linear: nn.Linear, channels: torch.Tensor) -> nn.Linear:
    """A copy of ``linear`` whose weight columns ``channels`` are zero (those channels are multiplied in fp32)."""
    stripped = copy.deepcopy(linear)
    with torch.no_grad():
        stripped.weight[:, channels] = 0.0
    return stripped


class DynamicInt8Linear(nn.Module):
    """``y = W x + b`` with int8 ``W`` and ``x`` quantized per call (per tensor or per token); float32 out.

    Accepts any ``[..., in_features]`` float32 input and returns ``[..., out_features]``.

    Args:
        linear: the fp32 Linear (already smoothed if ``inv_scale`` is given); not changed.
        per_token: one activation scale per row (token) instead of one per call.
        per_channel: one weight scale per output channel (else one per tensor).
        reduce_range: 7-bit activations (see the module docstring).
        engine: torch quantized engine to pack for (``None``: the current global one).
        inv_scale: per-input-channel multiplier applied to ``x`` first (the runtime half of a smoothing).
        fp32_channels: input channel indices multiplied in fp32, outside the int8 product (None or empty: none).
        weight_codes: ``(int8 codes, float32 scales)`` of the packed weight (``W·2**k``, fp32 columns zero) chosen
            by icd (GPTQ, :mod:`icd.transforms.int8_rounding`) instead of torch's rounding of ``linear``.

    Raises:
        TypeError: ``linear`` is not an ``nn.Linear``.
        ValueError: ``inv_scale`` does not have ``in_features`` entries, ``fp32_channels`` are out of range or
            repeated, or ``engine`` is not supported.
    """

    def __init__(
        self, linear: nn.Linear, *, per_token: bool, per_channel: bool = True, reduce_range: bool = False,
        engine: str | None = "onednn", inv_scale: torch.Tensor | None = None,
        fp32_channels: torch.Tensor | None = None, weight_codes: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"DynamicInt8Linear needs an nn.Linear, got {type(linear).__name__}")
        if inv_scale is not None and tuple(inv_scale.shape) != (linear.in_features,):
            raise ValueError(f"DynamicInt8Linear: inv_scale has shape {tuple(inv_scale.shape)}, "
                             f"expected ({linear.in_features},)")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.per_token, self.per_channel, self.reduce_range = bool(per_token), bool(per_channel), bool(reduce_range)
        channels = _channel_index(fp32_channels, linear.in_features)
        has_bias = linear.bias is not None
        packed_from = linear if channels is None else _without_columns(linear, channels)
        self.packed = pack_dynamic_linear(packed_from, self.per_channel, engine,
                                          with_bias=has_bias and not self.per_token, weight_codes=weight_codes)
        self.register_buffer("bias", linear.bias.detach().float().clone() if has_bias and self.per_token else None)
        multiplier = None if inv_scale is None else inv_scale.detach().float().clone()
        if channels is not None:
            multiplier = torch.ones(linear.in_features) if multiplier is None else multiplier
            multiplier[channels] = 0.0
        self.smoothed = inv_scale is not None
        self.rounding = "nearest" if weight_codes is None else "icd codes"
        self.register_buffer("inv_scale", multiplier)
        self.register_buffer("fp32_channels", channels)
        # the fp32 part in the module's own input units: W_smoothed[:, idx] * inv_scale[idx] = W[:, idx]
        fp32_weight = None
        if channels is not None:
            fp32_weight = linear.weight.detach().float()[:, channels].clone()
            if inv_scale is not None:
                fp32_weight.mul_(inv_scale.detach().float()[channels])
        self.register_buffer("fp32_weight", fp32_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # int8 kernels have no backward: keep autograd out (also in a TorchScript trace called with grad enabled),
        # which makes the in-place passes below legal whatever the caller's grad mode.
        x = x.detach()
        outliers = None
        if self.fp32_channels is not None:
            outliers = torch.nn.functional.linear(x.index_select(-1, self.fp32_channels), self.fp32_weight)
        scaled = self.inv_scale is not None  # the smoothing and the fp32 channels' zeros: one multiply
        if scaled:
            x = x * self.inv_scale
        params = self.packed._packed_params._packed_params
        if not self.per_token:
            y = torch.ops.quantized.linear_dynamic(x, params, self.reduce_range)
            return y if outliers is None else y.add_(outliers)
        absmax = torch.maximum(x.amax(dim=-1, keepdim=True), x.amin(dim=-1, keepdim=True).neg())
        absmax = absmax.clamp_min(ZERO_ROW_FLOOR)
        rows = x.mul_(absmax.reciprocal()) if scaled else x * absmax.reciprocal()  # in place only on our copy
        y = torch.ops.quantized.linear_dynamic(rows, params, self.reduce_range)
        y = y.mul_(absmax) if self.bias is None else torch.addcmul(self.bias, y, absmax, out=y)  # one pass
        return y if outliers is None else y.add_(outliers)

    def extra_repr(self) -> str:
        fp32 = 0 if self.fp32_channels is None else int(self.fp32_channels.numel())
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activations={'per_token' if self.per_token else 'per_tensor'}, "
                f"weights={'per_channel' if self.per_channel else 'per_tensor'}, "
                f"bits={7 if self.reduce_range else 8}, smoothed={self.smoothed}, fp32_channels={fp32}, "
                f"weight_rounding={self.rounding}")
