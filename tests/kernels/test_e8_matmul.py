"""E8 nested-lattice kernel: in-kernel Voronoi decode bit-exact vs rdq, matmul, MC, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.kernels import Config
from rdq.kernels.e8_matmul import decode_e8_planes, e8_matmul
from rdq.kernels.pack import pack_e8
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import dequant_matmul
from rdq.quantizers.lattice import E8Lattice
from rdq.quantizers.nested import NestedLatticeQuantizer, VoronoiCode
from tests.kernels._util import (
  Identity,
  assert_close,
  mc_agrees,
  mode,
  product_error,
  tolerance,
)


@pytest.mark.parametrize("q", [2, 3, 4, 5, 8, 16])
def test_plane_decode_equals_voronoi_decode(q):
  # Every coordinate vector of a random sample (and the all-(q-1) corner, where the coarse
  # reduction meets cell boundaries), decoded as 8 planes, equals rdq's exact decode bitwise.
  c = np.random.default_rng(q).integers(0, q, size=(4096, 8))
  c[0] = q - 1
  c[1] = 0
  c = jnp.asarray(c, jnp.uint8)
  dec = jax.jit(lambda c: jnp.stack(decode_e8_planes([c[:, t] for t in range(8)], q), axis=-1))
  got = dec(c)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(VoronoiCode(E8Lattice(), q).decode(c)))


@pytest.fixture(scope="module")
def exact_case():
  # Integer x and dyadic β: every product and partial sum is exact in fp32, so the kernel
  # must equal rdq decode + jnp.dot bit for bit in any summation order.
  k, n = 256, 128
  quant = NestedLatticeQuantizer("e8", 4, (0.25, 0.5))
  w = jax.random.normal(jax.random.key(1), (k, n))
  code = jax.jit(quant.encode)(w.T)
  x = jnp.round(4 * jax.random.normal(jax.random.key(2), (3, k)))
  return x, quant, code, pack_e8(code, quant)


@pytest.mark.parametrize("backend,m,cfg", [
    ("tpu", 3, Config(block_k=128)),                # stack interleave, 2 K steps
    ("gpu", 3, Config(block_k=128, split_k=2)),     # strided planes, split-K
    ("gpu", 1, Config(block_k=64, split_k=2)),      # GEMV form
])
def test_matmul_bit_exact(exact_case, backend, m, cfg):
  x, quant, code, packed = exact_case
  y = e8_matmul(x[:m], packed, config=cfg, **mode(backend))
  np.testing.assert_array_equal(np.asarray(y), np.asarray(dequant_matmul(x[:m], quant, code)))


def test_matmul_with_norm_and_four_betas():
  k, n, m = 256, 128, 5
  quant = NestedLatticeQuantizer("e8", 16, (0.03, 0.05, 0.08, 0.13), norm="bf16")
  w = 3.0 * jax.random.normal(jax.random.key(3), (k, n))
  code = jax.jit(quant.encode)(w.T)
  x = jax.random.normal(jax.random.key(4), (m, k)).astype(jnp.bfloat16)
  y = e8_matmul(x, pack_e8(code, quant), config=Config(block_k=128), **mode("gpu"))
  # The RMS scale is applied after the sum (one more fp32 rounding per output than the
  # reference, which scales Ŵ): inside the fp32-summation-order bound.
  assert y.dtype == jnp.bfloat16
  assert_close(y, dequant_matmul(x, quant, code), tolerance(jnp.bfloat16, k, x, quant.decode(code).T))


def test_error_matches_rdq_monte_carlo():
  m, k, n, samples = 8, 256, 128, 10
  quant = NestedLatticeQuantizer("e8", 4, (0.18, 0.26), norm="fp32")
  errs = []
  encode = jax.jit(quant.encode)
  for i in range(samples):
    kx, kw = jax.random.split(jax.random.fold_in(jax.random.key(5), i))
    x, w = jax.random.normal(kx, (m, k)), jax.random.normal(kw, (k, n))
    y = e8_matmul(x, pack_e8(encode(w.T), quant), config=Config(8, 128, 256), **mode("tpu"))
    errs.append(product_error(x, w, y))
  est = matmul_distortion(Identity(), quant, MatmulSetup(n=k, a=m, b=n), jax.random.key(6), 256)
  ok, msg = mc_agrees(errs, est)
  assert ok, msg


def test_bad_input(exact_case):
  _, quant, code, _ = exact_case
  with pytest.raises(ValueError, match="needs the E8 lattice"):
    pack_e8(code, NestedLatticeQuantizer("d4", 4, (0.5,)))
  with pytest.raises(ValueError, match="dither"):
    pack_e8(code, NestedLatticeQuantizer("e8", 4, (0.25, 0.5), dither=True))
  with pytest.raises(ValueError, match=r"code.codes holds 4 .*mod q=4 in \[0, 3\]"):
    pack_e8(code._replace(codes=code.codes.at[0, 0].set(4)), quant)
  with pytest.raises(ValueError, match=r"code.beta_index holds 2 "):
    pack_e8(code._replace(beta_index=code.beta_index.at[0, 0].set(2)), quant)
  with pytest.raises(TypeError, match="PackedE8"):
    e8_matmul(jnp.ones((1, 256)), code, interpret=True)
  with pytest.raises(ValueError, match="K=32 input features"):
    e8_matmul(jnp.ones((1, 32)), pack_e8(code, quant), interpret=True)
  with pytest.raises(TypeError, match="w.planes.dtype=int32"):
    p = pack_e8(code, quant)
    e8_matmul(jnp.ones((1, 256)), type(p)(planes=p.planes.astype(jnp.int32), beta_index=p.beta_index,
                                          scale=p.scale, q=4, betas=p.betas), interpret=True)


def test_planes_store_log2q_bits_per_coordinate(exact_case):
  _, _, code, packed = exact_case  # q = 4: 2 bits per coordinate, 4 per byte
  k, n = packed.shape
  assert packed.planes.shape == (2, k // 8, n)
  from rdq.kernels import bytes_of
  assert bytes_of(packed) == k * n * 2 // 8 + (k // 8) * n + 4 * n  # codes + β index + scale
  from rdq.kernels.pack import coordinate_bits
  assert [coordinate_bits(q) for q in (2, 3, 4, 5, 16, 17, 256)] == [1, 2, 2, 4, 4, 8, 8]
