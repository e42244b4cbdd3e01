"""Optimal distortion for quantized matrix multiplication with both factors quantized.

Setting (Ordentlich & Polyanskiy, "Optimal quantization for matrix multiplication",
arXiv 2410.13780, Theorem 1): ``A ∈ R^{n×a}``, ``B ∈ R^{n×b}`` with iid N(0, 1) entries are
encoded separately at R bits per entry each; the decoder estimates ``AᵀB``. Distortion is
normalized per inner product by n (rdq's convention, DESIGN.md):

.. math::
   D = \\frac{\\mathbb{E}\\|A^\\top B - \\widehat{A^\\top B}\\|_F^2}{n\\,a\\,b} \\in [0, 1].

The optimal distortion is

.. math::
   \\Gamma(R) = \\begin{cases}
     1 - (1 - f(R^*))\\, R / R^* & 0 \\le R < R^* \\\\
     f(R) = 2 \\cdot 2^{-2R} - 2^{-4R} & R \\ge R^*,
   \\end{cases}

the lower convex envelope of ``f`` through ``(0, 1)``: below ``R*`` it is optimal to
time-share (quantize a fraction ``R/R*`` of the coordinates at rate ``R*``, drop the rest).
``R*`` is the tangency point of the line from ``(0, 1)``: ``f(R) - R f'(R) = 1``; it is
solved numerically here (≈ 0.906 bit, as stated in the paper's abstract), never hard-coded.
"""

from __future__ import annotations

import functools
import math

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from rdq.limits._checks import as_float, check_distortion, check_positive, exp2_accurate, log2_of

__all__ = ["critical_rate", "generic_matmul", "generic_matmul_rate", "naive_matmul_distortion"]


def naive_matmul_distortion(rate: ArrayLike) -> Float[Array, "*r"]:
  """``f(R) = 2·2^(-2R) - 2^(-4R) = 1 - (1 - 2^(-2R))²``: both factors coded at ``R`` with
  Gaussian-optimal (MMSE) codes, no time sharing (arXiv 2410.13780, Theorem 1)."""
  check_positive(rate, "rate")
  x = exp2_accurate(-2.0 * as_float(rate))
  return 2.0 * x - x * x


@functools.cache
def critical_rate() -> tuple[float, float]:
  """``(R*, f(R*))``: the tangency point of the line from ``(0, 1)`` to ``f``.

  With ``x = 2^(-2R)``, ``f - R f' = 1`` reduces to ``1 - x = 4 ln2 · R · x``, i.e.
  ``g(R) = 2^(2R) - 1 - 4 ln2 · R = 0`` (R > 0). ``g`` is convex with ``g(0)=0``,
  ``g'(0) < 0``, so the positive root is unique; it is found by bisection in float64.
  """
  ln2 = math.log(2.0)

  def g(r):
    return 2.0 ** (2.0 * r) - 1.0 - 4.0 * ln2 * r

  lo, hi = 0.5, 2.0  # g(0.5) < 0 < g(2)
  assert g(lo) < 0 < g(hi)
  for _ in range(200):
    mid = 0.5 * (lo + hi)
    if g(mid) < 0:
      lo = mid
    else:
      hi = mid
  r_star = 0.5 * (lo + hi)
  x = 2.0 ** (-2.0 * r_star)
  return r_star, 2.0 * x - x * x


def generic_matmul(rate: ArrayLike) -> Float[Array, "*r"]:
  """Optimal generic-matmul distortion ``Γ(R)`` (see module docstring).

  Args:
    rate: bits per entry of each factor, > 0; any shape.

  Returns:
    ``Γ(R)``, distortion per inner product normalized by n (``E‖AᵀB − Ĉ‖²_F / (n a b)``).

  References:
    Ordentlich & Polyanskiy, arXiv 2410.13780, Theorem 1.
  """
  check_positive(rate, "rate")
  r = as_float(rate)
  r_star, f_star = critical_rate()
  linear = 1.0 - (1.0 - f_star) * r / r_star
  return jnp.where(r < r_star, linear, naive_matmul_distortion(jnp.maximum(r, r_star)))


def generic_matmul_rate(distortion: ArrayLike) -> Float[Array, "*d"]:
  """Inverse of ``Γ``: the least rate (bits per entry per factor) achieving ``distortion``.

  Args:
    distortion: target in (0, 1].

  Bad arguments raise ``ValueError`` eagerly and under ``jit`` through ``rdq.checks.checked``.
  """
  check_distortion(distortion, upper=1.0)
  d = as_float(distortion)
  r_star, f_star = critical_rate()
  linear = r_star * (1.0 - d) / (1.0 - f_star)
  # root of 2x - x² = d, written as d / (1 + sqrt(1 - d)) to avoid cancellation; in the log
  # domain so that d = 1e-40 gives ≈ 66.9 bits, not inf.
  log_x = log2_of(distortion, "distortion") - jnp.log2(1.0 + jnp.sqrt(jnp.maximum(1.0 - d, 0.0)))
  return jnp.where(d > f_star, linear, -0.5 * log_x)
