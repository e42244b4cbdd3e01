"""E8 nested-lattice (Voronoi code) weight-only matmul: the lattice decode inside the kernel.

A weight encoded by ``rdq.quantizers.nested.NestedLatticeQuantizer("e8", q, betas)`` is, per
block of 8 input features, Voronoi coordinates ``c ∈ {0, …, q−1}⁸``, a scale index ``j`` and
(optionally) a per-output-feature RMS scale ``s``. The decoded block is

.. math::
   \\hat w = s\\,\\beta_j\\,\\big(cB - q\\,Q_{E8}(cB/q)\\big)
          = s\\,\\beta_j\\,\\tfrac12\\big(u - q\\,T\\big),\\qquad u = c\\,(2B) \\in \\mathbb Z^8,
   \\quad T = 2\\,Q_{E8}\\!\\big(u / (2q)\\big) \\in \\mathbb Z^8,

with B the E8 generator (``rdq.quantizers.lattice.E8Lattice``; ``2B`` is an integer matrix)
and ``Q_{E8}`` the Conway–Sloane closest point of ``E8 = D8 ∪ (D8 + ½·1)``: round each
coordinate, fix the parity of ``D8`` by re-rounding the coordinate with the largest residual,
do the same for the coset shifted by ½, and keep the closer of the two. Everything is exact
integer arithmetic on fixed shapes — rounding by ``⌊(2u + den)/(2 den)⌋`` (a shift when q is
a power of two), a compare chain for the argmax, selects — and matches
``VoronoiCode.decode`` bit for bit, tie rules included (``_closest_dn_int``,
``_two_coset_int``). The kernel holds the 8 coordinates of a block in 8 *planes*
(``pack_e8``; ⌈log2 q⌉ bits each, several per byte), so the decode is elementwise between planes; plane ``t`` multiplies the
strided activation columns ``x[:, t::8]`` (GPU), or the planes are interleaved back to rows
(TPU). The per-feature scale ``s`` is applied once in the epilogue.

Reference: ``rdq.quantizers.nested.NestedLatticeQuantizer.decode`` then ``jnp.dot``
(``rdq.quantized_matmul.dequant_matmul``).

References:
  J. H. Conway and N. J. A. Sloane, "Fast quantizing and decoding algorithms for lattice
  quantizers and codes", IEEE Trans. IT 28(2):227–232, 1982, Sec. III (Dₙ and E8 decoders);
  "A fast encoding method for lattice codes and quantizers", IEEE Trans. IT 29(6), 1983
  (Voronoi codes). K. Savkin, E. Porat, O. Ordentlich, Y. Polyanskiy, "NestQuant: nested
  lattice quantization for matrix products and LLMs", ICML 2025 (E8 Voronoi codes with
  several β per block).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedE8
from rdq.quantizers.lattice import E8Lattice

__all__ = ["decode_e8_planes", "e8_matmul"]

_INTERLEAVES = ("stack", "strided")


def _generator_2b() -> np.ndarray:
  return np.rint(2 * E8Lattice().generator()).astype(np.int64)


def _floor_div(a: Array, den: int, bound: int) -> Array:
  """``⌊a / den⌋`` for int32 ``|a| ≤ bound``: a shift for powers of two, else a truncating
  division of ``a + den·B ≥ 0`` (no ``sign``, which Mosaic lowers only per TPU generation)."""
  if den & (den - 1) == 0:
    return jnp.right_shift(a, den.bit_length() - 1)  # arithmetic shift = floor
  b = bound // den + 1
  return jax.lax.div(a + den * b, jnp.int32(den)) - b


def _closest_dn(u: list, den: int, bound: int) -> tuple[list, list]:
  """``Q_{D8}(u/den)`` and residuals ``u − den·f`` on 8 planes (rdq's ``_closest_dn_int``)."""
  f = [_floor_div(2 * ut + den, 2 * den, 2 * bound + den) for ut in u]
  r = [ut - den * ft for ut, ft in zip(u, f)]
  parity = f[0]
  for ft in f[1:]:
    parity = parity + ft
  odd = (parity & 1) != 0
  best, arg = jnp.abs(r[0]), jnp.zeros_like(r[0])
  for t in range(1, 8):  # first index on ties, as jnp.argmax
    a = jnp.abs(r[t])
    better = a > best
    best = jnp.where(better, a, best)
    arg = jnp.where(better, t, arg)
  out_f, out_r = [], []
  for t in range(8):
    step = jnp.where(r[t] >= 0, 1, -1)
    ft = f[t] + jnp.where(odd & (arg == t), step, 0)
    out_f.append(ft)
    out_r.append(u[t] - den * ft)
  return out_f, out_r


def decode_e8_planes(planes: list, q: int) -> list:
  """Voronoi decode ``cB mod qE8`` of E8 codes given as 8 coordinate planes (any shape).

  Args:
    planes: 8 integer arrays ``c_t`` (coordinate t of each block), values in ``[0, q)``.
    q: nesting ratio.

  Returns:
    8 float32 arrays: coordinate t of ``½(u − qT)`` (module docstring), bit-equal to
    ``VoronoiCode(E8Lattice(), q).decode``.
  """
  mb = _generator_2b()
  c = [p.astype(jnp.int32) for p in planes]
  u = []
  for t in range(8):  # u = c · (2B), static coefficients
    acc = None
    for j in range(8):
      coef = int(mb[j, t])
      if coef == 0:
        continue
      term = c[j] if coef == 1 else (-c[j] if coef == -1 else c[j] * coef)
      acc = term if acc is None else acc + term
    u.append(acc)
  den = 2 * q
  bound = int(np.abs(mb).sum(axis=0).max()) * (q - 1) + den  # |u| and |u − den/2|
  f0, r0 = _closest_dn(u, den, bound)
  f1, r1 = _closest_dn([ut - den // 2 for ut in u], den, bound)
  d0 = r0[0] * r0[0]
  d1 = r1[0] * r1[0]
  for t in range(1, 8):
    d0 = d0 + r0[t] * r0[t]
    d1 = d1 + r1[t] * r1[t]
  second = d1 < d0  # ties go to D8, as rdq's _two_coset_int
  out = []
  for t in range(8):
    tt = jnp.where(second, 2 * f1[t] + 1, 2 * f0[t])
    out.append((u[t] - q * tt).astype(jnp.float32) * jnp.float32(0.5))
  return out


def _beta(idx: Array, betas: tuple) -> Array:
  """``β[idx]`` by a select chain over the (static, few) scales."""
  out = jnp.full(idx.shape, betas[0], jnp.float32)
  for j, b in enumerate(betas[1:], start=1):
    out = jnp.where(idx == j, jnp.float32(b), out)
  return out


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret", "out_dtype",
                                             "interleave"))
def _e8(x, w: PackedE8, *, blocks, backend, config, interpret, out_dtype, interleave):
  k, n = w.shape
  bk = blocks.bk
  operands = [C.Operand("pkn", k_div=8), C.Operand("kn", k_div=8), C.Operand("n", epilogue=True)]
  arrays = [w.planes, w.beta_index, w.scale]

  def tile(kk, tiles, prod):
    plane, bidx = tiles
    v = decode_e8_planes([w.coordinate(plane, t) for t in range(8)], w.q)
    beta = _beta(bidx.astype(jnp.int32), w.betas)
    comps = [(beta * vt).astype(x.dtype) for vt in v]
    if interleave == "stack":
      rows, cols = bidx.shape
      wt = jnp.stack(comps, axis=1).reshape(rows * 8, cols)
      return prod.dot(prod.x(0, bk), wt)
    acc = None
    for t in range(8):
      p = prod.dot(prod.x(t, bk // 8, stride=8), comps[t])
      acc = p if acc is None else acc + p
    return acc

  return C.tiled_matmul(
      tile, lambda acc, epi: acc * epi[0], x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="e8_matmul",
      gemv_rows=bk // 8,
  )


def e8_config(config: C.Config, backend: str, k: int, n: int) -> C.Config:
  """The E8 rows of the config table: on GPU ``block_k = 256``, ``block_n = 128`` where they
  divide K and N (the plane decode has a fixed cost per step that larger tiles amortize:
  main-loop SASS per weight 49 → 15 from (64, 64) to (256, 128) at M = 1, in
  ``benchmarks/kernels.py --sass``), else ``block_k = 128`` (16 rows per plane for ``tl.dot``)."""
  if backend != "gpu":
    return config
  if config.block_k is None:
    bk = 256 if k % 256 == 0 else (128 if k % 128 == 0 else None)
    config = dataclasses.replace(config, block_k=bk)
  if config.block_n is None and n % 128 == 0:
    config = dataclasses.replace(config, block_n=128)
  return config


def e8_matmul(
    x: Float[Array, "m k"],
    w: PackedE8,
    *,
    config: C.Config = C.Config(),
    backend: str | None = None,
    interpret=False,
    out_dtype=None,
    interleave: str = "auto",
) -> Float[Array, "m n"]:
  """``y = x · Ŵ`` with ``Ŵ`` decoded from E8 Voronoi codes inside the kernel (module docstring).

  Args:
    x: activations ``(M, K)``, float32 or bfloat16 (M padded internally).
    w: ``PackedE8`` from ``rdq.kernels.pack.pack_e8``.
    config: block sizes; ``block_k`` must be a multiple of 8 (GPU: of 128, so that each
      plane's ``tl.dot`` has ≥ 16 rows, unless in GEMV form).
    backend, interpret: as in ``rdq.kernels.int_matmul.int_matmul``.
    out_dtype: output dtype (default ``x.dtype``); accumulation is fp32.
    interleave: ``"stack"`` (TPU default), ``"strided"`` (GPU default) or ``"auto"``.

  Returns:
    ``(M, N)``: ``x · decode(code)ᵀ`` up to fp32 summation order (the per-feature RMS scale
    is applied after the sum; without ``norm`` the decoded tile is bit-equal to rdq's).
  """
  if not isinstance(w, PackedE8):
    raise TypeError(f"w must be a rdq.kernels.pack.PackedE8, got {type(w).__name__}")
  backend = C.resolve_backend(backend, interpret)
  if interleave == "auto":
    interleave = "stack" if backend == "tpu" else "strided"
  if interleave not in _INTERLEAVES:
    raise ValueError(f"interleave={interleave!r} must be one of {_INTERLEAVES} or 'auto'")
  if interleave == "stack" and backend == "gpu" and not interpret:
    raise ValueError("interleave='stack' does not lower for Triton (joins only along the minor axis); use 'strided'")
  k, n = w.shape
  C.check_x(x, k)
  C.check_array(w.planes, "w.planes", (w.bits, k // 8, n), (jnp.uint8,))
  C.check_array(w.beta_index, "w.beta_index", (k // 8, n), (jnp.uint8,))
  C.check_array(w.scale, "w.scale", (1, n), (jnp.float32,))
  config = e8_config(config, backend, k, n)
  blocks = C.resolve_blocks(config, backend, x.shape[0], k, n, group=8)
  if blocks.bk % 8:
    raise ValueError(f"block_k={blocks.bk} must be a multiple of 8 (E8 blocks)")
  if backend == "gpu" and not blocks.gemv and blocks.bk < 128 and not interpret:
    raise ValueError(f"block_k={blocks.bk} must be ≥ 128 on GPU (tl.dot needs 16 rows per plane)")
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _e8(x, w, blocks=blocks, backend=backend, config=config, interpret=interpret,
             out_dtype=out_dtype, interleave=interleave)
