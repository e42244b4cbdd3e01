"""Floating-point quantization: E2M1, E2M3, E3M2, E4M3, E5M2, elementwise or block-scaled.

**Element rounding.** For a format with ``m`` mantissa bits, minimum normal exponent
``e_min = 1 - bias`` and largest finite value ``x_max``:

.. math::
   y = \\mathrm{clip}(x, -x_{\\max}, x_{\\max}),\\quad
   e = \\max(\\lfloor \\log_2 |y| \\rfloor, e_{\\min}),\\quad
   \\hat x = 2^{e-m} \\cdot \\mathrm{round\\_half\\_even}(y / 2^{e-m}).

The arithmetic is exact in float32 (``frexp``/``ldexp`` and power-of-two scaling), so on
every input with ``|x| ≤ x_max`` the result equals the ml_dtypes cast bit for bit (tested
on every representable value, every midpoint and random inputs). **Out of range, rdq
saturates to ±x_max**; ml_dtypes instead gives NaN for E4M3 (``float8_e4m3fn``) above
464 and ±inf for E5M2 above 61440 (E2M1/E2M3/E3M2 saturate there too).

**Block scaling.** Blocks of ``block_size`` consecutive entries of the last axis share a
scale ``X``; elements are ``round(x / X)`` in the element format, decoded as ``X · code``.

* MX (OCP Microscaling Formats spec v1.0, Sec. 6.3, "Algorithm 1"): block 32, scale in
  e8m0, ``X = 2^(floor(log2 amax) - e_max_elem)`` where ``e_max_elem`` is the exponent of
  the element format's largest normal (2 for E2M1, 8 for E4M3, 15 for E5M2). Then
  ``amax/X ∈ [2^e_max, 2^(e_max+1))`` and values above ``x_max`` saturate (for E2M1 the
  block maximum can be clipped from up to 8 to 6). ``scale_rule="ceil"`` instead uses the
  smallest power of two ``X ≥ amax/x_max`` (never clips; one binade coarser when it
  rounds up): this is what ``jax.nn.scaled_dot_general`` does (tested to agree bit for bit).
* NVFP4 (NVIDIA, "Introducing NVFP4", 2025; TensorRT Model Optimizer recipe): E2M1
  elements, block 16, E4M3 block scale ``s_b = e4m3((amax_b / t) / 6)`` and one fp32
  tensor scale ``t = amax / (6 · 448)``; decoded as ``t · s_b · code``.

NaN/Inf: ``encode`` raises ``ValueError`` (eagerly; under ``jit`` through
``rdq.checks.checked``); in ``quantize`` a NaN or ±Inf entry of a block-scaled format makes its
own block NaN and leaves every other block unchanged (NVFP4's tensor scale is taken over the
finite entries); elementwise formats keep NaN and saturate ±Inf to ±x_max.

Exactness: divisions by scales are correctly rounded (``div_exact``), so ties round to even
and eager and jitted results agree bit for bit; e8m0 scales are applied through their integer
exponent, so blocks with a scale below 2^-126 are not flushed to zero.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.quantizers._scales import (
  SCALE_BITS,
  SCALE_DTYPES,
  div_exact,
  e8m0_ceil_exp,
  e8m0_floor_exp,
  e8m0_from_exp,
  e8m0_to_exp,
  mul_pow2,
  pow2,
  round_scale,
)
from rdq.quantizers.base import (
  Rate,
  check_finite,
  check_input,
  check_last_axis_divisible,
  check_rate_shape,
  eager_jit,
  precheck_encode,
)
from rdq.quantizers.integer import _require_scale_range

__all__ = ["FORMATS", "FPCode", "FPFormat", "FPQuantizer", "format_grid", "from_bits", "round_to_format", "to_bits"]


@dataclasses.dataclass(frozen=True)
class FPFormat:
  """A binary floating-point element format (no infinities used; saturating).

  Attributes:
    name: short name, e.g. ``"e4m3"``.
    exp_bits, man_bits, bias: the usual IEEE-style fields.
    max_value: largest finite magnitude.
    dtype: the matching ml_dtypes/jnp dtype used for codes.
  """

  name: str
  exp_bits: int
  man_bits: int
  bias: int
  max_value: float
  dtype: object

  @property
  def bits(self) -> int:
    return 1 + self.exp_bits + self.man_bits

  @property
  def e_min(self) -> int:
    """Exponent of the smallest normal number, ``1 - bias``."""
    return 1 - self.bias

  @property
  def e_max(self) -> int:
    """Exponent of the largest normal number, ``floor(log2 max_value)``."""
    import math

    return int(math.floor(math.log2(self.max_value)))


  @property
  def xla_codes(self) -> bool:
    """Whether XLA handles ``dtype`` (4- and 8-bit floats); 6-bit codes are stored as
    their bit patterns in uint8 instead (XLA:CPU rejects F6E2M3FN/F6E3M2FN buffers)."""
    return self.bits in (4, 8)


def to_bits(z: Float[Array, "*s"], fmt: FPFormat) -> Array:
  """Bit pattern (uint8, low ``fmt.bits`` bits) of values already on ``fmt``'s grid."""
  z = jnp.asarray(z, jnp.float32)
  sign = jnp.signbit(z).astype(jnp.uint32)
  a = jnp.abs(z)
  _, e = jnp.frexp(a)
  e = e - 1  # floor(log2 a) for a > 0
  normal = a >= pow2(jnp.int32(fmt.e_min))
  field_e = jnp.where(normal, e + fmt.bias, 0)
  mant_exp = jnp.where(normal, e, fmt.e_min) - fmt.man_bits
  mant = (a * pow2(-mant_exp)).astype(jnp.uint32)  # exact integer
  mant = jnp.where(normal, mant - (1 << fmt.man_bits), mant)
  bits = (sign << (fmt.exp_bits + fmt.man_bits)) | (field_e.astype(jnp.uint32) << fmt.man_bits) | mant
  return bits.astype(jnp.uint8)


def from_bits(bits: Array, fmt: FPFormat) -> Float[Array, "*s"]:
  """Inverse of ``to_bits`` (float32 values)."""
  b = jnp.asarray(bits).astype(jnp.int32)
  mant = b & ((1 << fmt.man_bits) - 1)
  field_e = (b >> fmt.man_bits) & ((1 << fmt.exp_bits) - 1)
  sign = (b >> (fmt.exp_bits + fmt.man_bits)) & 1
  normal = field_e > 0
  sig = jnp.where(normal, mant + (1 << fmt.man_bits), mant).astype(jnp.float32)
  exp = jnp.where(normal, field_e - fmt.bias, fmt.e_min) - fmt.man_bits
  val = sig * pow2(exp)
  return jnp.where(sign == 1, -val, val)


FORMATS: dict[str, FPFormat] = {
    "e2m1": FPFormat("e2m1", 2, 1, 1, 6.0, jnp.float4_e2m1fn),
    "e2m3": FPFormat("e2m3", 2, 3, 1, 7.5, jnp.float6_e2m3fn),
    "e3m2": FPFormat("e3m2", 3, 2, 3, 28.0, jnp.float6_e3m2fn),
    "e4m3": FPFormat("e4m3", 4, 3, 7, 448.0, jnp.float8_e4m3fn),
    "e5m2": FPFormat("e5m2", 5, 2, 15, 57344.0, jnp.float8_e5m2),
}


def round_to_format(x: Float[Array, "*s"], fmt: FPFormat) -> Float[Array, "*s"]:
  """Round float32 ``x`` to the nearest value of ``fmt`` (ties to even), saturating."""
  x = jnp.asarray(x, jnp.float32)
  y = jnp.clip(x, -fmt.max_value, fmt.max_value)
  _, e = jnp.frexp(y)  # |y| = m · 2^e with m ∈ [0.5, 1) => floor(log2|y|) = e - 1
  exp = jnp.maximum(e - 1, fmt.e_min)
  ulp_exp = (exp - fmt.man_bits).astype(jnp.int32)
  return jnp.round(y * pow2(-ulp_exp)) * pow2(ulp_exp)


class FPCode(NamedTuple):
  """Compact code of an FP quantizer.

  Attributes:
    codes: element codes in the element dtype (e.g. ``float4_e2m1fn``), input shape; for
      the 6-bit formats, their bit patterns in uint8 (see ``to_bits``).
    scales: per-block scales in the scale dtype, shape ``(*batch, n // block_size)``;
      ``None`` for elementwise formats.
    tensor_scale: float32 scalar (NVFP4's second-level scale), else ``None``.
  """

  codes: Array
  scales: Array | None
  tensor_scale: Array | None


@dataclasses.dataclass(frozen=True)
class FPQuantizer:
  """Elementwise or block-scaled floating-point quantizer (see module docstring).

  Attributes:
    element: element format name, one of ``FORMATS``.
    block_size: entries per shared scale along the last axis; ``None`` for elementwise.
    scale_format: ``"e8m0"`` (MX), ``"e4m3"`` (NV), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
    tensor_scale: add NVFP4's fp32 per-tensor scale.
    scale_rule: for e8m0 scales, ``"ocp"`` (spec) or ``"ceil"`` (jax's rule).
  """

  element: str
  block_size: int | None = None
  scale_format: str | None = None
  tensor_scale: bool = False
  scale_rule: str = "ocp"

  def __post_init__(self):
    if self.element not in FORMATS:
      raise ValueError(f"unknown FP element format {self.element!r}; known: {sorted(FORMATS)}")
    if (self.block_size is None) != (self.scale_format is None):
      raise ValueError("block_size and scale_format must be given together")
    if self.block_size is not None and (not isinstance(self.block_size, int) or self.block_size < 1):
      raise ValueError(f"block_size={self.block_size!r} must be a positive integer")
    if self.scale_format is not None and self.scale_format not in SCALE_BITS:
      raise ValueError(f"scale_format={self.scale_format!r} must be one of {sorted(SCALE_BITS)}")
    if self.scale_rule not in ("ocp", "ceil"):
      raise ValueError(f"scale_rule={self.scale_rule!r} must be 'ocp' or 'ceil'")
    if self.tensor_scale and self.scale_format is None:
      raise ValueError("tensor_scale needs block scales")

  @property
  def fmt(self) -> FPFormat:
    return FORMATS[self.element]

  def _tensor_scale(self, x: Array) -> Array:
    """NVFP4's fp32 tensor scale ``amax / (x_max · 448)`` over the finite entries (a NaN or
    Inf entry poisons only its block, not the scale of the whole tensor)."""
    big = float(self.fmt.max_value) * float(jnp.finfo(SCALE_DTYPES[self.scale_format]).max)
    amax = jnp.max(jnp.where(jnp.isfinite(x), jnp.abs(x), 0.0))
    t = div_exact(amax, jnp.float32(big))
    return jnp.where(t > 0, t, 1.0)

  @property
  def _exp_scales(self) -> bool:
    """Whether block scales are powers of two handled by their integer exponent (e8m0)."""
    return self.scale_format == "e8m0"

  def _parts(self, x: Array):
    """(element values z, block scales s or None, tensor scale t or None); x̂ = z·s·t.

    For e8m0 formats ``s`` is the int32 exponent of the scale (``2^s``), so blocks whose
    scale is below float32's normal range (2^-126, 2^-127) are not flushed to zero.
    """
    check_input(x)
    x = x.astype(jnp.float32)
    fmt = self.fmt
    if self.block_size is None:
      return round_to_format(x, fmt), None, None
    check_last_axis_divisible(x.shape, self.block_size)
    xg = x.reshape(x.shape[:-1] + (x.shape[-1] // self.block_size, self.block_size))
    t = self._tensor_scale(x) if self.tensor_scale else None
    amax = jnp.max(jnp.abs(xg), axis=-1, keepdims=True)
    if t is not None:
      amax = div_exact(amax, t)
      xg = div_exact(xg, t)
    if self._exp_scales:
      s = self._block_exp(amax)
      xs = mul_pow2(xg, -s)
    else:
      raw = div_exact(amax, jnp.float32(fmt.max_value))
      if not self.tensor_scale:  # NVFP4's e4m3 block scales are normalized by design
        _require_scale_range(raw, self.scale_format, amax)
      s = round_scale(raw, self.scale_format)
      s_safe = jnp.where(s > 0, s, 1.0)
      xs = div_exact(xg, s_safe)
    z = round_to_format(xs, fmt)
    # A NaN or ±Inf entry poisons its own block (and only it).
    z = jnp.where(jnp.isfinite(amax), z, jnp.nan)
    return z, s, t

  def _block_exp(self, amax: Array) -> Array:
    """int32 exponent k of the e8m0 block scale ``2^k`` (OCP or ceil rule)."""
    if self.scale_rule == "ocp":
      return jnp.maximum(e8m0_floor_exp(amax) - self.fmt.e_max, -127)
    return e8m0_ceil_exp(amax, float(self.fmt.max_value))

  def block_scale(self, amax: Float[Array, "*g"]) -> Float[Array, "*g"]:
    """Stored block scale (float32) for a block with largest magnitude ``amax``.

    ``amax`` is already divided by the tensor scale when there is one. (e8m0 scales below
    2^-126 are float32 subnormals; the quantizer itself works with their exponent.)
    """
    fmt = self.fmt
    if self.scale_format == "e8m0":
      return pow2(self._block_exp(jnp.asarray(amax, jnp.float32)))
    return round_scale(div_exact(amax, jnp.float32(fmt.max_value)), self.scale_format)

  def _combine(self, z: Array, s: Array | None, t: Array | None, shape) -> Array:
    if s is None:
      return z.reshape(shape)
    out = mul_pow2(z, s) if self._exp_scales else z * s
    if t is not None:
      out = out * t
    return out.reshape(shape)

  @eager_jit
  def quantize(
      self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None
  ) -> Float[Array, "*batch n"]:
    """Round ``x`` to the (block-scaled) FP grid; dequantized, in ``x.dtype``.

    Raises ``TypeError``/``ValueError`` for a non-float, scalar or empty ``x`` or a last axis
    not divisible by the block, and when a bf16/fp16 block scale is out of its format's range.
    """
    check_input(x, key=key)
    del key
    z, s, t = self._parts(x)
    return self._combine(z, s, t, x.shape).astype(x.dtype)

  @eager_jit(precheck=precheck_encode)
  def encode(self, x: Float[Array, "*batch n"]) -> FPCode:
    """Element codes in the element dtype plus scales. Raises on NaN/Inf input."""
    check_input(x)
    check_finite(x)
    z, s, t = self._parts(x)
    z = z.reshape(x.shape)
    codes = z.astype(self.fmt.dtype) if self.fmt.xla_codes else to_bits(z, self.fmt)
    if s is None:
      scales = None
    elif self._exp_scales:
      scales = e8m0_from_exp(s[..., 0])
    else:
      scales = s[..., 0].astype(SCALE_DTYPES[self.scale_format])
    return FPCode(codes=codes, scales=scales, tensor_scale=t)

  @eager_jit
  def decode(self, code: FPCode, dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """Dequantize ``t · s · code``. Raises ``ValueError`` if the code's shapes do not fit this
    quantizer (e.g. a code made with another block size)."""
    if not isinstance(code, FPCode):
      raise TypeError(f"code must be an FPCode (from FPQuantizer.encode); got {type(code).__name__}")
    if code.codes.dtype == jnp.uint8:
      z = from_bits(code.codes, self.fmt)
    else:
      z = code.codes.astype(jnp.float32)
    if (code.scales is None) != (self.block_size is None):
      raise ValueError(f"code.scales is {'None' if code.scales is None else 'present'} but this quantizer "
                       f"is {'elementwise' if self.block_size is None else 'block-scaled'}")
    if code.scales is None:
      return z.astype(dtype)
    check_last_axis_divisible(z.shape, self.block_size)
    want = z.shape[:-1] + (z.shape[-1] // self.block_size,)
    if tuple(code.scales.shape) != want:
      raise ValueError(
          f"code.scales has shape {tuple(code.scales.shape)} but block_size={self.block_size} needs {want} "
          f"for codes of shape {z.shape} (was the code made with another block size?)"
      )
    zg = z.reshape(want + (self.block_size,))
    if self._exp_scales:
      e, nan = e8m0_to_exp(code.scales)
      out = self._combine(jnp.where(nan[..., None], jnp.nan, zg), e[..., None], code.tensor_scale, z.shape)
      return out.astype(dtype)
    s = code.scales.astype(jnp.float32)[..., None]
    return self._combine(zg, s, code.tensor_scale, z.shape).astype(dtype)

  def rate(self, shape: tuple[int, ...]) -> Rate:
    """Bits per entry: element bits, plus scale bits / block (+ 32 / numel for NVFP4)."""
    shape = check_rate_shape(shape)
    side = 0.0
    if self.block_size is not None:
      check_last_axis_divisible(shape, self.block_size)
      side = SCALE_BITS[self.scale_format] / self.block_size
      if self.tensor_scale:
        numel = 1
        for d in shape:
          numel *= d
        side += 32.0 / numel
    return Rate(nominal=float(self.fmt.bits), side=side)


def format_grid(fmt: FPFormat):
  """All non-negative finite values of ``fmt``, ascending (NumPy float64).

  Subnormals ``k · 2^(e_min - m)`` for ``k < 2^m``, then normals
  ``(1 + k/2^m) · 2^e`` for ``e_min ≤ e ≤ e_max``, up to ``max_value``.
  """
  import numpy as np

  m = fmt.man_bits
  vals = [k * 2.0 ** (fmt.e_min - m) for k in range(2**m)]
  for e in range(fmt.e_min, fmt.e_max + 1):
    for k in range(2**m):
      v = (1.0 + k / 2**m) * 2.0**e
      if v <= fmt.max_value:
        vals.append(v)
  return np.array(sorted(set(vals)), dtype=np.float64)
