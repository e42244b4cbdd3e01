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
from jaxtyping import Array, ArrayLike, Float

from rdq.limits._checks import check_positive, log2_of

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
  return jnp.exp2(log2_of(variance, "variance") - 2.0 * jnp.asarray(rate, jnp.float32))


def gaussian_rate(distortion: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "*d"]:
  """Rate–distortion function ``R(D) = max(0, ½ log2(σ²/D))`` in bits per entry.

  Args:
    distortion: MSE per entry, > 0.
    variance: source variance σ² > 0.
  """
  check_positive(distortion, "distortion")
  check_positive(variance, "variance")
  return jnp.maximum(0.0, 0.5 * (log2_of(variance, "variance") - log2_of(distortion, "distortion")))
