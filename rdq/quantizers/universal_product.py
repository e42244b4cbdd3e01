"""Product codebooks for universal quantization (``rdq.quantizers.universal``): a small codebook
per block of coordinates, encoded block by block with successive interference cancellation.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Integer

from rdq.quantizers.base import Rate
from rdq.quantizers.universal_codebook import (
  _F32,
  _HI,
  DEFAULT_MAX_BYTES,
  Codebook,
  _check_chunk,
  _check_sigma,
  _check_w,
  _nearest,
)

__all__ = ["ProductCodebook"]

# ----------------------------------------------------------------------------- product codebook
@functools.partial(jax.jit, static_argnames=("num_blocks", "chunk", "damp"))
def _sic_batch(block_points, w, sigma, scale, num_blocks: int, chunk: int, damp: float):
  """Block SIC for each Σ in (S, n, n): indices (S, B, num_blocks)."""

  def one(args):
    s, tau = args
    return _sic(block_points * tau, s, w, num_blocks, chunk, damp)

  return jax.lax.map(one, (sigma, scale))


def _sic(points: Array, sigma: Array, w: Array, num_blocks: int, chunk: int, damp: float) -> Array:
  """Block nearest plane: Σ + δI = RᵀR (R upper); blocks from last to first, each the exact
  Σ-aware nearest codeword of a shifted target under the block metric ``R_bbᵀR_bb``."""
  n = w.shape[-1]
  d = n // num_blocks
  reg = sigma + damp * jnp.trace(sigma) / n * jnp.eye(n, dtype=sigma.dtype)
  r = jnp.linalg.cholesky(reg).T  # upper
  err = jnp.zeros_like(w)  # w − ĉ, filled from the last block backwards
  idx = []
  for b in reversed(range(num_blocks)):
    sl = slice(b * d, (b + 1) * d)
    rbb = r[sl, sl]
    # interference from later blocks in block b's rows: Σ_{b'>b} R_{bb'} (w_{b'} − ĉ_{b'})
    inter = jnp.dot(err[:, (b + 1) * d:], r[sl, (b + 1) * d:].T, precision=_HI)
    shift = jax.scipy.linalg.solve_triangular(rbb, inter.T, lower=False).T
    target = w[:, sl] + shift
    j = _nearest(points, jnp.dot(rbb.T, rbb, precision=_HI), target, chunk)
    err = err.at[:, sl].set(w[:, sl] - points[j])
    idx.append(j)
  return jnp.stack(idx[::-1], axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProductCodebook:
  """Product codebook ``C = C_d^{n/d}``: one block codebook on each of ``num_blocks`` blocks of
  consecutive input features. Rate = the block's rate; ``2^{nR}`` points, ``2^{dR}`` stored.

  Encoding is block successive interference cancellation (Babai's nearest plane on the upper
  Cholesky factor R of ``Σ + δ·(trΣ/n)·I``, ``δ = damp``, last block first): each block is the
  exact Σ-aware nearest block codeword of its target after cancelling the later blocks' error.
  It equals the exact joint search when Σ is block-diagonal over the blocks (then R is too);
  otherwise it is the practical heuristic (as in GPTQ/GPTVQ). The distortion reported by
  ``rate_gap`` is always measured with the undamped Σ.

  Attributes:
    block: the ``d``-dimensional block codebook.
    num_blocks: number of blocks, ``n = d·num_blocks``.
    damp: relative damping δ for the Cholesky factorization (Σ may be singular).
  """

  block: Codebook
  num_blocks: int = dataclasses.field(default=2, metadata=dict(static=True))
  damp: float = dataclasses.field(default=1e-6, metadata=dict(static=True))

  def __post_init__(self):
    if not isinstance(self.block, Codebook):
      raise TypeError(f"block must be a Codebook; got {type(self.block).__name__}")
    if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 1:
      raise ValueError(f"num_blocks={self.num_blocks!r} must be a positive integer")
    if not self.damp >= 0:
      raise ValueError(f"damp={self.damp!r} must be ≥ 0")

  @property
  def name(self) -> str:
    return f"product_{self.block.name}{self.block.n}x{self.num_blocks}"

  @property
  def n(self) -> int:
    return self.block.n * self.num_blocks

  @property
  def rate_bits(self) -> float:
    return self.block.rate_bits

  @property
  def points(self) -> Float[Array, "k n"]:
    """All ``K_d^{num_blocks}`` codewords (first block varies slowest); see ``materialize``."""
    return self.materialize().points

  def rate(self, shape: tuple[int, ...] | None = None) -> Rate:
    del shape
    return Rate(nominal=self.rate_bits, side=0.0)

  def materialize(self, max_bytes: int = DEFAULT_MAX_BYTES) -> Codebook:
    """The product as an explicit ``Codebook`` (exact joint Σ-aware search), if it fits."""
    kd, d = self.block.points.shape
    need = float(kd) ** self.num_blocks * self.n * _F32
    if need > max_bytes:
      raise ValueError(f"the product of {self.num_blocks} blocks of {kd} points has {kd}^{self.num_blocks} codewords "
                       f"({need / 2**30:.3g} GiB > max_bytes={max_bytes / 2**30:.3g} GiB); encode with block SIC "
                       f"(ProductCodebook.encode) instead")
    grids = jnp.meshgrid(*([jnp.arange(kd)] * self.num_blocks), indexing="ij")
    idx = jnp.stack([g.reshape(-1) for g in grids], axis=-1)
    pts = self.block.points[idx].reshape(-1, self.n)
    return Codebook(pts, name=self.name, chunk=self.block.chunk)

  def encode(
      self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "*s n n"], *, scale: ArrayLike = 1.0,
      max_bytes: int = DEFAULT_MAX_BYTES,
  ) -> Integer[Array, "*s *batch blocks"]:
    """Block-SIC encoding; indices ``(*batch, num_blocks)`` (or ``(S, *batch, num_blocks)``)."""
    w = _check_w(w, self.n)
    sig = _check_sigma(sigma, self.n)
    batch_shape = w.shape[:-1]
    wf = w.reshape(-1, self.n)
    _check_chunk(self.block.chunk, wf.shape[0], max_bytes)
    sig3 = sig if sig.ndim == 3 else sig[None]
    tau = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (sig3.shape[0],))
    idx = _sic_batch(self.block.points, wf, sig3, tau, self.num_blocks, self.block.chunk, self.damp)
    idx = idx.reshape((sig3.shape[0],) + batch_shape + (self.num_blocks,))
    return idx if sig.ndim == 3 else idx[0]

  def decode(self, idx: Integer[ArrayLike, "*b blocks"], *, scale: ArrayLike = 1.0) -> Float[Array, "*b n"]:
    blocks = jnp.take(self.block.points, jnp.asarray(idx), axis=0)
    return blocks.reshape(blocks.shape[:-2] + (self.n,)) * jnp.asarray(scale, jnp.float32)

  def quantize(self, w, sigma, *, scale: float = 1.0):
    return self.decode(self.encode(w, sigma, scale=scale), scale=scale)

  def _reconstruct(self, sigma: Array, w: Array, tau: Array) -> Array:
    p = self.block.points * tau
    j = _sic(p, sigma, w, self.num_blocks, self.block.chunk, self.damp)
    return p[j].reshape(w.shape)
