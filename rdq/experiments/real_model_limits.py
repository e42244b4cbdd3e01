"""Waterfilling references of one real layer: the limit at the algorithm's rate and its rate gap.

Weights are modelled as iid ``N(0, σ²)`` with ``σ² = mean W²`` under the calibration H
(reverse waterfilling over the eigenvalues of H, ``rdq.limits.waterfill``), or — the tighter
``_featvar`` reference — input feature ``i`` with its own variance ``s_i = mean_j W_ij²``
(waterfilling over the eigenvalues of ``S^{1/2} H S^{1/2}``), which is what WaterSIC's step rule
adapts to. The **rate gap** ``R − R*(d)`` (``rdq.limits.waterfill_gap_bits``) is the extra
bits per weight an algorithm spends over the limit at the distortion it reaches.

References:
  T. M. Cover & J. A. Thomas, *Elements of Information Theory*, 2nd ed., Thm. 10.3.3.
"""

from __future__ import annotations

import numpy as np


def layer_limits(w: np.ndarray, h_eigs: np.ndarray, hs_eigs: np.ndarray, rate_bits: float, d_per_entry: float) -> dict:
  """Waterfilling references for one layer at the algorithm's rate and distortion.

  Args:
    w: ``(n, m)`` weights (for ``σ² = mean W²``).
    h_eigs: eigenvalues of H.
    hs_eigs: eigenvalues of ``S^{1/2} H S^{1/2}``, ``S = diag(mean_j W_ij²)``.
    rate_bits: the algorithm's rate (bits per weight incl. side information).
    d_per_entry: the algorithm's distortion ``tr((W−Ŵ)ᵀH(W−Ŵ))/(n·m)``.

  Returns:
    ``limit_d``: ``D*(rate)``; ``limit_rate``: ``R*(d)``; ``gap_bits = rate − R*(d)``;
    ``dropped_frac``: the fraction of components ``var·λ_i`` below the water level θ of ``R*(d)``
    (given no rate by the limit; the ½log2(πe/6) high-rate gap of ECSQ assumes none is);
    the same four with suffix ``_featvar`` for the per-input-feature-variance model.
  """
  from rdq.limits import waterfill, waterfill_gap_bits, waterfill_rate

  sigma2 = float(np.mean(np.square(w, dtype=np.float64)))
  out = {}
  for suffix, eigs, var in (("", h_eigs, sigma2), ("_featvar", hs_eigs, 1.0)):
    eigs = np.clip(np.asarray(eigs, np.float64), 0.0, None)
    d = max(d_per_entry, 1e-30)
    gap = float(waterfill_gap_bits(eigs, rate_bits, d, var))
    out[f"limit_d{suffix}"] = float(waterfill(eigs, rate_bits, var).distortion)
    out[f"limit_rate{suffix}"] = rate_bits - gap
    out[f"gap_bits{suffix}"] = gap
    water = float(waterfill_rate(eigs, d, var).water_level)
    out[f"dropped_frac{suffix}"] = float(np.mean(var * eigs < water))
  return out
