"""Randomized Hadamard transform: exact Hadamard blocks, FWHT, orthogonality, inverse, and LDLQ
distortion equal in distribution to a Haar rotation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.layer import LatticeSICConfig, lattice_sic, lattice_sic_traced
from rdq.layer.hadamard import fwht, hadamard_matrix, hadamard_split, randomized_hadamard


@pytest.mark.parametrize("order", [1, 2, 4, 8, 12, 20, 24, 28, 36, 44, 60, 108])
def test_hadamard_matrix_is_exact(order):
  h = hadamard_matrix(order)
  assert set(np.unique(h)) <= {-1, 1}
  np.testing.assert_array_equal(h @ h.T, order * np.eye(order, dtype=np.int64))


def test_hadamard_matrix_bad_order():
  for bad in (0, 3, 6, 7.0):
    with pytest.raises(ValueError, match="order"):
      hadamard_matrix(bad)


@pytest.mark.parametrize(("n", "split"), [(64, (64, 1, True)), (384, (32, 12, True)), (1536, (128, 12, True)),
                                          (576, (16, 36, True)), (14, (2, 7, False))])
def test_split_of_model_dimensions(n, split):
  assert hadamard_split(n) == split


def test_fwht_is_the_sylvester_product():
  x = jax.random.normal(jax.random.key(0), (32, 5))
  np.testing.assert_allclose(fwht(x), hadamard_matrix(32) @ np.asarray(x, np.float64), rtol=0, atol=2e-5)
  with pytest.raises(ValueError, match="power-of-two"):
    fwht(jnp.ones((12, 2)))


@pytest.mark.parametrize("n", [64, 96, 576, 14])
def test_orthogonal_and_exact_inverse(n):
  rot = jax.jit(randomized_hadamard, static_argnums=1)(jax.random.key(n), n)
  q = np.asarray(rot.matrix(), np.float64)
  np.testing.assert_allclose(q @ q.T, np.eye(n), rtol=0, atol=2e-6)
  x = jax.random.normal(jax.random.key(1), (n, 3))
  np.testing.assert_allclose(rot.inverse(rot.forward(x)), x, rtol=0, atol=2e-6)
  np.testing.assert_allclose(rot.forward(x), q @ np.asarray(x, np.float64), rtol=0, atol=2e-5)
  h = np.asarray(x @ x.T, np.float64)
  np.testing.assert_allclose(rot.rotate_hessian(jnp.asarray(h, jnp.float32)), q @ h @ q.T, rtol=0, atol=1e-4)


def test_signs_depend_on_the_key_and_are_deterministic():
  a = randomized_hadamard(jax.random.key(0), 384)
  b = randomized_hadamard(jax.random.key(0), 384)
  c = randomized_hadamard(jax.random.key(1), 384)
  np.testing.assert_array_equal(a.signs, b.signs)
  assert np.mean(np.asarray(a.signs) != np.asarray(c.signs)) > 0.3
  with pytest.raises(ValueError, match="n=384"):
    a.forward(jnp.ones((383, 2)))


def test_ldlq_distortion_equals_haar_in_distribution():
  """iid Gaussian W, a correlated (AR(1)) H: mean E8-LDLQ distortion over independent rotations
  agrees between the RHT and Haar within a 3.5σ two-sample CI. (With the signs applied after the
  Hadamard, the rotated H would not depend on them and the mean is ~1.5× Haar's.)"""
  n, m, samples = 96, 32, 32
  i = np.arange(n)
  h = jnp.asarray(0.9 ** np.abs(i[:, None] - i[None, :]), jnp.float32)
  ws = jax.random.normal(jax.random.key(2), (samples, n, m))
  keys = jax.random.split(jax.random.key(1), samples)
  d = {}
  for rotation in ("haar", "hadamard"):
    cfg = LatticeSICConfig("e8_nested_q8_norm", block_size=n, rotate=True, rotation=rotation)
    _, rep = jax.vmap(lambda w, k: lattice_sic_traced(w, h, cfg, k))(ws, keys)  # noqa: B023
    d[rotation] = np.asarray(rep.d_per_entry, np.float64)
  diff = d["hadamard"].mean() - d["haar"].mean()
  se = np.sqrt(d["hadamard"].var(ddof=1) / samples + d["haar"].var(ddof=1) / samples)
  assert abs(diff) < 3.5 * se, (d["hadamard"].mean(), d["haar"].mean(), se)
  assert se < 0.02 * d["haar"].mean()  # the CI is tight enough to see a real difference


def test_lattice_sic_hadamard_rotation_is_rtn_in_the_rotated_basis():
  n, m = 48, 8
  w = jax.random.normal(jax.random.key(3), (n, m))
  key = jax.random.key(4)
  cfg = LatticeSICConfig("e8_nested_q8_norm", feedback=False, rotate=True, rotation="hadamard")
  w_hat, _ = lattice_sic(w, jnp.eye(n), cfg, key)
  rot = randomized_hadamard(key, n)
  w_rtn, _ = lattice_sic(rot.forward(w), jnp.eye(n), LatticeSICConfig("e8_nested_q8_norm", feedback=False))
  np.testing.assert_allclose(w_hat, rot.inverse(w_rtn), rtol=0, atol=1e-5)
  with pytest.raises(ValueError, match="rotation"):
    LatticeSICConfig(rotate=True, rotation="dct")
