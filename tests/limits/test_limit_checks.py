"""Limits: bad arguments raise eagerly and under jit (checkify), extreme valid ones stay finite.

Regression tests for issue 17 ("limits under jit", "extreme but valid values") and the
waterfill underflow defect of issue 14.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.checks import checked
from rdq.limits import (
  gaussian_rate,
  gaussian_rd,
  generic_matmul,
  generic_matmul_rate,
  waterfill,
  waterfill_rate,
)

BAD = [
    (gaussian_rd, (-1.0,), "rate must be > 0"),
    (generic_matmul, (-1.0,), "rate must be > 0"),
    (generic_matmul_rate, (1.5,), "distortion must be ≤ 1.0"),
    (waterfill, (jnp.array([1.0, -1.0]), 1.0), "eigenvalues must be ≥ 0"),
]


@pytest.mark.parametrize("fn,args,match", BAD, ids=lambda v: getattr(v, "__name__", None))
def test_bad_argument_raises_eagerly_and_under_checked_jit(fn, args, match):
  with pytest.raises(ValueError, match=match):
    fn(*args)
  with pytest.raises(ValueError, match=match):
    checked(jax.jit(fn))(*args)


def test_log_domain_extremes_are_finite():
  # ½ log2(1/1e-40) = 66.4386; Γ⁻¹ at tiny D: −½ log2(D/2) = 66.9386.
  np.testing.assert_allclose(float(gaussian_rate(1e-40)), 0.5 * np.log2(1e40), rtol=1e-6)
  np.testing.assert_allclose(float(generic_matmul_rate(1e-40)), 0.5 * np.log2(2e40), rtol=1e-6)
  # 100 bits per entry on an isotropic spectrum: D = 2^-200, beyond float32.
  assert float(waterfill_rate(jnp.ones(4), 2.0**-200).rate_bits) == pytest.approx(100.0, rel=1e-6)


def test_waterfill_underflow_raises_instead_of_zero():
  # 15 zero eigenvalues and one 1 at 4 bits: θ = 2^-128, D = 2^-132 (was D = 0, rate = inf).
  eig = jnp.array([0.0] * 15 + [1.0])
  with pytest.raises(ValueError, match="underflows float32"):
    waterfill(eig, 4.0)
  with pytest.raises(ValueError, match="underflows float32"):
    checked(jax.jit(waterfill))(eig, 4.0)
  # The same spectrum scaled by 2^140 is representable: D = 2^140 · 2^-132 = 256 exactly.
  res = waterfill(eig, 4.0, 2.0**140)
  assert float(res.distortion) == 256.0 and float(res.rate_bits) == 4.0


def test_waterfill_eager_equals_jit_bitwise():
  eig = jnp.array([3.0, 1.0, 0.1, 0.01, 0.0])
  rates = jnp.array([0.5, 2.0, 9.0])
  a, b = waterfill(eig, rates), jax.jit(waterfill)(eig, rates)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_wrong_dtype_rejected():
  with pytest.raises(TypeError, match="eigenvalues must be real; got complex"):
    waterfill(jnp.array([1.0 + 1j, 2.0]), 1.0)
