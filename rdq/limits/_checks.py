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
  require(jnp.all(_is_positive(xa)), f"{name} must be > 0; got min {{}} (NaN counts as bad)", jnp.min(xa))
  return x


def _is_positive(x: jax.Array) -> jax.Array:
  """``x > 0`` that also holds for float32 subnormals (XLA compares them as 0): read the bits."""
  if x.dtype == jnp.float32:
    b = jax.lax.bitcast_convert_type(x, jnp.int32)
    return (b > 0) & (b <= 0x7F800000)  # positive, finite or +inf, not NaN
  return x > 0


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


def _pow2_int(e: jax.Array) -> jax.Array:
  """Exact float32 ``2^e`` for integer ``e`` in [-126, 127] (assembled from the bit pattern)."""
  e = jnp.clip(jnp.asarray(e).astype(jnp.int32), -126, 127)
  return jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def exp2_accurate(x: jax.Array) -> jax.Array:
  """``2^x`` in float32 to about an ulp for any ``x`` (XLA's ``exp2`` is off by ~30 ulp at
  ``x ≈ −120``): ``2^⌊x⌋ · 2^{x−⌊x⌋}``, the integer power exact and applied in two halves so no
  factor is subnormal. Results below 2^-126 flush to 0 (as XLA flushes subnormals)."""
  x = jnp.asarray(x, jnp.float32)
  n = jnp.floor(x)
  frac = jnp.exp2(x - n)
  ni = jnp.clip(n, -300, 300).astype(jnp.int32)
  h = ni // 2
  out = (frac * _pow2_int(h)) * _pow2_int(ni - h)
  out = jnp.where(ni - h < -126, 0.0, out)
  out = jnp.where(x == jnp.inf, jnp.inf, jnp.where(x == -jnp.inf, 0.0, out))
  return jnp.where(jnp.isnan(x), jnp.nan, jnp.where(n > 128, jnp.inf, out))


def host_log2(x) -> jax.Array:
  """float64 ``log2 x`` (as float32) of a concrete argument outside float32's normal range, else
  NaN ("compute ``safe_log2`` on the device"): lets a jitted core take the logarithm itself, so
  eager and jitted calls run the same program."""
  if is_concrete(x):
    arr = np.asarray(x, dtype=np.float64)
    pos = arr[arr > 0]
    if pos.size and (pos.min() < _F32_TINY or pos.max() > _F32_MAX):
      with np.errstate(divide="ignore"):
        return jnp.asarray(np.log2(arr), jnp.float32)
  return jnp.full(np.shape(x), jnp.nan, jnp.float32)


def device_log2(x32: jax.Array, host: jax.Array) -> jax.Array:
  """``host`` where given (not NaN), else ``safe_log2(x32)`` — inside the jitted core."""
  return jnp.where(jnp.isnan(host), safe_log2(x32), host)
