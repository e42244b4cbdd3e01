"""Storage formats for quantization scales (shared by INT and FP block formats)."""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["SCALE_BITS", "SCALE_DTYPES", "round_scale", "e8m0_ceil", "e8m0_floor"]

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


def _pow2(e: Array) -> Array:
  return jnp.ldexp(jnp.float32(1.0), e.astype(jnp.int32))


def e8m0_ceil(s: Float[Array, "*b"]) -> Float[Array, "*b"]:
  """Smallest power of two ≥ s, clamped to e8m0's range [2^-127, 2^127] (float32 result)."""
  s = jnp.asarray(s, jnp.float32)
  m, e = jnp.frexp(s)  # s = m · 2^e, m ∈ [0.5, 1)
  exp = jnp.where(m == 0.5, e - 1, e)
  exp = jnp.where(s > 0, exp, _E8M0_MIN_EXP)
  return _pow2(jnp.clip(exp, _E8M0_MIN_EXP, _E8M0_MAX_EXP))


def e8m0_floor(s: Float[Array, "*b"]) -> Float[Array, "*b"]:
  """Largest power of two ≤ s, i.e. 2^floor(log2 s), clamped to e8m0's range."""
  s = jnp.asarray(s, jnp.float32)
  _, e = jnp.frexp(s)
  exp = jnp.where(s > 0, e - 1, _E8M0_MIN_EXP)
  return _pow2(jnp.clip(exp, _E8M0_MIN_EXP, _E8M0_MAX_EXP))


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
