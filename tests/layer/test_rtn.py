"""RTN over registered scalar quantizers and GPTQ's grids."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.layer import MinMaxGrid, RTNConfig, rtn
from rdq.quantizers import get


@pytest.mark.parametrize("name", ["int4_block32", "int8", "nvfp4"])
def test_registry_quantizer_on_transpose(name):
  """Groups run along input features: RTN quantizes Wᵀ with the registry quantizer."""
  n, m = 64, 48
  w = jax.random.normal(jax.random.key(0), (n, m))
  h = jnp.eye(n)
  w_hat, rep = rtn(w, h, RTNConfig(name))
  q = get(name)
  np.testing.assert_array_equal(w_hat, q.quantize(w.T).T)
  assert float(rep.side_bits) == pytest.approx(q.rate((m, n)).side)
  assert float(rep.rate_nominal_bits) == pytest.approx(q.rate((m, n)).effective)
  assert float(rep.d_per_entry) == pytest.approx(float(jnp.mean((w - w_hat) ** 2)), rel=1e-5)
  # entropy of a b-bit code cannot exceed b bits
  assert float(jnp.max(rep.feature_rate_bits)) <= q.rate((m, n)).nominal + 1e-5


def test_minmax_grid_groups_along_input_features():
  w = jax.random.normal(jax.random.key(1), (32, 4))
  w = w.at[:8, 0].multiply(100.0)  # a loud first group in output 0 only
  _, rep = rtn(w, jnp.eye(32), RTNConfig(MinMaxGrid(4, group_size=8)))
  w_hat, _ = rtn(w, jnp.eye(32), RTNConfig(MinMaxGrid(4, group_size=8)))
  # the loud group does not coarsen the other groups of output 0
  err_quiet = jnp.max(jnp.abs(w - w_hat)[8:, 0])
  assert float(err_quiet) < 0.2
  assert float(rep.side_bits) == pytest.approx(16 / 8)


def test_bad_names_and_shapes():
  with pytest.raises(ValueError, match="unknown quantizer name"):
    RTNConfig("int4_nope")
  with pytest.raises(ValueError, match="block_size=32 must divide"):
    rtn(jnp.ones((48, 4)), jnp.eye(48), RTNConfig("int4_block32"))
  with pytest.raises(ValueError, match="group_size=5 must divide"):
    rtn(jnp.ones((48, 4)), jnp.eye(48), RTNConfig(MinMaxGrid(4, group_size=5)))
  with pytest.raises(TypeError, match="registry name"):
    RTNConfig(4)


def test_uniform_grid_rate_iters_meets_the_rate_and_is_rtn():
  """Entropy-coded uniform grid with a searched step: the rate meets the target at 1 bit and the
  reconstruction is still round-to-nearest on one step, ŵ = Δ·round(w/Δ)."""
  from rdq.layer import UniformGrid

  w = jax.random.normal(jax.random.key(3), (48, 256))
  h = jnp.eye(48)
  w_hat, rep = rtn(w, h, RTNConfig(UniformGrid(1.0), rate_iters=2))
  assert float(rep.rate_bits) == pytest.approx(1.0, abs=0.01)
  step = float(rep.feature_scale[0])
  np.testing.assert_allclose(w_hat, step * jnp.round(w / step), rtol=1e-6, atol=1e-7)
  assert float(rtn(w, h, RTNConfig(UniformGrid(1.0)))[1].rate_bits) > 1.2  # the high-rate rule alone
