"""Codebook (VQ) kernel: both lookups/interleaves vs reference, lowering, MC, bad input."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.checks import checked
from rdq.kernels import Config, codebook_matmul, pack_codebook
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import codebook_decode
from rdq.quantized_matmul import codebook_matmul_reference as reference
from rdq.quantizers.base import Rate
from tests.kernels._util import (
  COMPILED,
  Identity,
  assert_close,
  assert_lowered,
  lower,
  mc_agrees,
  mode,
  product_error,
  tolerance,
)


def _codes(key, k, n, d, c, groups):
  ki, kc = jax.random.split(key)
  return jax.random.randint(ki, (n, k // d), 0, c), jax.random.normal(kc, (groups, c, d))


@pytest.mark.parametrize("backend,lookup,interleave,m,k,n,d,c,groups,dtype", [
    ("tpu", "gather", "stack", 1, 256, 128, 2, 256, 2, jnp.float32),
    ("tpu", "select", "stack", 5, 128, 256, 4, 16, 1, jnp.bfloat16),
    ("gpu", "select", "strided", 3, 256, 128, 4, 8, 2, jnp.float32),
    ("gpu", "gather", "strided", 8, 384, 128, 2, 64, 3, jnp.bfloat16),  # 3 codebooks (odd)
    ("gpu", "index", "strided", 3, 256, 128, 2, 256, 2, jnp.float32),   # direct indexing
    ("gpu", "index", "strided", 1, 384, 128, 4, 16, 3, jnp.bfloat16),   # GEMV form, M = 1
    ("tpu", "lane", "stack", 3, 256, 256, 2, 256, 2, jnp.float32),      # lane gather, 2 chunks
    ("tpu", "lane", "stack", 1, 256, 128, 1, 200, 1, jnp.bfloat16),     # C padded to 256 lanes
])
def test_matches_reference(backend, lookup, interleave, m, k, n, d, c, groups, dtype, key):
  if lookup == "gather" and COMPILED:
    pytest.skip(reason="compiled mode: lookup='gather' runs only in the interpreter")
  idx, cb = _codes(key, k, n, d, c, groups)
  x = jax.random.normal(jax.random.fold_in(key, 1), (m, k)).astype(dtype)
  gs = k // groups
  y = codebook_matmul(x, pack_codebook(idx, cb, group_size=gs), config=Config(8, 128, 128),
                      **mode(backend), lookup=lookup, interleave=interleave)
  assert y.dtype == x.dtype and y.shape == (m, n)
  assert_close(y, reference(x, idx, cb, gs), tolerance(dtype, k, x, codebook_decode(idx, cb, gs).T))


# The lowerable lookups: select on both backends (stack on TPU, strided on GPU), index on GPU,
# the lane gather on TPU (C = 16 and C = 256: one and two 128-lane chunks).
@pytest.mark.parametrize("backend,lookup,c", [("tpu", "select", 16), ("gpu", "select", 16),
                                              ("gpu", "index", 16), ("tpu", "lane", 16),
                                              ("tpu", "lane", 256)])
@pytest.mark.parametrize("d", [2, 4])
def test_lowers(backend, lookup, c, d):
  k, n = 1024, 512
  packed = jax.eval_shape(lambda i, cb: pack_codebook(i, cb, group_size=512),
                          jax.ShapeDtypeStruct((n, k // d), jnp.int32),
                          jax.ShapeDtypeStruct((2, c, d), jnp.float32))
  fn = functools.partial(codebook_matmul, backend=backend, lookup=lookup)
  lowered = lower(fn, (jax.ShapeDtypeStruct((16, k), jnp.bfloat16), packed), backend)
  assert_lowered(lowered, backend)


@dataclasses.dataclass(frozen=True)
class NearestCodebook:
  """Nearest-centroid VQ of d-vectors along the last axis (test-local; one codebook)."""

  centroids: tuple  # C tuples of d floats (hashable)

  def _cb(self):
    return jnp.asarray(self.centroids, jnp.float32)

  def encode(self, x):
    cb = self._cb()
    d = cb.shape[1]
    v = x.reshape(x.shape[:-1] + (x.shape[-1] // d, d))
    dist = jnp.sum((v[..., None, :] - cb) ** 2, axis=-1)
    return jnp.argmin(dist, axis=-1)

  def quantize(self, x, key=None):
    return self._cb()[self.encode(x)].reshape(x.shape)

  def rate(self, shape):
    return Rate(nominal=np.log2(len(self.centroids)) / len(self.centroids[0]), side=0.0)


def test_error_matches_rdq_monte_carlo():
  m, k, n, d, samples = 8, 256, 128, 2, 16
  pts = np.asarray(jax.random.normal(jax.random.key(7), (64, d)))
  q = NearestCodebook(tuple(map(tuple, pts.tolist())))
  cb = jnp.asarray(pts, jnp.float32)[None]
  errs = []
  for i in range(samples):
    kx, kw = jax.random.split(jax.random.fold_in(jax.random.key(8), i))
    x, w = jax.random.normal(kx, (m, k)), jax.random.normal(kw, (k, n))
    packed = pack_codebook(q.encode(w.T), cb, group_size=k)
    y = codebook_matmul(x, packed, config=Config(8, 128, 256), **mode("tpu"))
    errs.append(product_error(x, w, y))
  est = matmul_distortion(Identity(), q, MatmulSetup(n=k, a=m, b=n), jax.random.key(9), 256)
  ok, msg = mc_agrees(errs, est)
  assert ok, msg


def test_bad_input(key):
  idx, cb = _codes(key, 256, 128, 2, 16, 2)
  w = pack_codebook(idx, cb, group_size=128)
  with pytest.raises(ValueError, match="K=128 input features"):
    codebook_matmul(jnp.zeros((2, 128)), w, interpret=True)
  with pytest.raises(ValueError, match=r"lookup='gather' \(jnp.take\) has no Triton or Mosaic lowering"):
    codebook_matmul(jnp.zeros((2, 256)), w, backend="tpu", lookup="gather")
  with pytest.raises(ValueError, match="lookup='index' .* does not lower for Mosaic"):
    codebook_matmul(jnp.zeros((2, 256)), w, backend="tpu", lookup="index")
  with pytest.raises(ValueError, match="interleave='stack' does not lower for Triton"):
    codebook_matmul(jnp.zeros((2, 256)), w, backend="gpu", lookup="select", interleave="stack")
  with pytest.raises(ValueError, match="lookup='lane' .* does not lower for Triton"):
    codebook_matmul(jnp.zeros((2, 256)), w, backend="gpu", lookup="lane")
  with pytest.raises(ValueError, match="lookup='onehot'"):
    codebook_matmul(jnp.zeros((2, 256)), w, interpret=True, lookup="onehot")
  with pytest.raises(ValueError, match="C=300"):
    pack_codebook(idx, jnp.zeros((2, 300, 2)), group_size=128)
  with pytest.raises(ValueError, match="G=2 groups"):
    pack_codebook(idx, cb, group_size=64)
  with pytest.raises(TypeError, match="integer"):
    pack_codebook(idx.astype(jnp.float32), cb, group_size=128)
  # Corrupt indices (issue 17): ≥ C or negative are named with the value and the range.
  with pytest.raises(ValueError, match=r"indices holds 16 .*C=16 centroids in \[0, 15\]"):
    pack_codebook(idx.at[0, 0].set(16), cb, group_size=128)
  with pytest.raises(ValueError, match=r"indices holds -1 "):
    pack_codebook(idx.at[3, 1].set(-1), cb, group_size=128)
  # the same check under jit, through rdq's one mechanism: checked(jax.jit(...)) (checkify)
  with pytest.raises(ValueError, match=r"indices holds 16 "):
    jax.block_until_ready(checked(jax.jit(lambda i: pack_codebook(i, cb, group_size=128).indices))(
        idx.at[0, 0].set(16)))
  with pytest.raises(ValueError, match="block_k=96 must divide"):
    codebook_matmul(jnp.zeros((2, 256)), w, config=Config(block_k=96), interpret=True)
