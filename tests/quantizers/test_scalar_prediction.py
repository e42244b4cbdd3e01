"""Exact and high-rate scalar predictions against closed forms and Monte Carlo."""


import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from rdq import quantizers
from rdq.montecarlo import estimate
from rdq.quantizers import scalar_prediction as sp


@pytest.mark.parametrize("name", ["e2m1", "e4m3", "e2m3"])
def test_elementwise_fp_exact_against_direct_integration(name):
  # Independent check: integrate (x − Q(x))² φ(x) with scipy quad cell by cell.
  q = quantizers.get(name)
  grid = quantizers.fp.format_grid(q.fmt)
  edges = np.concatenate([[0.0], 0.5 * (grid[1:] + grid[:-1]), [np.inf]])
  total = 0.0
  for k, lev in enumerate(grid):
    total += integrate.quad(lambda x: (x - lev) ** 2 * stats.norm.pdf(x), edges[k], edges[k + 1], epsabs=1e-14)[0]
  np.testing.assert_allclose(sp.exact_scalar_moments(q, (4, 64)).mse, 2 * total, rtol=1e-6)


def test_blockwise_int_exact_against_direct_integration():
  # g = 2 blocks: E over the pair (M, other) by 2-D quadrature, independent of the module.
  q = quantizers.IntQuantizer(4, "block", 2)
  qmax = 7

  def err(m):
    s = float(q.scale_from_amax(jnp.float32(m)))
    rest = integrate.quad(lambda x: (x - s * min(round(x / s), qmax)) ** 2 * stats.norm.pdf(x) / (stats.norm.cdf(m) - 0.5),
                          0, m, limit=200, points=[s * (k + 0.5) for k in range(qmax)])[0]
    top = (m - s * min(round(m / s), qmax)) ** 2
    return (rest + top) / 2

  dens = lambda m: 2 * (2 * stats.norm.cdf(m) - 1) * 2 * stats.norm.pdf(m)
  ref = integrate.quad(lambda m: err(m) * dens(m), 0, 12, limit=200)[0]
  np.testing.assert_allclose(sp.exact_scalar_moments(q, (1, 64)).mse, ref, rtol=1e-4)


class _Sq:
  def __init__(self, q, shape):
    self.q, self.shape = q, shape

  def __hash__(self):
    return hash((self.q, self.shape))

  def __eq__(self, other):
    return isinstance(other, _Sq) and (self.q, self.shape) == (other.q, other.shape)

  def __call__(self, k):
    x = jax.random.normal(k, self.shape)
    xh = self.q.quantize(x)
    return jnp.stack([jnp.mean(x * xh), jnp.mean(xh * xh), jnp.mean((x - xh) ** 2)])


@pytest.mark.parametrize("name", ["int8_row", "int4_block32", "int4_block32_e8m0", "int2_block64", "e5m2", "mxfp4",
                                  "mxfp4_ceil", "mxfp8_e4m3", "mxfp6_e3m2"])
def test_exact_moments_within_monte_carlo_ci(name):
  q = quantizers.get(name)
  shape = (8, 256)
  # A fixed seed per name: str.hash is salted per process (PYTHONHASHSEED), which made this a fresh draw on every
  # run, and 27 comparisons at 0.999 fail together ≈ 3 % of the time. jax's float32 normals carry a ≈1.4e-4 relative
  # bias in these tail-driven moments (gone with float64 normals); at 2000 samples that is 0.15 stderr.
  est = estimate(_Sq(q, shape), jax.random.key(zlib.crc32(name.encode())), 2000, 500)
  m = sp.exact_scalar_moments(q, shape)
  assert bool(jnp.all(est.contains(jnp.array([m.rho, m.power, m.mse]), 0.999))), (est.mean, est.stderr, m)


@pytest.mark.parametrize("name,rtol", [("int8_row", 1e-3), ("int4_block32", 1e-3), ("e4m3", 0.01), ("mxfp8_e4m3", 0.01),
                                       ("nvfp4", 0.02), ("mxfp4", 0.06), ("e2m1", 0.03)])
def test_high_rate_heuristic_accuracy(name, rtol):
  # documented accuracy of the Bennett heuristic at ≥ 4 bits
  q = quantizers.get(name)
  exact = sp.exact_scalar_moments(q, (8, 256)).mse
  np.testing.assert_allclose(sp.high_rate_mse(q, (8, 256)), exact, rtol=rtol)


def test_high_rate_breaks_at_two_bits():
  q = quantizers.get("int2_block64")
  assert sp.high_rate_mse(q, (8, 256)) > 1.05 * sp.exact_scalar_moments(q, (8, 256)).mse


def test_unsupported_quantizer():
  with pytest.raises(TypeError):
    sp.exact_scalar_moments(object(), (4, 4))
