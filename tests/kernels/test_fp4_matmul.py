"""MXFP4/NVFP4 kernel: in-kernel decoders, interpret vs reference, lowering, MC, bad input."""

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from rdq.kernels import Config, fp4_matmul, pack_fp4
from rdq.kernels.pack import decode_e2m1, decode_e4m3, decode_e8m0
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import dequant_matmul
from rdq.quantizers import FPQuantizer, get
from tests.kernels._util import (
  BACKENDS,
  Identity,
  assert_close,
  assert_lowered,
  lower,
  mc_agrees,
  mode,
  product_error,
  tolerance,
)


def test_decoders_match_ml_dtypes_on_every_code():
  nib = np.arange(16, dtype=np.uint8)
  ref = np.array(jnp.asarray(nib).astype(jnp.uint4).view(jnp.float4_e2m1fn).astype(jnp.float32))
  np.testing.assert_array_equal(np.asarray(decode_e2m1(jnp.asarray(nib))), ref)
  b = np.arange(256, dtype=np.uint8)
  e4m3 = b.view(ml_dtypes.float8_e4m3fn).astype(np.float32)
  finite = np.isfinite(e4m3)  # 0x7f/0xff are NaN in e4m3fn; rdq never stores them
  np.testing.assert_array_equal(np.asarray(decode_e4m3(jnp.asarray(b)))[finite], e4m3[finite])
  e8m0 = b[:255].view(ml_dtypes.float8_e8m0fnu).astype(np.float32)  # 255 is NaN
  np.testing.assert_array_equal(np.asarray(decode_e8m0(jnp.asarray(b[:255]))), e8m0)


@pytest.mark.parametrize("backend,name,m,k,n,dtype,layout", [
    ("tpu", "mxfp4", 1, 256, 256, jnp.float32, "nibbles"),       # decode, 2 K steps, 2 N blocks
    ("gpu", "mxfp4_ceil", 5, 96, 128, jnp.bfloat16, "nibbles"),   # 3 blocks of 32 (odd), bk = K
    ("tpu", "nvfp4", 3, 80, 128, jnp.bfloat16, "nibbles"),        # 5 blocks of 16 (odd)
    ("gpu", "nvfp4", 16, 256, 128, jnp.float32, "nibbles"),
    # pre-permuted words: TPU (planes interleaved back), GPU MMA (one dot per plane)
    ("tpu", "mxfp4", 1, 256, 256, jnp.float32, "words"),
    ("tpu", "nvfp4", 3, 80, 128, jnp.bfloat16, "words"),
    ("gpu", "nvfp4", 16, 256, 128, jnp.float32, "words"),
])
def test_matches_reference(backend, name, m, k, n, dtype, layout, key):
  q = get(name)
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (m, k)).astype(dtype)
  w = 3.0 * jax.random.normal(kw, (k, n))
  code = q.encode(w.T)
  cfg = Config(block_m=8, block_n=128, block_k=128 if k % 128 == 0 else k)
  y = fp4_matmul(x, pack_fp4(code, q, layout=layout), config=cfg, **mode(backend))
  assert y.dtype == x.dtype and y.shape == (m, n)
  # words in the GPU GEMV form scale once per word after the partial dot (derived bound)
  after = layout == "words" and backend == "gpu" and m == 1
  assert_close(y, dequant_matmul(x, q, code), tolerance(dtype, k, x, q.decode(code).T, scale_after=after))


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_words_gemv_matches_reference(name, key):
  # Decode size on the GPU memory model: GEMV, split-K, scale after the word partial.
  q, m, k, n = get(name), 1, 512, 256
  kx, kw = jax.random.split(key)
  x = jax.random.normal(kx, (m, k)).astype(jnp.bfloat16)
  code = q.encode(3.0 * jax.random.normal(kw, (k, n)).T)
  y = fp4_matmul(x, pack_fp4(code, q), out_dtype=jnp.float32, **mode("gpu"))
  ref = dequant_matmul(x, q, code, out_dtype=jnp.float32)
  assert_close(y, ref, tolerance(jnp.float32, k, x, q.decode(code).T, scale_after=True))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
@pytest.mark.parametrize("layout", ["nibbles", "words"])
def test_lowers(backend, name, layout):
  q, k, n = get(name), 1024, 512
  packed = jax.eval_shape(lambda w: pack_fp4(q.encode(w.T), q, layout=layout),
                          jax.ShapeDtypeStruct((k, n), jnp.float32))
  for m in (16, 1) if backend == "gpu" else (16,):  # M = 1 is the GEMV form on GPU
    args = (jax.ShapeDtypeStruct((m, k), jnp.bfloat16), packed)
    assert_lowered(lower(functools.partial(fp4_matmul, backend=backend), args, backend), backend)


@pytest.mark.parametrize("name", ["mxfp4", "nvfp4"])
def test_error_matches_rdq_monte_carlo(name):
  q = get(name)
  m, k, n, samples = 8, 256, 128, 16
  errs = []
  for i in range(samples):
    kx, kw = jax.random.split(jax.random.fold_in(jax.random.key(5), i))
    x, w = jax.random.normal(kx, (m, k)), jax.random.normal(kw, (k, n))
    y = fp4_matmul(x, pack_fp4(q.encode(w.T), q), config=Config(8, 128, 256), **mode("tpu"))
    errs.append(product_error(x, w, y))
  est = matmul_distortion(Identity(), q, MatmulSetup(n=k, a=m, b=n), jax.random.key(6), 256)
  ok, msg = mc_agrees(errs, est)
  assert ok, msg


def test_bad_input(key):
  q = get("mxfp4")
  w = pack_fp4(q.encode(jax.random.normal(key, (128, 256))), q, layout="nibbles")
  with pytest.raises(ValueError, match="K=64 input features"):
    fp4_matmul(jnp.zeros((2, 64)), w, interpret=True)
  with pytest.raises(TypeError, match="x.dtype=float16"):
    fp4_matmul(jnp.zeros((2, 256), jnp.float16), w, interpret=True)
  bad = type(w)(codes=w.codes, scales=w.scales.astype(jnp.int32), tensor_scale=w.tensor_scale,
                block_size=32, scale_format="e8m0")
  with pytest.raises(TypeError, match="w.scales.dtype=int32"):
    fp4_matmul(jnp.zeros((2, 256)), bad, interpret=True)
  bad = type(w)(codes=w.codes, scales=w.scales, tensor_scale=w.tensor_scale, block_size=48,
                scale_format="e8m0")
  with pytest.raises(ValueError, match="block_size=48 must divide"):
    fp4_matmul(jnp.zeros((2, 256)), bad, interpret=True)
  with pytest.raises(ValueError, match="E2M1 elements"):
    pack_fp4(get("mxfp8_e4m3").encode(jnp.ones((2, 64))), get("mxfp8_e4m3"))
  with pytest.raises(ValueError, match="layout='bytes' must be 'words', 'nibbles' or 'auto'"):
    pack_fp4(q.encode(jnp.ones((2, 64))), q, layout="bytes")
  with pytest.raises(ValueError, match="backend='rocm'"):
    fp4_matmul(jnp.zeros((2, 256)), w, backend="rocm", interpret=True)
  assert isinstance(q, FPQuantizer)
