"""Block-scaled FP4 weight-only matmul: MXFP4 (E2M1, e8m0 per 32) and NVFP4 (E2M1, e4m3 per 16).

.. math::
   y_{mn} = \\sum_k x_{mk}\\, \\hat W_{kn}, \\qquad
   \\hat W_{kn} = t \\cdot s_{\\lfloor k/B \\rfloor, n} \\cdot \\mathrm{e2m1}(q_{kn}),

with block size ``B`` (32 for MX, 16 for NV), block scale ``s`` (a power of two ``2^(E-127)``
for e8m0, an E4M3 value for NV) and tensor scale ``t`` (NVFP4; 1 for MX). The kernel reads
two E2M1 nibbles per byte and the raw scale bytes and decodes both with integer ops and a
bitcast (no fp4/fp8 dtypes cross the kernel boundary, so the same kernel lowers for Triton
and Mosaic); on GPU the E2M1 nibble instead indexes a 16-entry table held in L1 (one load per
weight, fewer instructions than the bit decode). Hopper has no FP4 MMA: the tile is dequantized to ``x.dtype`` and multiplied
on the bf16/fp32 path. ``Ŵ`` is formed as ``(e2m1 · s) · t`` in fp32, the same rounding as
``rdq``'s ``FPQuantizer.decode``.

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


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret", "out_dtype"))
def _fp4(x, w: PackedFP4, *, blocks, backend, config, interpret, out_dtype):
  k, n = w.shape
  bs = w.block_size
  decode_scale = decode_e8m0 if w.scale_format == "e8m0" else decode_e4m3
  use_t = w.scale_format == "e4m3"
  use_lut = backend == "gpu"  # Mosaic lowers no data-dependent loads: bit decode on TPU
  operands = [C.Operand("kn", n_div=2), C.Operand("gn", group=bs)]
  arrays = [w.codes, w.scales]
  if use_lut:
    operands.append(C.Operand("full"))
    arrays.append(jnp.asarray(E2M1_TABLE, jnp.float32))
  if use_t:
    operands.append(C.Operand("full"))
    arrays.append(w.tensor_scale)

  def tile(kk, tiles, prod):
    qt, st = tiles[:2]
    v = _decode_nibbles_e2m1(qt, tiles[2] if use_lut else None)
    wt = C.apply_group_scale(v, decode_scale(st), bs)
    if use_t:
      wt = wt * tiles[-1][...]
    return prod.dot(prod.x(0, blocks.bk), wt.astype(x.dtype))

  return C.tiled_matmul(
      tile, lambda acc, _: acc, x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="fp4_matmul",
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
  C.check_array(w.codes, "w.codes", (k, n // 2), (jnp.uint8,))
  C.check_array(w.scales, "w.scales", (k // bs, n), (jnp.uint8,))
  C.check_array(w.tensor_scale, "w.tensor_scale", (1, 1), (jnp.float32,))
  blocks = C.resolve_blocks(config, backend, x.shape[0], k, n, group=bs)
  C.check_group_blocks(bs, blocks.bk, "block_size")
  if blocks.bn % 2:
    raise ValueError(f"block_n={blocks.bn} must be even for nibble-packed codes")
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _fp4(x, w, blocks=blocks, backend=backend, config=config, interpret=interpret,
              out_dtype=out_dtype)
