"""Distortion of absmax-INT and FP quantizers on Gaussian data: exact and high-rate.

Two predictions for a scalar quantizer applied to iid N(0, 1) entries, as a function of
the format (bits, mantissa/exponent, block size, scale format):

* ``exact_scalar_moments`` — numerically exact (quadrature, no Monte Carlo): conditioned on
  the block's largest magnitude M (law ``erf(m/√2)^g``), the scale X(M) is deterministic,
  the other g − 1 entries are iid truncated normals rounded to the grid ``X·G``, and the
  block maximum is rounded too. Returns ``ρ = E[x x̂]``, ``P = E[x̂²]`` and the MSE.
* ``high_rate_mse`` — the high-resolution heuristic in the style of Ordentlich &
  Polyanskiy, "High-Rate Quantized Matrix Multiplication I" (arXiv 2601.17187): Bennett's
  integral ``E[Δ(x)²]/12`` for the local step Δ (constant ``X(M)`` for INT; ``X·2^(e-m)``
  on the binade of x for FP), averaged over the law of the block maximum, with the block
  maximum itself error-free for INT (it is on the grid) and the FP overload region
  (``|x| > X·x_max``, e.g. OCP-MX E2M1) integrated exactly. Bennett, "Spectra of quantized
  signals", BSTJ 27 (1948); Gray & Neuhoff, "Quantization", IEEE Trans. IT 44 (1998), Sec. V.

**Matmul.** For two independent factors quantized elementwise by sign-symmetric quantizers
whose scales depend on magnitudes only, the cross terms between coordinates vanish and

.. math::
   D_{AB} = \\frac{\\mathbb{E}\\|A^\\top B-\\hat A^\\top\\hat B\\|_F^2}{nab}
          = 1 - 2\\rho_A\\rho_B + P_A P_B

exactly; with the additive-noise assumption ``ρ = 1``, ``P = 1 + D`` this is the high-rate
``D_A + D_B + D_A D_B`` (``matmul_from_marginals``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rdq.limits.ecsq import ECSQ_GAP, ECSQ_GAP_BITS, ecsq_distortion  # re-exported
from rdq.quantizers._blockmax import Phi, ScalarModel, cells, max_grid, phi, scalar_model

__all__ = [
    "ECSQ_GAP",
    "ECSQ_GAP_BITS",
    "ScalarMoments",
    "ecsq_distortion",
    "exact_matmul_distortion",
    "exact_scalar_moments",
    "high_rate_matmul_distortion",
    "high_rate_mse",
    "matmul_from_marginals",
]

def matmul_from_marginals(d_a, d_b):
  """High-rate matmul distortion ``D_A + D_B + D_A D_B`` from per-entry MSEs (additive,
  signal-independent errors)."""
  return d_a + d_b + d_a * d_b


class ScalarMoments(NamedTuple):
  """Per-entry moments of ``x̂ = Q(x)`` for x ~ N(0, 1) in blocks: ``rho = E[x x̂]``,
  ``power = E[x̂²]``, ``mse = E[(x - x̂)²] = 1 - 2ρ + P``."""

  rho: float
  power: float
  mse: float


def _moments_given_max(model: ScalarModel, m: np.ndarray):
  """E[x x̂ | M], E[x̂² | M] averaged over the g entries of a block with maximum m."""
  g = model.group
  x_scale = np.maximum(model.scale(m), 1e-300)[:, None]  # (Nm, 1); m = 0 has zero weight
  lo, hi = cells(model.levels)
  lo = np.minimum(lo[None, :] * x_scale, m[:, None])
  hi = np.minimum(hi[None, :] * x_scale, m[:, None])
  lev = model.levels[None, :] * x_scale
  mass = Phi(hi) - Phi(lo)
  first = phi(lo) - phi(hi)
  norm = np.maximum(2.0 * Phi(m) - 1.0, 1e-300)
  rho_rest = 2.0 * np.sum(lev * first, axis=1) / norm
  pow_rest = 2.0 * np.sum(lev**2 * mass, axis=1) / norm
  # the block maximum itself
  q_max = _round_to_levels(model, m, x_scale[:, 0])
  rho = ((g - 1) * rho_rest + m * q_max) / g
  power = ((g - 1) * pow_rest + q_max**2) / g
  return rho, power


def exact_scalar_moments(q, shape: tuple[int, ...], num_nodes: int = 20000) -> ScalarMoments:
  """Exact per-entry moments of an INT/FP quantizer on iid N(0, 1) data (quadrature).

  Args:
    q: an ``IntQuantizer`` or ``FPQuantizer``.
    shape: shape of the array it is applied to (sets the group size for per-tensor and
      per-row scales, and NVFP4's tensor scale, for which the median tensor maximum is used).
    num_nodes: quadrature nodes for the law of the block maximum.

  Returns:
    ``ScalarMoments(rho, power, mse)``, per entry.
  """
  model = scalar_model(q, shape)
  if model.group is None:
    lo, hi = cells(model.levels)
    mass = Phi(hi) - Phi(lo)
    first = phi(lo) - phi(hi)
    rho = 2.0 * float(np.sum(model.levels * first))
    power = 2.0 * float(np.sum(model.levels**2 * mass))
  else:
    m, w = max_grid(model.group, num_nodes)
    rho_m, pow_m = _moments_given_max(model, m)
    rho, power = float(np.sum(w * rho_m)), float(np.sum(w * pow_m))
  return ScalarMoments(rho=rho, power=power, mse=1.0 - 2.0 * rho + power)


def exact_matmul_distortion(q_a, q_b, n: int, a: int, b: int) -> float:
  """``1 − 2ρ_Aρ_B + P_A P_B`` for ``AᵀB`` with A (n, a), B (n, b) quantized along n."""
  ma = exact_scalar_moments(q_a, (a, n))
  mb = exact_scalar_moments(q_b, (b, n))
  return 1.0 - 2.0 * ma.rho * mb.rho + ma.power * mb.power


def _bennett_fp(lo, hi, x_scale, man_bits, e_min):
  """∫_lo^hi Δ(x)²/12 φ(x) dx for the FP step Δ(x) = X·2^(max(⌊log2(x/X)⌋, e_min) − m),
  summed over binades; lo, hi: (Nm,) with 0 ≤ lo ≤ hi; x_scale: (Nm,)."""
  total = np.zeros_like(lo)
  e_top = int(np.ceil(np.log2(np.max(hi / x_scale) + 1e-300))) + 1
  edges = [0.0] + [2.0**e for e in range(e_min, e_top + 1)]
  for j in range(len(edges) - 1):
    a = np.clip(edges[j] * x_scale, lo, hi)
    b = np.clip(edges[j + 1] * x_scale, lo, hi)
    e = e_min if j == 0 else e_min + j - 1
    step = x_scale * 2.0 ** (e - man_bits)
    total += step**2 / 12.0 * (Phi(b) - Phi(a))
  return 2.0 * total


def _overload(lo, hi, top):
  """∫_lo^hi (x − top)² φ(x) dx (both halves), for x above the largest level ``top``."""
  # ∫ (x-c)² φ = (1 + c²)(Φ(b)−Φ(a)) + (a − 2c)φ(a) − (b − 2c)φ(b)
  a, b, c = lo, hi, top
  with np.errstate(invalid="ignore"):
    val = (1 + c**2) * (Phi(b) - Phi(a)) + (a - 2 * c) * phi(a) - np.where(np.isinf(b), 0.0, (b - 2 * c) * phi(b))
  return 2.0 * np.where(b > a, val, 0.0)


def _round_to_levels(model: ScalarModel, m: np.ndarray, x_scale: np.ndarray) -> np.ndarray:
  """Nearest level ``X·G_k`` to m ≥ 0 (saturating at the top level)."""
  lo_c, _ = cells(model.levels)
  k = np.searchsorted(lo_c, m / x_scale, side="right") - 1
  return model.levels[np.clip(k, 0, len(model.levels) - 1)] * x_scale


def high_rate_mse(q, shape: tuple[int, ...], num_nodes: int = 20000) -> float:
  """High-resolution (Bennett) MSE per entry of an INT/FP quantizer on N(0, 1) data.

  INT with step ``s(M)`` (the stored scale): ``E_M[(1 − 1/g) s(M)²/12 + e(M)²/g]``. FP:
  ``E_M[(1 − 1/g)·(E[Δ(x)²/12 | |x| ≤ M] + overload) + e(M)²/g]`` with the binade-wise
  step ``Δ``. ``e(M)`` is the (deterministic) rounding error of the block maximum itself:
  zero for INT with an fp32 scale, not for FP. Elementwise FP uses the full Gaussian
  (overload above x_max).

  Returns:
    MSE per entry (a heuristic; compare ``exact_scalar_moments`` and Monte Carlo).
  """
  model = scalar_model(q, shape)
  top = model.levels[-1]
  if model.man_bits is None:  # INT: uniform step equal to the scale
    m, w = max_grid(model.group, num_nodes)
    s = np.maximum(model.scale(m), 1e-300)
    g = model.group
    max_err = (m - _round_to_levels(model, m, s)) ** 2
    return float(np.sum(w * ((g - 1) / g * s**2 / 12.0 + max_err / g)))
  if model.group is None:
    one = np.ones(1)
    gran = _bennett_fp(np.zeros(1), np.full(1, top), one, model.man_bits, model.e_min)
    over = _overload(np.full(1, top), np.full(1, np.inf), top)
    return float(gran[0] + over[0])
  m, w = max_grid(model.group, num_nodes)
  g = model.group
  x_scale = np.maximum(model.scale(m), 1e-300)
  sat = np.minimum(top * x_scale, m)
  norm = np.maximum(2.0 * Phi(m) - 1.0, 1e-300)
  gran = _bennett_fp(np.zeros_like(m), sat, x_scale, model.man_bits, model.e_min) / norm
  over = _overload(sat, m, top * x_scale) / norm
  # The block maximum is a deterministic function of M: charge its exact rounding error
  # (zero for INT with an fp32 scale; for FP the maximum is generally off the grid).
  max_err = (m - _round_to_levels(model, m, x_scale)) ** 2
  per_m = (g - 1) / g * (gran + over) + max_err / g
  return float(np.sum(w * per_m))


def high_rate_matmul_distortion(q_a, q_b, n: int, a: int, b: int) -> float:
  """``D_A + D_B + D_A D_B`` with each D from ``high_rate_mse``."""
  return matmul_from_marginals(high_rate_mse(q_a, (a, n)), high_rate_mse(q_b, (b, n)))
