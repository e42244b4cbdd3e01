"""Generic-matmul Monte Carlo distortion against Γ(R) and the scalar predictions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import limits, quantizers
from rdq.matmul_mc import MatmulSetup, matmul_distortion, matmul_error
from rdq.quantizers import scalar_prediction as sp

SETUP = MatmulSetup(128, 8, 8)
DEFAULT_SWEEP = ["int8", "int8_row", "int4_row", "int4_block32", "int4_block32_e8m0", "int3_block64", "int2_block64",
                 "e4m3", "e5m2", "e2m1", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "mxfp4_ceil", "nvfp4"]


@pytest.mark.parametrize("name", DEFAULT_SWEEP)
def test_limit_below_monte_carlo_and_exact_prediction_within_ci(name):
  q = quantizers.get(name)
  est = matmul_distortion(q, q, SETUP, jax.random.key(11), 256, 64)
  rate = q.rate((SETUP.a, SETUP.n)).effective
  lo, hi = est.ci(0.999)
  assert float(limits.generic_matmul(rate)) < float(lo), "Γ(R_eff) must lie below every quantizer"
  exact = sp.exact_matmul_distortion(q, q, SETUP.n, SETUP.a, SETUP.b)
  if name == "nvfp4":
    # the tensor scale is modelled at the median tensor maximum: an approximation (docstring)
    np.testing.assert_allclose(exact, float(est.mean), rtol=0.02)
  else:
    assert float(lo) <= exact <= float(hi), (exact, float(est.mean), float(est.stderr))


@pytest.mark.parametrize("name", ["e4m3", "int8"])
def test_high_rate_approximation(name):
  # The check: MC distortion of e4m3 and int8 against the high-rate approximation.
  q = quantizers.get(name)
  est = matmul_distortion(q, q, SETUP, jax.random.key(12), 512, 128)
  hr = sp.high_rate_matmul_distortion(q, q, SETUP.n, SETUP.a, SETUP.b)
  lo, hi = est.ci(0.999)
  # high-rate error terms are O(2^{-2b}) relative; within 1% at these rates and inside the CI widened by that
  assert float(lo) * 0.99 <= hr <= float(hi) * 1.01


def test_mixed_pair_and_identity():
  q8, q4 = quantizers.get("int8_row"), quantizers.get("int4_block32")
  est = matmul_distortion(q8, q4, SETUP, jax.random.key(13), 256, 64)
  exact = sp.exact_matmul_distortion(q8, q4, SETUP.n, SETUP.a, SETUP.b)
  assert est.contains(exact, 0.999)
  # D_AB ≈ D_A + D_B + D_A D_B
  da = sp.exact_scalar_moments(q8, (SETUP.a, SETUP.n)).mse
  db = sp.exact_scalar_moments(q4, (SETUP.b, SETUP.n)).mse
  np.testing.assert_allclose(exact, sp.matmul_from_marginals(da, db), rtol=0.01)


def test_deterministic():
  q = quantizers.get("mxfp4")
  a = matmul_distortion(q, q, SETUP, jax.random.key(3), 64, 16)
  b = matmul_distortion(q, q, SETUP, jax.random.key(3), 64, 16)
  assert np.asarray(a.mean).tobytes() == np.asarray(b.mean).tobytes()


def test_bad_shapes():
  q = quantizers.get("int8")
  with pytest.raises(ValueError, match="same inner dimension"):
    matmul_error(jnp.ones((8, 4)), jnp.ones((9, 4)), q, q)
  with pytest.raises(ValueError, match="must divide"):
    matmul_distortion(quantizers.get("int4_block32"), q, MatmulSetup(48, 4, 4), jax.random.key(0), 8)
  with pytest.raises(ValueError, match="positive integer"):
    MatmulSetup(0, 4, 4)


def test_threefry_bits_are_jax_threefry():
  # The generator's bits are JAX's Threefry-2x32-20, bit for bit: block (j, j + h) -> words j, j + h.
  import jax.extend.random

  from rdq.matmul_mc import _threefry2x32

  for data in (jnp.array([0, 0], jnp.uint32), jnp.array([0xDEADBEEF, 12345], jnp.uint32)):
    h = 1001
    ctr = jax.lax.iota(jnp.uint32, h)
    mine = jnp.concatenate(_threefry2x32(data[0], data[1], ctr, ctr + jnp.uint32(h)))
    assert np.array_equal(np.asarray(mine), np.asarray(jax.extend.random.threefry_2x32(data, jnp.arange(2 * h, dtype=jnp.uint32))))


def test_standard_normal_same_bits_eager_jit_vmap_and_in_the_sample():
  from rdq.matmul_mc import _normal_pairs, matmul_sample, standard_normal

  key = jax.random.key(9)
  eager = np.asarray(standard_normal(key, 1001))
  assert eager.shape == (1001,) and eager.dtype == np.float32
  assert np.array_equal(eager, np.asarray(jax.jit(standard_normal, static_argnums=1)(key, 1001)))
  keys = jax.random.split(key, 3)
  batched = np.asarray(jax.jit(jax.vmap(lambda k: standard_normal(k, 1001)))(keys))
  assert np.array_equal(batched[2], np.asarray(standard_normal(keys[2], 1001)))
  # size is a prefix: the first ⌈size/2⌉ pairs' cosines, then their sines
  z0, z1 = _normal_pairs(jax.random.key_data(key), 501)
  assert np.array_equal(eager, np.concatenate([z0, z1])[:1001])
  # the engine's unrolled draw (matmul_sample) gives the same bits as the loop
  unrolled = jax.jit(lambda d: _normal_pairs(d, 501, unroll=2))(jax.random.key_data(key))
  assert all(np.array_equal(u, v) for u, v in zip(unrolled, (z0, z1)))
  # A sample's factors are the first n·a and last n·b draws of standard_normal(split(key)[0], n(a+b)),
  # on the a = b fast path and the a ≠ b path alike (a wrong split changes the error entirely).
  q = quantizers.get("int4_block32")
  for setup in (MatmulSetup(64, 4, 4), MatmulSetup(64, 4, 3)):

    def by_hand(key, setup=setup):
      k_data, k_q = jax.random.split(key)
      x = standard_normal(k_data, setup.n * (setup.a + setup.b))
      a_mat = x[: setup.n * setup.a].reshape(setup.n, setup.a)
      return matmul_error(a_mat, x[setup.n * setup.a :].reshape(setup.n, setup.b), q, q, k_q)

    np.testing.assert_allclose(jax.jit(matmul_sample(setup, q, q))(key), jax.jit(by_hand)(key), rtol=1e-6)
  # another PRNG implementation falls back to jax.random.normal
  rbg = jax.random.key(3, impl="rbg")
  assert np.array_equal(np.asarray(standard_normal(rbg, 64)), np.asarray(jax.random.normal(rbg, (64,))))
  with pytest.raises(ValueError, match="size"):
    standard_normal(key, -1)


def test_sample_normals_are_standard_normal():
  # 2^20 draws over 128 sample keys against N(0, 1). Moments at 4.5 standard errors
  # (two-sided p = 7e-6 each); distribution tests at significance 1e-4: KS, χ² on 256
  # equiprobable bins, the count beyond 4σ (Poisson); each Box–Muller pair (z0, z1): independent
  # (E z0z1 = 0, E z0²z1² = 1), radius² ~ Exp(mean 2), angle ~ U(−π, π) (KS).
  from scipy import stats

  from rdq.matmul_mc import standard_normal

  key = jax.random.key(5)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(128))
  x = np.asarray(jax.jit(jax.vmap(lambda k: standard_normal(k, 8192)))(keys), np.float64)
  m = x.size
  z = lambda est, value, var: abs(est - value) / np.sqrt(var / m)  # noqa: E731
  assert z(x.mean(), 0.0, 1.0) < 4.5
  assert z((x**2).mean(), 1.0, 2.0) < 4.5
  assert z((x**3).mean(), 0.0, 15.0) < 4.5  # skewness (E x⁶ = 15)
  assert z((x**4).mean(), 3.0, 96.0) < 4.5  # kurtosis: Var x⁴ = 105 − 9
  assert z(np.mean(x[:-1] * x[1:]), 0.0, m / (m - 8192)) < 4.5  # neighbouring sample keys
  flat = x.ravel()
  assert stats.kstest(flat[::4], "norm").pvalue > 1e-4
  edges = stats.norm.ppf(np.linspace(0.0, 1.0, 257))
  counts = np.histogram(flat, edges)[0]
  assert stats.chisquare(counts).pvalue > 1e-4
  tail = np.sum(np.abs(flat) > 4.0)
  expected = m * 2.0 * stats.norm.sf(4.0)
  assert abs(tail - expected) < 4.5 * np.sqrt(expected), (tail, expected)
  z0, z1 = x[:, :4096].ravel(), x[:, 4096:].ravel()  # the two outputs of each pair
  assert abs(np.mean(z0 * z1)) < 4.5 / np.sqrt(m / 2)
  assert abs(np.mean(z0**2 * z1**2) - 1.0) < 4.5 * np.sqrt(8.0 / (m / 2))  # Var z0²z1² = 9 − 1
  assert stats.kstest(z0**2 + z1**2, "expon", args=(0.0, 2.0)).pvalue > 1e-4
  assert stats.kstest(np.arctan2(z1, z0), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-4


def test_box_muller_transform_matches_float64():
  # The float32 transform (polynomial cos/sin, octant reflections) equals Box–Muller computed in
  # float64 from the same bits, to a few float32 ulps.
  from rdq.matmul_mc import _box_muller

  rng = np.random.default_rng(0)
  x0, x1 = (rng.integers(0, 2**32, 1 << 16, dtype=np.uint64) for _ in range(2))
  x0[:4] = [0, 511, 2**32 - 1, 2**31]  # the grid's ends and middle
  x1[:8] = np.arange(8)  # every octant at φ ≈ 0
  x1[8:16] = np.arange(8) + (2**32 - 8)  # and at φ ≈ π/4
  got = [np.asarray(v, np.float64) for v in _box_muller(jnp.asarray(x0, jnp.uint32), jnp.asarray(x1, jnp.uint32))]
  r = np.sqrt(-2.0 * np.log(((x0 >> 9) + 0.5) * 2.0**-23))
  phi = ((x1 >> 9) + 0.5) * 2.0**-23 * (np.pi / 4)
  swap = (x1 & 1) == 1
  c, s = np.where(swap, np.sin(phi), np.cos(phi)), np.where(swap, np.cos(phi), np.sin(phi))
  want = [r * np.where(x1 & 2, -c, c), r * np.where(x1 & 4, -s, s)]
  for g, w in zip(got, want):
    assert np.all(np.abs(g - w) <= 4e-7 * np.maximum(np.abs(w), 1.0))
  assert np.isclose(r.max(), np.sqrt(48 * np.log(2.0)), rtol=1e-6)  # the tail cut-off, 5.77σ


def test_bad_arguments_raise_clear_errors():
  import jax

  from rdq.matmul_mc import MatmulSetup, matmul_distortion, matmul_error
  from rdq.quantizers import get

  q = get("int8_row")
  setup = MatmulSetup(16, 2, 2)
  with pytest.raises(TypeError, match=r"quant_a must be a quantizer object, got the string 'nvfp4'"):
    matmul_distortion("nvfp4", q, setup, jax.random.key(0), 4)
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    matmul_distortion(q, q, setup, 0, 4)
  with pytest.raises(ValueError, match="n=True must be a positive integer"):
    MatmulSetup(True, 2, 2)
  with pytest.raises(TypeError, match="A must be a real floating array"):
    matmul_error(jnp.ones((16, 2), jnp.int32), jnp.ones((16, 2)), q, q)
