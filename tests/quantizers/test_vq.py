"""VQ quantizer: weighted k-means (monotone objective, determinism, NumPy E/M steps), INT8 codebooks, rate, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdq import quantizers as Q
from rdq.quantizers.vq import (
  assign,
  kmeanspp_init,
  quantize_codebook_int8,
  weighted_kmeans,
  weighted_objective,
)

# float32 sums of ~10³ positive terms: the objective may wobble by a few ulps when an
# assignment does not change; 1e-6 relative is ~10 ulps of float32.
F32_SLACK = 1e-6


def _data(seed, n, d):
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (n, d)) * jnp.array([1.0, 0.3, 2.0, 0.7, 1.0, 1.0, 1.0, 1.0])[:d]
  w = jnp.exp(jax.random.normal(kw, (n, d)))
  return x, w


@functools.partial(jax.jit, static_argnums=3)
def _kmeans12(key, x, w, k):
  return weighted_kmeans(key, x, k, w, iters=12)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), d=st.sampled_from([1, 4]), k=st.sampled_from([2, 16]))
def test_weighted_objective_never_increases(seed, d, k):
  x, w = _data(seed, 256, d)
  res = _kmeans12(jax.random.key(seed), x, w, k)
  obj = np.asarray(res.objective, np.float64)
  assert np.all(obj[1:] <= obj[:-1] * (1 + F32_SLACK)), np.diff(obj)
  assert obj[-1] < obj[0]  # EM did something
  np.testing.assert_allclose(float(weighted_objective(x, res.codebook, res.idx, w)), obj[-1], rtol=1e-5)


def test_full_metric_objective_never_increases_and_matches_diag():
  x, w = _data(3, 300, 2)
  key = jax.random.key(1)
  t_diag = jax.vmap(jnp.diag)(jnp.sqrt(w))
  a = weighted_kmeans(key, x, 8, w, iters=10)
  b = weighted_kmeans(key, x, 8, transforms=t_diag, iters=10)
  np.testing.assert_array_equal(a.idx, b.idx)  # diagonal T = √w is the weighted case
  np.testing.assert_allclose(a.codebook, b.codebook, rtol=2e-5, atol=1e-6)
  l = jax.random.normal(jax.random.key(2), (300, 2, 2)) * 0.3 + jnp.eye(2)
  c = weighted_kmeans(key, x, 8, transforms=l, iters=15)
  obj = np.asarray(c.objective, np.float64)
  assert np.all(obj[1:] <= obj[:-1] * (1 + F32_SLACK))


def test_em_steps_match_numpy():
  """One E- and M-step by hand (NumPy float64) from the same seeding."""
  x, w = _data(5, 200, 2)
  k = 8
  cb0 = kmeanspp_init(jax.random.key(0), x, k, w)
  res = weighted_kmeans(jax.random.key(0), x, k, w, iters=1)
  xn, wn, c = (np.asarray(a, np.float64) for a in (x, w, cb0))
  idx0 = np.argmin(((xn[:, None] - c[None]) ** 2 * wn[:, None]).sum(-1), axis=1)
  c1 = c.copy()
  for j in range(k):
    sel = idx0 == j
    if sel.any():
      c1[j] = (wn[sel] * xn[sel]).sum(0) / wn[sel].sum(0)
  idx1 = np.argmin(((xn[:, None] - c1[None]) ** 2 * wn[:, None]).sum(-1), axis=1)
  np.testing.assert_allclose(res.codebook, c1, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(res.idx, idx1)


def test_deterministic_given_key():
  x, w = _data(7, 512, 2)
  run = jax.jit(lambda key: weighted_kmeans(key, x, 16, w, iters=5).codebook)
  a, b, c = run(jax.random.key(3)), run(jax.random.key(3)), run(jax.random.key(4))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_kmeanspp_picks_distinct_data_points():
  x, _ = _data(11, 64, 2)
  cb = np.asarray(kmeanspp_init(jax.random.key(0), x, 16))
  xn = np.asarray(x)
  for c in cb:  # every seed is a data vector, and no vector is picked twice
    assert np.min(np.abs(xn - c).sum(1)) == 0
  assert len({tuple(c) for c in cb}) == 16


@pytest.mark.parametrize("d", [1, 2, 4, 8])
@pytest.mark.parametrize("metric", ["none", "diag", "full"])
def test_loop_assignment_is_the_nearest_centroid(d, metric):
  """The E-step's loop over centroids picks a centroid whose direct-form distance is the minimum (to float32)."""
  kx, kc, kt = jax.random.split(jax.random.key(d), 3)
  x = jax.random.normal(kx, (2000, d))
  cb = jax.random.normal(kc, (64, d))
  w = jnp.exp(jax.random.normal(kt, (2000, d))) if metric == "diag" else None
  t = jax.random.normal(kt, (2000, d, d)) * 0.3 + jnp.eye(d) if metric == "full" else None
  fast = np.asarray(assign(x, cb, w, t))
  from rdq.quantizers.vq import weighted_sq_dist

  dist32 = weighted_sq_dist(x, cb, w, t)  # the (N, k) matrix in the same direct form
  dist = np.asarray(dist32, np.float64)
  best = dist.min(axis=1)
  got = dist[np.arange(2000), fast]
  assert np.all(got <= best * (1 + 1e-5) + 1e-6)
  assert np.mean(fast == np.asarray(jnp.argmin(dist32, axis=1))) > 0.99


def test_kmeanspp_second_seed_follows_d_squared():
  """P(second seed = j | first = i) = D(x_j)²/Σ D² (Arthur & Vassilvitskii): frequencies over 4000 keys."""
  x = jnp.array([[0.0], [1.0], [3.0], [10.0]])
  seeds = jax.vmap(lambda k: kmeanspp_init(k, x, 2))(jax.random.split(jax.random.key(0), 4000))
  pos = {0.0: 0, 1.0: 1, 3.0: 2, 10.0: 3}
  pairs = np.array([[pos[float(a)], pos[float(b)]] for a, b in np.asarray(seeds)[:, :, 0]])
  xs = np.array([0.0, 1.0, 3.0, 10.0])
  for i in range(4):
    sel = pairs[pairs[:, 0] == i, 1]
    assert 800 < sel.size < 1200  # first seed uniform
    p = (xs - xs[i]) ** 2 / np.sum((xs - xs[i]) ** 2)
    freq = np.bincount(sel, minlength=4) / sel.size
    assert np.all(np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / sel.size) + 1e-12), (i, freq, p)


def test_kmeanspp_degenerate_data_is_finite():
  x = jnp.zeros((32, 2))
  res = weighted_kmeans(jax.random.key(0), x, 4, iters=3)
  assert bool(jnp.all(jnp.isfinite(res.codebook))) and float(res.objective[-1]) == 0.0


def test_int8_codebook_error_at_most_half_scale():
  cb = jax.random.normal(jax.random.key(0), (5, 3, 16, 2)) * jnp.array([1e-3, 1.0, 50.0])[None, :, None, None]
  cq, s = quantize_codebook_int8(cb)
  assert s.shape == (5, 3)
  err = np.abs(np.asarray(cq - cb))
  assert np.all(err <= np.asarray(s)[..., None, None] / 2 + 1e-12)
  z = np.asarray(cq) / np.asarray(s)[..., None, None]
  np.testing.assert_allclose(z, np.round(z), atol=1e-4)
  assert np.abs(np.round(z)).max() <= 127
  zero_q, zero_s = quantize_codebook_int8(jnp.zeros((1, 4, 1)))
  assert float(zero_s[0]) == 0.0 and bool(jnp.all(zero_q == 0))


@pytest.mark.parametrize("d,bits,g,fmt", [(1, 2, 64, "fp16"), (2, 3, 256, "int8"), (4, 1, 256, "fp32")])
def test_quantizer_roundtrip_and_rate(d, bits, g, fmt):
  q = Q.VQQuantizer(dim=d, bits=bits, group_size=g, iters=8, codebook_format=fmt)
  x = jax.random.normal(jax.random.key(1), (3, 512))
  code = q.encode(x, jax.random.key(2))
  np.testing.assert_array_equal(q.decode(code), q.quantize(x, jax.random.key(2)))
  assert code.indices.shape == (3, 512 // d) and code.codebooks.shape == (3, 512 // g, 2 ** (d * bits), d)
  assert int(code.indices.max()) < 2 ** (d * bits)
  k = 2 ** (d * bits)
  b_c = {"fp16": 16, "fp32": 32, "int8": 8}[fmt]
  r = q.rate((3, 512))
  assert r.nominal == bits and r.side == pytest.approx((k * d * b_c + (16 if fmt == "int8" else 0)) / g)
  # every vector is at its nearest stored centroid
  v = np.asarray(x).reshape(3, -1, g // d, d)
  cb = np.asarray(code.codebooks)
  dist = ((v[:, :, :, None, :] - cb[:, :, None, :, :]) ** 2).sum(-1)
  np.testing.assert_array_equal(np.asarray(code.indices).reshape(dist.shape[:3]), dist.argmin(-1))


def test_vq_beats_scalar_at_same_rate():
  """2-D VQ of iid N(0,1) at 2 bits/value is below the 2-bit Lloyd–Max MSE 0.1175 (papers.md §6)."""
  x = jax.random.normal(jax.random.key(0), (2, 4096))
  mse1 = float(jnp.mean((Q.VQQuantizer(1, 2, 4096, iters=20).quantize(x) - x) ** 2))
  mse2 = float(jnp.mean((Q.VQQuantizer(2, 2, 4096, iters=20).quantize(x) - x) ** 2))
  assert mse1 == pytest.approx(0.1175, rel=0.05)
  assert mse2 < mse1


def test_bad_input():
  with pytest.raises(ValueError, match="exceeds"):
    Q.VQQuantizer(dim=2, bits=4, group_size=64)  # k = 256 > 32 vectors
  with pytest.raises(ValueError, match="divide"):
    Q.VQQuantizer(dim=4, bits=1, group_size=66)
  with pytest.raises(ValueError, match="integer"):
    Q.VQQuantizer(dim=2, bits=1.25, group_size=64)
  with pytest.raises(ValueError, match="dim"):
    Q.VQQuantizer(dim=3, bits=2, group_size=96)
  with pytest.raises(ValueError, match="group_size"):
    Q.VQQuantizer(dim=1, bits=2, group_size=64).quantize(jnp.ones((2, 100)))
  with pytest.raises(ValueError, match="non-finite"):
    Q.VQQuantizer(dim=1, bits=2, group_size=8).encode(jnp.array([1.0, jnp.nan] * 4))
  with pytest.raises(ValueError, match="exceeds"):
    weighted_kmeans(jax.random.key(0), jnp.ones((4, 2)), 8)
  with pytest.raises(ValueError, match="not both"):
    weighted_kmeans(jax.random.key(0), jnp.ones((8, 2)), 2, jnp.ones((8, 2)), transforms=jnp.ones((8, 2, 2)))


def test_registry_names():
  q = Q.get("vq2_b3_g256_int8")
  assert q == Q.VQQuantizer(dim=2, bits=3, group_size=256, codebook_format="int8")
  assert q.name == "vq2_b3_g256_int8"
  assert Q.get("vq4_b1_g256").rate((1, 256)).effective == pytest.approx(1 + 16 * 4 * 16 / 256)
  assert int(assign(jnp.array([[0.9]]), jnp.array([[0.0], [1.0]]))[0]) == 1
