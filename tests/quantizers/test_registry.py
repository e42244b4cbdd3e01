"""Contract suite run over every registered quantizer name.

One input shape per quantizer, ``(3, 4, 256)``, and one ``jax.jit(q.quantize)`` per name kept in
a module cache: the contract test and the vmap test compare against the same compiled program
instead of compiling it twice (test time is XLA compilation; no check depends on the shape).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import quantizers as Q

ALL = Q.names()
SHAPE = (3, 4, 256)  # a leading axis to vmap over, then (4, 256)


@functools.cache
def _jit_quantize(name):
  """``jax.jit(Q.get(name).quantize)``, one per name: its compiled programs are reused across tests."""
  return jax.jit(Q.get(name).quantize)


@functools.cache
def _x():
  return jax.random.normal(jax.random.key(1), SHAPE)


@pytest.mark.parametrize("name", ALL)
def test_contract(name):
  q = Q.get(name)
  hash(q)  # static-arg friendly
  assert q == Q.get(name)
  x = _x()
  xh = _jit_quantize(name)(x)
  assert xh.shape == x.shape and xh.dtype == x.dtype
  np.testing.assert_array_equal(xh, q.quantize(x))  # jit == eager
  assert bool(jnp.all(jnp.isfinite(xh)))
  mse = float(jnp.mean((x - xh) ** 2))
  assert 0 < mse < 1.0
  r = q.rate(SHAPE)
  assert r.nominal > 0 and r.side >= 0 and r.effective >= r.nominal
  if hasattr(q, "encode"):
    code = q.encode(x)
    np.testing.assert_array_equal(q.decode(code), xh)
  # bf16 input keeps its dtype
  assert q.quantize(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", ALL)
def test_vmap_over_leading_axis(name):
  q = Q.get(name)
  x = _x()
  if getattr(q, "granularity", None) == "tensor" or getattr(q, "tensor_scale", False):
    pytest.skip(reason="per-tensor scales are defined over the whole array; vmap changes the tensor")
  np.testing.assert_array_equal(jax.jit(jax.vmap(q.quantize))(x), _jit_quantize(name)(x))


def test_unknown_name_lists_known():
  with pytest.raises(ValueError) as e:
    Q.get("int4_blok32")
  assert "int4_block32" in str(e.value) and "nvfp4" in str(e.value)
  with pytest.raises(TypeError):
    Q.get(4)


def test_parametric_names():
  assert Q.get("int3_block16_bf16") == Q.IntQuantizer(3, "block", 16, "bf16")
  assert Q.get("e2m1_block16_fp32").block_size == 16
  with pytest.raises(ValueError, match="bits"):
    Q.get("int9_row")
