"""Pure-JAX references for quantized matrix products ``y = x · Ŵ``: decode, then ``jnp.dot``.

These are the specifications that the Pallas kernels in ``rdq/kernels/`` are tested against
(``kernels`` imports ``rdq``, never the reverse). Names end in ``_reference`` where a kernel
of the same name exists (``rdq.kernels.w8a8_matmul`` ↔ ``w8a8_matmul_reference``,
``rdq.kernels.codebook_matmul`` ↔ ``codebook_matmul_reference``), so the two are never confused
in one namespace. Shapes follow the kernels: ``x: (M, K)``
activations (M tokens, K input features), ``W: (K, N)``. rdq quantizers act on the last
axis, so a weight is encoded as ``Wᵀ: (N, K)`` — scales and VQ vectors run along the
input features K, the reduction dimension.

Numerics, shared with the kernels so that a kernel differs from its reference only by the
order of the fp32 additions:

* weight-only: ``Ŵ`` is decoded in fp32 (``z·s``, then ``·t`` for NVFP4), cast to
  ``x.dtype``, and multiplied with fp32 accumulation (``preferred_element_type``);
* W8A8: ``y[m, n] = (Σ_k z^x_{mk} z^w_{kn}) · s^x_m · s^w_n`` with the sum in int32
  (exact), or, with per-group weight scales, ``s^x_m Σ_g s^w_{gn} P_{g,mn}`` where each
  group partial ``P_g`` is an exact int32 sum.

References:
  Dettmers et al., "LLM.int8()" (NeurIPS 2022), Sec. 3.1 (vector-wise absmax int8
  matmul: int32 accumulate, then rescale by the outer product of row and column scales);
  Ordentlich & Polyanskiy, "High-Rate Quantized Matrix Multiplication I" (arXiv
  2601.17187), the generic-matmul setting that W8A8 instantiates.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Integer

from rdq.quantizers.integer import IntCode, IntQuantizer

__all__ = [
    "codebook_decode",
    "codebook_matmul_reference",
    "dequant_matmul",
    "w8a8_matmul_reference",
    "zero_point_decode",
    "zero_point_matmul",
]


def _check_x(x, k: int) -> None:
  if x.ndim != 2 or x.shape[1] != k:
    raise ValueError(f"x must be (M, K) with K={k} input features; got shape {tuple(x.shape)}")


def _dot(x: Array, w_kn: Array, out_dtype) -> Array:
  y = jnp.dot(x, w_kn.astype(x.dtype), preferred_element_type=jnp.float32,
              precision=jax.lax.Precision.HIGHEST)
  return y.astype(x.dtype if out_dtype is None else out_dtype)


def dequant_matmul(
    x: Float[Array, "m k"],
    quantizer,
    code,
    *,
    out_dtype=None,
) -> Float[Array, "m n"]:
  """``y = x · decode(code)ᵀ`` for any rdq quantizer with ``encode``/``decode``.

  .. math:: y = x\\,\\hat W,\\qquad \\hat W^\\top = \\mathrm{decode}(\\mathrm{encode}(W^\\top)).

  Args:
    x: activations ``(M, K)``, fp32 or bf16.
    quantizer: the quantizer whose ``encode`` produced ``code`` (INT, FP, MX, NV, …).
    code: the code of ``Wᵀ`` ``(N, K)``.
    out_dtype: result dtype (default ``x.dtype``); accumulation is fp32.

  Returns:
    ``(M, N)`` product; ``Ŵ`` is cast to ``x.dtype`` before the product.
  """
  w_hat_t = quantizer.decode(code)  # (N, K), float32
  _check_x(x, w_hat_t.shape[1])
  return _dot(x, w_hat_t.T, out_dtype)


def zero_point_decode(
    codes: Integer[Array, "n k"],
    scales: Float[Array, "n kg"],
    zeros: Integer[Array, "n kg"],
    group_size: int,
) -> Float[Array, "n k"]:
  """Asymmetric INT decode ``ŵ = (q − z)·s`` per group of ``group_size`` input features."""
  n, k = codes.shape
  if k % group_size:
    raise ValueError(f"group_size={group_size} must divide K={k}")
  q = codes.astype(jnp.int32).reshape(n, k // group_size, group_size)
  z = zeros.astype(jnp.int32)[..., None]
  return ((q - z).astype(jnp.float32) * scales.astype(jnp.float32)[..., None]).reshape(n, k)


def zero_point_matmul(
    x: Float[Array, "m k"],
    codes: Integer[Array, "n k"],
    scales: Float[Array, "n kg"],
    zeros: Integer[Array, "n kg"],
    group_size: int,
    *,
    out_dtype=None,
) -> Float[Array, "m n"]:
  """``y = x · Ŵ`` with ``Ŵᵀ = zero_point_decode(...)`` (asymmetric INT weights)."""
  w_hat_t = zero_point_decode(codes, scales, zeros, group_size)
  _check_x(x, w_hat_t.shape[1])
  return _dot(x, w_hat_t.T, out_dtype)


def w8a8_matmul_reference(
    x_code: IntCode,
    w_code: IntCode,
    w_quantizer: IntQuantizer,
) -> Float[Array, "m n"]:
  """Integer-domain product of absmax-INT8 activations and weights, rescaled (fp32).

  .. math::
     y_{mn} = s^x_m \\sum_g s^w_{gn} \\sum_{k \\in g} z^x_{mk} z^w_{kn},

  with one group (``s^w`` per output feature) when the weight quantizer is per row.

  Args:
    x_code: ``IntQuantizer(8, "row").encode(x)``: codes ``(M, K)``, scales ``(M, 1)``.
    w_code: ``w_quantizer.encode(W.T)``: codes ``(N, K)``, scales ``(N, 1)`` or ``(N, K/g)``.
    w_quantizer: per-row (per output feature) or block (per group along K) INT quantizer.

  Returns:
    ``(M, N)`` float32; equals ``x̂ · Ŵ`` up to fp32 rounding of the rescaling.
  """
  zx = x_code.codes.astype(jnp.int32)
  zw = w_code.codes.astype(jnp.int32)  # (N, K)
  m, k = zx.shape
  n = zw.shape[0]
  if zw.shape[1] != k:
    raise ValueError(f"x codes have K={k} input features but the weight codes {zw.shape[1]}")
  sx = x_code.scales.astype(jnp.float32).reshape(m, 1)
  if w_quantizer.granularity == "block":
    g = w_quantizer.block_size
    sw = w_code.scales.astype(jnp.float32)  # (N, K/g)
    acc = jnp.zeros((m, n), jnp.float32)
    for j in range(k // g):  # sequential over groups, as the kernel's K loop
      p = jnp.dot(zx[:, j * g:(j + 1) * g], zw[:, j * g:(j + 1) * g].T,
                  preferred_element_type=jnp.int32)
      acc = acc + p.astype(jnp.float32) * sw[:, j][None, :]
    return acc * sx
  sw = jnp.broadcast_to(w_code.scales.astype(jnp.float32).reshape(-1), (n,))
  acc = jnp.dot(zx, zw.T, preferred_element_type=jnp.int32)
  return (acc.astype(jnp.float32) * sx) * sw[None, :]


def codebook_decode(
    indices: Integer[Array, "n kd"],
    codebooks: Float[Array, "g c d"],
    group_size: int,
) -> Float[Array, "n k"]:
  """VQ decode of ``Wᵀ``: ``ŵ[n, i·d + t] = C_{g(i)}[idx[n, i], t]``, ``g(i) = ⌊i·d / group_size⌋``.

  Args:
    indices: ``(N, K/d)`` centroid indices.
    codebooks: ``(G, C, d)``, one codebook per ``group_size`` input features.
    group_size: input features per codebook.

  Returns:
    ``(N, K)`` float32.

  References:
    van Baalen et al., "GPTVQ: The Blessing of Dimensionality for LLM Quantization"
    (arXiv 2402.15319), Sec. 3 (d-dimensional codebooks per group, index lookup).
  """
  n, kd = indices.shape
  g, c, d = codebooks.shape
  vec_group = jnp.arange(kd) * d // group_size  # (K/d,)
  vecs = codebooks[vec_group[None, :], indices.astype(jnp.int32)]  # (N, K/d, d)
  return vecs.reshape(n, kd * d).astype(jnp.float32)


def codebook_matmul_reference(
    x: Float[Array, "m k"],
    indices: Integer[Array, "n kd"],
    codebooks: Float[Array, "g c d"],
    group_size: int,
    *,
    out_dtype=None,
) -> Float[Array, "m n"]:
  """``y = x · Ŵ`` with ``Ŵᵀ = codebook_decode(indices, codebooks, group_size)``."""
  w_hat_t = codebook_decode(indices, codebooks, group_size)
  _check_x(x, w_hat_t.shape[1])
  return _dot(x, w_hat_t.T, out_dtype)
