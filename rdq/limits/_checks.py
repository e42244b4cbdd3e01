"""Argument checks and log-domain helpers shared by the limits.

Checks use ``rdq.checks.require``: eagerly a bad value raises ``ValueError``; under ``jit``
it is a ``checkify`` check that raises through ``rdq.checks.checked``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rdq.checks import is_concrete, require

_F32_TINY = float(np.finfo(np.float32).tiny)  # 2^-126, smallest normal float32
_F32_MAX = float(np.finfo(np.float32).max)


def check_real(x, name: str) -> None:
  """Raise ``TypeError`` for complex, boolean or non-numeric input (static: also under jit)."""
  dt = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
  if jnp.issubdtype(dt, jnp.complexfloating):
    raise TypeError(f"{name} must be real; got complex dtype {dt}")
  if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)) or dt == jnp.bool_:
    raise TypeError(f"{name} must be a real number or array; got dtype {dt}")


def check_positive(x, name: str):
  """Require every entry of ``x`` to be > 0 (NaN fails); returns ``x``."""
  check_real(x, name)
  if is_concrete(x):
    arr = np.asarray(x, dtype=np.float64)
    if arr.size and np.any(np.isnan(arr)):
      raise ValueError(f"{name} must be > 0; got NaN in {name}={_short(x)}")
    if arr.size and np.any(arr <= 0):
      raise ValueError(f"{name} must be > 0; got min {arr.min():.6g} in {name}={_short(x)}")
    return x
  xa = jnp.asarray(x)
  require(jnp.all(xa > 0), f"{name} must be > 0; got min {{}} (NaN counts as bad)", jnp.min(xa))
  return x


def check_distortion(d, name: str = "distortion", upper: float | None = None):
  """Require every entry of ``d`` to lie in (0, upper]."""
  check_positive(d, name)
  if upper is not None:
    if is_concrete(d):
      arr = np.asarray(d, dtype=np.float64)
      if arr.size and np.any(arr > upper):
        raise ValueError(f"{name} must be ≤ {upper}; got max {arr.max():.6g}")
    else:
      da = jnp.asarray(d)
      require(jnp.all(da <= upper), f"{name} must be ≤ {upper}; got max {{}}", jnp.max(da))
  return d


def _short(x) -> str:
  s = repr(np.asarray(x).tolist()) if np.size(x) <= 8 else f"array of shape {np.shape(x)}"
  return s


def as_float(x):
  return jnp.asarray(x, dtype=jnp.result_type(float))


def safe_log2(x: jax.Array) -> jax.Array:
  """``log2 x`` of float32 ``x ≥ 0`` that is exact for subnormals too (XLA may flush them).

  A subnormal ``x = k · 2^-149`` (biased exponent field 0) gives ``log2 k − 149``; 0 gives −inf.
  """
  x = jnp.asarray(x, jnp.float32)
  bits = jax.lax.bitcast_convert_type(x, jnp.int32)
  field = (bits >> 23) & 0xFF
  mant = (bits & 0x7FFFFF).astype(jnp.float32)
  sub = jnp.where(mant > 0, jnp.log2(jnp.maximum(mant, 1.0)) - 149.0, -jnp.inf)
  return jnp.where(field == 0, sub, jnp.log2(x))


def log2_of(x, name: str) -> jax.Array:
  """float32 ``log2 x`` for a positive argument given in any float precision.

  A concrete value outside float32's normal range (e.g. the Python float ``1e-60``) has its
  logarithm taken on the host in float64, so it is not lost to underflow; otherwise (and
  always under ``jit``) ``safe_log2`` of the float32 value, so eager and jit agree bit for bit.
  """
  if is_concrete(x):
    arr = np.asarray(x, dtype=np.float64)
    pos = arr[arr > 0]
    if pos.size and (pos.min() < _F32_TINY or pos.max() > _F32_MAX):
      with np.errstate(divide="ignore"):
        return jnp.asarray(np.log2(arr), jnp.float32)
  return safe_log2(jnp.asarray(x, jnp.float32))
