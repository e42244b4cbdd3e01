"""WaterSIC: the properties the papers prove (0.255-bit uniform gap, GPTQ's unbounded gap,
waterfilling-like allocation), rate matching, and bad input."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import covariance as cov
from rdq.layer import (
    GPTQConfig,
    UniformGrid,
    WaterSICConfig,
    damp_hessian,
    gptq,
    inverse_cholesky_upper,
    watersic,
    watersic_traced,
)
from rdq.limits import ECSQ_GAP_BITS, waterfill_rate
from rdq.montecarlo import estimate
from rdq.rate import gaussian_code_bits

N_IN, M_OUT = 32, 2048
FAMILIES = [
    (cov.Isotropic(N_IN), 0.0),
    (cov.PowerLaw(N_IN), 1.5),
    (cov.Spiked(N_IN, k=3), 20.0),
    (cov.AR1(N_IN), 0.9),
    (cov.Wishart(N_IN, num_samples=128), 1.0),
    (cov.BlockDiagonal(N_IN, num_blocks=4), 0.8),
    (cov.LDLSpread(N_IN), 6.0),
]


def _code_rate_bits(codes):
  """Bits per entry of the integer codes alone (quantized-Gaussian code length per input
  feature). It upper-bounds their entropy (cross-entropy ≥ entropy) without the plug-in
  estimator's downward bias; side information (O(1/m)) is excluded because the 0.255-bit
  theorem is about the code rate as m → ∞."""
  return jnp.mean(gaussian_code_bits(codes, axis=1))


@dataclasses.dataclass(frozen=True)
class _GapSample:
  family: object
  param: float
  rate_bits: float

  def __call__(self, key):
    k_s, k_w = jax.random.split(key)
    h = self.family(k_s, self.param)
    w = jax.random.normal(k_w, (N_IN, M_OUT), jnp.float32)
    _, rep = watersic_traced(w, h, WaterSICConfig(rate_iters=0), rate_bits=self.rate_bits)
    lam = jnp.linalg.eigvalsh(h)
    limit_rate = waterfill_rate(jnp.maximum(lam, 0.0), rep.d_per_entry).rate_bits
    return _code_rate_bits(rep.codes) - limit_rate


@pytest.mark.parametrize("family,param", FAMILIES, ids=[f.name for f, _ in FAMILIES])
def test_rate_gap_at_most_0255_bit_at_high_rate(family, param):
  """WaterSIC abstract: within 0.255 bit of the limit uniformly over Σ (high rate)."""
  est = estimate(_GapSample(family, param, 6.0), jax.random.key(11), n=8, batch=8)
  lo, _ = est.ci(0.99)
  assert float(lo) <= ECSQ_GAP_BITS, f"gap {float(est.mean):.4f} ± {float(est.stderr):.4f} bit"
  # and it is the ECSQ constant, not something much smaller (catches a broken limit)
  assert float(est.mean) > ECSQ_GAP_BITS - 0.02


def _gaps_on_spread(log_spread, seed=0, n=64, m=1024, rate=6.0):
  fam = cov.LDLSpread(n)
  h = fam(jax.random.key(seed), log_spread)
  w = jax.random.normal(jax.random.key(seed + 1), (n, m))
  lam = np.linalg.eigvalsh(np.asarray(h, np.float64))
  damp = 1e-4
  _, rw = watersic(w, h, WaterSICConfig(rate, rate_iters=0, percdamp=damp))
  _, rg = gptq(w, h, GPTQConfig(UniformGrid(rate), percdamp=damp))
  gap = lambda r: float(_code_rate_bits(r.codes) - waterfill_rate(lam, r.d_per_entry).rate_bits)  # noqa: E731
  d = 1.0 / np.diag(np.asarray(inverse_cholesky_upper(damp_hessian(h, damp)), np.float64)) ** 2
  am_gm_bits = 0.5 * np.log2(d.mean() / np.exp(np.log(d).mean()))
  return gap(rw), gap(rg), am_gm_bits


def test_gptq_gap_grows_with_spread_watersic_flat():
  """GPTQ (one step for all features) loses ½log2(AM/GM) of its LDL diagonal; WaterSIC doesn't."""
  rows = [_gaps_on_spread(s) for s in (2.0, 5.0, 8.0)]
  ws, gp, pred = map(np.array, zip(*rows))
  assert np.all(np.abs(ws - ECSQ_GAP_BITS) < 0.03), ws
  assert np.all(np.diff(gp - ws) > 0.15), gp - ws
  assert gp[-1] - ws[-1] > 1.0
  np.testing.assert_allclose(gp - ws, pred, atol=0.05)


def test_per_feature_rates_follow_cholesky_diagonal():
  """High rate: r_i − mean r = ½log2(L_ii²) − mean ½log2(L_jj²) (WaterSIC's allocation)."""
  n, m = 32, 4096
  fam = cov.LDLSpread(n)
  key = jax.random.key(4)
  h = fam(key, 6.0)
  d = np.asarray(fam.ldl_diagonal(key, 6.0), np.float64)  # = diag(chol(H))²
  w = jax.random.normal(jax.random.key(5), (n, m))
  _, rep = watersic(w, h, WaterSICConfig(5.0, rate_iters=0, percdamp=1e-6))
  # per-feature Gaussian code length: unbiased, unlike the plug-in entropy whose downward
  # bias (K−1)/(2m ln 2) grows with the feature's number of symbols K
  r = np.asarray(gaussian_code_bits(rep.codes, axis=1), np.float64)
  pred = 0.5 * np.log2(d)
  np.testing.assert_allclose(r - r.mean(), pred - pred.mean(), atol=0.06)


def test_rate_matching_and_monotone_distortion():
  w = jax.random.normal(jax.random.key(0), (64, 512))
  h = cov.PowerLaw(64)(jax.random.key(1), 1.0)
  ds = []
  for target in (2.0, 3.0, 4.0):
    _, rep = watersic(w, h, WaterSICConfig(target, rate_iters=3))
    assert float(rep.rate_entropy_bits) == pytest.approx(target, abs=0.02)
    ds.append(float(rep.d_per_entry))
  assert ds[0] > ds[1] > ds[2]


def test_rescalers_keep_codes_and_never_hurt():
  w = jax.random.normal(jax.random.key(2), (64, 256))
  h = cov.AR1(64)(jax.random.key(3), 0.95)
  # same first-guess step c (it depends on rate − side bits), hence the same codes
  w0, r0 = watersic(w, h, WaterSICConfig(1.5, rate_iters=0))
  w1, r1 = watersic(w, h, WaterSICConfig(1.5 + 16 / 64, rate_iters=0, rescale_iters=4))
  np.testing.assert_array_equal(r0.codes, r1.codes)
  # the report's distortion and signal come from the SIC's residuals and LᵀW (no n²m products):
  # the traces under the undamped H, without (r0) and with (r1) the rescalers
  h64, w64 = np.asarray(h, np.float64), np.asarray(w, np.float64)
  signal = np.sum(w64 * (h64 @ w64)) / w.size
  for w_hat, rep in ((w0, r0), (w1, r1)):
    e = w64 - np.asarray(w_hat, np.float64)
    d = np.sum(e * (h64 @ e)) / w.size
    np.testing.assert_allclose(float(rep.d_per_entry), d, rtol=1e-5)
    np.testing.assert_allclose(float(rep.d_relative), d / signal, rtol=1e-5)
  assert float(r1.d_per_entry) <= float(r0.d_per_entry) * (1 + 1e-3)
  assert float(r1.side_bits) == pytest.approx(16 / 256 + 16 / 64)


def test_bad_input():
  w = jnp.ones((4, 8))
  with pytest.raises(ValueError, match="rate_bits"):
    WaterSICConfig(0.0)
  with pytest.raises(ValueError, match="rate_bits"):
    WaterSICConfig(-2.0)
  with pytest.raises(ValueError, match="H is singular"):
    watersic(w, jnp.zeros((4, 4)).at[0, 0].set(1.0), WaterSICConfig(percdamp=0.0))
  with pytest.raises(ValueError, match=r"H must be \(n, n\)"):
    watersic(w, jnp.eye(8))
  with pytest.raises(ValueError, match="percdamp"):
    watersic(w, jnp.eye(4), WaterSICConfig(percdamp=-1.0))
