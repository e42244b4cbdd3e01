"""WaterSIC's internal fast paths equal the definitions they replace."""

import jax
import jax.numpy as jnp
import numpy as np

from rdq import covariance as cov
from rdq.layer import damp_hessian, inverse_cholesky_upper
from rdq.layer.watersic import _reversed_inverse_cholesky
from rdq.rate import _row_entropy_bits, _sorted_row_entropy_bits, empirical_entropy_bits


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


def _paper_zsic(w, h, steps, lmmse=True):
  """Unblocked float64 SIC in the reference code's form: ``Y = Lᵀ W``, features last → first."""
  w = np.asarray(w, np.float64)
  lower = np.linalg.cholesky(np.asarray(h, np.float64))
  y = lower.T @ w
  n = w.shape[0]
  q, z = np.zeros_like(w), np.zeros(w.shape, np.int64)
  for j in range(n - 1, -1, -1):
    t = y[j] / lower[j, j]
    zj = np.round(t / steps[j])
    zz = zj @ zj
    s = (zj @ t) / (steps[j] * zz) * steps[j] if (lmmse and zz > 0) else (0.0 if lmmse else steps[j])
    s = float(np.float16(s))
    q[j], z[j] = s * zj, zj
    y[: j + 1] -= np.outer(lower[j, : j + 1], q[j])
  return q, z


def test_ysic_equals_the_reference_recursion_and_the_gptq_form():
  """``_ysic`` (paper form, blocked twice, padded) = the unblocked float64 recursion, and the
  same codes as the GPTQ form ``rdq.layer.sic`` on ``U = J L⁻¹ J`` (what it replaced); its
  residuals are the rows of the damped loss ``tr((W−Q)ᵀH_d(W−Q))`` that the report uses."""
  from rdq.layer._sic import StepGrid, sic
  from rdq.layer.watersic import _ysic

  n, m = 45, 96  # 45: padding for every block size below
  hd = damp_hessian(cov.AR1(n)(jax.random.key(2), 0.9), 1e-4)
  w = jax.random.normal(jax.random.key(3), (n, m))
  lower = jnp.linalg.cholesky(hd)
  steps = jnp.asarray(np.float16(0.3 / np.diag(np.asarray(lower))), jnp.float32)  # α_i = c / L_ii, fp16
  q_ref, z_ref = _paper_zsic(w, hd, np.asarray(steps, np.float64))
  lr, wr = lower[::-1, ::-1], w[::-1]
  for bs, inner in [(16, 4), (128, 16)]:  # 45 = 2·16 + 13 and 48 − 3 rows: both pad
    q, z, _, res = jax.jit(_ysic, static_argnums=(3, 4, 5))(lr.T @ wr, lr, steps[::-1], True, bs, inner)
    np.testing.assert_array_equal(np.asarray(z)[::-1], z_ref)
    np.testing.assert_allclose(np.asarray(q)[::-1], q_ref, rtol=1e-6, atol=1e-6)
    # the residuals: row i of Lᵣᵀ(W − Q), squared — tr((W−Q)ᵀ L Lᵀ (W−Q)) row by row (float64)
    lt_e = np.asarray(lr, np.float64).T @ (np.asarray(wr, np.float64) - np.asarray(q, np.float64))
    np.testing.assert_allclose(np.asarray(res, np.float64), np.sum(lt_e**2, axis=1), rtol=1e-4)
  q2, z2, _ = sic(wr, _reversed_inverse_cholesky(hd), StepGrid(lmmse=True), steps[::-1], 16)
  np.testing.assert_array_equal(np.asarray(z2)[::-1], z_ref)


def test_coded_bits_from_the_histograms_equal_the_gaussian_code_length():
  """``_coded_bits`` (CDF at the bin edges, weighted by the rate search's counts) equals
  ``rdq.rate.gaussian_code_bits`` per entry, on the binned path and both fallbacks."""
  from rdq.layer.watersic import CODED_BINS, _coded_bits
  from rdq.rate import _row_entropy_and_counts, gaussian_code_bits

  k1, k2 = jax.random.split(jax.random.key(5))
  z = jnp.round(jax.random.normal(k1, (40, 301)) * jax.random.uniform(k2, (40, 1), minval=0.1, maxval=8.0)).astype(jnp.int32)
  z = z.at[0].set(3)  # one symbol
  wide = z.at[1, :40].set(jnp.arange(40) * 2)  # a row spanning ≥ CODED_BINS values
  sorted_rows = z.at[2, 0].set(10_000)  # a row spanning ≥ m values: entropies from sorted rows
  def both(codes):
    bits, counts = _row_entropy_and_counts(codes, CODED_BINS)
    return bits, _coded_bits(codes, counts), empirical_entropy_bits(codes, axis=1), jnp.mean(gaussian_code_bits(codes, axis=1))

  both = jax.jit(both)
  for codes, binned in ((z, True), (wide, False), (sorted_rows, False)):
    assert bool(jnp.max(codes.max(1) - codes.min(1)) < CODED_BINS) == binned
    bits, coded, want_bits, want_coded = both(codes)
    np.testing.assert_allclose(np.asarray(bits), np.asarray(want_bits), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(coded), float(want_coded), rtol=2e-6)
