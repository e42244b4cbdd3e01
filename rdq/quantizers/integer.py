"""Symmetric absmax integer (INT) quantization with per-tensor, per-row or per-block scales.

For a group ``x_G`` (the whole tensor, one row, or ``block_size`` consecutive entries of the
last axis) with ``q_max = 2^(b-1) - 1``:

.. math::
   s = \\mathrm{fmt}\\big(\\max_{i\\in G} |x_i| \\cdot \\mathrm{fl}(1/q_{\\max})\\big), \\qquad
   z_i = \\mathrm{clip}(\\mathrm{round}(x_i / s), -q_{\\max}, q_{\\max}), \\qquad
   \\hat x_i = s\\, z_i,

where ``fmt`` rounds the scale to its storage format (fp32, bf16, fp16, or e8m0 rounded up
to a power of two) and ``round`` is round-half-to-even. The grid is symmetric
(``2^b - 1`` levels); with an fp32 scale the block maximum is reproduced to within
an ulp.

NaN/Inf: ``encode`` raises ``ValueError`` on non-finite input (eagerly; under ``jit`` through
``rdq.checks.checked``); ``quantize`` is a pure jit-able map in which a NaN or ±Inf entry makes
its own group NaN and leaves every other group unchanged. Ties ``x/s = k + ½`` round to even
(the division is correctly rounded, the same eagerly and under ``jit``). bf16/fp16 scales
outside the format's normal range raise instead of flushing or saturating.

References:
  Ordentlich & Polyanskiy, "High-Rate Quantized Matrix Multiplication I" (arXiv 2601.17187),
  Sec. on absmax INT quantization (the setting); Dettmers et al., "LLM.int8()" (2022) for
  absmax per-row scaling in LLMs.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import jax.numpy as jnp
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from rdq.checks import require
from rdq.quantizers._scales import SCALE_BITS, SCALE_DTYPES, div_exact, round_scale, scale_range_ok
from rdq.quantizers.base import (
  Rate,
  check_finite,
  check_input,
  check_last_axis_divisible,
  check_rate_shape,
  eager_jit,
  precheck_encode,
)

__all__ = ["IntCode", "IntQuantizer"]

Granularity = Literal["tensor", "row", "block"]


class IntCode(NamedTuple):
  """Compact code of an INT quantizer.

  Attributes:
    codes: integers in ``[-q_max, q_max]``; ``jnp.int4`` for b ≤ 4, else ``jnp.int8``.
      Same shape as the input.
    scales: one scale per group in the scale's storage dtype. Shape ``()`` per tensor,
      ``(*batch, 1)`` per row, ``(*batch, n // block_size)`` per block.
  """

  codes: Integer[Array, "*batch n"]
  scales: Array


@dataclasses.dataclass(frozen=True)
class IntQuantizer:
  """Symmetric absmax INT-b quantizer (see module docstring).

  Attributes:
    bits: bits per code, 2 ≤ bits ≤ 8.
    granularity: ``"tensor"``, ``"row"`` (per last-axis row) or ``"block"``.
    block_size: group size along the last axis (required iff granularity is ``"block"``).
    scale_format: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"e8m0"``.
  """

  bits: int
  granularity: Granularity = "row"
  block_size: int | None = None
  scale_format: str = "fp32"

  def __post_init__(self):
    if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
      raise ValueError(f"bits={self.bits!r} must be an integer in [2, 8]")
    if self.granularity not in ("tensor", "row", "block"):
      raise ValueError(f"granularity={self.granularity!r} must be 'tensor', 'row' or 'block'")
    if self.granularity == "block":
      if not isinstance(self.block_size, int) or self.block_size < 1:
        raise ValueError(f"block granularity needs a positive integer block_size, got {self.block_size!r}")
    elif self.block_size is not None:
      raise ValueError(f"block_size={self.block_size} given with granularity={self.granularity!r}")
    if self.scale_format not in ("fp32", "bf16", "fp16", "e8m0"):
      raise ValueError(f"scale_format={self.scale_format!r} must be one of fp32, bf16, fp16, e8m0")

  @property
  def q_max(self) -> int:
    """Largest code magnitude, ``2^(b-1) - 1``."""
    return 2 ** (self.bits - 1) - 1

  @property
  def code_dtype(self):
    return jnp.int4 if self.bits <= 4 else jnp.int8

  def _grouped(self, x: Array) -> Array:
    """Reshape to ``(*batch, groups, group_len)`` (per-tensor: a single group)."""
    if self.granularity == "tensor":
      return x.reshape((1, -1))
    if self.granularity == "row":
      return x[..., None, :]
    check_last_axis_divisible(x.shape, self.block_size)
    return x.reshape(x.shape[:-1] + (x.shape[-1] // self.block_size, self.block_size))

  def scale_from_amax(self, amax: Float[Array, "*g"]) -> Float[Array, "*g"]:
    """The stored scale (as float32) of a group whose largest magnitude is ``amax``."""
    # amax · fl(1/q_max): a multiplication is correctly rounded on every backend, whereas
    # XLA:CPU's float division is not (it differs from IEEE a/b by an ulp about half the time).
    return round_scale(amax * jnp.float32(1.0 / self.q_max), self.scale_format)

  def _scales_and_codes(self, x: Array) -> tuple[Array, Array]:
    check_input(x)
    xg = self._grouped(x.astype(jnp.float32))
    amax = jnp.max(jnp.abs(xg), axis=-1, keepdims=True)
    raw = amax * jnp.float32(1.0 / self.q_max)
    _require_scale_range(raw, self.scale_format, amax)
    s = round_scale(raw, self.scale_format)
    s_safe = jnp.where(s > 0, s, 1.0)
    # Correctly rounded x/s, so exact ties go to even (XLA's x·(1/s) rounds 6.5 to 7).
    z = jnp.clip(jnp.round(div_exact(xg, s_safe)), -self.q_max, self.q_max)
    # A NaN or ±Inf entry poisons its own group (and only it).
    z = jnp.where(jnp.isfinite(amax), z, jnp.nan)
    return s, z

  @eager_jit
  def quantize(
      self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None
  ) -> Float[Array, "*batch n"]:
    """Round ``x`` to the INT grid; returns the dequantized values in ``x.dtype``.

    Raises ``TypeError``/``ValueError`` for a non-float, scalar or empty ``x``, and (eagerly,
    or under ``jit`` through ``rdq.checks.checked``) when a group's scale falls outside the
    range of a bf16/fp16 scale format instead of saturating or flushing silently.
    """
    check_input(x, key=key)
    del key  # deterministic quantizer
    s, z = self._scales_and_codes(x)
    return (z * s).reshape(x.shape).astype(x.dtype)

  @eager_jit(precheck=precheck_encode)
  def encode(self, x: Float[Array, "*batch n"]) -> IntCode:
    """Integer codes and stored scales. Raises ``ValueError`` on NaN/Inf input."""
    check_input(x)
    check_finite(x)
    s, z = self._scales_and_codes(x)
    codes = z.reshape(x.shape).astype(self.code_dtype)
    if self.granularity == "tensor":
      scales = s.reshape(())
    else:
      scales = s[..., 0]
    return IntCode(codes=codes, scales=scales.astype(SCALE_DTYPES[self.scale_format]))

  @eager_jit
  def decode(self, code: IntCode, dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """Dequantize: ``codes · scale`` per group. Raises ``ValueError`` if the code's shapes do
    not fit this quantizer (e.g. a code made with another block size)."""
    if not isinstance(code, IntCode):
      raise TypeError(f"code must be an IntCode (from IntQuantizer.encode); got {type(code).__name__}")
    z = code.codes.astype(jnp.float32)
    s = code.scales.astype(jnp.float32)
    if z.ndim == 0:
      raise ValueError("code.codes must be at least 1-D; got a scalar")
    if self.granularity == "tensor":
      want = ()
    elif self.granularity == "row":
      want = z.shape[:-1] + (1,)
    else:
      check_last_axis_divisible(z.shape, self.block_size)
      want = z.shape[:-1] + (z.shape[-1] // self.block_size,)
    if tuple(s.shape) != want:
      raise ValueError(
          f"code.scales has shape {tuple(s.shape)} but {self.name} needs {want} for codes of shape {z.shape} "
          "(was the code made by a quantizer with another granularity or block size?)"
      )
    if self.granularity == "tensor":
      return (z * s).astype(dtype)
    zg = self._grouped(z)
    return (zg * s[..., None]).reshape(z.shape).astype(dtype)

  def rate(self, shape: tuple[int, ...]) -> Rate:
    """Bits per entry: ``bits`` nominal plus scale bits / group size."""
    shape = check_rate_shape(shape)
    numel = 1
    for d in shape:
      numel *= d
    if self.granularity == "tensor":
      group = numel
    elif self.granularity == "row":
      group = shape[-1]
    else:
      check_last_axis_divisible(shape, self.block_size)
      group = self.block_size
    return Rate(nominal=float(self.bits), side=SCALE_BITS[self.scale_format] / group)

  @property
  def name(self) -> str:
    g = {"tensor": "", "row": "_row", "block": f"_block{self.block_size}"}[self.granularity]
    sf = "" if self.scale_format == "fp32" else f"_{self.scale_format}"
    return f"int{self.bits}{g}{sf}"


def _require_scale_range(raw: Array, scale_format: str, amax: Array) -> None:
  """Refuse scales a bf16/fp16/e4m3 format cannot hold (they would saturate or flush)."""
  if scale_format not in ("bf16", "fp16", "e4m3"):
    return
  fi = jnp.finfo(SCALE_DTYPES[scale_format])
  pos = jnp.where(amax > 0, raw, jnp.inf)
  require(
      jnp.all(scale_range_ok(raw, scale_format, amax)),
      f"x: block scales range over [{{}}, {{}}], outside the {scale_format} scale format's normal range "
      f"[{float(fi.smallest_normal):.3g}, {float(fi.max):.6g}] (they would flush or saturate); "
      "rescale x or use scale_format='fp32'",
      jnp.min(pos), jnp.max(jnp.where(jnp.isnan(raw), 0.0, raw)),
  )
