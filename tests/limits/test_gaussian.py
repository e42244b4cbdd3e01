"""Tests for the Gaussian rate–distortion function."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rdq.limits import gaussian_rate, gaussian_rd


def test_closed_form_values():
  np.testing.assert_allclose(gaussian_rd(jnp.array([1.0, 2.0, 3.0, 4.0])), [0.25, 0.0625, 0.015625, 0.00390625])
  np.testing.assert_allclose(gaussian_rd(1.0, variance=4.0), 1.0)


@given(st.floats(0.01, 12.0), st.floats(0.1, 10.0))
def test_inverse_round_trip(rate, var):
  d = gaussian_rd(rate, var)
  np.testing.assert_allclose(gaussian_rate(d, var), rate, rtol=1e-5)


def test_vmap_and_jit():
  rates = jnp.linspace(0.5, 4, 8)
  np.testing.assert_allclose(jax.vmap(gaussian_rd)(rates), jax.jit(gaussian_rd)(rates), rtol=1e-6)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan")])
def test_bad_rate(bad):
  with pytest.raises(ValueError):
    gaussian_rd(bad)
  with pytest.raises(ValueError):
    gaussian_rd(jnp.array([1.0, bad]))


def test_bad_distortion():
  with pytest.raises(ValueError):
    gaussian_rate(0.0)
