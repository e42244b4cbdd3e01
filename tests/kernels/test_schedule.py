"""The schedule: config table, split-K, GEMV form; lowering of every table row on both backends."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import kernels
from rdq.kernels import Config, int_matmul, pack_activations, pack_int, w8a8_matmul
from rdq.kernels._common import DEFAULT_GPU_CORES, choose_blocks, resolve_blocks
from rdq.kernels.e8_matmul import e8_matmul
from rdq.kernels.pack import pack_e8
from rdq.quantized_matmul import dequant_matmul, w8a8_matmul_reference
from rdq.quantizers import IntQuantizer, get
from rdq.quantizers.nested import NestedLatticeQuantizer
from tests.kernels._util import assert_close, assert_lowered, lower, mode, tolerance

S = jax.ShapeDtypeStruct


def _programs(b, n):
  return b.split * (b.m_padded // b.bm) * (n // b.bn)


@pytest.mark.parametrize("m", [1, 4, 16])
@pytest.mark.parametrize("n", [4096, 14336])
def test_gpu_grid_covers_every_sm_at_decode(m, n):
  b = resolve_blocks(Config(), "gpu", m, 4096, n, group=32)
  assert _programs(b, n) >= DEFAULT_GPU_CORES, b
  assert b.gemv == (m == 1) and (b.bm == 1 if m == 1 else b.bm == 16)
  assert (4096 // b.bk) % b.split == 0


def test_table_follows_device_cores():
  # Fewer cores, no split; more N blocks than cores, no split either.
  assert resolve_blocks(Config(num_cores=64), "gpu", 1, 4096, 4096).split == 1
  assert resolve_blocks(Config(), "gpu", 1, 4096, 16384).split == 1
  assert resolve_blocks(Config(num_cores=512), "gpu", 1, 4096, 4096).split == 8  # 64 N blocks · 8


def test_tpu_k11008_takes_a_dividing_block():
  # K = 11008 = 2^8·43: the table's 512 does not divide it; 256 does.
  assert choose_blocks("tpu", 16, 11008, 4096).block_k == 256
  assert resolve_blocks(Config(), "tpu", 16, 11008, 4096, group=128).bk == 256
  assert resolve_blocks(Config(), "gpu", 16, 11008, 4096, group=128).bk == 64
  assert choose_blocks("tpu", 16, 8 * 43, 128).block_k == 8  # 344 = 8·43
  assert choose_blocks("tpu", 16, 43, 128).block_k == 43      # no power of two: full K


def test_w8a8_groups_fit_one_k_step_on_gpu():
  assert resolve_blocks(Config(), "gpu", 16, 4096, 4096, group=32, max_bk=32).bk == 32
  qw = IntQuantizer(8, "block", 32)
  w = pack_int(qw.encode(jnp.ones((128, 256))), qw)
  xq = jnp.ones((2, 256), jnp.int8)
  with pytest.raises(ValueError, match="block_k=64 > group_size=32: on GPU"):
    w8a8_matmul(xq, jnp.ones((2, 1)), w, config=Config(block_k=64), **mode("gpu"))


def test_explicit_config_errors():
  with pytest.raises(ValueError, match="split_k=3 must divide the number of K steps"):
    resolve_blocks(Config(block_k=64, split_k=3), "gpu", 1, 256, 128)
  with pytest.raises(ValueError, match="gemv=True needs backend='gpu' and M=1"):
    resolve_blocks(Config(gemv=True), "gpu", 2, 256, 128)
  with pytest.raises(ValueError, match="split_k=0"):
    Config(split_k=0)


# ----------------------------------------------------------------------------- interpret mode


@pytest.fixture(scope="module")
def int4_case():
  k, n = 256, 128
  x = jax.random.normal(jax.random.key(0), (4, k))
  w = jax.random.normal(jax.random.key(1), (k, n))
  q = IntQuantizer(4, "block", 32)
  code = q.encode(w.T)
  return x, q, code, pack_int(code, q)


@pytest.mark.parametrize("backend,m,cfg", [
    ("gpu", 1, Config(block_k=32, split_k=2)),              # GEMV (table at M = 1) + split-K
    ("tpu", 4, Config(block_k=64, split_k=2)),              # TPU split-K
])
def test_split_k_and_gemv_match_reference(int4_case, backend, m, cfg):
  x, q, code, packed = int4_case
  x = x[:m]
  b = resolve_blocks(cfg, backend, m, 256, 128, group=32)
  assert b.split > 1 and b.gemv == (m == 1)
  y = int_matmul(x, packed, config=cfg, **mode(backend))
  assert_close(y, dequant_matmul(x, q, code), tolerance(jnp.float32, 256, x, q.decode(code).T))


@pytest.mark.parametrize("backend,m,cfg", [
    ("gpu", 1, Config(block_k=64, split_k=2)),    # GEMV, int32 elementwise accumulator
    ("gpu", 3, Config(block_k=32, split_k=4)),    # MMA, int32 partials summed exactly
])
def test_w8a8_split_and_gemv_bit_exact(backend, m, cfg):
  k, n = 256, 128
  qx, qw = IntQuantizer(8, "row"), IntQuantizer(8, "row")
  x_code = qx.encode(jax.random.normal(jax.random.key(2), (m, k)))
  w_code = qw.encode(jax.random.normal(jax.random.key(3), (n, k)))
  y = w8a8_matmul(*pack_activations(x_code), pack_int(w_code, qw), config=cfg,
                  **mode(backend))
  np.testing.assert_array_equal(np.asarray(y), np.asarray(w8a8_matmul_reference(x_code, w_code, qw)))


# ----------------------------------------------------------------------------- lowering


def _packed(fmt, k, n):
  w = S((k, n), jnp.float32)
  if fmt in ("int4_block32", "int8_row", "mxfp4", "nvfp4"):  # int4 and fp4: words (default)
    q = get(fmt)
    pack = kernels.pack_fp4 if fmt.endswith("fp4") else kernels.pack_int
    return jax.eval_shape(lambda a: pack(q.encode(a.T), q), w)
  if fmt == "int8_row_words":
    q = get("int8_row")
    return jax.eval_shape(lambda a: kernels.pack_int(q.encode(a.T), q, layout="words"), w)
  if fmt.startswith("w8a8"):
    q = IntQuantizer(8, "row") if fmt == "w8a8_row" else IntQuantizer(8, "block", 32)
    return jax.eval_shape(lambda a: kernels.pack_int(q.encode(a.T), q), w)
  if fmt == "vq_d2_c256":
    return jax.eval_shape(lambda i, c: kernels.pack_codebook(i, c, group_size=256),
                          S((n, k // 2), jnp.int32), S((k // 256, 256, 2), jnp.float32))
  nq = NestedLatticeQuantizer("e8", 4, (0.2, 0.4))
  return jax.eval_shape(lambda a: pack_e8(nq.encode(a.T), nq), w)


_KERNEL = {"int4_block32": int_matmul, "int8_row": int_matmul, "int8_row_words": int_matmul,
           "mxfp4": kernels.fp4_matmul,
           "nvfp4": kernels.fp4_matmul, "w8a8_row": w8a8_matmul, "w8a8_g32": w8a8_matmul,
           "vq_d2_c256": kernels.codebook_matmul, "e8": e8_matmul}
# One M per row of each backend's table; K = 11008 (= 2^8·43, LLaMA's MLP width) and 4096.
_ROWS = [("gpu", m) for m in (1, 16, 64, 128)] + [("tpu", m) for m in (1, 128)]


@pytest.mark.parametrize("backend,m", _ROWS)
@pytest.mark.parametrize("fmt", list(_KERNEL))
def test_every_table_row_lowers(backend, m, fmt):
  for k, n in ((4096, 512), (11008, 256)):
    packed = _packed(fmt, k, n)
    if fmt.startswith("w8a8"):
      args = (S((m, k), jnp.int8), S((m, 1), jnp.float32), packed)
    else:
      args = (S((m, k), jnp.bfloat16), packed)
    assert_lowered(lower(functools.partial(_KERNEL[fmt], backend=backend), args, backend), backend)
