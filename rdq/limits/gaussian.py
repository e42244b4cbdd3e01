"""Rate–distortion function of a Gaussian source under squared error.

.. math::
   D(R) = \\sigma^2\\, 2^{-2R}, \\qquad R(D) = \\max\\{0, \\tfrac12 \\log_2(\\sigma^2 / D)\\}.

Both are computed in the log domain (``R = ½(log2 σ² − log2 D)``), so extreme but valid
arguments (``D = 1e-40``) give finite rates. Bad arguments raise ``ValueError`` eagerly and,
under ``jit``, through ``rdq.checks.checked`` (checkify).

References:
  T. M. Cover & J. A. Thomas, *Elements of Information Theory*, 2nd ed., Theorem 10.3.2.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from rdq.checks import is_concrete
from rdq.limits._checks import _F32_TINY, check_positive, exp2_accurate, log2_of

__all__ = ["gaussian_rd", "gaussian_rate"]


def gaussian_rd(rate: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "*r"]:
  """Distortion–rate function ``D(R) = σ² 2^(-2R)`` (MSE per entry).

  Args:
    rate: bits per entry, > 0; any shape (broadcasts).
    variance: source variance σ² > 0.

  Returns:
    MSE per entry (float32; values below ``2^-126`` flush to 0), shape of ``rate``.
  """
  check_positive(rate, "rate")
  check_positive(variance, "variance")
  return exp2_accurate(log2_of(variance, "variance") - 2.0 * jnp.asarray(rate, jnp.float32))


def gaussian_rate(distortion: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "*d"]:
  """Rate–distortion function ``R(D) = max(0, ½ log2(σ²/D))`` in bits per entry.

  Args:
    distortion: MSE per entry, > 0.
    variance: source variance σ² > 0.
  """
  check_positive(distortion, "distortion")
  check_positive(variance, "variance")
  # log2(σ²/D) of the ratio where it is a normal float32 (exact for σ²/D = 2^k), else the
  # difference of logs (no overflow or underflow, e.g. D = 1e-40).
  v, d = jnp.asarray(variance, jnp.float32), jnp.asarray(distortion, jnp.float32)
  ratio = v / jnp.where(d > 0, d, 1.0)
  tiny = jnp.float32(_F32_TINY)
  direct = (d >= tiny) & (v >= tiny) & (ratio >= tiny) & (ratio < jnp.inf)
  if is_concrete(variance, distortion):
    direct = direct & (np.asarray(distortion, np.float64) == np.asarray(d, np.float64))
  logs = log2_of(variance, "variance") - log2_of(distortion, "distortion")
  return jnp.maximum(0.0, 0.5 * jnp.where(direct, jnp.log2(jnp.where(direct, ratio, 1.0)), logs))
