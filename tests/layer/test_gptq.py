"""GPTQ: blocked JAX implementation vs a plain NumPy recursion; properties; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import covariance as cov
from rdq.layer import GPTQConfig, MinMaxGrid, RTNConfig, UniformGrid, gptq, gptq_traced, rtn
from tests.layer._reference import gptq_reference


def _problem(n, m, seed=0, rho=0.9):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (4 * n, n)) @ cov.AR1(n)(k1, rho)  # correlated activations
  h = cov.from_data(x)
  w = jax.random.normal(k2, (n, m)) * 0.1
  return w, h


@pytest.mark.parametrize(
    "n,bits,sym,group,block,act_order",
    [
        (100, 3, False, None, 32, False),  # n not a multiple of the block
        (128, 4, True, 32, 64, False),  # groups start inside a block
        (128, 2, False, 64, 32, True),  # groups span blocks; act-order
    ],
)
def test_matches_unblocked_numpy(n, bits, sym, group, block, act_order):
  w, h = _problem(n, 24, seed=n + bits)
  cfg = GPTQConfig(MinMaxGrid(bits, sym, group), block_size=block, act_order=act_order)
  w_hat, rep = gptq(w, h, cfg)
  q_ref, z_ref = gptq_reference(w, h, bits, sym, group, cfg.percdamp, act_order)
  mismatch = np.mean(np.asarray(rep.codes) != z_ref)
  assert mismatch == 0.0, f"{mismatch:.2%} of codes differ"
  np.testing.assert_allclose(w_hat, q_ref, rtol=1e-4, atol=1e-5)


def test_blocking_does_not_change_result():
  w, h = _problem(96, 16, seed=3)
  outs = [gptq(w, h, GPTQConfig(MinMaxGrid(3), block_size=b))[0] for b in (7, 128)]
  np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "grid",
    [MinMaxGrid(3, sym=False, group_size=16), UniformGrid(5.0)],
    ids=["asym_g16", "uniform"],
)
def test_diagonal_h_gptq_equals_rtn(grid):
  """Diagonal Σ: every U[i, j>i] = 0, so GPTQ's feedback does nothing and GPTQ = RTN."""
  n, m = 64, 32
  w = jax.random.normal(jax.random.key(1), (n, m))
  h = jnp.diag(jnp.exp(jax.random.normal(jax.random.key(2), (n,))))
  w_g, r_g = gptq(w, h, GPTQConfig(grid, block_size=16))
  w_r, r_r = rtn(w, h, RTNConfig(grid))
  np.testing.assert_array_equal(r_g.codes, r_r.codes)
  np.testing.assert_allclose(w_g, w_r, rtol=1e-6)
  assert float(r_g.d_per_entry) == pytest.approx(float(r_r.d_per_entry), rel=1e-5)


def test_gptq_beats_rtn_on_correlated_h():
  w, h = _problem(128, 64, seed=7, rho=0.95)
  d_g = float(gptq(w, h, GPTQConfig(MinMaxGrid(3)))[1].d_per_entry)
  d_r = float(rtn(w, h, RTNConfig(MinMaxGrid(3)))[1].d_per_entry)
  assert d_g < 0.7 * d_r


def test_report_fields():
  w, h = _problem(64, 32)
  _, r = gptq(w, h, GPTQConfig(MinMaxGrid(4, sym=False, group_size=32)))
  assert float(r.side_bits) == pytest.approx((16 + 4) / 32)
  assert float(r.rate_nominal_bits) == pytest.approx(4 + 20 / 32)
  assert 0 < float(r.rate_entropy_bits) <= float(r.rate_nominal_bits)
  assert r.feature_rate_bits.shape == (64,) and r.codes.shape == (64, 32)
  assert int(r.codes.min()) >= 0 and int(r.codes.max()) <= 15
  signal = float(jnp.sum(w * (h @ w)) / w.size)
  assert float(r.d_relative) == pytest.approx(float(r.d_per_entry) / signal, rel=1e-5)


def test_jit_and_vmap_over_h():
  w, h = _problem(32, 8)
  hs = jnp.stack([h, 2 * h])
  cfg = GPTQConfig(MinMaxGrid(4), block_size=16)
  batched = jax.jit(jax.vmap(lambda hh: gptq_traced(w, hh, cfg)[1].d_per_entry))(hs)
  # relative damping: H and 2H give the same codes, distortion scales by 2
  assert float(batched[1]) == pytest.approx(2 * float(batched[0]), rel=1e-4)


@pytest.mark.parametrize(
    "w,h,kw,match",
    [
        (np.ones((4, 3)), np.eye(5), {}, r"H must be \(n, n\) = \(4, 4\)"),
        (np.ones((4, 3)), np.triu(np.ones((4, 4))), {}, "symmetric"),
        (np.ones((4, 3)), -np.eye(4), {}, "positive semidefinite"),
        (np.ones((4, 3)), np.full((4, 4), np.nan), {}, "finite"),
        (np.full((4, 3), np.inf), np.eye(4), {}, "W must be finite"),
        (np.ones((4, 3)), np.diag([1.0, 1, 1, 0]), {"percdamp": 0.0}, "H is singular"),
        (np.ones((6, 3)), np.eye(6), {"grid": MinMaxGrid(4, group_size=4), "block_size": 4}, "group_size=4 must divide"),
        (np.ones(4), np.eye(4), {}, "2-D"),
    ],
)
def test_bad_input(w, h, kw, match):
  with pytest.raises(ValueError, match=match):
    gptq(w, h, GPTQConfig(**kw))


def test_bad_config():
  with pytest.raises(ValueError, match="one must divide the other"):
    GPTQConfig(MinMaxGrid(4, group_size=48), block_size=32)
  with pytest.raises(ValueError, match="bits"):
    MinMaxGrid(1)
  with pytest.raises(ValueError, match="rate_bits"):
    UniformGrid(0.0)
  with pytest.raises(TypeError, match="floating"):
    gptq(np.ones((4, 2), np.int32), np.eye(4))


@pytest.mark.parametrize("target", [1.0, 1.5, 3.0])
def test_uniform_grid_meets_the_entropy_rate(target):
  """rate_iters secant steps on the measured entropy hit the rate at low rate, where the
  high-rate rule alone overshoots (by ≈ the ECSQ gap at 3 bits, by more below). The
  plug-in entropy of GPTQ's codes jumps with the step (feedback), so this small layer needs 4."""
  w, h = _problem(64, 128, seed=5)
  rates = [float(gptq(w, h, GPTQConfig(UniformGrid(target), block_size=32, rate_iters=it))[1].rate_bits)
           for it in (0, 4)]
  assert rates[0] > target + 0.15  # the high-rate rule alone
  assert rates[1] == pytest.approx(target, abs=0.01)


def test_uniform_grid_rate_iters_keeps_gptq_equal_to_rtn_on_diagonal_h():
  n, m = 64, 32
  w = jax.random.normal(jax.random.key(1), (n, m))
  h = jnp.diag(jnp.exp(jax.random.normal(jax.random.key(2), (n,))))
  _, r_g = gptq(w, h, GPTQConfig(UniformGrid(1.5), block_size=16, rate_iters=2))
  _, r_r = rtn(w, h, RTNConfig(UniformGrid(1.5), rate_iters=2))
  np.testing.assert_array_equal(r_g.codes, r_r.codes)
  with pytest.raises(ValueError, match="rate_iters"):
    GPTQConfig(UniformGrid(2.0), rate_iters=-1)
  with pytest.raises(ValueError, match="rate_iters"):
    RTNConfig(UniformGrid(2.0), rate_iters=1.5)
