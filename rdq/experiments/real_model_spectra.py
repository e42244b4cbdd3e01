"""Power-law fit of an eigenvalue spectrum (the ``α`` of ``λ_k ∝ k^{−α}`` per real layer)."""

from __future__ import annotations

import numpy as np


def power_law_exponent(eigs: np.ndarray, k_lo: int = 2, hi_frac: float = 0.5) -> float:
  """Least-squares exponent α of ``λ_k ∝ k^{−α}`` over ranks ``k_lo ≤ k ≤ hi_frac·n``.

  Eigenvalues are sorted descending; ranks start at 1. Non-positive eigenvalues in the
  range are an error (fit a damped or full-rank H).
  """
  lam = np.sort(np.asarray(eigs, np.float64))[::-1]
  n = lam.size
  k_hi = int(hi_frac * n)
  if not (1 <= k_lo < k_hi <= n):
    raise ValueError(f"need 1 ≤ k_lo < hi_frac·n ≤ n; got {k_lo=}, {hi_frac=}, {n=}")
  k = np.arange(k_lo, k_hi + 1)
  y = lam[k - 1]
  if np.any(y <= 0):
    raise ValueError(f"eigenvalues at ranks {k_lo}..{k_hi} must be > 0; min is {y.min():.3g}")
  slope = np.polyfit(np.log(k), np.log(y), 1)[0]
  return float(-slope)
