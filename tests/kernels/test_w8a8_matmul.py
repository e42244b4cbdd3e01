"""W8A8 kernel: bit-exact integer path, group scales, lowering, MC agreement, bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.kernels import Config, pack_activations, pack_int, w8a8_matmul
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import w8a8_matmul_reference as reference
from rdq.quantizers import IntQuantizer
from tests.kernels._util import (
  BACKENDS,
  assert_lowered,
  lower,
  mc_agrees,
  mode,
  product_error,
)

QX = IntQuantizer(8, "row")


def _operands(key, m, k, n, qw):
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (m, k))
  w = jax.random.normal(kw, (k, n))
  x_code, w_code = QX.encode(x), qw.encode(w.T)
  return x, w, x_code, w_code


@pytest.mark.parametrize("backend,m,k,n", [("tpu", 1, 256, 256), ("gpu", 5, 384, 128)])
def test_per_feature_scales_bit_exact(backend, m, k, n, key):
  qw = IntQuantizer(8, "row")
  _, _, x_code, w_code = _operands(key, m, k, n, qw)
  y = w8a8_matmul(*pack_activations(x_code), pack_int(w_code, qw),
                  config=Config(block_m=8, block_n=128, block_k=128), **mode(backend))
  assert y.dtype == jnp.float32
  np.testing.assert_array_equal(np.asarray(y), np.asarray(reference(x_code, w_code, qw)))


@pytest.mark.parametrize("backend,g,cfg", [
    ("tpu", 32, Config(block_m=8, block_n=128, block_k=128)),  # 4 groups per K step
    ("gpu", 256, Config(block_m=8, block_n=128, block_k=128)),  # a group spans 2 K steps
    ("gpu", 32, Config()),  # the table: block_k = 32 (Triton lowers no value slices)
])
def test_group_scales(backend, g, cfg, key):
  m, k, n = 3, 512, 128
  qw = IntQuantizer(8, "block", g)
  _, _, x_code, w_code = _operands(key, m, k, n, qw)
  y = w8a8_matmul(*pack_activations(x_code), pack_int(w_code, qw), config=cfg,
                  **mode(backend))
  ref = reference(x_code, w_code, qw)
  # Each group partial is an exact int32; only the fp32 sum over K/g groups is reordered.
  bound = 4 * np.finfo(np.float32).eps * (k // g) * np.max(np.abs(np.asarray(ref)))
  np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=0, atol=bound)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("qw", [IntQuantizer(8, "row"), IntQuantizer(8, "block", 128),
                                IntQuantizer(8, "block", 32)])
def test_lowers(backend, qw):
  k, n = 1024, 512
  packed = jax.eval_shape(lambda w: pack_int(qw.encode(w.T), qw), jax.ShapeDtypeStruct((k, n), jnp.float32))
  args = (jax.ShapeDtypeStruct((16, k), jnp.int8), jax.ShapeDtypeStruct((16, 1), jnp.float32), packed)
  assert_lowered(lower(functools.partial(w8a8_matmul, backend=backend), args, backend), backend)


def test_error_matches_rdq_monte_carlo():
  # The generic-matmul setting: both factors absmax INT8 along the inner dimension K.
  m, k, n, samples = 8, 256, 128, 16
  qw = IntQuantizer(8, "row")
  errs = []
  for i in range(samples):
    x, w, x_code, w_code = _operands(jax.random.fold_in(jax.random.key(3), i), m, k, n, qw)
    y = w8a8_matmul(*pack_activations(x_code), pack_int(w_code, qw), config=Config(8, 128, 256),
                    **mode("tpu"))
    errs.append(product_error(x, w, y))
  est = matmul_distortion(QX, qw, MatmulSetup(n=k, a=m, b=n), jax.random.key(4), 256)
  ok, msg = mc_agrees(errs, est)
  assert ok, msg


def test_bad_input(key):
  qw = IntQuantizer(8, "row")
  _, _, x_code, w_code = _operands(key, 2, 128, 128, qw)
  xq, sx = pack_activations(x_code)
  w = pack_int(w_code, qw)
  with pytest.raises(TypeError, match="x_codes.dtype=float32"):
    w8a8_matmul(xq.astype(jnp.float32), sx, w, interpret=True)
  with pytest.raises(ValueError, match=r"x_scales must have shape \(2, 1\)"):
    w8a8_matmul(xq, sx[:1], w, interpret=True)
  with pytest.raises(TypeError, match="x_scales.dtype=bfloat16"):
    w8a8_matmul(xq, sx.astype(jnp.bfloat16), w, interpret=True)
  with pytest.raises(ValueError, match="K=64 input features"):
    w8a8_matmul(xq[:, :64], sx, w, interpret=True)
  q4 = IntQuantizer(4, "block", 32)
  with pytest.raises(ValueError, match="symmetric int8 weight codes"):
    w8a8_matmul(xq, sx, pack_int(q4.encode(jnp.ones((128, 128))), q4), interpret=True)
  with pytest.raises(TypeError, match="activation codes must be int8"):
    pack_activations(q4.encode(jnp.ones((2, 64))))
