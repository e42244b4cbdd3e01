"""Weight-only INT8/INT4 matmul with group scales (and optional zero points), fused dequant.

.. math::
   y_{mn} = \\sum_k x_{mk}\\, \\hat W_{kn}, \\qquad
   \\hat W_{kn} = (q_{kn} - z_{g(k), n})\\, s_{g(k), n}, \\quad g(k) = \\lfloor k / g \\rfloor,

with ``z = 0`` for rdq's symmetric absmax codes. Each reduction step decodes a
``(block_k, block_n)`` tile of codes in registers/VMEM (shifts for nibbles, int→float by
exponent bit tricks, ``rdq.kernels.pack.nibbles_to_float``), scales it in fp32, casts it to
``x.dtype`` and accumulates ``jnp.dot(x_tile, w_tile)`` in fp32 (or, in the GPU GEMV form
at ``M = 1``, ``xᵀ ⊙ Ŵ``; split-K and block sizes from ``rdq.kernels._common``).

Reference: ``rdq.quantized_matmul.dequant_matmul(x, quantizer, code)`` (and
``zero_point_matmul`` with zero points) — decode with rdq, then ``jnp.dot``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedInt, int8_to_float, nibbles_to_float

__all__ = ["int_matmul"]

_SCALE_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
_CODE_DTYPES = {"int8": jnp.int8, "nibbles": jnp.uint8, "int4": jnp.int4}


def _decode_tile(codes: Array, layout: str, signed: bool) -> Array:
  """float32 ``(bk, bn)`` integer values of a stored tile, by exponent bit tricks.

  A code ``q`` (offset to ``u = q + 2^(b-1) ∈ [0, 2^b)`` by flipping its sign bit) is
  placed in the mantissa of ``2^23``: ``bitcast(0x4B000000 | u) = 2^23 + u`` exactly, so
  ``q = bitcast(…) − (2^23 + 2^(b-1))`` with one integer logic op and one float add instead
  of sign extension and an int→float conversion (the "magic number" conversion).
  """
  if layout == "nibbles":
    return nibbles_to_float(codes, signed=signed)
  if layout == "int8":
    return int8_to_float(codes)
  return codes.astype(jnp.float32)  # jnp.int4 (TPU): Mosaic unpacks sub-byte types itself


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret", "out_dtype"))
def _int_matmul(x, w: PackedInt, *, blocks, backend, config, interpret, out_dtype):
  k, n = w.shape
  g = w.group_size
  n_div = 2 if w.layout == "nibbles" else 1
  has_zeros = w.zeros is not None
  operands = [C.Operand("kn", n_div=n_div), C.Operand("gn", group=g)]
  arrays = [w.codes, w.scales]
  if has_zeros:
    operands.append(C.Operand("gn", group=g))
    arrays.append(w.zeros)

  def tile(kk, tiles, prod):
    qt, st = tiles[:2]
    if has_zeros:
      q = _decode_tile(qt, w.layout, w.signed)
      z = tiles[2].astype(jnp.float32)  # q − z of small integers: exact in fp32
      rows = q.shape[0]
      if g >= rows:
        q = q - z[0:1, :]
      else:
        q = (q.reshape(rows // g, g, -1) - z[:, None, :]).reshape(q.shape)
    else:
      q = _decode_tile(qt, w.layout, w.signed)
    wt = C.apply_group_scale(q, st.astype(jnp.float32), g)
    return prod.dot(prod.x(0, blocks.bk), wt.astype(x.dtype))

  return C.tiled_matmul(
      tile, lambda acc, _: acc, x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="int_matmul",
  )


def int_matmul(
    x: Float[Array, "m k"],
    w: PackedInt,
    *,
    config: C.Config = C.Config(),
    backend: str | None = None,
    interpret=False,
    out_dtype=None,
) -> Float[Array, "m n"]:
  """``y = x · dequant(W_q)`` for INT8/INT4 codes with group scales (see module docstring).

  Args:
    x: activations ``(M, K)``, float32 or bfloat16. M is padded to a multiple of
      ``block_m`` internally (any M ≥ 1 works, including decode M = 1).
    w: ``PackedInt`` from ``rdq.kernels.pack.pack_int`` (or ``pack_int_zero_point``).
    config: block sizes; K and N must be divisible by ``block_k`` / ``block_n`` (after
      shrinking to the problem), and ``block_k`` and the group size must divide one another.
    backend: ``"tpu"``, ``"gpu"`` or ``None`` (the default platform; see
      ``rdq.kernels._common.resolve_backend``).
    interpret: run in the Pallas interpreter (``True`` or ``pltpu.InterpretParams``).
    out_dtype: output dtype (default ``x.dtype``); accumulation is fp32.

  Returns:
    ``(M, N)`` product, equal to ``rdq.quantized_matmul.dequant_matmul`` up to the order
    of fp32 additions.

  Raises:
    TypeError: wrong dtypes of ``x``, codes, scales or zero points.
    ValueError: mismatched shapes, group size not dividing K, blocks not dividing K/N,
      unsupported backend.
  """
  if not isinstance(w, PackedInt):
    raise TypeError(f"w must be a rdq.kernels.pack.PackedInt, got {type(w).__name__}")
  backend = C.resolve_backend(backend, interpret)
  k, n = w.shape
  C.check_x(x, k)
  if w.layout not in _CODE_DTYPES:
    raise ValueError(f"w.layout={w.layout!r} must be one of {tuple(_CODE_DTYPES)}")
  C.check_array(w.codes, "w.codes", w.codes.shape, (_CODE_DTYPES[w.layout],))
  g = w.group_size
  if not isinstance(g, int) or g < 1 or k % g:
    raise ValueError(f"group_size={g!r} must divide the number of input features K={k}")
  C.check_array(w.scales, "w.scales", (k // g, n), _SCALE_DTYPES)
  if w.zeros is not None:
    C.check_array(w.zeros, "w.zeros", (k // g, n), (jnp.int8,))
  blocks = C.resolve_blocks(config, backend, x.shape[0], k, n, group=g)
  C.check_group_blocks(g, blocks.bk)
  if w.layout == "nibbles" and blocks.bn % 2:
    raise ValueError(f"block_n={blocks.bn} must be even for nibble-packed codes")
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _int_matmul(x, w, blocks=blocks, backend=backend, config=config,
                     interpret=interpret, out_dtype=out_dtype)
