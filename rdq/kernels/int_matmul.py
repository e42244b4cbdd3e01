"""Weight-only INT8/INT4 matmul with group scales (and optional zero points), fused dequant.

.. math::
   y_{mn} = \\sum_k x_{mk}\\, \\hat W_{kn}, \\qquad
   \\hat W_{kn} = (q_{kn} - z_{g(k), n})\\, s_{g(k), n}, \\quad g(k) = \\lfloor k / g \\rfloor,

with ``z = 0`` for rdq's symmetric absmax codes. Each reduction step decodes a
``(block_k, block_n)`` tile of codes in registers/VMEM by exponent bit tricks (no int→float
conversion instruction): from the pre-permuted ``"words"`` layout (``P`` codes of consecutive
input features per ``uint32``; ``rdq.kernels.pack.words_to_planes``) into ``P`` planes, or
from nibbles/int8 (``nibbles_to_float``, ``int8_to_float``). Where the group scale is applied
(``scale_after_dot``):

* **after the partial dot** in the GPU GEMV form (``M = 1``: the partial ``Σ_j x_j q_j`` over
  the ``P`` codes of a word, in registers, times ``s`` once per word; for the other layouts
  ``(x ⊙ q)·s`` without the bf16 rounding of Ŵ) and when one scale row covers the K step
  (``g ≥ block_k``: ``dot(x, q)·s``, q exact in ``x.dtype``) — exact-arithmetic equal to the
  reference, with a different rounding (bound in ``tests/kernels/_util.tolerance``);
* otherwise **before**, as the reference: ``Ŵ = q·s`` in fp32, cast to ``x.dtype``, then
  ``jnp.dot`` with fp32 accumulation.

On GPU with ``M > 1`` each word plane is one ``tl.dot`` with the strided columns
``x[:, j::P]``; on TPU the planes are interleaved back to rows. Split-K and block sizes come
from ``rdq.kernels._common``.

Reference: ``rdq.quantized_matmul.dequant_matmul(x, quantizer, code)`` (and
``zero_point_matmul`` with zero points) — decode with rdq, then ``jnp.dot``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedInt, int8_to_float, nibbles_to_float, word_constants, words_to_planes

__all__ = ["int_matmul", "resolve_plane_blocks", "scale_after_dot"]

_SCALE_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
_CODE_DTYPES = {"int8": jnp.int8, "nibbles": jnp.uint8, "int4": jnp.int4, "words": jnp.uint32}


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


# The block choice of the words layouts (here and in fp4_matmul): public for the benchmark.
resolve_plane_blocks = C.resolve_plane_blocks


def scale_after_dot(blocks, group: int) -> bool:
  """Whether the kernel applies the group scale after the partial dot (module docstring).

  True when one scale row covers the whole K step (``group ≥ block_k``) and in the GPU
  GEMV form; then the partial ``Σ_k x_k q_k`` is formed from the exact integer codes and
  multiplied by ``s`` once, instead of ``x_k · bf16(q_k s)`` per weight.
  """
  return blocks.gemv or group >= blocks.bk


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret", "out_dtype"))
def _int_matmul(x, w: PackedInt, *, blocks, backend, config, interpret, out_dtype):
  k, n = w.shape
  g = w.group_size
  words = w.layout == "words"
  per = 32 // w.bits if words else 1  # codes per stored row along K
  n_div = 2 if w.layout == "nibbles" else 1
  has_zeros = w.zeros is not None
  operands = [C.Operand("kn", k_div=per, n_div=n_div), C.Operand("gn", group=g)]
  arrays = [w.codes, w.scales]
  if has_zeros:
    operands.append(C.Operand("gn", group=g))
    arrays.append(w.zeros)
  use_consts = words and backend == "gpu"
  if use_consts:
    operands.append(C.Operand("full"))
    arrays.append(word_constants(w.bits))
  after = scale_after_dot(blocks, g)
  bk = blocks.bk

  def unzero(q, z, group):  # q − z of small integers: exact in fp32
    return C.apply_group(q, z.astype(jnp.float32), group, jnp.subtract)

  def tile(kk, tiles, prod):
    qt, st = tiles[:2]
    s = st.astype(jnp.float32)
    if not words:
      q = _decode_tile(qt, w.layout, w.signed)
      if has_zeros:
        q = unzero(q, tiles[2], g)
      if after and prod.gemv:
        return C.apply_group_scale(prod.dot(prod.x(0, bk), q), s, g)
      if after:  # exact codes in x.dtype (|q| ≤ 255), one scale row for the step
        return prod.dot(prod.x(0, bk), q.astype(x.dtype)) * s[0:1, :]
      wt = C.apply_group_scale(q, s, g)
      return prod.dot(prod.x(0, bk), wt.astype(x.dtype))
    # words: plane j holds rows per·i + j of the step; its rows are in groups of g / per.
    planes = words_to_planes(qt, bits=w.bits, signed=w.signed,
                             consts=tiles[-1] if use_consts else None)
    if has_zeros:
      planes = [unzero(p, tiles[2], g // per) for p in planes]
    if prod.gemv:  # partial over the `per` features of each word, then one scale per word
      part = None
      for j, p in enumerate(planes):
        t = prod.dot(prod.x(j, bk // per, stride=per), p)
        part = t if part is None else part + t
      return C.apply_group_scale(part, s, g // per)
    if backend == "tpu":  # interleave the planes back to rows (sublane shuffle in VMEM)
      q = jnp.stack(planes, axis=1).reshape(bk, -1)
      if after:
        return prod.dot(prod.x(0, bk), q.astype(x.dtype)) * s[0:1, :]
      return prod.dot(prod.x(0, bk), C.apply_group_scale(q, s, g).astype(x.dtype))
    part = None  # GPU: one dot per plane with the strided columns x[:, j::per]
    for j, p in enumerate(planes):
      wt = p if after else C.apply_group_scale(p, s, g // per)
      t = prod.dot(prod.x(j, bk // per, stride=per), wt.astype(x.dtype))
      part = t if part is None else part + t
    return part * s[0:1, :] if after else part

  return C.tiled_matmul(
      tile, lambda acc, _: acc, x, operands, arrays,
      k=k, n=n, out_dtype=out_dtype, acc_dtype=jnp.float32,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="int_matmul",
      gemv_rows=bk // per,
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
    of fp32 additions, and, where the scale is applied after the dot (module docstring), the
    rounding of ``Ŵ`` to ``x.dtype`` that the reference performs and the kernel does not.

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
  per = 32 // w.bits if w.layout == "words" else 1
  if w.layout == "words" and (w.bits not in (4, 8) or g % per):
    raise ValueError(f"layout='words' needs bits 4 or 8 and a group size that is a multiple of "
                     f"{per} codes per word; got bits={w.bits}, group_size={g}")
  config, blocks = C.resolve_plane_blocks(config, backend, x.shape[0], k, n, group=g, per=per)
  C.check_group_blocks(g, blocks.bk)
  if w.layout == "nibbles" and blocks.bn % 2:
    raise ValueError(f"block_n={blocks.bn} must be even for nibble-packed codes")
  if w.layout == "words" and blocks.bk % per:
    raise ValueError(f"block_k={blocks.bk} must be a multiple of the {per} codes per word")
  if w.layout == "words" and backend == "gpu" and not blocks.gemv and blocks.bk < 16 * per and not interpret:
    raise ValueError(f"layout='words' on GPU with M > 1 multiplies each word plane with tl.dot, "
                     f"which needs block_k ≥ {16 * per}; got block_k={blocks.bk}")
  out_dtype = jnp.dtype(x.dtype if out_dtype is None else out_dtype)
  return _int_matmul(x, w, blocks=blocks, backend=backend, config=config,
                     interpret=interpret, out_dtype=out_dtype)
