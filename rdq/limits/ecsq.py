"""Entropy-coded scalar quantization (ECSQ) at high rate: the πe/6 gap.

A uniform scalar quantizer with step Δ followed by an ideal entropy coder has, at high
rate, ``D = Δ²/12`` and ``H ≈ h(X) − log2 Δ``; for a Gaussian source this gives

.. math::
   D \\approx \\frac{\\pi e}{6}\\,\\sigma^2\\,2^{-2R},

a factor πe/6 = 2πe/12 ≈ 1.4233 (1.53 dB) above Shannon's ``D(R)``, i.e.
``½·log2(πe/6) ≈ 0.2546`` bit per entry in rate (WaterSIC's "0.255 bit").

References:
  H. Gish & J. N. Pierce, "Asymptotically efficient quantizing", IEEE Trans. IT 14(5), 1968.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from rdq.checks import is_concrete
from rdq.limits._checks import check_positive

__all__ = ["ECSQ_GAP", "ECSQ_GAP_BITS", "ecsq_distortion"]

ECSQ_GAP: float = math.pi * math.e / 6.0
"""Distortion factor πe/6 ≈ 1.4233 between ECSQ and ``D(R)`` at high rate."""

ECSQ_GAP_BITS: float = 0.5 * math.log2(ECSQ_GAP)
"""The same gap in rate: ½·log2(πe/6) ≈ 0.2546 bit per entry."""


def ecsq_distortion(rate, variance: float = 1.0):
  """High-rate ECSQ distortion of a Gaussian, ``(πe/6) σ² 2^(-2R)``; ``rate`` in bits per
  entry, > 0."""
  check_positive(rate, "rate")
  check_positive(variance, "variance")
  if not is_concrete(rate, variance):  # under jit: float32
    return ECSQ_GAP * jnp.asarray(variance, jnp.float32) * jnp.exp2(-2.0 * jnp.asarray(rate, jnp.float32))
  return ECSQ_GAP * variance * np.exp2(-2.0 * np.asarray(rate, np.float64))
