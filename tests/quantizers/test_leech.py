"""Tests for rdq.quantizers.leech: the Golay code, Λ24's data, and the exact decoder.

Exactness is checked against an independent brute force: Λ24 is the union of the 8192 cosets
``h + 2c + 4D24`` (h ∈ {0, a}, c ∈ C24), so its nearest point is the nearest of the 8192
per-coset nearest points, each found by the Conway–Sloane D24 rule. The brute force below
computes all 8192 in float64 NumPy without the decoder's Turyn look-up tables.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.limits.lattice_constants import PUBLISHED_G
from rdq.quantizers.lattice import lattice_from_name, normalized_second_moment
from rdq.quantizers.leech import (
    UNIMODULAR_SCALE,
    LeechLattice,
    golay_codewords,
    is_leech_point,
    leech_minimal_vectors,
)

LAT = LeechLattice()
A = np.array([-3] + [1] * 23, np.float64)


@functools.cache
def q_jit():
  return jax.jit(LAT.closest_point)


def np_closest_dn(x: np.ndarray) -> np.ndarray:
  """Conway–Sloane Dₙ decoder on the last axis (round half up, fix parity at the worst coordinate)."""
  f = np.floor(x + 0.5)
  d = x - f
  odd = np.mod(f.sum(-1), 2) != 0
  k = np.argmax(np.abs(d), axis=-1)
  step = np.where(np.take_along_axis(d, k[..., None], -1)[..., 0] >= 0, 1.0, -1.0)
  np.put_along_axis(f, k[..., None], (np.take_along_axis(f, k[..., None], -1)[..., 0] + odd * step)[..., None], -1)
  return f


def brute_force(x: np.ndarray, chunk: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Nearest point over all 8192 cosets (float64): point, its squared distance, and the gap to
  the second-nearest coset's point."""
  cw = golay_codewords().astype(np.float64)
  shifts = np.concatenate([2 * cw, A + 2 * cw])  # (8192, 24)
  best, dist, gap = [], [], []
  for i in range(0, len(x), chunk):
    xs = x[i:i + chunk, None, :] - shifts  # (m, 8192, 24)
    y = 4.0 * np_closest_dn(xs / 4.0)
    d = np.sum((xs - y) ** 2, axis=-1)
    order = np.argsort(d, axis=1, kind="stable")
    j = order[:, 0]
    best.append(np.take_along_axis(y + shifts, j[:, None, None], 1)[:, 0])
    dist.append(d[np.arange(len(j)), j])
    gap.append(d[np.arange(len(j)), order[:, 1]] - dist[-1])
  return np.concatenate(best), np.concatenate(dist), np.concatenate(gap)


def test_golay_code():
  cw = golay_codewords()
  assert cw.shape == (4096, 24) and len({tuple(c) for c in cw}) == 4096
  w, counts = np.unique(cw.sum(1), return_counts=True)
  assert w.tolist() == [0, 8, 12, 16, 24] and counts.tolist() == [1, 759, 2576, 759, 1]
  # Linear and self-dual: closed under addition, and every pair of codewords is orthogonal mod 2.
  rng = np.random.default_rng(0)
  i, j = rng.integers(0, 4096, (2, 500))
  s = {tuple(c) for c in cw}
  assert all(tuple((cw[a] + cw[b]) % 2) in s for a, b in zip(i, j))
  assert np.all((cw[i] * cw[j]).sum(1) % 2 == 0)


def test_lattice_data():
  g = LAT.generator()
  assert g.shape == (24, 24) and np.all(g == np.round(g))
  assert is_leech_point(g).all()  # the basis spans a sublattice of the construction ...
  assert math.isclose(abs(np.linalg.det(g)), 2.0**36, rel_tol=1e-9)  # ... of the same volume: equal
  assert math.isclose(LAT.volume, 2.0**36)
  assert math.isclose(abs(np.linalg.det(g * UNIMODULAR_SCALE)), 1.0, rel_tol=1e-9)  # unimodular scaling
  # The construction's own generators have integer coordinates in the basis.
  z = np.vstack([2 * golay_codewords()[:64], 8 * np.eye(24)[:3], A[None]]) @ np.linalg.inv(g)
  np.testing.assert_allclose(z, np.round(z), atol=1e-9)
  # Kissing number and minimal norm (SPLAG Ch. 4, Sec. 11): 196 560 vectors of norm 32 (4 unimodular).
  mv = LAT.minimal_vectors()
  assert mv.shape == (196560, 24) and len({tuple(v) for v in mv.astype(np.int8)}) == 196560
  np.testing.assert_array_equal(np.sum(mv**2, 1), 32.0)
  assert is_leech_point(mv).all()
  shapes = np.unique(np.sort(np.abs(mv), axis=1)[:, ::-1][:, :2], axis=0, return_counts=True)
  assert dict(zip(map(tuple, shapes[0].tolist()), shapes[1].tolist())) == {(2.0, 2.0): 97152, (3.0, 1.0): 98304,
                                                                           (4.0, 4.0): 1104}
  np.testing.assert_allclose(np.sum(leech_minimal_vectors(unimodular=True) ** 2, 1), 4.0)
  assert math.isclose(LAT.packing_radius, math.sqrt(32) / 2) and LAT.covering_radius == 4.0
  assert not is_leech_point(np.eye(24) * 2)[0] and not is_leech_point(A + 0.5)
  lat = lattice_from_name("leech")
  assert lat == LAT and lat.name == "leech" and lat.dim == 24


@pytest.fixture(scope="module")
def gaussian_points():
  x = np.asarray(jax.random.normal(jax.random.key(7), (768, 24)), np.float32) * np.float32(4.0)
  u = np.asarray(LAT.sample_cell(jax.random.key(8), (256,)), np.float32) + np.float32(8.0) * np.asarray(
      jax.random.normal(jax.random.key(9), (256, 24)), np.float32)
  return np.concatenate([x, u])


def test_matches_independent_brute_force(gaussian_points):
  x = gaussian_points
  got = np.asarray(q_jit()(jnp.asarray(x)), np.float64)
  want, dist, gap = brute_force(x.astype(np.float64))
  assert is_leech_point(got).all()
  d_got = np.sum((x - got) ** 2, axis=1)
  np.testing.assert_allclose(d_got, dist, rtol=0, atol=1e-4)  # a nearest point, always
  clear = gap > 1e-3
  assert clear.mean() > 0.99
  np.testing.assert_array_equal(got[clear], want[clear])  # the nearest point, off near-ties


def test_voronoi_cell_and_covering_radius(gaussian_points):
  x = gaussian_points[:256].astype(np.float64)
  e = x - np.asarray(q_jit()(jnp.asarray(gaussian_points[:256])), np.float64)
  mv = LAT.minimal_vectors()
  # |e| ≤ |e − v| for every minimal vector v (necessary for the nearest point) ...
  assert np.all(e @ mv.T <= 16.0 + 1e-4)
  # ... and the error lies within the covering radius 4 (√2 unimodular).
  assert np.max(np.linalg.norm(e, axis=1)) <= 4.0 + 1e-5


def test_equivariance(gaussian_points):
  x = gaussian_points[:256]
  q = q_jit()
  p = np.asarray(q(jnp.asarray(x)))
  z = np.random.default_rng(1).integers(-2, 3, size=(256, 24))
  v = (z @ LAT.generator()).astype(np.float32)
  np.testing.assert_array_equal(np.asarray(q(jnp.asarray(x + v))), p + v)
  np.testing.assert_array_equal(np.asarray(q(jnp.asarray(-x))), -p)


def test_vmap_jit_shapes_and_dtypes():
  x = jax.random.normal(jax.random.key(0), (3, 5, 24)) * 4
  a = q_jit()(x)
  b = jax.vmap(jax.vmap(LAT.closest_point))(x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert a.shape == x.shape and a.dtype == x.dtype
  # More vectors than one decoder chunk (lax.map path) agree with the per-vector results.
  big = jax.random.normal(jax.random.key(1), (600, 24)) * 4
  np.testing.assert_array_equal(np.asarray(q_jit()(big))[590:], np.asarray(q_jit()(big[590:])))


@pytest.mark.parametrize("den", [6, 14])
def test_closest_point_rational_is_exact(den):
  w = np.random.default_rng(den).integers(-40 * den, 40 * den, size=(96, 24)).astype(np.int32)
  w[:32] = (w[:32] // den) * den + den // 2  # half-integers: many exact ties
  rat = jax.jit(LAT.closest_point_rational, static_argnums=1)
  got = np.asarray(rat(jnp.asarray(w), den), np.float64)
  x = w / den
  _, dist, gap = brute_force(x)
  assert is_leech_point(got).all()
  np.testing.assert_allclose(np.sum((got - x) ** 2, 1), dist, rtol=1e-12, atol=1e-12)  # exact, ties included
  flt = np.asarray(q_jit()(jnp.asarray(x, jnp.float32)), np.float64)
  np.testing.assert_array_equal(got[gap > 1e-6], flt[gap > 1e-6])
  # Exactly translation-equivariant, ties included, under 4D24 (it maps every coset to itself).
  v = np.zeros(24, np.int64)
  v[[0, 5]] = (4, -4)
  v[3] = 8
  shifted = np.asarray(rat(jnp.asarray(w + den * v[None].astype(np.int32)), den))
  np.testing.assert_array_equal(shifted, got + v)


def test_normalized_second_moment_matches_published():
  # SPLAG Table 2.3: G(Λ24) = 0.0657714, inside the 99.9% CI; the CI separates Λ24 from BW16.
  est = normalized_second_moment(LAT, jax.random.key(3), num_samples=1 << 13, batch=1024)
  assert bool(est.contains(PUBLISHED_G["leech"], level=0.999)), (float(est.mean), float(est.stderr))
  assert float(est.ci(0.999)[1]) < PUBLISHED_G["bw16"]


def test_bad_input():
  with pytest.raises(ValueError, match="lattice dimension 24"):
    LAT.closest_point(jnp.zeros((2, 16)))
  with pytest.raises(ValueError, match="lattice dimension 24"):
    LAT.closest_point(jnp.zeros(()))
  x = np.ones((3, 24), np.float32)
  x[1, 4], x[2, 0] = np.nan, np.inf
  y = np.asarray(LAT.closest_point(jnp.asarray(x)))
  assert np.all(np.isnan(y[1:])) and np.all(np.isfinite(y[0]))  # NaN out, never a silent lattice point
  with pytest.raises(ValueError, match="den=4001"):
    LAT.closest_point_rational(jnp.zeros((1, 24), jnp.int32), 4001)
  with pytest.raises(TypeError, match="integer"):
    LAT.closest_point_rational(jnp.zeros((1, 24)), 6)
  with pytest.raises(ValueError, match="length 24"):
    is_leech_point(np.zeros(23))
  with pytest.raises(ValueError, match="unknown lattice name"):
    lattice_from_name("leech24")
