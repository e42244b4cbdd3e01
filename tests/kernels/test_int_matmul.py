"""INT weight-only kernel: interpret mode vs rdq's reference, lowering, MC, bad input."""

import functools

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from rdq.kernels import Config, int_matmul, pack_int, pack_int_zero_point, resolve_blocks
from rdq.kernels.int_matmul import scale_after_dot
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import dequant_matmul, zero_point_decode, zero_point_matmul
from rdq.quantizers import IntQuantizer
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

SMALL = Config(block_m=8, block_n=128, block_k=128)


def _data(key, m, k, n, dtype):
  kx, kw = jax.random.split(key)
  return jax.random.normal(kx, (m, k)).astype(dtype), jax.random.normal(kw, (k, n), jnp.float32)


# (M, K, N, quantizer, layout, x dtype). M = 1 (decode) and M not a multiple of block_m,
# odd group counts (K/g = 3, 5), N and K exactly at block boundaries and at 2 blocks.
CASES = [
    ("gpu", 1, 128, 128, IntQuantizer(4, "block", 32), "nibbles", jnp.float32),
    ("tpu", 5, 96, 256, IntQuantizer(4, "block", 32), "nibbles", jnp.bfloat16),  # 3 groups
    ("tpu", 8, 256, 128, IntQuantizer(4, "block", 64), "int4", jnp.float32),
    ("gpu", 3, 320, 128, IntQuantizer(4, "block", 64), "int8", jnp.bfloat16),  # 5 groups
    ("tpu", 16, 256, 256, IntQuantizer(8, "block", 128), "int8", jnp.float32),
    ("gpu", 2, 256, 128, IntQuantizer(8, "row"), "int8", jnp.bfloat16),  # per output feature
    # pre-permuted words (8 nibbles / 4 bytes per uint32 along K): GEMV, MMA per plane, TPU
    ("gpu", 1, 512, 128, IntQuantizer(4, "block", 32), "words", jnp.bfloat16),
    ("gpu", 1, 256, 256, IntQuantizer(4, "block", 128), "words", jnp.float32),
    ("gpu", 1, 384, 128, IntQuantizer(8, "row"), "words", jnp.bfloat16),
    ("gpu", 3, 256, 128, IntQuantizer(4, "block", 32), "words", jnp.bfloat16),   # g < bk
    ("gpu", 5, 256, 128, IntQuantizer(4, "block", 128), "words", jnp.float32),   # g ≥ bk
    ("tpu", 5, 384, 256, IntQuantizer(4, "block", 32), "words", jnp.bfloat16),   # 3 K steps
    ("tpu", 2, 256, 128, IntQuantizer(8, "block", 128), "words", jnp.float32),
]


def _scale_after(backend, m, k, n, g, cfg):
  return scale_after_dot(resolve_blocks(cfg, backend, m, k, n, group=g), g)


@pytest.mark.parametrize("backend,m,k,n,q,layout,dtype", CASES)
def test_matches_reference(backend, m, k, n, q, layout, dtype, key):
  x, w = _data(key, m, k, n, dtype)
  code = q.encode(w.T)
  packed = pack_int(code, q, layout=layout)
  cfg = Config(block_m=8, block_n=128, block_k=min(128, k) if k % 128 == 0 else k)
  y = int_matmul(x, packed, config=cfg, **mode(backend))
  ref = dequant_matmul(x, q, code)
  assert y.dtype == x.dtype and y.shape == (m, n)
  after = _scale_after(backend, m, k, n, packed.group_size, cfg)
  assert_close(y, ref, tolerance(dtype, k, x, q.decode(code).T, scale_after=after))


def test_scale_after_dot_bound_is_tight_enough(key):
  # The GEMV path (scale after the per-word partial) at decode size: the derived bound holds,
  # and the error is a real rounding difference (not zero) that stays below the bound's
  # weight-rounding term alone, i.e. the bound is not vacuous.
  m, k, n = 1, 1024, 256
  q = IntQuantizer(4, "block", 128)
  x, w = _data(key, m, k, n, jnp.bfloat16)
  code = q.encode(w.T)
  y = int_matmul(x, pack_int(code, q), out_dtype=jnp.float32, **mode("gpu"))
  ref = dequant_matmul(x, q, code, out_dtype=jnp.float32)
  w_hat = q.decode(code).T
  tol = tolerance(jnp.float32, k, x, w_hat, scale_after=True)
  assert_close(y, ref, tol)
  err = np.abs(np.asarray(y, np.float64) - np.asarray(ref, np.float64))
  assert err.max() > 0 and err.max() < 0.5 * tol.max()
  # against the exact product of the codes the kernel is closer than the reference is
  exact = np.asarray(x, np.float64) @ np.asarray(w_hat, np.float64)
  assert np.abs(np.asarray(y, np.float64) - exact).mean() < np.abs(np.asarray(ref, np.float64) - exact).mean()


@pytest.mark.parametrize("backend,layout", [(b, "nibbles") for b in BACKENDS] + [("tpu", "words")])
def test_fp32_single_k_step_is_exact(backend, layout, key):
  # With one K step the kernel performs exactly the reference's dot: bit-equal. (GPU words
  # take one dot per word plane, a different summation order: bounded in the tests above.)
  x, w = _data(key, 4, 128, 128, jnp.float32)
  q = IntQuantizer(4, "block", 32)
  code = q.encode(w.T)
  y = int_matmul(x, pack_int(code, q, layout=layout), config=SMALL, **mode(backend))
  np.testing.assert_array_equal(np.asarray(y), np.asarray(dequant_matmul(x, q, code)))


@pytest.mark.parametrize("backend,bits,layout", [("tpu", 4, "nibbles"), ("gpu", 4, "int8"),
                                                 ("gpu", 8, "int8"), ("gpu", 4, "words"),
                                                 ("tpu", 8, "words")])
def test_zero_points(backend, bits, layout, key):
  m, k, n, g = 3, 256, 128, 64
  k1, k2, k3, k4 = jax.random.split(key, 4)
  codes = jax.random.randint(k1, (n, k), 0, 2**bits)
  zeros = jax.random.randint(k2, (n, k // g), 0, 2**bits)
  scales = jax.random.uniform(k3, (n, k // g), minval=0.01, maxval=0.1)
  x = jax.random.normal(k4, (m, k))
  packed = pack_int_zero_point(codes, scales, zeros, bits=bits, group_size=g, layout=layout)
  y = int_matmul(x, packed, config=SMALL, **mode(backend))
  ref = zero_point_matmul(x, codes, scales, zeros, g)
  w_hat = zero_point_decode(codes, scales, zeros, g).T
  assert_close(y, ref, tolerance(jnp.float32, k, x, w_hat))
  if backend == "gpu" and layout == "words":  # and the GEMV form (scale after the word partial)
    y1 = int_matmul(x[:1], packed, **mode(backend))
    assert_close(y1, ref[:1], tolerance(jnp.float32, k, x[:1], w_hat, scale_after=True))


@settings(max_examples=3, deadline=None)
@given(
    m=st.integers(1, 20),
    groups=st.integers(1, 5),
    g=st.sampled_from([32, 64, 128]),
    n_blocks=st.integers(1, 2),
    bits=st.sampled_from([4, 8]),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(m, groups, g, n_blocks, bits, seed):
  k, n = groups * g, 128 * n_blocks
  x, w = _data(jax.random.key(seed), m, k, n, jnp.float32)
  q = IntQuantizer(bits, "block", g)
  code = q.encode(w.T)
  y = int_matmul(x, pack_int(code, q), config=Config(block_m=8, block_n=128, block_k=g),
                 **mode("tpu"))
  assert_close(y, dequant_matmul(x, q, code), tolerance(jnp.float32, k, x, q.decode(code).T))


# jnp.int4 is the TPU-only layout (GPU: nibbles; Triton sub-byte casts are unsupported).
@pytest.mark.parametrize("backend,q,layout", [
    (b, q, lay) for b in BACKENDS for q, lay in [
        (IntQuantizer(4, "block", 32), "nibbles"),
        (IntQuantizer(8, "row"), "int8"),
        (IntQuantizer(8, "block", 64), "int8"),
    ]
] + [("tpu", IntQuantizer(4, "block", 128), "int4")] + [
    (b, q, "words") for b in BACKENDS for q in (IntQuantizer(4, "block", 32), IntQuantizer(4, "block", 128),
                                                IntQuantizer(8, "row"))
])
def test_lowers(backend, q, layout):
  k, n = 1024, 512
  packed = jax.eval_shape(lambda w: pack_int(q.encode(w.T), q, layout=layout),
                          jax.ShapeDtypeStruct((k, n), jnp.float32))
  fn = functools.partial(int_matmul, backend=backend)
  for m in (16, 1) if backend == "gpu" else (16,):  # M = 1 is the GEMV form on GPU
    lowered = lower(fn, (jax.ShapeDtypeStruct((m, k), jnp.bfloat16), packed), backend)
    assert_lowered(lowered, backend)


def test_error_matches_rdq_monte_carlo():
  # E‖xW − x·Ŵ‖²/(KMN) of the kernel's product equals rdq's MC prediction for the same
  # quantizer (x unquantized), within a 99% two-sample confidence interval.
  m, k, n, samples = 8, 256, 128, 16
  q = IntQuantizer(4, "block", 32)
  errs = []
  for i in range(samples):
    x, w = _data(jax.random.fold_in(jax.random.key(1), i), m, k, n, jnp.float32)
    y = int_matmul(x, pack_int(q.encode(w.T), q), config=Config(8, 128, 256), **mode("tpu"))
    errs.append(product_error(x, w, y))
  est = matmul_distortion(Identity(), q, MatmulSetup(n=k, a=m, b=n), jax.random.key(2), 256)
  ok, msg = mc_agrees(errs, est)
  assert ok, msg


class TestBadInput:

  def _packed(self, k=256, n=128, q=IntQuantizer(4, "block", 32), **kw):
    w = jax.random.normal(jax.random.key(0), (k, n))
    kw.setdefault("layout", "nibbles")  # the cases below build nibble-layout variants
    return pack_int(q.encode(w.T), q, **kw)

  def test_words_checks(self):
    p = self._packed(layout="words")
    bad = type(p)(codes=p.codes.astype(jnp.int32), scales=p.scales, zeros=None, bits=4,
                  group_size=32, layout="words")
    with pytest.raises(TypeError, match="w.codes.dtype=int32"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)
    bad = type(p)(codes=p.codes, scales=jnp.ones((64, 128)), zeros=None, bits=4, group_size=4,
                  layout="words")
    with pytest.raises(ValueError, match="multiple of 8 codes per word"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)
    with pytest.raises(ValueError, match="needs block_k ≥ 128"):
      int_matmul(jnp.zeros((2, 256)), p, config=Config(block_k=64), backend="gpu")

  def test_k_mismatch(self):
    with pytest.raises(ValueError, match="K=128 input features but the weight has K=256"):
      int_matmul(jnp.zeros((2, 128)), self._packed(), interpret=True)

  def test_x_dtype(self):
    with pytest.raises(TypeError, match="x.dtype=int32"):
      int_matmul(jnp.zeros((2, 256), jnp.int32), self._packed(), interpret=True)

  def test_x_rank(self):
    with pytest.raises(ValueError, match="2-D"):
      int_matmul(jnp.zeros((256,)), self._packed(), interpret=True)

  def test_codes_dtype(self):
    p = self._packed()
    bad = type(p)(codes=p.codes.astype(jnp.int8), scales=p.scales, zeros=None, bits=4,
                  group_size=32, layout="nibbles")
    with pytest.raises(TypeError, match="w.codes.dtype=int8"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)

  def test_scales_dtype_and_shape(self):
    p = self._packed()
    bad = type(p)(codes=p.codes, scales=p.scales.astype(jnp.int32), zeros=None, bits=4,
                  group_size=32, layout="nibbles")
    with pytest.raises(TypeError, match="w.scales.dtype"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)
    bad = type(p)(codes=p.codes, scales=p.scales[:4], zeros=None, bits=4, group_size=32,
                  layout="nibbles")
    with pytest.raises(ValueError, match="w.scales must have shape"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)

  def test_group_not_dividing_k(self):
    p = self._packed()
    bad = type(p)(codes=p.codes, scales=p.scales, zeros=None, bits=4, group_size=48,
                  layout="nibbles")
    with pytest.raises(ValueError, match="group_size=48 must divide"):
      int_matmul(jnp.zeros((2, 256)), bad, interpret=True)

  def test_block_not_dividing(self):
    with pytest.raises(ValueError, match="block_k=96 must divide"):
      int_matmul(jnp.zeros((2, 256)), self._packed(), config=Config(block_k=96), interpret=True)
    with pytest.raises(ValueError, match="group_size=32 and block_k=48"):
      int_matmul(jnp.zeros((2, 96)), self._packed(k=96), config=Config(block_k=48), interpret=True)

  def test_backend(self):
    with pytest.raises(ValueError, match="backend='cuda' is unsupported"):
      int_matmul(jnp.zeros((2, 256)), self._packed(), backend="cuda", interpret=True)

  def test_cpu_without_interpret(self):
    if jax.default_backend() != "cpu":
      pytest.skip(reason="checks the CPU error")
    with pytest.raises(ValueError, match="interpret=True"):
      int_matmul(jnp.zeros((2, 256)), self._packed())

  def test_pack_checks(self):
    q = IntQuantizer(4, "block", 32)
    code = q.encode(jnp.ones((3, 64)))
    with pytest.raises(ValueError, match="N=3 must be even"):
      pack_int(code, q, layout="nibbles")
    with pytest.raises(ValueError, match="layout='int8'"):
      pack_int(IntQuantizer(8, "row").encode(jnp.ones((2, 64))), IntQuantizer(8, "row"), layout="nibbles")
    with pytest.raises(TypeError, match="IntQuantizer"):
      pack_int(code, object())
