"""Tests for rdq.quantizers.nested: Voronoi codes, multi-β nested-lattice quantizers, nested_dot."""

import functools
import inspect
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rdq.quantizers as Q
from rdq.limits import generic_matmul_rate
from rdq.limits.lattice_constants import PUBLISHED_G
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantizers.lattice import DnDualLattice, DnLattice, E8Lattice, ZnLattice
from rdq.quantizers.leech import LeechLattice
from rdq.quantizers.nested import (
    NestedLatticeQuantizer,
    VoronoiCode,
    grid_stats,
    nested_dot,
    search_beta_sets,
    search_betas,
    search_betas_mmse,
    search_encoder_scales,
    search_from_stats,
)

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LATTICES = [ZnLattice(1), DnLattice(4), DnDualLattice(3), E8Lattice()]


@functools.cache
def _jit_function(f):
  return jax.jit(f)


@functools.cache
def _jit_method(obj, func):
  return jax.jit(functools.partial(func, obj))


def _jit(f):
  """One jitted program per function, or per (instance, method) for a bound method: bound
  methods compare their instance by identity, so keying on them would recompile for every new
  but equal (frozen, hashable) code or quantizer, e.g. once per hypothesis example."""
  if inspect.ismethod(f):
    return _jit_method(f.__self__, f.__func__)
  return _jit_function(f)


@pytest.mark.parametrize("lat,q", [(ZnLattice(1), 3), (DnLattice(4), 3), (DnDualLattice(3), 16), (E8Lattice(), 3),
                                   (E8Lattice(), 16)], ids=["z-3", "d4-3", "d3star-16", "e8-3", "e8-16"])
@SETTINGS
@given(data=st.data())
def test_voronoi_encode_decode_roundtrip_on_codewords(lat, q, data):
  vc = VoronoiCode(lat, q)
  c = data.draw(hnp.arrays(np.int64, (5, lat.dim), elements=st.integers(0, q - 1)))
  p = _jit(vc.decode)(jnp.asarray(c))
  np.testing.assert_array_equal(np.asarray(_jit(vc.encode)(p)), c)
  # The representative is a lattice point congruent to cB mod qΛ, inside the closed Voronoi
  # cell of qΛ: no coarse neighbour q·v (v a minimal vector) is strictly closer than 0.
  # (On the cell boundary, with q not a power of two, p/q is inexact in float, so
  # closest_point(p/q) = 0 is not required there.)
  p = np.asarray(p, np.float64)
  diff = p - np.asarray(lat.from_coordinates(jnp.asarray(c)), np.float64)
  z = diff @ np.linalg.inv(lat.generator()) / q
  np.testing.assert_allclose(z, np.round(z), atol=1e-6)
  to_coarse = np.sum((p[:, None, :] - q * lat.minimal_vectors()[None]) ** 2, -1)
  assert np.all(to_coarse >= np.sum(p**2, -1)[:, None] - 1e-6)


@pytest.mark.parametrize("lat", LATTICES, ids=lambda l: l.name)
def test_voronoi_code_is_a_bijection(lat):
  # All q^d codewords decode to distinct points (the code has exactly q^d words).
  q = 2 if lat.dim > 4 else 5
  grids = np.stack(np.meshgrid(*[np.arange(q)] * lat.dim, indexing="ij"), -1).reshape(-1, lat.dim)
  pts = np.asarray(VoronoiCode(lat, q).decode(jnp.asarray(grids)))
  assert len({tuple(p) for p in pts}) == q**lat.dim


def _gauss(shape, seed=0):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


NAMES = ["z_nested_q16", "e8_nested_q16", "e8_nested_q4_k2_norm", "d5star_nested_q8_k2", "e8_nested_q14_k4_first"]


@pytest.mark.parametrize("name", NAMES)
def test_decode_encode_equals_quantize(name):
  # Under jit (compiled once per quantizer; the registry contract suite checks jit == eager).
  qz = Q.get(name)
  x = _gauss((3, 5, 80 if qz.dim == 5 else 64)) * 1.7
  code = _jit(qz.encode)(x)
  xq = _jit(qz.quantize)(x)
  np.testing.assert_array_equal(np.asarray(_jit(qz.decode)(code)), np.asarray(xq))
  assert xq.shape == x.shape and xq.dtype == x.dtype
  assert code.codes.dtype == jnp.uint8 and int(jnp.max(code.codes)) < qz.q
  assert code.beta_index.shape == x.shape[:-1] + (x.shape[-1] // qz.dim,)
  assert int(jnp.max(code.beta_index)) < qz.k
  # Least-error selection is idempotent on its own output (β_j reproduces it exactly) when no
  # per-vector scale changes the input; "first" selection is not (a smaller β may fit it).
  if qz.norm is None and qz.beta_select == "mse":
    np.testing.assert_array_equal(np.asarray(_jit(qz.quantize)(xq)), np.asarray(xq))
  assert hash(qz) == hash(Q.get(name))
  # bf16 input keeps its dtype.
  assert _jit(qz.quantize)(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


def test_without_overload_error_is_granular():
  # With a huge coarse cell nothing overloads: the error is the fine lattice's rounding error,
  # so the quantizer equals β·Q_Λ(x/β), and its MSE per entry is G·β²·V^{2/d}.
  lat = E8Lattice()
  beta = 0.05
  qz = NestedLatticeQuantizer(lat, 256, (beta,))
  x = _gauss((512, 8))
  np.testing.assert_array_equal(np.asarray(_jit(qz.quantize)(x)), np.asarray(beta * lat.closest_point(x / beta)))


def test_mse_selection_is_best_single_beta_per_block():
  betas = (0.22, 0.3, 0.48)
  multi = NestedLatticeQuantizer(E8Lattice(), 16, betas)
  x = _gauss((512, 8)) * 1.3
  err_multi = jnp.sum((_jit(multi.quantize)(x) - x) ** 2, -1)
  errs = jnp.stack([jnp.sum((_jit(NestedLatticeQuantizer(E8Lattice(), 16, (b,)).quantize)(x) - x) ** 2, -1)
                    for b in betas])
  np.testing.assert_allclose(np.asarray(err_multi), np.asarray(jnp.min(errs, 0)), rtol=1e-6, atol=1e-7)
  first = NestedLatticeQuantizer(E8Lattice(), 16, betas, beta_select="first")
  assert float(jnp.mean(jnp.sum((_jit(first.quantize)(x) - x) ** 2, -1))) >= float(jnp.mean(err_multi))


def test_dither_shared_key_and_unbiased_error():
  # Subtractive dither: with a single β and no overload the error is uniform on the fine
  # cell, independent of x: mean 0 and MSE per entry G(E8)·β². Encoder and decoder share
  # the key; without one the quantizer refuses to run.
  beta = 0.05
  fine = NestedLatticeQuantizer(E8Lattice(), 256, (beta,), dither=True)
  x = _gauss((256, 64))
  key = jax.random.key(7)
  xq = _jit(fine.quantize)(x, key)
  np.testing.assert_array_equal(np.asarray(_jit(fine.decode)(_jit(fine.encode)(x, key), key)), np.asarray(xq))
  with pytest.raises(ValueError, match="PRNG key"):
    fine.quantize(x)
  err = (xq - x) / beta
  mse = float(jnp.mean(err**2))
  se = float(jnp.std(jnp.sum(err.reshape(-1, 8) ** 2, -1) / 8) / math.sqrt(err.size / 8))
  assert abs(mse - PUBLISHED_G["e8"]) < 4 * se
  assert abs(float(jnp.mean(err))) < 4 * float(jnp.std(err)) / math.sqrt(err.size)
  # A different key gives a different quantization (the dither is really used).
  assert not np.array_equal(np.asarray(_jit(fine.quantize)(x, jax.random.key(8))), np.asarray(xq))


def test_rate_counts_side_information():
  assert Q.get("e8_nested_q16_k1").rate((8, 256)) == (4.0, 0.0)
  assert Q.get("e8_nested_q16_k4").rate((8, 256)) == (4.0, 0.25)
  assert Q.get("d4_nested_q8_k2").rate((8, 256)) == (3.0, 0.25)
  assert Q.get("e8_nested_q16_k4_norm").rate((8, 256)).effective == 4.0 + 0.25 + 16 / 256
  assert Q.get("e8_nested_q16_k4_norm_fp32").rate((8, 128)).effective == 4.0 + 0.25 + 32 / 128
  # Non-powers of two: the joint code of one vector needs ⌈n log2 q + (n/d) log2 k⌉ bits.
  r = Q.get("e8_nested_q14_k3").rate((2, 64))
  assert r.nominal == math.log2(14)
  assert math.isclose(r.effective * 64, math.ceil(64 * math.log2(14) + 8 * math.log2(3)))
  assert r.side >= 8 * math.log2(3) / 64


def test_nested_dot_from_codes_matches_decode_then_dot():
  qa = Q.get("e8_nested_q16_k2_norm")  # mixed lattices are fine if the block lengths agree
  a, b = _gauss((6, 64), 1) * 2, _gauss((5, 64), 2)
  qb = Q.get("d8_nested_q8_k2")
  ca, cb = _jit(qa.encode)(a), _jit(qb.encode)(b)
  with pytest.raises(ValueError, match="block lengths"):
    nested_dot(qa, ca, Q.get("d4_nested_q8_k2"), cb)
  got = jax.jit(nested_dot, static_argnums=(0, 2))(qa, ca, qb, cb)
  want = _jit(qa.decode)(ca) @ _jit(qb.decode)(cb).T
  assert got.shape == (6, 5)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def test_search_betas_improves_on_single_beta():
  lat = E8Lattice()
  grid = (0.3, 1.5, 24)
  (b1,), mse1 = search_betas(lat, 8, 1, jax.random.key(0), num_blocks=2048, grid=grid)
  b2, mse2 = search_betas(lat, 8, 2, jax.random.key(0), num_blocks=2048, grid=grid)
  assert len(b2) == 2 and b2[0] < b2[1]
  assert mse2 < mse1
  # The tabulated set is no worse than the single best β on fresh samples.
  x = _gauss((8192, 8), 9)
  mse_tab = float(jnp.mean((_jit(Q.get("e8_nested_q8_k2").quantize)(x) - x) ** 2))
  mse_one = float(jnp.mean((_jit(NestedLatticeQuantizer(lat, 8, (b1,)).quantize)(x) - x) ** 2))
  assert mse_tab < mse_one


def test_search_beta_sets_equals_search_betas():
  lat, grid = E8Lattice(), (0.3, 1.5, 16)
  sets = search_beta_sets(lat, 8, (1, 3), jax.random.key(1), num_blocks=512, grid=grid)
  for k in (1, 3):
    assert sets[k] == search_betas(lat, 8, k, jax.random.key(1), num_blocks=512, grid=grid)
  with pytest.raises(ValueError, match="k=0"):
    search_beta_sets(lat, 8, (1, 0), jax.random.key(1), num_blocks=16, grid=grid)


def test_decoder_gains_select_decode_and_dot():
  # With decoder scales γ the block error is min_j ‖y − γ_j v_j‖² (v_j the point at scale β_j),
  # decode multiplies by γ, and nested_dot agrees with decode-then-dot.
  betas, gains = (0.22, 0.3, 0.48), (0.2, 0.29, 0.41)
  qz = NestedLatticeQuantizer(E8Lattice(), 16, betas, gains=gains)
  assert qz.name == "e8_nested_q16_k3_mmse" and qz.recon_scales == gains
  x = _gauss((512, 8)) * 1.3
  code = _jit(qz.encode)(x)
  err = jnp.sum((_jit(qz.decode)(code) - x) ** 2, -1)
  per_j = []
  for b, g in zip(betas, gains):
    v = _jit(NestedLatticeQuantizer(E8Lattice(), 16, (b,)).quantize)(x) / b
    per_j.append(jnp.sum((g * v - x) ** 2, -1))
  np.testing.assert_allclose(np.asarray(err), np.asarray(jnp.min(jnp.stack(per_j), 0)), rtol=1e-5, atol=1e-6)
  a, b2 = _gauss((6, 64), 1), _gauss((5, 64), 2)
  ca, cb = _jit(qz.encode)(a), _jit(qz.encode)(b2)
  want = _jit(qz.decode)(ca) @ _jit(qz.decode)(cb).T
  np.testing.assert_allclose(np.asarray(nested_dot(qz, ca, qz, cb)), np.asarray(want), rtol=1e-5, atol=1e-5)
  for bad, err_t in (((0.2, 0.3), ValueError), ((0.2, -0.3, 0.4), ValueError), (0.3, TypeError)):
    with pytest.raises(err_t, match="gains"):
      NestedLatticeQuantizer(E8Lattice(), 16, betas, gains=bad)


def test_search_betas_mmse_centroids():
  # The Lloyd alternation never loses to the plain search from the same statistics, its γ
  # satisfy the centroid condition (error orthogonal to the reproduction on fresh blocks, within
  # the CI), and the search is reproducible through search_betas_mmse.
  lat, q, grid = E8Lattice(), 8, (0.3, 1.5, 16)
  bg = np.geomspace(*grid[:2], grid[2])
  y = jax.random.normal(jax.random.key(3), (2048, 8), jnp.float32)
  stats = grid_stats(lat, q, bg, y)
  _, _, plain = search_from_stats(bg, *stats, 2, mmse=False)
  betas, gains, mmse = search_from_stats(bg, *stats, 2)
  assert mmse <= plain and all(g < b for b, g in zip(betas, gains))  # the centroids shrink
  assert search_betas_mmse(lat, q, 2, jax.random.key(3), num_blocks=2048, grid=grid)[:2] == (betas, gains)
  qz = NestedLatticeQuantizer(lat, q, betas, gains=gains)
  # On the training blocks the centroid condition holds exactly: Σ⟨y − x̂, x̂⟩ = 0 per index.
  code = _jit(qz.encode)(y)
  xh = _jit(qz.decode)(code)
  ip = np.asarray(jnp.sum((y - xh) * xh, -1), np.float64)
  idx = np.asarray(code.beta_index).ravel()
  for j in range(2):
    assert abs(ip[idx == j].sum()) < 1e-4 * np.abs(ip[idx == j]).sum()
  # On fresh blocks within the CI of both samples (γ is estimated from the 2048 training blocks).
  x = _gauss((16384, 8), 11)
  xh = _jit(qz.quantize)(x)
  ip = np.asarray(jnp.sum((x - xh) * xh, -1), np.float64)
  assert abs(ip.mean()) < 4 * ip.std() * math.sqrt(1 / ip.size + 1 / 2048)
  plain_q = NestedLatticeQuantizer(lat, q, betas)
  ip0 = np.asarray(jnp.sum((x - _jit(plain_q.quantize)(x)) * _jit(plain_q.quantize)(x), -1), np.float64)
  assert ip0.mean() < -4 * ip0.std() / math.sqrt(ip0.size)  # without γ the error leans against x̂
  # Registry: only tabulated (lattice, q, k) have _mmse scales, never with dither.
  with pytest.raises(ValueError, match="no _mmse scales"):
    Q.get("e8_nested_q5_k3_mmse")
  with pytest.raises(ValueError, match="_dither"):
    Q.get("leech_nested_q4_mmse_dither")


def test_leech_voronoi_code():
  # Λ24 / qΛ24: decode then encode is the identity on random codes; decoded points lie in the
  # closed Voronoi cell of qΛ24 as seen from its minimal vectors; the registry name quantizes
  # 24-blocks and its output is a fixed point.
  lat, q = LeechLattice(), 4
  vc = VoronoiCode(lat, q)
  c = np.random.default_rng(0).integers(0, q, size=(64, 24))
  p = _jit(vc.decode)(jnp.asarray(c))
  np.testing.assert_array_equal(np.asarray(_jit(vc.encode)(p)), c)
  p = np.asarray(p, np.float64)
  mv = lat.minimal_vectors()
  assert np.all(p @ mv.T <= q * 16.0 + 1e-6)  # |p|² ≤ |p − q v|² for |v|² = 32
  qz = Q.get("leech_nested_q8")
  assert qz.lattice == lat and qz.k == 8
  x = _gauss((4, 48))
  xq = _jit(qz.quantize)(x)
  np.testing.assert_array_equal(np.asarray(_jit(qz.quantize)(xq)), np.asarray(xq))
  assert float(jnp.mean((x - xq) ** 2)) < 0.03  # 3 bits, k = 8: about 0.0167 (search_betas)
  with pytest.raises(ValueError, match="24"):
    qz.encode(_gauss((2, 32)))


def test_generic_matmul_gap_e8_beats_int4():
  # E8 Voronoi code at ~4.25 bits (k=4 scales) vs INT4 per row (4.125 bits): the nested code
  # is much closer to Γ(R). Measured with the same MC engine as the generic-matmul figure.
  setup = MatmulSetup(256, 16, 16)
  gaps = {}
  for name in ("e8_nested_q16", "int4_row"):
    qz = Q.get(name)
    # 64 samples: a 16-sample CI bound swings by ~0.1 bit with one overload-heavy sample (p ≈ 1 %)
    est = matmul_distortion(qz, qz, setup, jax.random.key(0), num_samples=64, batch=16)
    d_hi = float(est.ci(0.999)[1])
    gaps[name] = qz.rate((16, 256)).effective - float(generic_matmul_rate(d_hi))
  assert gaps["e8_nested_q16"] < 0.45
  assert gaps["e8_nested_q16"] < gaps["int4_row"] - 0.5


def test_bad_input():
  with pytest.raises(ValueError, match="q=1"):
    NestedLatticeQuantizer(E8Lattice(), 1, (0.3,))
  with pytest.raises(TypeError, match="q=4.0"):
    NestedLatticeQuantizer(E8Lattice(), 4.0, (0.3,))
  with pytest.raises(TypeError, match="q=4.5"):
    NestedLatticeQuantizer(E8Lattice(), 4.5, (0.3,))
  with pytest.raises(ValueError, match="strictly increasing"):
    NestedLatticeQuantizer(E8Lattice(), 4, (0.3, 0.2))
  with pytest.raises(ValueError, match="positive"):
    NestedLatticeQuantizer(E8Lattice(), 4, (0.0, 0.2))
  with pytest.raises(ValueError, match="at least one"):
    NestedLatticeQuantizer(E8Lattice(), 4, ())
  with pytest.raises(ValueError, match="norm="):
    NestedLatticeQuantizer(E8Lattice(), 4, (0.3,), norm="e8m0")
  qz = Q.get("e8_nested_q16")
  with pytest.raises(ValueError, match="must divide the last axis"):
    qz.quantize(jnp.zeros((2, 12)))
  with pytest.raises(ValueError, match="must divide the last axis"):
    qz.rate((2, 12))
  with pytest.raises(ValueError, match="non-finite"):
    qz.encode(jnp.full((2, 8), jnp.nan))
  with pytest.raises(ValueError, match="q=1"):
    Q.get("e8_nested_q1")
  with pytest.raises(ValueError, match="unknown quantizer"):
    Q.get("e9_nested_q16")


def test_encoder_search_finds_closer_codewords():
  # search=σ: the error is min over all (σ, j) pairs of ‖y − γ_j v_σ‖² (v_σ the point at scale
  # σ), never more than the plain encoder's min_j ‖y − β_j v_{β_j}‖² when σ ⊇ β, and strictly
  # less on overloaded blocks; decode and nested_dot are the plain decoder's.
  lat, q, betas = E8Lattice(), 4, (0.8, 1.1)
  sigmas = (0.8, 0.95, 1.1, 1.3, 1.6)
  plain = NestedLatticeQuantizer(lat, q, betas)
  qz = NestedLatticeQuantizer(lat, q, betas, search=sigmas)
  assert qz.name == "e8_nested_q4_k2_s5" and qz.rate((2, 64)) == plain.rate((2, 64))
  x = _gauss((4096, 8), 21) * 1.2
  code = _jit(qz.encode)(x)
  err = np.asarray(jnp.sum((_jit(qz.decode)(code) - x) ** 2, -1), np.float64)
  yy, yv, vv = grid_stats(lat, q, sigmas, x)  # ⟨y, v_σ⟩, ‖v_σ‖² per block and σ
  g = np.asarray(betas)
  pairs = yy[:, None, None] - 2 * g * yv[:, :, None] + g**2 * vv[:, :, None]  # (blocks, σ, j)
  np.testing.assert_allclose(err, pairs.reshape(len(yy), -1).min(1), rtol=1e-4, atol=1e-4)
  err0 = np.asarray(jnp.sum((_jit(plain.quantize)(x) - x) ** 2, -1), np.float64)
  np.testing.assert_allclose(err0, np.minimum(pairs[:, 0, 0], pairs[:, 2, 1]), rtol=1e-4, atol=1e-4)  # σ = β_j
  assert np.all(err <= err0 + 1e-4) and err.mean() < 0.9 * err0.mean()
  a, b = _gauss((6, 64), 1), _gauss((5, 64), 2)
  ca, cb = _jit(qz.encode)(a), _jit(qz.encode)(b)
  np.testing.assert_allclose(np.asarray(nested_dot(qz, ca, qz, cb)),
                             np.asarray(_jit(qz.decode)(ca) @ _jit(qz.decode)(cb).T), rtol=1e-5, atol=1e-5)
  # The registry contract for the new encoder path: jit = eager, encode/decode = quantize, vmap, bf16.
  xs = x[:64].reshape(8, 64)
  xh = _jit(qz.quantize)(xs)
  np.testing.assert_array_equal(np.asarray(qz.quantize(xs)), np.asarray(xh))
  np.testing.assert_array_equal(np.asarray(_jit(qz.decode)(_jit(qz.encode)(xs))), np.asarray(xh))
  np.testing.assert_array_equal(np.asarray(jax.jit(jax.vmap(qz.quantize))(xs.reshape(2, 4, 64))), np.asarray(xh).reshape(2, 4, 64))
  assert qz.quantize(xs.astype(jnp.bfloat16)).dtype == jnp.bfloat16
  for bad, err_t in (((0.9, 0.8), ValueError), ((), ValueError), ((0.0, 1.0), ValueError), (0.9, TypeError)):
    with pytest.raises(err_t, match="search"):
      NestedLatticeQuantizer(lat, q, betas, search=bad)
  with pytest.raises(ValueError, match="search"):
    NestedLatticeQuantizer(lat, q, betas, search=sigmas, beta_select="first")


def test_search_encoder_scales_fit():
  # The searched (γ, σ) keep s grid scales, satisfy the centroid condition on the training blocks,
  # and the quantizer built from them reproduces the predicted training error.
  lat, q = E8Lattice(), 4
  bg = np.geomspace(0.5, 2.5, 24)
  y = jax.random.normal(jax.random.key(4), (2048, 8), jnp.float32)
  stats = grid_stats(lat, q, bg, y)
  gam, sig, val = search_encoder_scales(bg, *stats, 2, 6)
  assert len(sig) == 6 and set(sig) <= set(bg.tolist()) and gam[0] < gam[1]
  _, _, diag = search_from_stats(bg, *stats, 2)  # plain encoder (σ = β), MMSE γ: no better
  assert val < diag
  qz = NestedLatticeQuantizer(lat, q, gam, search=sig)
  code = _jit(qz.encode)(y)
  xh = _jit(qz.decode)(code)
  np.testing.assert_allclose(float(jnp.sum((y - xh) ** 2)) / 2048, val, rtol=1e-4)
  ip = np.asarray(jnp.sum((y - xh) * xh, -1), np.float64)
  idx = np.asarray(code.beta_index).ravel()
  for j in range(2):
    assert abs(ip[idx == j].sum()) < 1e-3 * np.abs(ip[idx == j]).sum()
  with pytest.raises(ValueError, match="s="):
    search_encoder_scales(bg, *stats, 2, 25)


def test_leech_search_code_contract():
  # The registered Λ24 encoder-search code: its name, rate, index range and its MSE against the
  # tabulated test MSE (n = 240).
  qz = Q.get("leech_nested_q4_k3_s12")
  assert qz.name == "leech_nested_q4_k3_s12" and qz.k == 3 and len(qz.search) == 12
  r = qz.rate((4, 240))
  assert r.nominal == 2.0 and r.side == pytest.approx(16 / 240)  # ⌈480 + 10 log2 3⌉ = 496 bits per row
  x = _gauss((48, 240), 5)
  code = _jit(qz.encode)(x)  # (jit = eager and vmap of the search encoder: on E8 above, compiles are cheaper)
  assert code.beta_index.shape == (48, 10) and int(code.beta_index.max()) <= 2
  xh = _jit(qz.decode)(code)
  e = np.asarray(jnp.mean((x - xh) ** 2, -1), np.float64)
  assert abs(e.mean() - 0.07381) < 4 * e.std() / math.sqrt(e.size)
  for bad in ("leech_nested_q4_k3_s11", "leech_nested_q4_k3_mmse_s12", "leech_nested_q4_k3_s12_dither"):
    with pytest.raises(ValueError, match="_s"):
      Q.get(bad)
