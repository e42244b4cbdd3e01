"""Codebook (VQ) weight-only matmul: indices gathered from a codebook held in fast memory.

.. math::
   y_{mn} = \\sum_k x_{mk}\\, \\hat W_{kn}, \\qquad
   \\hat W_{i d + t,\\, n} = \\mathcal C_{g(i)}[\\,\\mathrm{idx}_{i n},\\, t\\,],
   \\quad g(i) = \\lfloor i d / \\mathrm{group\\_size} \\rfloor,

for ``d``-dimensional vectors of consecutive input features (``d ∈ {1, 2, 4, 8}``) and up
to 256 centroids per codebook (uint8 indices). The codebook of the current K step stays
resident in fast memory (VMEM/SMEM on TPU, L1/registers on GPU) for the whole program.

Four lookups, same result:

* ``lookup="index"`` (GPU default): ``cb_ref[g, idx, t]``, a data-dependent load from the
  codebook ref — Pallas Triton lowers it to a pointer gather (``tt.load`` of a tensor of
  pointers) served from L1, one load per weight and component, pipelined with the index
  loads. Mosaic (TPU) does not lower it.
* ``lookup="select"``: a loop over the ``C`` centroids with
  ``where(idx == c, C[c, t], ·)`` on scalar codebook reads (SMEM) — lowers for Mosaic and
  Triton; costs ``C`` vector selects per weight, so it pays off only for small ``C``.
* ``lookup="lane"`` (TPU default when compiled): a **lane gather** — each component
  table, transposed to a row of ``C`` lanes (padded to a multiple of 128) and broadcast
  over the sublanes, is indexed with ``take_along_axis`` along the lanes (Mosaic's dynamic
  gather within a vreg), one 128-lane chunk of the table at a time (``⌈C/128⌉`` gathers
  and selects per weight and component instead of ``C`` selects). Lowers for Mosaic
  (``jax.jit(...).lower`` for TPU); not for Triton.
* ``lookup="gather"``: ``jnp.take`` of each component table — the fastest in the
  interpreter; no Triton or Mosaic lowering, so it is for ``interpret=True``.

A one-hot matmul on the MXU is not offered: building the one-hot ``(rows·bn, C)`` operand
already costs ``C`` compares per weight on the VPU, as many as ``select``.

The ``d`` decoded component tiles ``(bk/d, bn)`` are interleaved back to rows
``i·d + t`` with ``stack(axis=1)`` + reshape (``interleave="stack"``, TPU), or instead
multiplied with the strided columns ``x[:, t::d]`` (``interleave="strided"``, GPU: Triton
joins only along the minor axis).

Reference: ``rdq.quantized_matmul.codebook_matmul_reference(x, indices, codebooks, group_size)``.

References:
  van Baalen et al., "GPTVQ: The Blessing of Dimensionality for LLM Quantization"
  (arXiv 2402.15319), Sec. 3; Tseng et al., "QuIP#" (ICML 2024), Sec. 4 (codebook
  decoding inside the matmul kernel).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array, Float

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedCodebook

__all__ = ["codebook_matmul"]

_LOOKUPS = ("gather", "index", "lane", "select")
_INTERLEAVES = ("stack", "strided")


@functools.partial(
    jax.jit,
    static_argnames=("blocks", "backend", "config", "interpret", "out_dtype", "lookup", "interleave"),
)
def _codebook(x, w: PackedCodebook, *, blocks, backend, config, interpret, out_dtype, lookup,
              interleave):
  k, n = w.shape
  d = w.dim
  num_c = w.codebooks.shape[1]
  bk = blocks.bk
  per_group = w.group_size // bk  # K steps per codebook (group_size % bk == 0)
  operands = [C.Operand("kn", k_div=d), C.Operand("full", smem=lookup == "select")]
  # Round the centroids to x.dtype once (the reference casts Ŵ to x.dtype): the kernel then
  # needs no per-weight conversion, and the values are unchanged by its casts.
  arrays = [w.indices, w.codebooks.astype(x.dtype).astype(jnp.float32)]
  if lookup == "lane":  # (G, d, C_pad): each component table as a row of lanes
    c_pad = -(-num_c // 128) * 128
    arrays[1] = jnp.pad(jnp.swapaxes(arrays[1], 1, 2), ((0, 0), (0, 0), (0, c_pad - num_c)))

  def components(kk, idx, cb_ref):
    gidx = jax.lax.div(kk, per_group) if per_group > 1 else kk
    if lookup == "gather":
      table = cb_ref[gidx]  # (C, d)
      return [jnp.take(table[:, t], idx, axis=0) for t in range(d)]
    if lookup == "index":  # one load per weight from the (cached) codebook
      return [cb_ref[gidx, idx, t] for t in range(d)]
    if lookup == "lane":
      rows, cols = idx.shape
      chunk, local = jax.lax.shift_right_logical(idx, 7), idx & 127
      out = []
      for t in range(d):
        tab = cb_ref[gidx, pl.ds(t, 1), :]  # (1, C_pad)
        blocks = []
        for b0 in range(0, cols, 128):
          loc, ch = local[:, b0:b0 + 128], chunk[:, b0:b0 + 128]
          comp = None
          for c0 in range(0, tab.shape[1], 128):
            g = jnp.take_along_axis(jnp.broadcast_to(tab[:, c0:c0 + 128], loc.shape), loc, axis=1,
                                    mode="promise_in_bounds")
            comp = g if comp is None else jnp.where(ch == c0 // 128, g, comp)
          blocks.append(comp)
        out.append(blocks[0] if len(blocks) == 1 else jnp.concatenate(blocks, axis=1))
      return out

    def body(c, comps):
      hit = idx == c
      return tuple(jnp.where(hit, cb_ref[gidx, c, t], comps[t]) for t in range(d))

    init = tuple(jnp.zeros(idx.shape, jnp.float32) for _ in range(d))
    return list(jax.lax.fori_loop(0, num_c, body, init))

  def tile(kk, tiles, prod):
    it, cb_ref = tiles
    idx = it.astype(jnp.int32)
    comps = components(kk, idx, cb_ref)
    if interleave == "stack":
      rows, cols = idx.shape
      wt = jnp.stack(comps, axis=1).reshape(rows * d, cols) if d > 1 else comps[0]
      return prod.dot(prod.x(0, bk), wt.astype(x.dtype))
    acc = None
    for t in range(d):  # GEMV: fp32 product of values already rounded to x.dtype (no cast)
      p = prod.dot(prod.x(t, bk // d, stride=d), comps[t] if prod.gemv else comps[t].astype(x.dtype))
      acc = p if acc is None else acc + p
    return acc

  return C.tiled_matmul(
      tile, lambda acc, _: acc, x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="codebook_matmul",
      gemv_rows=bk // d,
  )


def codebook_matmul(
    x: Float[Array, "m k"],
    w: PackedCodebook,
    *,
    config: C.Config = C.Config(),
    backend: str | None = None,
    interpret=False,
    out_dtype=None,
    lookup: str = "auto",
    interleave: str = "auto",
) -> Float[Array, "m n"]:
  """``y = x · Ŵ`` with ``Ŵ`` decoded from VQ indices and codebooks (see module docstring).

  Args:
    x: activations ``(M, K)``, float32 or bfloat16 (M padded internally).
    w: ``PackedCodebook`` from ``rdq.kernels.pack.pack_codebook``.
    config: block sizes; ``block_k`` must divide ``group_size`` (one codebook per K step;
      the table picks one that does).
    backend, interpret: as in ``rdq.kernels.int_matmul.int_matmul``.
    out_dtype: output dtype (default ``x.dtype``); accumulation is fp32.
    lookup: ``"index"``, ``"lane"``, ``"select"``, ``"gather"`` or ``"auto"`` (GPU: index;
      TPU: gather when interpreting, else lane).
    interleave: ``"stack"``, ``"strided"`` or ``"auto"`` (stack on TPU, strided on GPU).

  Returns:
    ``(M, N)``, equal to ``rdq.quantized_matmul.codebook_matmul_reference`` up to fp32 summation order.
  """
  if not isinstance(w, PackedCodebook):
    raise TypeError(f"w must be a rdq.kernels.pack.PackedCodebook, got {type(w).__name__}")
  backend = C.resolve_backend(backend, interpret)
  if lookup == "auto":
    lookup = "index" if backend == "gpu" else ("gather" if interpret else "lane")
  if interleave == "auto":
    interleave = "stack" if backend == "tpu" else "strided"
  if lookup not in _LOOKUPS:
    raise ValueError(f"lookup={lookup!r} must be one of {_LOOKUPS} or 'auto'")
  if interleave not in _INTERLEAVES:
    raise ValueError(f"interleave={interleave!r} must be one of {_INTERLEAVES} or 'auto'")
  if lookup == "gather" and not interpret:
    raise ValueError(
        "lookup='gather' (jnp.take) has no Triton or Mosaic lowering; use lookup='index' "
        "(GPU), 'lane' (TPU) or 'select', or interpret=True"
    )
  if lookup == "index" and backend == "tpu" and not interpret:
    raise ValueError("lookup='index' (a data-dependent ref load) does not lower for Mosaic (TPU); use 'lane' or 'select'")
  if lookup == "lane" and backend == "gpu" and not interpret:
    raise ValueError("lookup='lane' (a Mosaic lane gather) does not lower for Triton; use 'index'")
  if interleave == "stack" and backend == "gpu" and not interpret:
    raise ValueError("interleave='stack' does not lower for Triton (joins only along the minor axis); use 'strided'")
  k, n = w.shape
  C.check_x(x, k)
  g_num, num_c, d = w.codebooks.shape
  C.check_array(w.indices, "w.indices", (k // d, n), (jnp.uint8,))
  C.check_array(w.codebooks, "w.codebooks", (k // w.group_size, num_c, d), (jnp.float32,))
  if not 1 <= num_c <= 256:
    raise ValueError(f"codebooks hold C={num_c} centroids; uint8 indices need 1 ≤ C ≤ 256")
  if config.block_k is not None and config.block_k > w.group_size:
    config = dataclasses.replace(config, block_k=w.group_size)
  blocks = C.resolve_blocks(config, backend, x.shape[0], k, n, group=w.group_size,
                            max_bk=w.group_size)
  if w.group_size % blocks.bk or blocks.bk % d:
    raise ValueError(
        f"block_k={blocks.bk} must divide group_size={w.group_size} and be a multiple of d={d}"
    )
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _codebook(x, w, blocks=blocks, backend=backend, config=config, interpret=interpret,
                   out_dtype=out_dtype, lookup=lookup, interleave=interleave)
