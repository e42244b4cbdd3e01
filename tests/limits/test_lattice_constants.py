"""Tests for rdq.limits.lattice_constants: published G, closed forms, sphere bound."""

import math

import pytest

from rdq.limits import G_SPHERE_LIMIT, PUBLISHED_G, g_dn, g_sphere, rate_gap_bits


def test_exact_published_values():
  # Closed forms of SPLAG Table 2.3 entries (Conway & Sloane 1982), to the printed 7 digits.
  assert PUBLISHED_G["z"] == 1 / 12
  assert PUBLISHED_G["e8"] == 929 / 12960
  assert round(929 / 12960, 7) == 0.0716821
  assert round(5 / (36 * math.sqrt(3)), 7) == PUBLISHED_G["a2"]
  assert round(19 / (192 * 2 ** (1 / 3)), 7) == PUBLISHED_G["d3star"]


def test_table_is_decreasing_in_dimension_and_above_sphere_bound():
  dims = {"z": 1, "a2": 2, "d3star": 3, "d4": 4, "d5star": 5, "e6star": 6, "e7star": 7, "e8": 8, "k12": 12,
          "bw16": 16, "leech": 24}
  seq = [PUBLISHED_G[k] for k in dims]
  assert all(a > b for a, b in zip(seq, seq[1:]))
  for k, n in dims.items():
    assert PUBLISHED_G[k] >= g_sphere(n) - 1e-12  # Zador's sphere bound holds for every entry


@pytest.mark.parametrize("n,g", [(3, 0.0787451), (4, 0.0766032)])
def test_g_dn_matches_table(n, g):
  assert round(g_dn(n), 7) == g


def test_g_dn_small_and_large_n():
  assert math.isclose(g_dn(2), 1 / 12)  # D2 is a rotated, scaled Z²
  assert math.isclose(g_dn(10**6), 1 / 12, rel_tol=1e-5)  # Dₙ loses its advantage as n grows
  assert g_dn(6) < g_dn(5) < g_dn(4) and g_dn(6) < g_dn(7) < g_dn(8)  # minimum at n = 6


def test_sphere_bound():
  assert math.isclose(g_sphere(1), 1 / 12)  # a segment
  assert math.isclose(g_sphere(2), 1 / (4 * math.pi))  # a disc: (π r⁴ / 2) / (2 (π r²)²)
  values = [g_sphere(n) for n in range(1, 200)]
  assert all(a > b for a, b in zip(values, values[1:]))
  assert math.isclose(G_SPHERE_LIMIT, 1 / (2 * math.pi * math.e))
  assert g_sphere(10**6) > G_SPHERE_LIMIT and math.isclose(g_sphere(10**6), G_SPHERE_LIMIT, rel_tol=1e-4)


def test_rate_gap_bits():
  assert math.isclose(rate_gap_bits(1 / 12), 0.5 * math.log2(math.pi * math.e / 6))  # 0.2546 bit
  assert math.isclose(rate_gap_bits(1 / 12), 0.25461, abs_tol=1e-5)
  assert math.isclose(rate_gap_bits(PUBLISHED_G["e8"]), 0.14597, abs_tol=1e-5)
  assert math.isclose(rate_gap_bits(G_SPHERE_LIMIT), 0.0, abs_tol=1e-12)


def test_bad_input():
  with pytest.raises(ValueError, match="n=1"):
    g_dn(1)
  with pytest.raises(ValueError, match="n=2.5"):
    g_dn(2.5)
  with pytest.raises(ValueError, match="n=0"):
    g_sphere(0)
  with pytest.raises(ValueError, match="g=-1"):
    rate_gap_bits(-1.0)
  with pytest.raises(ValueError, match="nan"):
    rate_gap_bits(float("nan"))
