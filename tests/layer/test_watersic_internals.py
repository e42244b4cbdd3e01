"""WaterSIC's internal fast paths equal the definitions they replace."""

import jax
import jax.numpy as jnp
import numpy as np

from rdq import covariance as cov
from rdq.layer import damp_hessian, inverse_cholesky_upper
from rdq.layer.watersic import _reversed_inverse_cholesky, _row_entropy_bits, _sorted_row_entropy_bits
from rdq.rate import empirical_entropy_bits


def test_row_entropy_equals_plugin_entropy():
  k1, k2 = jax.random.split(jax.random.key(0))
  z = jax.random.randint(k1, (40, 301), -9, 10) * jax.random.randint(k2, (40, 301), 0, 3)
  z = z.at[0].set(0).at[1].set(jnp.arange(301))  # one symbol; all distinct
  want = np.asarray(empirical_entropy_bits(z, axis=1))
  # histogram path (every row spans < m values), the wide-row fallback, and the sorted path itself
  for codes in (z, z.at[2, 0].set(10_000)):
    got = np.asarray(jax.jit(_row_entropy_bits)(codes))
    np.testing.assert_allclose(got, np.asarray(empirical_entropy_bits(codes, axis=1)), rtol=1e-6, atol=1e-6)
  got = np.asarray(jax.jit(_sorted_row_entropy_bits)(z))
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  assert abs(got[0]) < 1e-6 and abs(got[1] - np.log2(301)) < 1e-5


def test_reversed_inverse_cholesky_is_the_upper_factor():
  n = 48
  hd = damp_hessian(cov.PowerLaw(n)(jax.random.key(1), 2.0), 1e-4)
  u = np.asarray(_reversed_inverse_cholesky(hd), np.float64)
  assert np.all(np.tril(u, -1) == 0) and np.all(np.diag(u) > 0)
  hr = np.asarray(hd, np.float64)[::-1, ::-1]
  np.testing.assert_allclose(u.T @ u @ hr, np.eye(n), atol=2e-3)
  np.testing.assert_allclose(u, np.asarray(inverse_cholesky_upper(hd[::-1, ::-1])), rtol=1e-3, atol=1e-4 * np.abs(u).max())
