"""W8A8: absmax-INT8 activations × INT8 weights, int32 accumulation, rescale at the end.

.. math::
   y_{mn} = s^x_m \\sum_g s^w_{gn} \\sum_{k \\in g} z^x_{mk}\\, z^w_{kn},

where ``z^x, s^x`` are the per-row (per token) absmax INT8 codes and scales of x, and
``z^w, s^w`` the weight codes with one scale per output feature (one group, ``g = K``) or
per group of ``g`` input features. With per-output-feature scales the whole sum is one
int32 accumulator, rescaled once in the epilogue by ``s^x_m s^w_n`` — the kernel form of
the generic-matmul setting (both factors quantized), bit-exact against its reference. With
group scales each group's exact int32 partial is rescaled and summed in fp32.

Reference: ``rdq.quantized_matmul.w8a8_matmul_reference(x_code, w_code, w_quantizer)``.

References:
  Dettmers et al., "LLM.int8()" (NeurIPS 2022), Sec. 3.1, Eq. (3)–(4) (vector-wise
  quantization: int32 product rescaled by the outer product of the scale vectors).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int8

from rdq.kernels import _common as C
from rdq.kernels.pack import PackedInt
from rdq.quantizers.integer import IntCode

__all__ = ["pack_activations", "w8a8_matmul"]


def pack_activations(code: IntCode) -> tuple[Int8[Array, "m k"], Float[Array, "m 1"]]:
  """``(codes int8 (M, K), scales float32 (M, 1))`` from ``IntQuantizer(8, "row").encode(x)``."""
  if code.codes.ndim != 2:
    raise ValueError(f"activation codes must be (M, K); got shape {tuple(code.codes.shape)}")
  if jnp.dtype(code.codes.dtype) != jnp.dtype(jnp.int8):
    raise TypeError(f"activation codes must be int8 (an 8-bit IntQuantizer); got {code.codes.dtype}")
  m = code.codes.shape[0]
  if code.scales.shape not in ((m, 1), (m,)):
    raise ValueError(f"activation scales must be per row, shape (M, 1) = {(m, 1)}; got {tuple(code.scales.shape)}")
  return code.codes, code.scales.astype(jnp.float32).reshape(m, 1)


@functools.partial(jax.jit, static_argnames=("blocks", "backend", "config", "interpret"))
def _w8a8(x_codes, x_scales, w: PackedInt, *, blocks, backend, config, interpret):
  k, n = w.shape
  g = w.group_size
  per_feature = g == k
  sx = C.pad_rows(x_scales, blocks.m_padded)
  bk = blocks.bk
  if per_feature:
    operands = [C.Operand("kn"), C.Operand("m", epilogue=True), C.Operand("n", epilogue=True)]
    arrays = [w.codes, sx, w.scales.astype(jnp.float32)]

    def tile(kk, tiles, prod):
      return prod.dot(prod.x(0, bk), tiles[0])

    def epilogue(acc, epi):
      sxt, swt = epi
      return (acc.astype(jnp.float32) * sxt) * swt

    acc_dtype = jnp.int32
  else:
    operands = [C.Operand("kn"), C.Operand("gn", group=g), C.Operand("m", epilogue=True)]
    arrays = [w.codes, w.scales.astype(jnp.float32), sx]

    def tile(kk, tiles, prod):
      wt, st = tiles
      if g >= bk:
        p = prod.dot(prod.x(0, bk), wt).astype(jnp.int32)
        return p.astype(jnp.float32) * st[0:1, :]
      acc = None  # TPU only (GPU: bk ≤ g, Triton does not lower value slices)
      for j in range(bk // g):  # one exact int32 partial per group, rescaled in fp32
        p = prod.dot(prod.x(j * g, g), wt[j * g:(j + 1) * g, :]).astype(jnp.int32)
        term = p.astype(jnp.float32) * st[j:j + 1, :]
        acc = term if acc is None else acc + term
      return acc

    def epilogue(acc, epi):
      return acc * epi[0]

    acc_dtype = jnp.float32
  return C.tiled_matmul(
      tile, epilogue, x_codes, operands, arrays,
      k=k, n=n, out_dtype=jnp.float32, acc_dtype=acc_dtype,
      blocks=blocks, backend=backend, config=config, interpret=interpret, name="w8a8_matmul",
  )


def w8a8_matmul(
    x_codes: Int8[Array, "m k"],
    x_scales: Float[Array, "m 1"],
    w: PackedInt,
    *,
    config: C.Config = C.Config(),
    backend: str | None = None,
    interpret=False,
) -> Float[Array, "m n"]:
  """INT8 × INT8 → int32 matmul with per-token and per-feature/group rescaling (fp32 out).

  Args:
    x_codes: int8 activation codes ``(M, K)`` (``pack_activations``).
    x_scales: float32 per-row scales ``(M, 1)``.
    w: ``PackedInt`` with ``layout="int8"`` from an 8-bit ``IntQuantizer`` (``"row"`` =
      per output feature, or ``"block"`` = per group along K).
    config, backend, interpret: as in ``rdq.kernels.int_matmul.int_matmul``.

  Returns:
    ``(M, N)`` float32 equal to ``rdq.quantized_matmul.w8a8_matmul_reference`` — bit for bit with
    per-output-feature scales, up to fp32 summation order over groups otherwise.

  Raises:
    TypeError: codes not int8, scales not float32.
    ValueError: shape mismatches, group size not dividing K, blocks not dividing K/N,
      unsupported backend.
  """
  if not isinstance(w, PackedInt):
    raise TypeError(f"w must be a rdq.kernels.pack.PackedInt, got {type(w).__name__}")
  backend = C.resolve_backend(backend, interpret)
  if w.layout != "int8" or w.zeros is not None:
    raise ValueError(f"W8A8 needs symmetric int8 weight codes (layout='int8', no zero points); got layout={w.layout!r}")
  k, n = w.shape
  C.check_x(x_codes, k, name="x_codes", dtypes=(jnp.int8,))
  m = x_codes.shape[0]
  C.check_array(x_scales, "x_scales", (m, 1), (jnp.float32,))
  C.check_array(w.codes, "w.codes", (k, n), (jnp.int8,))
  g = w.group_size
  if not isinstance(g, int) or g < 1 or k % g:
    raise ValueError(f"group_size={g!r} must divide the number of input features K={k}")
  C.check_array(w.scales, "w.scales", (k // g, n), (jnp.float32, jnp.bfloat16, jnp.float16))
  grouped = g != k
  # Triton does not lower slices of a loaded tile, so on GPU a K step holds at most one group.
  max_bk = g if grouped and backend == "gpu" else None
  blocks = C.resolve_blocks(config, backend, m, k, n, group=g if grouped else None, max_bk=max_bk)
  if grouped:
    C.check_group_blocks(g, blocks.bk)
    if backend == "gpu" and blocks.bk > g:
      raise ValueError(
          f"block_k={blocks.bk} > group_size={g}: on GPU a K step must not hold more than one "
          "group (Triton does not lower slices of a loaded tile); use block_k ≤ group_size")
  return _w8a8(x_codes, x_scales, w, blocks=blocks, backend=backend, config=config,
               interpret=interpret)
