"""Rate–distortion function of a Gaussian source under squared error.

.. math::
   D(R) = \\sigma^2\\, 2^{-2R}, \\qquad R(D) = \\max\\{0, \\tfrac12 \\log_2(\\sigma^2 / D)\\}.

References:
  T. M. Cover & J. A. Thomas, *Elements of Information Theory*, 2nd ed., Theorem 10.3.2.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from rdq.limits._checks import as_float, check_positive

__all__ = ["gaussian_rd", "gaussian_rate"]


def gaussian_rd(rate: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "*r"]:
  """Distortion–rate function ``D(R) = σ² 2^(-2R)`` (MSE per entry).

  Args:
    rate: bits per entry, > 0; any shape (broadcasts).
    variance: source variance σ².

  Returns:
    MSE per entry, same shape as ``rate``.
  """
  check_positive(rate, "rate")
  check_positive(variance, "variance")
  return as_float(variance) * jnp.exp2(-2.0 * as_float(rate))


def gaussian_rate(distortion: ArrayLike, variance: ArrayLike = 1.0) -> Float[Array, "*d"]:
  """Rate–distortion function ``R(D) = max(0, ½ log2(σ²/D))`` in bits per entry.

  Args:
    distortion: MSE per entry, > 0.
    variance: source variance σ².
  """
  check_positive(distortion, "distortion")
  check_positive(variance, "variance")
  return jnp.maximum(0.0, 0.5 * jnp.log2(as_float(variance) / as_float(distortion)))
