"""Block-scaled FP4 weight-only matmul: MXFP4 (E2M1, e8m0 per 32) and NVFP4 (E2M1, e4m3 per 16).

.. math::
   y_{mn} = \\sum_k x_{mk}\\, \\hat W_{kn}, \\qquad
   \\hat W_{kn} = t \\cdot s_{\\lfloor k/B \\rfloor, n} \\cdot \\mathrm{e2m1}(q_{kn}),

with block size ``B`` (32 for MX, 16 for NV), block scale ``s`` (a power of two ``2^(E-127)``
for e8m0, an E4M3 value for NV) and tensor scale ``t`` (NVFP4; 1 for MX). The kernel reads
the E2M1 nibbles (by default pre-permuted, 8 consecutive input features per ``uint32`` word,
``pack_fp4(layout="words")``; or two per byte along N) and the raw scale bytes, and decodes
both with integer ops and a bitcast (no fp4/fp8 dtypes cross the kernel boundary, so the same
kernel lowers for Triton and Mosaic); on GPU the E2M1 nibble instead indexes a 16-entry table
held in L1 (one load per weight, fewer instructions than the bit decode). Hopper has no FP4
MMA: on the MMA and TPU paths the tile is dequantized to ``x.dtype`` as ``(e2m1 · s) · t`` in
fp32 (the rounding of ``rdq``'s ``FPQuantizer.decode``) and multiplied on the bf16/fp32 path;
in the GPU GEMV form (``M = 1``, words) the exact partial ``Σ_j x_j e2m1_j`` over a word is
scaled once per word, ``(· s) · t`` (a different rounding; bound in the tests).

Reference: ``rdq.quantized_matmul.dequant_matmul(x, quantizer, code)``.

References:
  OCP Microscaling Formats (MX) Specification v1.0 (2023), Sec. 5 and 6.3;
  NVIDIA, "Introducing NVFP4 for Efficient and Accurate Low-Precision Inference" (2025).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedFP4, decode_e2m1, decode_e4m3, decode_e8m0

__all__ = ["fp4_matmul"]


# The 16 E2M1 values (OCP MX v1.0, Table 5), indexed by the nibble: the GPU lookup table.
E2M1_TABLE = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)


def _decode_nibbles_e2m1(packed: Array, lut_ref=None) -> Array:
  b = packed.astype(jnp.int32)
  dec = decode_e2m1 if lut_ref is None else (lambda nib: lut_ref[nib])
  lo = dec(b & 15)
  hi = dec(jnp.right_shift(b, 4) & 15)
  rows, cols = b.shape
  return jnp.stack([lo, hi], axis=-1).reshape(rows, 2 * cols)


def _word_nibbles(words: Array) -> list[Array]:
  """The 8 E2M1 nibble planes (int32) of a ``uint32`` word tile: plane ``j`` = rows ``8i + j``."""
  w = jax.lax.bitcast_convert_type(words, jnp.int32)
  return [jax.lax.shift_right_logical(w, jnp.int32(4 * j)) & 15 if j else w & 15 for j in range(8)]


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret", "out_dtype"))
def _fp4(x, w: PackedFP4, *, blocks, backend, config, interpret, out_dtype):
  k, n = w.shape
  bs = w.block_size
  bk = blocks.bk
  words = w.layout == "words"
  decode_scale = decode_e8m0 if w.scale_format == "e8m0" else decode_e4m3
  use_t = w.scale_format == "e4m3"
  use_lut = backend == "gpu"  # Mosaic lowers no data-dependent loads: bit decode on TPU
  operands = [C.Operand("kn", k_div=8, n_div=1) if words else C.Operand("kn", n_div=2),
              C.Operand("gn", group=bs)]
  arrays = [w.codes, w.scales]
  if use_lut:
    operands.append(C.Operand("full"))
    arrays.append(jnp.asarray(E2M1_TABLE, jnp.float32))
  if use_t:
    operands.append(C.Operand("full"))
    arrays.append(w.tensor_scale)

  def tile(kk, tiles, prod):
    qt, st = tiles[:2]
    s = decode_scale(st)
    t = tiles[-1][...] if use_t else None
    dec = decode_e2m1 if not use_lut else (lambda nib: tiles[2][nib])
    if not words:
      v = _decode_nibbles_e2m1(qt, tiles[2] if use_lut else None)
      wt = C.apply_group_scale(v, s, bs)
      if use_t:
        wt = wt * t
      return prod.dot(prod.x(0, bk), wt.astype(x.dtype))
    planes = [dec(nib) for nib in _word_nibbles(qt)]
    if prod.gemv:  # exact products x·e2m1, summed over the word, scaled once per word
      part = None
      for j, p in enumerate(planes):
        tj = prod.dot(prod.x(j, bk // 8, stride=8), p)
        part = tj if part is None else part + tj
      part = C.apply_group_scale(part, s, bs // 8)
      return part * t if use_t else part
    if backend == "tpu":  # interleave the planes back to rows, then as the nibble layout
      v = jnp.stack(planes, axis=1).reshape(bk, -1)
      wt = C.apply_group_scale(v, s, bs)
      if use_t:
        wt = wt * t
      return prod.dot(prod.x(0, bk), wt.astype(x.dtype))
    part = None  # GPU, M > 1: one dot per plane with the strided columns x[:, j::8]
    for j, p in enumerate(planes):
      wt = C.apply_group_scale(p, s, bs // 8)
      if use_t:
        wt = wt * t
      tj = prod.dot(prod.x(j, bk // 8, stride=8), wt.astype(x.dtype))
      part = tj if part is None else part + tj
    return part

  return C.tiled_matmul(
      tile, lambda acc, _: acc, x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="fp4_matmul",
      gemv_rows=bk // 8 if words else None,
  )


def fp4_matmul(
    x: Float[Array, "m k"],
    w: PackedFP4,
    *,
    config: C.Config = C.Config(),
    backend: str | None = None,
    interpret=False,
    out_dtype=None,
) -> Float[Array, "m n"]:
  """``y = x · dequant(W_q)`` for MXFP4 / NVFP4 weights (see module docstring).

  Args:
    x: activations ``(M, K)``, float32 or bfloat16 (M padded internally).
    w: ``PackedFP4`` from ``rdq.kernels.pack.pack_fp4``.
    config, backend, interpret: as in ``rdq.kernels.int_matmul.int_matmul``.
    out_dtype: output dtype (default ``x.dtype``); accumulation is fp32.

  Returns:
    ``(M, N)``, equal to ``rdq.quantized_matmul.dequant_matmul`` up to fp32 summation order.

  Raises:
    TypeError / ValueError: wrong dtypes, shapes, block sizes or backend (before tracing).
  """
  if not isinstance(w, PackedFP4):
    raise TypeError(f"w must be a rdq.kernels.pack.PackedFP4, got {type(w).__name__}")
  backend = C.resolve_backend(backend, interpret)
  k, n = w.shape
  C.check_x(x, k)
  if w.scale_format not in ("e8m0", "e4m3"):
    raise ValueError(f"w.scale_format={w.scale_format!r} must be 'e8m0' (MXFP4) or 'e4m3' (NVFP4)")
  bs = w.block_size
  if not isinstance(bs, int) or bs < 1 or k % bs:
    raise ValueError(f"block_size={bs!r} must divide the number of input features K={k}")
  words = w.layout == "words"
  if w.layout not in ("words", "nibbles"):
    raise ValueError(f"w.layout={w.layout!r} must be 'words' or 'nibbles'")
  if words:
    C.check_array(w.codes, "w.codes", (k // 8, n), (jnp.uint32,))
    if bs % 8:
      raise ValueError(f"layout='words' needs block_size={bs} to be a multiple of 8")
  else:
    C.check_array(w.codes, "w.codes", (k, n // 2), (jnp.uint8,))
  C.check_array(w.scales, "w.scales", (k // bs, n), (jnp.uint8,))
  C.check_array(w.tensor_scale, "w.tensor_scale", (1, 1), (jnp.float32,))
  config, blocks = C.resolve_plane_blocks(config, backend, x.shape[0], k, n, group=bs,
                                         per=8 if words else 1)
  C.check_group_blocks(bs, blocks.bk, "block_size")
  if not words and blocks.bn % 2:
    raise ValueError(f"block_n={blocks.bn} must be even for nibble-packed codes")
  if words and blocks.bk % 8:
    raise ValueError(f"block_k={blocks.bk} must be a multiple of the 8 codes per word")
  if words and backend == "gpu" and not blocks.gemv and blocks.bk < 128 and not interpret:
    raise ValueError(f"layout='words' on GPU with M > 1 multiplies each word plane with tl.dot, "
                     f"which needs block_k ≥ 128; got block_k={blocks.bk}")
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _fp4(x, w, blocks=blocks, backend=backend, config=config, interpret=interpret,
              out_dtype=out_dtype)
