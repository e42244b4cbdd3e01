"""Argument checks shared by the limits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def check_positive(x, name: str):
  """Raise ``ValueError`` if a concrete ``x`` has entries ≤ 0 or NaN (tracers pass through)."""
  if isinstance(x, jax.core.Tracer):
    return x
  arr = np.asarray(x, dtype=np.float64)
  if np.any(np.isnan(arr)):
    raise ValueError(f"{name} contains NaN: {x!r}")
  if np.any(arr <= 0):
    raise ValueError(f"{name} must be > 0; got min {arr.min()!r}")
  return x


def check_distortion(d, name: str = "distortion", upper: float | None = None):
  """Raise unless every concrete entry of ``d`` lies in (0, upper]."""
  check_positive(d, name)
  if upper is not None and not isinstance(d, jax.core.Tracer):
    arr = np.asarray(d, dtype=np.float64)
    if np.any(arr > upper):
      raise ValueError(f"{name} must be ≤ {upper}; got max {arr.max()!r}")
  return d


def as_float(x):
  return jnp.asarray(x, dtype=jnp.result_type(float))
