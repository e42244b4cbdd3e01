"""Tests of universal codebooks (rdq.quantizers.universal): exact Σ-aware encoding against brute
force, Euclidean/lattice agreement at Σ = I, product-codebook SIC, lattice shells, the Monte
Carlo rate gap against closed forms, the learned codebook, and bad input."""

import math

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from rdq import covariance as cov
from rdq.quantizers import DnLattice, E8Lattice, ZnLattice
from rdq.quantizers.universal import (
    Codebook,
    LearnConfig,
    ProductCodebook,
    gaussian_codebook,
    lattice_codebook,
    learn_minimax_codebook,
    leech_codebook,
    rate_gap,
    sphere_codebook,
)


def _brute(points, w, sigma):
  """float64 (w−c)ᵀΣ(w−c) for every pair: (B, K)."""
  e = np.asarray(w, np.float64)[:, None, :] - np.asarray(points, np.float64)[None]
  return np.einsum("bki,ij,bkj->bk", e, np.asarray(sigma, np.float64), e)


def _random_psd(rng, n, rank=None):
  a = rng.standard_normal((n, rank or n)) * rng.lognormal(0, 1.5, rank or n)
  return (a @ a.T).astype(np.float32)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([2, 3, 4]), chunk=st.sampled_from([7, 64, 4096]),
       singular=st.booleans())
def test_encode_is_exact_vs_brute_force(seed, n, chunk, singular):
  rng = np.random.default_rng(seed)
  k = 200
  cb = Codebook(jnp.asarray(rng.standard_normal((k, n)), jnp.float32), chunk=chunk)
  sigma = _random_psd(rng, n, rank=n - 1 if singular else None)
  w = rng.standard_normal((64, n)).astype(np.float32)
  idx = np.asarray(cb.encode(w, sigma))
  d = _brute(cb.points, w, sigma)
  best = d.min(axis=1)
  chosen = d[np.arange(len(w)), idx]
  scale = np.abs(np.asarray(sigma)).max() * (1 + np.sum(np.asarray(w) ** 2, 1)) * 1e-5
  assert np.all(chosen <= best + scale)  # never worse than the optimum beyond float32 round-off
  srt = np.sort(d, axis=1)
  clear = srt[:, 1] - srt[:, 0] > 10 * scale
  np.testing.assert_array_equal(idx[clear], d.argmin(axis=1)[clear])


def test_identity_is_euclidean_and_lattice_closest_point(key):
  # Σ = I: Euclidean nearest codeword; for an unrotated lattice ball and w well inside it,
  # that is the Conway–Sloane closest lattice point.
  for lat, rate in ((E8Lattice(), 1.0), (DnLattice(4), 2.0), (ZnLattice(3), 2.0)):
    cb = lattice_codebook(key, lat, rate, rotate=False)
    pts = np.asarray(cb.points)
    # the codebook is the lattice scaled by a: recover a from the minimal norm
    norms = np.sqrt(np.sum(pts**2, 1))
    a = np.min(norms[norms > 1e-6]) / np.linalg.norm(lat.minimal_vectors()[0])
    w = jax.random.uniform(jax.random.fold_in(key, lat.dim), (256, lat.dim), minval=-0.6, maxval=0.6)
    idx = cb.encode(w * a, jnp.eye(lat.dim))
    np.testing.assert_allclose(np.asarray(cb.points)[np.asarray(idx)] / a, lat.closest_point(w), atol=1e-5)
    np.testing.assert_array_equal(idx, _brute(pts, np.asarray(w) * a, np.eye(lat.dim)).argmin(1))


def test_batch_of_sigma_chunks_scale_and_equivariance(key):
  n = 4
  cb = gaussian_codebook(key, n, 2.0, chunk=64)  # 256 points, 4 chunks
  sig = cov.sample(cov.PowerLaw(n), key, jnp.array([0.0, 1.0, 3.0]))
  w = jax.random.normal(jax.random.fold_in(key, 1), (5, 7, n))
  idx = cb.encode(w, sig)
  assert idx.shape == (3, 5, 7) and idx.dtype == jnp.int32
  for i in range(3):
    np.testing.assert_array_equal(idx[i], cb.encode(w, sig[i]))
    np.testing.assert_array_equal(idx[i], Codebook(cb.points, chunk=4096).encode(w, sig[i]))
    np.testing.assert_array_equal(idx[i], cb.encode(w, 7.0 * sig[i]))  # Σ → aΣ: same codeword
  # rotating w, C and Σ together changes nothing
  q = cov.haar_orthogonal(jax.random.fold_in(key, 2), n)
  rot = Codebook(cb.points @ q.T, chunk=64)
  np.testing.assert_array_equal(rot.encode(w @ q.T, q @ sig[2] @ q.T), idx[2])
  # scale τ: encoding with scale = encoding the scaled codebook
  np.testing.assert_array_equal(cb.encode(w, sig[1], scale=1.7), cb.scaled(1.7).encode(w, sig[1]))
  np.testing.assert_allclose(cb.quantize(w, sig[1], scale=1.7), cb.scaled(1.7).decode(cb.scaled(1.7).encode(w, sig[1])))


def test_sigma_aware_beats_euclidean(key):
  n = 4
  cb = gaussian_codebook(key, n, 2.0)
  sig = cov.Spiked(n, k=1)(key, 30.0)
  w = jax.random.normal(jax.random.fold_in(key, 3), (4096, n))
  e_sig = w - cb.quantize(w, sig)
  e_euc = w - cb.quantize(w, jnp.eye(n))
  d = lambda e: float(jnp.mean(jnp.sum((e @ sig) * e, -1)))
  assert d(e_sig) < 0.8 * d(e_euc)


def test_jit_and_pytree(key):
  cb = gaussian_codebook(key, 3, 2.0)
  leaves = jax.tree_util.tree_leaves(cb)
  assert len(leaves) == 1 and leaves[0].shape == (64, 3)
  out = jax.jit(lambda c: c.points * 2)(cb)
  np.testing.assert_allclose(out, cb.points * 2)
  assert cb.rate(()).nominal == pytest.approx(2.0) and cb.rate(()).effective == pytest.approx(2.0)


def test_product_sic_exact_for_block_diagonal_and_never_beats_joint(key):
  block = gaussian_codebook(key, 2, 2.0)  # 16 points
  prod = ProductCodebook(block, num_blocks=2)
  joint = prod.materialize()
  assert joint.num_points == 256 and prod.rate_bits == pytest.approx(2.0)
  w = jax.random.normal(jax.random.fold_in(key, 4), (512, 4))
  rng = np.random.default_rng(0)
  bd = np.zeros((4, 4), np.float32)
  bd[:2, :2] = _random_psd(rng, 2)
  bd[2:, 2:] = _random_psd(rng, 2)
  j_prod = prod.encode(w, bd)
  np.testing.assert_allclose(prod.decode(j_prod), joint.quantize(w, bd), atol=1e-6)
  full = _random_psd(rng, 4)
  dist = lambda x: np.einsum("bi,ij,bj->b", np.asarray(w - x), full, np.asarray(w - x))
  d_sic, d_joint = dist(prod.quantize(w, full)), dist(joint.quantize(w, full))
  assert np.all(d_sic >= d_joint - 1e-4 * (1 + d_joint))
  assert d_sic.mean() > d_joint.mean()  # SIC is a heuristic on a full Σ


def test_lattice_codebook_shells(key):
  cb = lattice_codebook(key, E8Lattice(), 1.0, rotate=False)
  pts = np.asarray(cb.points)
  assert pts.shape == (256, 8)
  sq = np.round(np.sum(pts**2, 1) / np.min(np.sum(pts**2, 1)[np.sum(pts**2, 1) > 1e-9]), 4)
  # origin, the 240 minimal vectors (norm² 2), then 15 of the 2160 vectors of norm² 4
  assert np.sum(sq == 0) == 1 and np.sum(sq == 1) == 240 and np.sum(sq == 2) == 15
  assert np.mean(np.sum(pts**2, 1)) / 8 == pytest.approx(1 - 2**-2, rel=1e-5)  # Shannon power
  rot = lattice_codebook(key, E8Lattice(), 1.0)
  np.testing.assert_allclose(np.sort(np.sum(np.asarray(rot.points) ** 2, 1)), np.sort(np.sum(pts**2, 1)), rtol=1e-4)
  assert lattice_codebook(key, DnLattice(4), 2.0).num_points == 256
  sph = sphere_codebook(key, 5, 2.0)
  np.testing.assert_allclose(jnp.linalg.norm(sph.points, axis=1), math.sqrt(5 * 0.9375), rtol=1e-5)


def test_leech_codebook_is_the_first_shell(key):
  """Origin + 196 560 minimal vectors of Λ24 on one sphere, pairwise angles ≥ 60° (kissing
  configuration), Shannon power at R = log2(196561)/24; the rotation keeps the Gram matrix."""
  cb = leech_codebook(key, rotate=False)
  pts = np.asarray(cb.points, np.float64)
  assert pts.shape == (196561, 24)
  assert cb.rate_bits == pytest.approx(math.log2(196561) / 24)
  sq = np.sum(pts**2, 1)
  assert np.sum(sq < 1e-9) == 1
  r2 = sq[sq > 1e-9]
  np.testing.assert_allclose(r2, r2[0], rtol=1e-5)
  assert np.mean(sq) / 24 == pytest.approx(1 - 2 ** (-2 * cb.rate_bits), rel=1e-5)
  some = pts[1:: 196560 // 48][:48]
  cos = (some @ pts[1:].T) / r2[0]
  cos = np.sort(cos, axis=1)[:, :-1]  # drop each vector's product with itself
  assert cos.max() <= 0.5 + 1e-5 and np.isclose(cos.max(), 0.5)  # min angle exactly 60°
  np.testing.assert_allclose(np.unique(np.round(cos * 4)), [-4, -2, -1, 0, 1, 2])  # ⟨u,v⟩ ∈ {0, ±1, ±2, −4} (norm 4)
  rot = np.asarray(leech_codebook(key).points, np.float64)
  np.testing.assert_allclose(rot[:64] @ rot[:64].T, pts[:64] @ pts[:64].T, atol=1e-4)


def test_rate_gap_one_bit_scalar_closed_form(key):
  # n = 1, C = {±a}: D = 1 − 2a√(2/π) + a² (half-normal mean); a = √(2/π) gives 1 − 2/π.
  a = math.sqrt(2 / math.pi)
  cb = Codebook(jnp.array([[-a], [a]], jnp.float32))
  sig = jnp.array([[[1.0]], [[3.0]]])
  g = rate_gap(cb, sig, key, num_samples=20000, batch=1000)
  d_true = 1 - 2 / math.pi
  assert bool(np.all(g.distortion.contains(np.array([d_true, 3 * d_true]), 0.99)))
  np.testing.assert_allclose(g.gap_bits, 1 - 0.5 * math.log2(1 / d_true), atol=4 * g.gap_stderr_bits.max())
  np.testing.assert_allclose(g.limit_distortion, [0.25, 0.75], rtol=1e-5)


def test_rate_gap_never_below_the_converse_and_scale_selection(key):
  # Shannon's converse holds at every n: gap ≥ 0 up to MC error. Scale selection can only help.
  n = 4
  cb = gaussian_codebook(key, n, 1.0)
  sig = jnp.concatenate([cov.sample(cov.PowerLaw(n), key, jnp.array([0.0, 2.0])),
                         cov.sample(cov.Spiked(n, k=1), key, jnp.array([100.0]))])
  g1 = rate_gap(cb, sig, key, num_samples=2048)
  g2 = rate_gap(cb, sig, key, num_samples=2048, scales=(0.7, 1.0, 1.4), num_select=512)
  assert np.all(g1.gap_bits + 3 * g1.gap_stderr_bits >= 0)
  assert np.all(g2.gap_bits <= g1.gap_bits + 3 * np.hypot(g1.gap_stderr_bits, g2.gap_stderr_bits))
  assert np.all(np.min(np.abs(np.asarray(g2.scale)[:, None] - np.array([0.7, 1.0, 1.4])), axis=1) < 1e-6)
  np.testing.assert_array_equal(g1.scale, 1.0)


def test_learned_codebook_lowers_worst_case_gap(key):
  n = 2
  init = gaussian_codebook(key, n, 1.5)  # 8 points
  train = jnp.concatenate([cov.sample(cov.PowerLaw(n), key, jnp.array([0.0, 1.0, 3.0])),
                           cov.sample(cov.Spiked(n, k=1), key, jnp.array([10.0, 1000.0]))])
  cfg = LearnConfig(steps=150, batch=256, sigma_batch=0)
  learned, hist = learn_minimax_codebook(init, train, jax.random.key(1), cfg)
  assert learned.points.shape == init.points.shape and hist.max_gap_bits.shape == (150,)
  k_eval = jax.random.key(2)
  before = rate_gap(init, train, k_eval, num_samples=8192, batch=1024)
  after = rate_gap(learned, train, k_eval, num_samples=8192, batch=1024)
  i, j = np.argmax(before.gap_bits), np.argmax(after.gap_bits)
  se = math.hypot(before.gap_stderr_bits[i], after.gap_stderr_bits[j])
  assert after.gap_bits[j] < before.gap_bits[i] - 3 * se
  learned2, _ = learn_minimax_codebook(init, train, jax.random.key(1), cfg)
  np.testing.assert_array_equal(learned.points, learned2.points)  # deterministic


def test_bad_input(key):
  cb = gaussian_codebook(key, 4, 1.0)
  w = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match="positive semidefinite"):
    cb.encode(w, jnp.diag(jnp.array([1.0, 1.0, -0.5, 1.0])))
  with pytest.raises(ValueError, match="symmetric"):
    cb.encode(w, jnp.eye(4).at[0, 1].set(1.0))
  with pytest.raises(ValueError, match=r"sigma must be \(4, 4\)"):
    cb.encode(w, jnp.eye(5))
  with pytest.raises(ValueError, match="last axis of length n=4"):
    cb.encode(jnp.zeros((3, 5)), jnp.eye(4))
  with pytest.raises(ValueError, match="rate_bits"):
    gaussian_codebook(key, 4, 0.0)
  with pytest.raises(ValueError, match="rate_bits"):
    sphere_codebook(key, 4, -1.0)
  with pytest.raises(ValueError, match="ProductCodebook"):
    gaussian_codebook(key, 16, 2.0)  # 2^32 points: refused before allocating
  with pytest.raises(ValueError, match="integer number of points"):
    gaussian_codebook(key, 4, 0.6)
  with pytest.raises(ValueError, match="smaller chunk"):
    Codebook(cb.points, chunk=1 << 20).encode(jnp.zeros((1 << 10, 4)), jnp.eye(4), max_bytes=1 << 20)
  with pytest.raises(ValueError, match="block SIC"):
    ProductCodebook(gaussian_codebook(key, 8, 2.0), 2).materialize()
  with pytest.raises(TypeError, match="ZnLattice, DnLattice or E8Lattice"):
    lattice_codebook(key, "e8", 1.0)
  with pytest.raises(ValueError, match="K ≥ 2 codewords"):
    Codebook(jnp.zeros((1, 4)))
  with pytest.raises(ValueError, match="steps"):
    LearnConfig(steps=0)


def test_speed_helpers_are_exact(key):
  """The compile-saving helpers of the Monte Carlo give the same numbers as the direct calls."""
  from rdq.quantizers.universal_codebook import _draws, _innermost, _nearest, _nearest_scales

  # draws from one program per power-of-two length = jax.random.<kind> on the shape, bitwise
  for shape in ((3, 5), (256, 8), (1025,)):
    np.testing.assert_array_equal(_draws(key, shape, "normal"), np.asarray(jax.random.normal(key, shape, jnp.float32)))
    np.testing.assert_array_equal(_draws(key, shape, "uniform"), np.asarray(jax.random.uniform(key, shape, jnp.float32)))
  # the innermost k points by (norm, tie) = the first k of a full lexsort
  rng = np.random.default_rng(0)
  norms, tie = rng.integers(0, 6, 500).astype(np.float64), rng.random(500)
  for k in (1, 37, 500):
    np.testing.assert_array_equal(_innermost(norms, tie, k), np.lexsort((tie, norms))[:k])
  # every scale in one pass: the Σ-nearest codeword of τ·C, as _nearest on the scaled points
  pts = jax.random.normal(key, (300, 4))
  sig = jnp.asarray(_random_psd(rng, 4))
  w = jax.random.normal(jax.random.fold_in(key, 1), (50, 4))
  taus = jnp.asarray([0.5, 1.0, 2.0], jnp.float32)
  got = np.asarray(_nearest_scales(pts, sig, w, taus, 128))
  for j, t in enumerate(taus):
    want = np.asarray(_nearest(pts * t, sig, w, 128))
    d = _brute(pts * t, w, sig)
    rows = np.arange(len(w))
    np.testing.assert_allclose(d[rows, got[j]], d[rows, want], rtol=1e-5)  # same minimum (ties up to rounding)
    assert np.mean(got[j] == want) > 0.95
