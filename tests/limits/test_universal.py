"""Tests of the random-coding universal rate (rdq.limits.universal) against closed forms,
an independent SciPy float64 evaluation, and the paper's 0.11-bit bound."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from rdq.limits import (
    UNIVERSALITY_GAP_BITS,
    random_coding_rate,
    universal_distortion,
    universal_gap,
    universal_rate,
    waterfill_rate,
)


def _two_level(n=100, p=0.2, ratio=1e-3):
  k = int(round(p * n))
  lam = np.array([1.0] * k + [ratio] * (n - k))
  return lam / lam.mean()


@pytest.mark.parametrize("d", [0.5, 0.25, 0.1, 0.01])
def test_isotropic_has_no_loss(d):
  r, c = universal_rate(jnp.ones(8), d)
  assert float(r) == pytest.approx(0.5 * math.log2(1 / d), abs=2e-4)
  assert float(c) == pytest.approx(1 - d, rel=2e-3)  # Shannon test channel power
  assert float(random_coding_rate(jnp.ones(8), d, 1 - d)) == pytest.approx(0.5 * math.log2(1 / d), abs=2e-4)


def _scipy_rrc(d, lam, c):
  f = lambda ls: -(-np.exp(ls) * d + np.mean(0.5 * np.log1p(2 * np.exp(ls) * lam * c)
                                             + np.exp(ls) * lam / (1 + 2 * np.exp(ls) * lam * c)))
  res = minimize_scalar(f, bounds=(np.log(1e-6 / d), np.log(1e8 / d)), method="bounded", options=dict(xatol=1e-10))
  return -res.fun / np.log(2)


def test_matches_independent_scipy_and_papers_md_oracle():
  # research/papers.md §4: λ ∝ (1, 1e-3), p = 0.2, D = 5.48e-3 gives a gap ≈ 0.1072 bit.
  lam, d = _two_level(), 5.48e-3
  res = minimize_scalar(lambda lc: _scipy_rrc(d, lam, np.exp(lc)), bounds=(np.log(1e-5), np.log(4.0)),
                        method="bounded", options=dict(xatol=1e-10))
  r, c = universal_rate(lam, d)
  assert float(r) == pytest.approx(res.fun, abs=2e-4)
  assert float(c) == pytest.approx(np.exp(res.x), rel=1e-2)
  gap = float(r) - float(waterfill_rate(lam, d).rate_bits)
  assert gap == pytest.approx(0.1072, abs=1e-3)


def test_sup_over_two_level_spectra_is_just_below_011():
  ps = np.array([0.17, 0.2, 0.23])
  ds = np.geomspace(3e-3, 1e-2, 9)
  lam = np.stack([_two_level(100, p, 1e-3) for p in ps])
  r, _ = universal_rate(lam[:, None, :], ds[None, :])
  gaps = np.asarray(r) - np.asarray(waterfill_rate(lam[:, None, :], ds[None, :]).rate_bits)
  assert gaps.max() <= UNIVERSALITY_GAP_BITS
  assert gaps.max() >= 0.106  # the sup ≈ 0.108 is nearly attained on this grid
  assert np.all(gaps >= -1e-4)


def test_universal_rate_is_min_over_variance():
  lam = np.linspace(0.1, 2.0, 16)
  r, c = universal_rate(lam, 0.05)
  for cc in (0.3, 0.6, 0.9, float(c) * 1.3):
    assert float(random_coding_rate(lam, 0.05, cc)) >= float(r) - 1e-4


def test_gap_inverse_and_bounds():
  lam = np.asarray([1.0] * 4 + [0.01] * 12)
  lam = lam / lam.mean()
  rates = np.array([0.5, 1.0, 2.0])
  d = universal_distortion(lam, rates)
  np.testing.assert_allclose(universal_rate(lam, d)[0], rates, atol=1e-3)
  g = np.asarray(universal_gap(np.stack([lam, np.ones(16)]), rates[:, None]))
  assert np.all(g[:, 0] >= -1e-3) and np.all(g[:, 0] <= UNIVERSALITY_GAP_BITS)
  assert np.all(g[:2, 0] > 0.04)  # a spread spectrum does pay for universality at low rate
  np.testing.assert_allclose(g[:, 1], 0.0, atol=1e-3)  # isotropic: none


def test_bad_input():
  with pytest.raises(ValueError, match="rate_bits"):
    universal_gap(jnp.ones(4), 0.0)
  with pytest.raises(ValueError, match="distortion"):
    universal_rate(jnp.ones(4), -1.0)
  with pytest.raises(ValueError, match="eigenvalues"):
    universal_rate(jnp.array([1.0, -0.5]), 0.1)
  with pytest.raises(ValueError, match="codebook_variance"):
    random_coding_rate(jnp.ones(4), 0.1, 0.0)
