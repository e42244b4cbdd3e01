"""Storage formats for quantization scales (shared by INT and FP block formats)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["SCALE_BITS", "SCALE_DTYPES", "e8m0_ceil", "e8m0_floor", "pow2", "round_scale"]

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
