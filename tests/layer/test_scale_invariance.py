"""No silent garbage from the layer algorithms: fp16 side information at any scale of W, unreachable
WaterSIC rates, and low-precision W.

Before the registry normalized W, GPTQ/RTN with ``MinMaxGrid`` returned an all-NaN Ŵ at
``W·10⁶`` (fp16 scales overflow) and Ŵ = 0 at ``W·10⁻⁸`` (they flush to zero); WaterSIC
returned NaN at ``W·10⁻⁸`` and missed its rate at ``W·3·10⁵``; ``rate_bits = 8`` with m = 16
silently returned 5 bits and NaN coded rates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rdq.layer
from rdq import covariance as cov
from rdq.checks import checked

N, M = 32, 64
SCALES = (1e-8, 1e-4, 3e5, 1e6, 1e15)  # D = s²·D(1) must stay within float32 (≤ 3e38)
CASES = {
    "rtn": (dict(), 4.2),
    "gptq": (dict(block_size=16), 4.2),
    "gptq_groups": (dict(block_size=16, sym=False, group_size=16), 4.9),
    "watersic": (dict(rate_iters=2), 4.2),
    "gptvq": (dict(dim=2, block_size=16, em_iters=3), 3.0),
}


def _problem():
  k_w, k_h = jax.random.split(jax.random.key(3))
  return jax.random.normal(k_w, (N, M), jnp.float32), cov.AR1(N)(k_h, 0.9)


@pytest.mark.parametrize("case", list(CASES))
def test_every_scale_behaves_like_a_normal_one(case):
  """``W·s`` for s from 10⁻⁸ to 10¹⁵ gives exactly the result of ``W·c``, ``c = s·2^{-k} ∈ [½, 2)``,
  scaled by ``2^k``: the same codes, the same relative distortion and rate, bit for bit.

  Between such normal-range scales c the fp16 rounding of the side information moves by up to
  2⁻¹¹ relative and flips ~1% of the codes at rounding boundaries; under the strongly correlated
  H (AR(1), ρ = 0.9) that moves D by up to ~5%, as it does for the unnormalized algorithms at
  c ∈ [½, 2). Before the fix: NaN at 10⁶, Ŵ = 0 at 10⁻⁸, relative D 0.42 instead of 0.005.
  """
  opts, budget = CASES[case]
  algo = rdq.layer.get(case.split("_")[0], **opts)
  w, h = _problem()
  key = jax.random.key(0)
  k = np.round(np.log2(SCALES)).astype(np.int64)
  c = np.asarray(SCALES) * 2.0 ** -k
  run = jax.jit(jax.vmap(lambda s: algo(w * s, h, key=key, rate_bits=budget)))
  w_s, rep_s = run(jnp.asarray(np.r_[SCALES, 1.0], jnp.float32))  # same batch size: one compilation
  w_c, rep_c = run(jnp.asarray(np.r_[c, 1.0], jnp.float32))
  w_s, rep_s = w_s[:-1], jax.tree.map(lambda x: x[:-1], rep_s)
  assert np.isfinite(np.asarray(rep_s.d_relative)).all() and np.isfinite(np.asarray(w_s)).all()
  np.testing.assert_array_equal(np.asarray(rep_s.codes), np.asarray(rep_c.codes[:-1]))
  np.testing.assert_array_equal(np.asarray(w_s, np.float64), np.asarray(w_c[:-1], np.float64) * 2.0 ** k[:, None, None])
  np.testing.assert_array_equal(np.asarray(rep_s.d_relative), np.asarray(rep_c.d_relative[:-1]))
  np.testing.assert_array_equal(np.asarray(rep_s.rate_bits), np.asarray(rep_c.rate_bits[:-1]))
  np.testing.assert_allclose(np.asarray(rep_s.d_per_entry, np.float64),
                             np.asarray(rep_c.d_per_entry[:-1], np.float64) * 4.0**k, rtol=1e-6)
  # and the normal-range scales agree with s = 1 up to the fp16 jitter described above
  d_rel = np.asarray(rep_c.d_relative, np.float64)
  np.testing.assert_allclose(d_rel[:-1], d_rel[-1], rtol=0.1)
  np.testing.assert_allclose(np.asarray(rep_c.rate_bits)[:-1], float(rep_c.rate_bits[-1]), atol=0.03)


def test_power_of_two_scale_is_bit_exact():
  """A power-of-two scale commutes with every rounding: identical codes, Ŵ scaled exactly."""
  w, h = _problem()
  algo = rdq.layer.get("gptq", block_size=16)
  w1, r1 = algo(w, h, rate_bits=4.2)
  w2, r2 = algo(w * 2.0**-40, h, rate_bits=4.2)
  np.testing.assert_array_equal(np.asarray(r1.codes), np.asarray(r2.codes))
  np.testing.assert_array_equal(np.asarray(w1) * 2.0**-40, np.asarray(w2))


def test_zero_weights():
  w, h = _problem()
  for name in ("rtn", "gptq"):
    w_hat, rep = rdq.layer.get(name)(jnp.zeros_like(w), h, rate_bits=4.2)
    assert float(jnp.max(jnp.abs(w_hat))) == 0.0 and float(rep.d_per_entry) == 0.0


@pytest.mark.parametrize("rate", [8.0, 30.0, float("inf"), float("nan"), -1.0])
def test_watersic_unreachable_rate_raises(rate):
  """m = 16 codes per input feature have at most log2 16 = 4 bits of plug-in entropy."""
  w = jax.random.normal(jax.random.key(0), (32, 16))
  h = jnp.eye(32)
  with pytest.raises(ValueError, match=r"rate_bits=.* out of WaterSIC's reach .* log2\(m\) = 4"):
    rdq.layer.get("watersic")(w, h, rate_bits=rate)
  with pytest.raises(ValueError, match=r"rate_bits=.* out of WaterSIC's reach"):
    rdq.layer.watersic(w, h, rdq.layer.WaterSICConfig(rate_bits=8.0))


def test_watersic_unreachable_traced_rate():
  """Traced: ``rdq.checks.checked`` raises; plain jit clips to the reachable top and reports it."""
  w = jax.random.normal(jax.random.key(0), (32, 16))
  h = jnp.eye(32)
  algo = rdq.layer.get("watersic")
  f = jax.jit(lambda r: algo(w, h, rate_bits=r)[1])
  with pytest.raises(ValueError, match="must be in"):
    checked(f)(jnp.float32(8.0))
  rep = f(jnp.float32(30.0))
  top = rdq.layer.watersic_max_rate_bits(algo.config, 32, 16)
  assert np.isfinite(float(rep.rate_coded_bits)) and np.isfinite(float(rep.d_per_entry))
  assert float(rep.rate_bits) <= top + 0.05


@pytest.mark.parametrize("name", ["gptq", "watersic", "rtn"])
def test_bf16_weights_accepted(name):
  """A bf16 (or fp16) W is a float: quantized as its exact float32 value."""
  w, h = _problem()
  w16 = w.astype(jnp.bfloat16)
  algo = rdq.layer.get(name)
  w_hat, rep = algo(w16, h, rate_bits=4.2)
  w_ref, rep_ref = algo(w16.astype(jnp.float32), h, rate_bits=4.2)
  np.testing.assert_array_equal(np.asarray(w_hat), np.asarray(w_ref))
  assert float(rep.d_per_entry) == float(rep_ref.d_per_entry)


def test_non_float_weights_rejected():
  _, h = _problem()
  for bad in (jnp.ones((N, M), jnp.int32), jnp.ones((N, M), jnp.complex64)):
    with pytest.raises(TypeError, match="W must be a real floating-point array"):
      rdq.layer.get("gptq")(bad, h)
  with pytest.raises(TypeError, match="H must be a real floating-point array"):
    rdq.layer.get("gptq")(jnp.ones((N, M)), h.astype(jnp.complex64))
