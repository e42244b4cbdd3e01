"""Tests for the generic-matmul limit Γ(R) (Ordentlich & Polyanskiy, arXiv 2410.13780)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rdq.limits import critical_rate, generic_matmul, generic_matmul_rate, naive_matmul_distortion


def test_critical_rate_value_and_tangency():
  r_star, f_star = critical_rate()
  np.testing.assert_allclose(r_star, 0.9063235, atol=5e-7)  # "≈ 0.906" in the abstract
  np.testing.assert_allclose(f_star, 0.4883003, atol=5e-7)
  # tangency: the chord from (0, 1) has the slope of f at R*
  h = 1e-6
  f = lambda r: 2 * 2 ** (-2 * r) - 2 ** (-4 * r)
  slope = (f(r_star + h) - f(r_star - h)) / (2 * h)
  np.testing.assert_allclose((f_star - 1) / r_star, slope, rtol=1e-6)


def test_oracle_values():
  rates = jnp.array([0.5, 1.0, 2.0, 3.0, 4.0])
  np.testing.assert_allclose(generic_matmul(rates), [0.717706, 0.4375, 0.121094, 0.031006, 0.007797], atol=2e-6)


def test_shape_properties():
  r = np.linspace(0.01, 6, 2000)
  g = np.asarray(generic_matmul(r), np.float64)
  assert np.all(np.diff(g) < 0), "Γ decreases"
  assert np.all(np.diff(g, 2) > -1e-6), "Γ is convex"
  assert np.all(g <= np.asarray(naive_matmul_distortion(r)) + 1e-7), "Γ ≤ f (convex envelope)"
  r_star, _ = critical_rate()
  np.testing.assert_allclose(generic_matmul(r_star - 1e-7), generic_matmul(r_star + 1e-7), atol=1e-6)
  # high rate: Γ(R) ≈ 2·2^(-2R)
  np.testing.assert_allclose(generic_matmul(10.0) / (2 * 2.0**-20), 1.0, rtol=1e-5)


@given(st.floats(0.02, 10.0))
def test_inverse_round_trip(rate):
  np.testing.assert_allclose(generic_matmul_rate(generic_matmul(rate)), rate, rtol=2e-4)


def test_vmap_jit():
  r = jnp.linspace(0.1, 5, 16)
  np.testing.assert_allclose(jax.vmap(generic_matmul)(r), jax.jit(generic_matmul)(r), rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -0.5, math.nan])
def test_bad_rate(bad):
  with pytest.raises(ValueError, match="rate"):
    generic_matmul(bad)


def test_bad_distortion():
  with pytest.raises(ValueError):
    generic_matmul_rate(1.5)
  with pytest.raises(ValueError):
    generic_matmul_rate(0.0)
