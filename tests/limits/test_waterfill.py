"""Closed-form tests for reverse waterfilling (rdq.limits.waterfill)."""

import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from rdq.limits import ECSQ_GAP_BITS, waterfill, waterfill_high_rate, waterfill_rate


def test_ecsq_constant():
  assert ECSQ_GAP_BITS == pytest.approx(0.254614, abs=1e-6)  # ½ log2(πe/6), papers.md §3/§6


def test_isotropic_is_gaussian_rd():
  r = waterfill(jnp.ones(16), 1.5, variance=2.0)
  assert float(r.distortion) == pytest.approx(2.0 * 2 ** -3, rel=1e-6)
  assert float(r.water_level) == pytest.approx(2.0 * 2 ** -3, rel=1e-6)
  np.testing.assert_allclose(r.rates_bits, 1.5, rtol=1e-6)


def test_two_level_closed_form_inactive_component():
  # μ = (4, 1/4): at R = 1/2 only the first is active: θ = 4·2^{-2·(2·0.5)} = 1 ≥ 1/4.
  r = waterfill(jnp.array([0.25, 4.0]), 0.5)
  assert float(r.water_level) == pytest.approx(1.0, rel=1e-6)
  assert float(r.distortion) == pytest.approx((1.0 + 0.25) / 2, rel=1e-6)
  np.testing.assert_allclose(r.rates_bits, [0.0, 1.0], atol=1e-6)  # input order kept


def test_high_rate_geometric_mean():
  lam = jnp.array([0.5, 1.0, 2.0, 4.0])
  r = waterfill(lam, 4.0)
  gm = math.prod([0.5, 1, 2, 4]) ** 0.25
  assert float(r.distortion) == pytest.approx(gm * 2 ** -8, rel=1e-5)
  assert float(waterfill_high_rate(lam, 4.0)) == pytest.approx(gm * 2 ** -8, rel=1e-5)


def test_zero_eigenvalues_never_active():
  r = waterfill(jnp.array([0.0, 1.0, 1.0, 0.0]), 1.0)
  # all rate goes to the two live directions: 2 bits each → D = (0 + 2^-4·2 + 0)/4
  assert float(r.distortion) == pytest.approx(2 * 2 ** -4 / 4, rel=1e-5)
  np.testing.assert_allclose(r.rates_bits, [0, 2, 2, 0], atol=1e-5)


def test_batch_vectorizes_and_jits():
  lam = jnp.stack([jnp.ones(8), jnp.linspace(0.1, 2, 8)])
  rate = jnp.array([1.0, 2.0])
  r = jax.jit(waterfill)(lam, rate)
  assert r.distortion.shape == (2,) and r.rates_bits.shape == (2, 8)
  for i in range(2):
    assert float(r.distortion[i]) == pytest.approx(float(waterfill(lam[i], rate[i]).distortion), rel=1e-6)
  np.testing.assert_allclose(r.rate_bits, rate, rtol=1e-5)


@settings(max_examples=30, deadline=None)
@given(
    # fixed length: one compilation for all examples
    st.lists(st.floats(1e-3, 1e3), min_size=8, max_size=8),
    st.floats(0.01, 6.0),
)
def test_inverse_roundtrip_and_monotone(eig, rate):
  lam = jnp.asarray(eig, jnp.float32)
  r = waterfill(lam, rate)
  assert float(r.rate_bits) == pytest.approx(rate, rel=1e-4, abs=1e-5)
  back = waterfill_rate(lam, r.distortion)
  assert float(back.rate_bits) == pytest.approx(rate, rel=1e-3, abs=1e-4)
  # D(R) strictly decreasing in R and never below the high-rate form's equality case
  r2 = waterfill(lam, rate * 1.1)
  assert float(r2.distortion) < float(r.distortion)
  assert float(r.distortion) >= float(waterfill_high_rate(lam, rate)) * (1 - 1e-4)
  assert float(r.distortion) <= float(jnp.mean(lam)) * (1 + 1e-6)


def test_distortion_above_variance_is_zero_rate():
  r = waterfill_rate(jnp.array([1.0, 3.0]), 5.0)
  assert float(r.rate_bits) == 0.0


@pytest.mark.parametrize(
    "args,match",
    [
        ((jnp.ones(3), 0.0), "rate_bits must be > 0"),
        ((jnp.ones(3), -1.0), "rate_bits must be > 0"),
        ((jnp.array([1.0, -1.0]), 1.0), "eigenvalues must be ≥ 0"),
        ((jnp.array([1.0, jnp.nan]), 1.0), "finite"),
        ((jnp.zeros(3), 1.0), "all zero"),
    ],
)
def test_bad_input(args, match):
  with pytest.raises(ValueError, match=match):
    waterfill(*args)


def test_inverse_round_trip_at_high_rate():
  # regression: the tail sum must not cancel when the water level is tiny
  lam = np.geomspace(1.0, 1e-3, 32)
  for rate in (6.0, 8.0, 10.0):
    d = waterfill(lam, rate).distortion
    np.testing.assert_allclose(float(waterfill_rate(lam, d).rate_bits), rate, atol=1e-4)


def test_rate_gradient_in_distortion_is_finite_and_exact():
  # R*(D) = (1/n) Σ_active ½log2(μ_i/θ); where all n components are active θ = D, so
  # dR*/dD = −1/(2 D ln 2) (Cover & Thomas, Thm 10.3.3). Where some components
  # are dropped the log2 of a non-positive argument sits in an unselected branch: its gradient
  # must not turn the whole gradient into NaN (the universal-codebook learner differentiates it).
  lam = jnp.array([4.0, 1.0, 0.5, 0.1])
  grad = jax.grad(lambda d: waterfill_rate(lam, d).rate_bits)
  d = 0.05
  np.testing.assert_allclose(float(grad(jnp.float32(d))), -1.0 / (2 * d * math.log(2)), rtol=1e-5)
  for d in (0.3, 0.9):  # one and two components dropped
    g = float(grad(jnp.float32(d)))
    fd = float((waterfill_rate(lam, d * 1.001).rate_bits - waterfill_rate(lam, d * 0.999).rate_bits) / (0.002 * d))
    assert math.isfinite(g)
    np.testing.assert_allclose(g, fd, rtol=1e-2)
