"""Tests for rdq.quantizers.lattice: closest-point maps, lattice data, G by Monte Carlo."""

import functools
import itertools
import math

import hypothesis.extra.numpy as hnp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rdq.limits.lattice_constants import PUBLISHED_G, g_dn
from rdq.quantizers.lattice import (
    BW16Lattice,
    DnDualLattice,
    DnLattice,
    E8Lattice,
    Lattice,
    ZnLattice,
    lattice_from_name,
    normalized_second_moment,
    round_half_up,
)

LATTICES = [ZnLattice(1), ZnLattice(3), DnLattice(2), DnLattice(3), DnLattice(4), DnLattice(5), DnLattice(8),
            DnDualLattice(3), DnDualLattice(4), DnDualLattice(5), E8Lattice()]
IDS = [lat.name for lat in LATTICES]
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@functools.cache
def _corners(n: int) -> np.ndarray:
  return np.array(list(itertools.product((0.0, 1.0), repeat=n)))


def brute_force(lat: Lattice, x: np.ndarray) -> tuple[np.ndarray, float]:
  """Nearest lattice point by enumeration: every lattice point whose coordinates in the
  standard basis are floor/ceil of x (for Zⁿ, Dₙ) or of x − ½ shifted by ½ (second coset).
  Returns the point and the gap between the best and second-best squared distances."""
  cosets = [0.0] if isinstance(lat, (ZnLattice, DnLattice)) else [0.0, 0.5]
  parity = isinstance(lat, (DnLattice, E8Lattice))
  cands = []
  for h in cosets:
    p = np.floor(x - h) + _corners(lat.dim) + h
    if parity:
      p = p[np.mod(np.rint(np.sum(p - h, axis=1)), 2) == 0]
    cands.append(p)
  cands = np.concatenate(cands)
  d = np.sum((cands - x) ** 2, axis=1)
  order = np.argsort(d)
  return cands[order[0]], float(d[order[1]] - d[order[0]])


def vectors(n, lo=-6.0, hi=6.0):
  return hnp.arrays(np.float64, (n,), elements=st.floats(lo, hi, allow_nan=False, width=32))


@functools.cache
def q_jit(lat):
  """One jitted closest-point map per lattice (lattices are hashable), compiled once."""
  return jax.jit(lat.closest_point)


@functools.cache
def _inv_generator(lat: Lattice) -> np.ndarray:
  return np.linalg.inv(lat.generator())


def is_lattice_point(lat: Lattice, p: np.ndarray) -> bool:
  """Whether every vector of ``p`` (last axis) has integer coordinates in the basis."""
  z = np.asarray(p, np.float64) @ _inv_generator(lat)
  return bool(np.all(np.abs(z - np.round(z)) < 1e-6))


@pytest.mark.parametrize("lat", LATTICES, ids=IDS)
def test_matches_brute_force_and_is_lattice_point(lat):
  rng = np.random.default_rng(0)
  x = rng.normal(scale=3.0, size=(400, lat.dim)).astype(np.float32)
  got = np.asarray(q_jit(lat)(jnp.asarray(x)))
  for xi, gi in zip(x.astype(np.float64), got):
    want, gap = brute_force(lat, xi)
    assert is_lattice_point(lat, gi)
    if gap > 1e-4:  # not a (near) tie
      np.testing.assert_array_equal(gi, want)
    else:
      assert np.sum((gi - xi) ** 2) <= np.sum((want - xi) ** 2) + 1e-4


@pytest.mark.parametrize("lat", LATTICES + [BW16Lattice()], ids=IDS + ["bw16"])
@SETTINGS
@given(data=st.data())
def test_no_minimal_vector_neighbour_is_closer(lat, data):
  x = data.draw(vectors(lat.dim))
  p = np.asarray(q_jit(lat)(jnp.asarray(x, jnp.float32)), np.float64)
  assert is_lattice_point(lat, p)
  x32 = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
  d0 = np.sum((x32 - p) ** 2)
  dn = np.sum((x32 - (p + lat.minimal_vectors())) ** 2, axis=1)
  assert np.all(dn >= d0 - 1e-5)


@pytest.mark.parametrize("lat", LATTICES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_translation_equivariance(lat, data):
  x = np.asarray(data.draw(vectors(lat.dim)), np.float32)
  z = np.asarray(data.draw(hnp.arrays(np.int64, (lat.dim,), elements=st.integers(-20, 20))))
  v = (z @ lat.generator()).astype(np.float32)  # exact: half-integers
  _, gap = brute_force(lat, x.astype(np.float64))
  assume(gap > 1e-3)  # off ties; on ties the rule is exact only for first-coset shifts
  qx = np.asarray(q_jit(lat)(jnp.asarray(x)))
  qxv = np.asarray(q_jit(lat)(jnp.asarray(x + v)))
  np.testing.assert_array_equal(qxv, qx + v)


@pytest.mark.parametrize("lat", [ZnLattice(4), DnLattice(4), E8Lattice()], ids=["z4", "d4", "e8"])
def test_translation_equivariance_exact_on_ties(lat):
  # Ties are resolved the same way after any shift by a first-coset lattice vector.
  x = np.full((lat.dim,), 0.5, np.float32)
  x[0] = 0.25
  v = (2.0 * np.arange(lat.dim) - lat.dim).astype(np.float32)  # in 2Zⁿ ⊂ Dₙ ⊂ E8
  qx = np.asarray(lat.closest_point(jnp.asarray(x)))
  np.testing.assert_array_equal(np.asarray(lat.closest_point(jnp.asarray(x + v))), qx + v)


@pytest.mark.parametrize("lat", LATTICES, ids=IDS)
@SETTINGS
@given(data=st.data())
def test_sign_and_scale_equivariance(lat, data):
  x = np.asarray(data.draw(vectors(lat.dim)), np.float32)
  _, gap = brute_force(lat, x.astype(np.float64))
  assume(gap > 1e-3)
  q = q_jit(lat)
  np.testing.assert_array_equal(np.asarray(q(jnp.asarray(-x))), -np.asarray(q(jnp.asarray(x))))
  # Scaled lattice βΛ: Q_{βΛ}(x) = β Q_Λ(x/β) is the closest point of βΛ (used by nested codes).
  for beta in (0.25, 3.0, 10.0):
    p = beta * np.asarray(q(jnp.asarray(x / beta)), np.float64)
    assert is_lattice_point(lat, p / beta)
    want, gap_b = brute_force(lat, (x / beta).astype(np.float64))
    if gap_b > 1e-3:
      np.testing.assert_allclose(p, beta * want, rtol=0, atol=1e-5)


def test_round_half_up_exact():
  x = jnp.asarray([0.49999997, 0.5, 1.5, -0.5, -1.5, 2.4999998, -0.50000006], jnp.float32)
  np.testing.assert_array_equal(np.asarray(round_half_up(x)), [0.0, 1.0, 2.0, 0.0, -1.0, 2.0, -1.0])


@pytest.mark.parametrize("lat", LATTICES + [BW16Lattice()], ids=IDS + ["bw16"])
def test_lattice_data(lat):
  b = lat.generator()
  assert b.shape == (lat.dim, lat.dim)
  mv = lat.minimal_vectors()
  norms = np.linalg.norm(mv, axis=1)
  np.testing.assert_allclose(norms, norms[0])
  assert is_lattice_point(lat, mv)
  assert math.isclose(lat.packing_radius, norms[0] / 2)
  # The kissing numbers from SPLAG Table 1.2 / Ch. 4.
  kissing = {"z": 2, "z3": 6, "d2": 4, "d3": 12, "d4": 24, "d5": 40, "d8": 112, "d3star": 8, "d4star": 24,
             "d5star": 10, "e8": 240, "bw16": 4320}
  assert len(mv) == kissing[lat.name]
  assert len({tuple(v) for v in mv}) == len(mv)
  vol = {"z": 1, "z3": 1, "e8": 1, "bw16": 2**12}.get(lat.name, 2 if isinstance(lat, DnLattice) else 0.5)
  assert math.isclose(lat.volume, vol, rel_tol=1e-12)
  # Coordinates round-trip.
  z = np.random.default_rng(1).integers(-9, 10, size=(32, lat.dim))
  p = lat.from_coordinates(jnp.asarray(z))
  np.testing.assert_array_equal(np.asarray(lat.coordinates(p)), z)


@pytest.mark.parametrize("lat", [l for l in LATTICES if l.covering_radius is not None], ids=lambda l: l.name)
def test_errors_within_covering_radius(lat):
  x = jax.random.normal(jax.random.key(3), (20000, lat.dim)) * 5
  err = jnp.linalg.norm(x - lat.closest_point(x), axis=-1)
  assert float(jnp.max(err)) <= lat.covering_radius + 1e-5
  # ... and the bound is nearly attained (it is the covering radius, not just a bound).
  assert float(jnp.max(err)) >= 0.8 * lat.covering_radius


def test_vmap_and_jit_agree():
  lat = E8Lattice()
  x = jax.random.normal(jax.random.key(0), (4, 5, 8)) * 3
  a = jax.jit(lat.closest_point)(x)
  b = jax.vmap(jax.vmap(lat.closest_point))(x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert a.dtype == x.dtype


# Published G (SPLAG Table 2.3) or the Dₙ closed form, checked inside a 99.9% CI.
G_CASES = [
    (ZnLattice(1), PUBLISHED_G["z"]),
    (ZnLattice(3), PUBLISHED_G["z"]),
    (DnLattice(3), PUBLISHED_G["d3"]),
    (DnLattice(4), PUBLISHED_G["d4"]),
    (DnLattice(6), g_dn(6)),
    (DnDualLattice(3), PUBLISHED_G["d3star"]),
    (DnDualLattice(4), PUBLISHED_G["d4"]),  # D4* is similar to D4
    (DnDualLattice(5), PUBLISHED_G["d5star"]),
    (E8Lattice(), PUBLISHED_G["e8"]),
]


@pytest.mark.parametrize("lat,g", G_CASES, ids=[c[0].name for c in G_CASES])
def test_normalized_second_moment_matches_published(lat, g):
  est = normalized_second_moment(lat, jax.random.key(11), num_samples=1 << 17)
  assert bool(est.contains(g, level=0.999)), (float(est.mean), float(est.stderr), g)
  # Precision sanity: the CI is narrow enough to separate neighbouring table entries.
  assert float(est.stderr) < 3e-3 * g


def test_bw16_g_precise():
  # G(Λ16) = 0.068299 (SPLAG Table 2.3). The per-sample std of the estimator is ≈ 0.009, so
  # 2^23 samples give a standard error ≈ 3.1e-6: enough to see a 6σ error in the constant
  # (the value 0.0682783 once listed here lies 6σ below the estimate).
  est = normalized_second_moment(BW16Lattice(), jax.random.key(16), num_samples=1 << 23, batch=1 << 16)
  assert float(est.stderr) < 3.5e-6, float(est.stderr)
  assert bool(est.contains(PUBLISHED_G["bw16"], level=0.999)), (float(est.mean), float(est.stderr))
  assert abs(float(est.mean) - 0.0682783) > 5 * float(est.stderr)


def test_g_separates_lattices():
  # E8 is a strictly better quantizer than D4, which beats Z (MC, non-overlapping CIs).
  ests = [normalized_second_moment(l, jax.random.key(5), 1 << 16) for l in (ZnLattice(1), DnLattice(4), E8Lattice())]
  for a, b in zip(ests, ests[1:]):
    assert float(b.ci(0.999)[1]) < float(a.ci(0.999)[0])


@pytest.mark.parametrize("name,cls,n", [("z", ZnLattice, 1), ("z4", ZnLattice, 4), ("d4", DnLattice, 4),
                                        ("d5star", DnDualLattice, 5), ("e8", E8Lattice, 8)])
def test_lattice_from_name(name, cls, n):
  lat = lattice_from_name(name)
  assert isinstance(lat, cls) and lat.dim == n and lat.name == name
  assert hash(lat) == hash(lattice_from_name(name))


def test_bad_input():
  with pytest.raises(ValueError, match="lattice dimension 8"):
    E8Lattice().closest_point(jnp.zeros((3, 7)))
  with pytest.raises(ValueError, match="n=1"):
    DnLattice(1)
  with pytest.raises(ValueError, match="n=0"):
    ZnLattice(0)
  with pytest.raises(ValueError, match="unknown lattice name"):
    lattice_from_name("e9")
  with pytest.raises(TypeError, match="Lattice"):
    normalized_second_moment("e8", jax.random.key(0))


@pytest.mark.parametrize("lat", [ZnLattice(1), DnLattice(4), DnDualLattice(3), E8Lattice()], ids=lambda l: l.name)
@pytest.mark.parametrize("den", [6, 14])
def test_closest_point_rational_is_exact(lat, den):
  # Q(w/den) in integer arithmetic: a nearest point (same distance as brute force, computed
  # in float64) everywhere, including the many exact ties rational inputs produce; on
  # non-ties it equals the float decoder.
  w = np.random.default_rng(den).integers(-60, 60, size=(200, lat.dim)).astype(np.int32)
  rat = jax.jit(lat.closest_point_rational, static_argnums=1)
  got = np.asarray(rat(jnp.asarray(w), den), np.float64)
  flt = np.asarray(q_jit(lat)(jnp.asarray(w / den, jnp.float32)), np.float64)
  for wi, gi, fi in zip(w / den, got, flt):
    want, gap = brute_force(lat, wi)
    assert is_lattice_point(lat, gi)
    assert math.isclose(np.sum((gi - wi) ** 2), np.sum((want - wi) ** 2), rel_tol=1e-12, abs_tol=1e-12)
    if gap > 1e-9:
      np.testing.assert_array_equal(gi, fi)
  # Exactly translation-equivariant, ties included, under first-coset lattice vectors (2Λ).
  v = 2 * np.asarray(lat.from_coordinates(jnp.asarray(np.arange(lat.dim) - 2)), np.float64)
  shifted = np.asarray(rat(jnp.asarray(w + np.rint(den * v).astype(np.int32)), den))
  np.testing.assert_array_equal(shifted, got + v)
  with pytest.raises(TypeError, match="integer"):
    lat.closest_point_rational(jnp.zeros((2, lat.dim)), den)


def test_bw16_decoder_properties():
  # No brute force in 16 dimensions: check the coset decoder against its exact integer twin,
  # translation/sign equivariance off ties (Gaussian inputs have no ties a.s.), and that
  # every error lies in the Voronoi cell as seen from the 4320 minimal vectors.
  lat = BW16Lattice()
  x = np.asarray(jax.random.normal(jax.random.key(2), (512, 16)) * 4, np.float32)
  q = q_jit(lat)
  p = np.asarray(q(jnp.asarray(x)))
  assert is_lattice_point(lat, p)
  z = np.random.default_rng(0).integers(-3, 4, size=(512, 16))
  v = np.asarray(lat.from_coordinates(jnp.asarray(z)))
  np.testing.assert_array_equal(np.asarray(q(jnp.asarray(x + v))), p + v)
  np.testing.assert_array_equal(np.asarray(q(jnp.asarray(-x))), -p)
  w = np.rint(x * 6).astype(np.int32)
  pr = np.asarray(lat.closest_point_rational(jnp.asarray(w), 6), np.float64)
  pf = np.asarray(q(jnp.asarray(w / 6, jnp.float32)), np.float64)
  np.testing.assert_allclose(np.sum((w / 6 - pr) ** 2, 1), np.sum((w / 6 - pf) ** 2, 1), rtol=1e-6)
  e = x - p
  mv = lat.minimal_vectors()
  assert np.all(e @ mv.T <= 0.5 * np.sum(mv**2, 1) + 1e-4)  # |e|² ≤ |e − v|² for all v
