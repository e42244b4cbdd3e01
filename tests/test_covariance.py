"""Tests for rdq.covariance: every family is symmetric PSD, vmappable, and has its defining property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import covariance as cov
from rdq.covariance import AR1, BlockDiagonal, PowerLaw, Spiked, check_covariance, from_data, sample

N = 32
FAMILY_PARAMS = [
    (cov.Isotropic(N), [0.0, 0.0]),
    (cov.PowerLaw(N), [0.0, 0.5, 1.0, 2.0]),
    (cov.Spiked(N, k=3), [0.0, 10.0]),
    (cov.AR1(N), [0.0, 0.5, 0.95]),
    (cov.Wishart(N, num_samples=4 * N), [0.0, 1.0]),
    (cov.BlockDiagonal(N, num_blocks=4), [0.0, 0.9]),
    (cov.LDLSpread(N), [0.0, 4.0, 8.0]),
]


@pytest.mark.parametrize("family,params", FAMILY_PARAMS, ids=lambda x: getattr(x, "name", ""))
def test_family_batch_is_symmetric_psd(family, params):
  sig = jax.jit(cov.sample, static_argnums=0)(family, jax.random.key(1), jnp.asarray(params))
  assert sig.shape == (len(params), N, N)
  for s in np.asarray(sig):
    cov.check_covariance(s, tol=1e-4)  # raises on failure
    if family.name != "ldl_spread":
      np.testing.assert_allclose(np.trace(s), N, rtol=1e-4)


def test_family_params_matter_and_keys_fold_in():
  sig = cov.sample(cov.PowerLaw(N), jax.random.key(0), jnp.array([1.0, 1.0]))
  # same alpha, different fold_in keys: different eigenbases, same spectrum
  assert not np.allclose(sig[0], sig[1])
  np.testing.assert_allclose(np.linalg.eigvalsh(sig[0]), np.linalg.eigvalsh(sig[1]), rtol=1e-3, atol=1e-4)


def test_power_law_spectrum():
  fam = cov.PowerLaw(N)
  s = fam(jax.random.key(3), 1.5)
  lam = np.sort(np.linalg.eigvalsh(np.asarray(s, np.float64)))[::-1]
  ref = np.arange(1, N + 1) ** -1.5
  ref *= N / ref.sum()
  np.testing.assert_allclose(lam, ref, rtol=2e-3, atol=1e-5)


def test_ar1_toeplitz():
  s = np.asarray(cov.AR1(5)(jax.random.key(0), 0.5))
  assert s[0, 3] == pytest.approx(0.125) and s[4, 2] == pytest.approx(0.25) and s[1, 1] == 1.0


def test_spiked_eigenvalues():
  s = cov.Spiked(N, k=2)(jax.random.key(0), 9.0)
  lam = np.sort(np.linalg.eigvalsh(np.asarray(s, np.float64)))
  c = N / (N + 2 * 9.0)  # trace normalization
  np.testing.assert_allclose(lam[-2:], 10 * c, rtol=1e-4)
  np.testing.assert_allclose(lam[:-2], c, rtol=1e-4)


def test_ldl_spread_cholesky_diagonal_is_d():
  fam = cov.LDLSpread(N)
  key = jax.random.key(5)
  s = np.asarray(fam(key, 6.0), np.float64)
  d = np.asarray(fam.ldl_diagonal(key, 6.0), np.float64)
  chol = np.linalg.cholesky(s)
  np.testing.assert_allclose(np.diag(chol) ** 2, d, rtol=1e-3)
  assert np.linalg.slogdet(s)[1] == pytest.approx(0.0, abs=1e-2)
  assert d.max() / d.min() == pytest.approx(np.exp(6.0), rel=1e-4)


def test_from_data_and_damping():
  x = jax.random.normal(jax.random.key(0), (100, 8))
  s = cov.from_data(x, rel_damp=0.1)
  raw = np.asarray(x, np.float64).T @ np.asarray(x, np.float64) / 100
  np.testing.assert_allclose(s, raw + 0.1 * np.mean(np.diag(raw)) * np.eye(8), rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="rel_damp"):
    cov.from_data(x, rel_damp=-1.0)
  with pytest.raises(ValueError, match=r"\(N, n\)"):
    cov.from_data(jnp.ones(3))


def test_make_family():
  assert cov.make_family("ar1", 4) == cov.AR1(4)
  with pytest.raises(ValueError, match="unknown covariance family"):
    cov.make_family("nope", 4)
  with pytest.raises(ValueError, match="num_blocks"):
    cov.BlockDiagonal(10, num_blocks=3)


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.ones((2, 3)), "square"),
        (np.array([[1.0, np.nan], [np.nan, 1.0]]), "finite"),
        (np.array([[1.0, 0.5], [0.0, 1.0]]), "symmetric"),
        (np.array([[1.0, 2.0], [2.0, 1.0]]), "positive semidefinite; min eigenvalue -1"),
    ],
)
def test_check_covariance_names_the_failed_check(bad, match):
  with pytest.raises(ValueError, match=match):
    cov.check_covariance(bad, name="H")


def test_check_covariance_shape_vs_n():
  with pytest.raises(ValueError, match="match n=3"):
    cov.check_covariance(np.eye(2), n=3)


# --- bad inputs (issue 17): out-of-range parameters, NaN/empty data, complex Σ ---------------

@pytest.mark.parametrize(
    "family,param,match",
    [
        (AR1(8), 1.5, r"rho=1.5 is out of range: expected a finite -1 ≤ rho ≤ 1"),
        (Spiked(8), -1.5, r"beta=-1.5 is out of range: expected a finite -1 ≤ beta"),
        (BlockDiagonal(8, num_blocks=2), -0.5, r"rho=-0.5 is out of range: expected a finite -0.333333 ≤ rho ≤ 1"),
        (PowerLaw(8), float("nan"), r"alpha=nan is out of range"),
    ],
)
def test_out_of_range_family_parameter_raises(family, param, match):
  from rdq.checks import checked

  key = jax.random.key(0)
  with pytest.raises(ValueError, match=match):
    family(key, param)
  with pytest.raises(ValueError, match=match.split(" is out")[0].split("=")[0]):
    checked(jax.jit(family))(key, param)
  with pytest.raises(ValueError, match=match):
    sample(family, key, jnp.array([0.0, param]))


def test_boundary_parameters_are_psd():
  key = jax.random.key(1)
  for fam, p in [(AR1(8), 1.0), (AR1(8), -1.0), (Spiked(8), -1.0), (BlockDiagonal(8, num_blocks=2), -1.0 / 3)]:
    check_covariance(fam(key, p), tol=1e-5)


def test_from_data_rejects_nan_and_empty():
  with pytest.raises(ValueError, match=r"x has 1 NaN/Inf entries"):
    from_data(jnp.ones((4, 3)).at[1, 1].set(jnp.nan))
  with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 3\)\)"):
    from_data(jnp.ones((0, 3)))


def test_check_covariance_rejects_complex_and_checks_under_jit():
  from rdq.checks import checked

  with pytest.raises(TypeError, match="Σ must be real; got complex"):
    check_covariance(jnp.eye(3, dtype=jnp.complex64))
  bad = jnp.diag(jnp.array([1.0, -1.0, 1.0]))
  with pytest.raises(ValueError, match="positive semidefinite"):
    check_covariance(bad)
  with pytest.raises(ValueError, match="positive semidefinite"):
    checked(jax.jit(check_covariance))(bad)
