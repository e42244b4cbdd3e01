"""Storage formats for quantization scales (shared by INT and FP block formats)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = [
    "SCALE_BITS", "SCALE_DTYPES", "div_exact", "e8m0_ceil", "e8m0_ceil_exp", "e8m0_floor", "e8m0_floor_exp",
    "e8m0_from_exp", "e8m0_to_exp", "mul_pow2", "pow2", "round_scale", "scale_range_ok",
]

SCALE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "e8m0": 8, "e4m3": 8}
SCALE_DTYPES = {
    "fp32": jnp.float32,
    "bf16": jnp.bfloat16,
    "fp16": jnp.float16,
    "e8m0": jnp.float8_e8m0fnu,
    "e4m3": jnp.float8_e4m3fn,
}

# float8_e8m0fnu holds 2^e for e in [-127, 127].
_E8M0_MIN_EXP, _E8M0_MAX_EXP = -127, 127


def pow2(e: Array) -> Array:
  """Exact float32 ``2^e`` for integer ``e`` in [-149, 127], built from the bit pattern.

  (``jnp.ldexp``/``exp2`` can be off by an ulp under XLA fusion on CPU; rounding to a
  format must be exact, so powers of two are assembled directly.)
  """
  e = jnp.asarray(e).astype(jnp.int32)
  normal = jax.lax.bitcast_convert_type((jnp.clip(e, -126, 127) + 127) << 23, jnp.float32)
  sub = jax.lax.bitcast_convert_type(jnp.int32(1) << jnp.clip(e + 149, 0, 22), jnp.float32)
  return jnp.where(e >= -126, normal, sub)


def e8m0_ceil(s: Float[Array, "*b"]) -> Float[Array, "*b"]:
  """Smallest power of two ≥ s, clamped to e8m0's range [2^-127, 2^127] (float32 result).

  NaN stays NaN (e8m0's NaN encoding), so a NaN in a block poisons the whole block."""
  s = jnp.asarray(s, jnp.float32)
  m, e = jnp.frexp(s)  # s = m · 2^e, m ∈ [0.5, 1)
  exp = jnp.where(m == 0.5, e - 1, e)
  exp = jnp.where(s > 0, exp, _E8M0_MIN_EXP)
  return jnp.where(jnp.isnan(s), jnp.nan, pow2(jnp.clip(exp, _E8M0_MIN_EXP, _E8M0_MAX_EXP)))


def e8m0_floor(s: Float[Array, "*b"]) -> Float[Array, "*b"]:
  """Largest power of two ≤ s, i.e. 2^floor(log2 s), clamped to e8m0's range."""
  s = jnp.asarray(s, jnp.float32)
  _, e = jnp.frexp(s)
  exp = jnp.where(s > 0, e - 1, _E8M0_MIN_EXP)
  return jnp.where(jnp.isnan(s), jnp.nan, pow2(jnp.clip(exp, _E8M0_MIN_EXP, _E8M0_MAX_EXP)))


def round_scale(s: Float[Array, "*b"], scale_format: str) -> Float[Array, "*b"]:
  """Round a positive float32 scale to its storage format, returned as float32.

  ``fp32``: unchanged. ``bf16``/``fp16``/``e4m3``: round to nearest, saturating at the
  format's largest finite value. ``e8m0``: round *up* to a power of two so that no element
  overflows the grid (the rule of ``jax.nn.scaled_dot_general``'s MX quantization).
  """
  s = jnp.asarray(s, jnp.float32)
  if scale_format == "fp32":
    return s
  if scale_format == "e8m0":
    return e8m0_ceil(s)
  if scale_format in ("bf16", "fp16", "e4m3"):
    dt = SCALE_DTYPES[scale_format]
    big = jnp.float32(jnp.finfo(dt).max)
    return jnp.minimum(s, big).astype(dt).astype(jnp.float32)
  raise ValueError(f"unknown {scale_format=}; known: {sorted(SCALE_BITS)}")


def div_exact(a: Array, b: Array) -> Array:
  """IEEE-correctly rounded ``a / b`` with ``b`` broadcast to ``a``'s shape.

  XLA rewrites a division by a broadcast (or constant) divisor into a multiplication by its
  reciprocal, which is not correctly rounded: exact ties such as ``x/s = 6.5`` then round the
  wrong way, and eager and jitted results differ. The optimization barrier hides the
  broadcast so the division stays a division, the same eagerly, under ``jit`` and ``vmap``.
  Non-finite ``a`` gives NaN (callers poison such blocks anyway).
  """
  a = jnp.asarray(a, jnp.float32)
  # ``b + 0·a`` has a's shape *and batching* (under vmap a plain broadcast of an unbatched b is
  # re-broadcast outside the barrier); XLA may not fold 0·a (it is NaN for non-finite a).
  b = jnp.asarray(b, jnp.float32) + a * jnp.float32(0.0)
  return a / jax.lax.optimization_barrier(b)


def mul_pow2(x: Array, k: Array) -> Array:
  """``x · 2^k`` for integer ``k`` in [-254, 254], exact whenever the result is a normal float32.

  The power is applied in two halves, so neither factor is subnormal (a subnormal factor is
  flushed to zero by XLA on CPU: MX blocks with a scale below 2^-126 became 0).
  """
  k = jnp.asarray(k).astype(jnp.int32)
  h = k // 2
  return (jnp.asarray(x, jnp.float32) * pow2(h)) * pow2(k - h)


def _floor_log2(a: Array) -> Array:
  """``floor(log2 a)`` of a positive float32 ``a`` (exact, also for subnormals)."""
  bits = jax.lax.bitcast_convert_type(jnp.asarray(a, jnp.float32), jnp.int32)
  field = (bits >> 23) & 0xFF
  mant = bits & 0x7FFFFF
  # subnormal: a = mant · 2^-149, floor(log2) = bit length(mant) - 1 - 149
  sub = 31 - jax.lax.clz(jnp.maximum(mant, 1)) - 149
  return jnp.where(field == 0, sub, field - 127)


def e8m0_floor_exp(s: Float[Array, "*b"]) -> Array:
  """Integer ``e`` with ``2^e`` = the largest power of two ≤ s, clamped to [-127, 127]
  (int32; 0 and negative s give -127)."""
  s = jnp.asarray(s, jnp.float32)
  e = jnp.where(s > 0, _floor_log2(jnp.where(s > 0, s, 1.0)), _E8M0_MIN_EXP)
  return jnp.clip(e, _E8M0_MIN_EXP, _E8M0_MAX_EXP)


def e8m0_ceil_exp(num: Float[Array, "*b"], den: float) -> Array:
  """Integer ``e`` with ``2^e`` = the smallest power of two ≥ ``num / den`` (den > 0 constant),
  clamped to [-127, 127]. ``num`` is pre-scaled by 2^64 when tiny, so the quotient never goes
  subnormal (which XLA flushes to zero)."""
  num = jnp.asarray(num, jnp.float32)
  shift = jnp.where(num < jnp.float32(2.0**-60), 64, 0)
  r = div_exact(mul_pow2(num, shift), jnp.float32(den))
  fl = _floor_log2(jnp.where(r > 0, r, 1.0))
  is_pow2 = (jax.lax.bitcast_convert_type(r, jnp.int32) & 0x7FFFFF) == 0
  e = jnp.where(is_pow2, fl, fl + 1) - shift
  return jnp.clip(jnp.where(r > 0, e, _E8M0_MIN_EXP), _E8M0_MIN_EXP, _E8M0_MAX_EXP)


def e8m0_from_exp(e: Array) -> Array:
  """``float8_e8m0fnu`` holding ``2^e`` (e in [-127, 127]; the bit pattern is built directly,
  so 2^-127 is not lost to float32 flushing)."""
  b = (jnp.asarray(e).astype(jnp.int32) + 127).astype(jnp.uint8)
  return jax.lax.bitcast_convert_type(b, jnp.float8_e8m0fnu)


def e8m0_to_exp(s: Array) -> tuple[Array, Array]:
  """``(e, is_nan)`` of ``float8_e8m0fnu`` values ``2^e`` (bit pattern 255 is NaN)."""
  b = jax.lax.bitcast_convert_type(s, jnp.uint8).astype(jnp.int32)
  return b - 127, b == 255


def scale_range_ok(s: Float[Array, "*b"], scale_format: str, amax: Array | None = None) -> Array:
  """Whether a positive raw scale is inside the format's normal range (or 0 / NaN).

  fp16/bf16/e4m3 scales outside ``[smallest normal, largest finite]`` would underflow (lose
  precision or flush the block to 0) or saturate: quantizers refuse them (``require``).
  Pass the block maximum ``amax`` to tell an all-zero block from an underflowed scale.
  """
  s = jnp.asarray(s, jnp.float32)
  if scale_format not in ("bf16", "fp16", "e4m3"):
    return jnp.ones(s.shape, bool)
  fi = jnp.finfo(SCALE_DTYPES[scale_format])
  inside = (s >= jnp.float32(fi.smallest_normal)) & (s <= jnp.float32(fi.max))
  zero = s == 0 if amax is None else amax == 0  # a raw scale can itself underflow to 0
  return inside | zero | jnp.isnan(s)
