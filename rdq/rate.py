"""Rate accounting for integer codes: empirical entropy, fixed-length bits, real ANS bytes.

Rates are **bits per weight entry**. For a layer ``W ∈ R^{n×m}`` the SIC algorithms produce
an integer code per entry; rdq entropy-codes the ``m`` codes of each input feature with
their own model (one histogram per input feature, "per-feature"), because WaterSIC gives
different input features different rates (waterfilling). Side information (scales, step
sizes, zero points) is added by the caller in bits per entry.

* ``empirical_entropy_bits``: plug-in (zeroth-order) entropy ``−Σ p log2 p`` of each slice —
  the ideal code length of a coder that knows the slice's histogram; it is a slight
  *under*-estimate of what a real coder spends (the histogram itself is not counted, and
  the plug-in estimator is biased low by about ``(K−1)/(2 N ln 2)`` bits for K symbols).
* ``fixed_length_bits``: ``⌈log2(max − min + 1)⌉`` per slice — a fixed-length code.
* ``ans_coded_bits``: the size of a real bitstream written by the ``constriction`` ANS coder
  (Bamler, "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS)", 2022;
  Duda, "Asymmetric numeral systems", arXiv 1311.2540), so the entropy estimate can be
  checked against real compressed size. Runs on the host (NumPy), not under ``jit``.

References:
  T. M. Cover & J. A. Thomas, *Elements of Information Theory*, 2nd ed., Thm. 5.4.1 (the
  expected length of an optimal prefix code lies in [H, H+1); ANS reaches H + O(1/N)).
  Lifar et al., "WaterSIC", arXiv 2603.04956: rates reported as empirical entropy of the
  integer codes plus 16-bit scales (its experiments section; official code ``compress_w2q``).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

__all__ = [
    "CodedSize",
    "ans_coded_bits",
    "empirical_entropy_bits",
    "fixed_length_bits",
    "gaussian_code_bits",
    "GAUSSIAN_MODEL_BITS",
]

GAUSSIAN_MODEL_BITS = 64
"""Side bits of one ``gaussian`` model: mean and std (fp16), support min and max (int16)."""


def _check_codes(codes, axis: int, name: str = "codes") -> Array:
  """Array with at least one symbol per slice along ``axis`` and a real dtype."""
  x = jnp.asarray(codes)
  if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == jnp.bool_:
    raise TypeError(f"{name} must be integer (or real) symbols; got dtype {x.dtype}")
  if x.ndim == 0:
    raise ValueError(f"{name} must be at least 1-D (symbols along axis={axis}); got a scalar")
  if not -x.ndim <= axis < x.ndim:
    raise ValueError(f"axis={axis} is out of range for {name} of shape {x.shape}")
  if x.shape[axis] == 0:
    raise ValueError(f"{name} has a zero-length axis {axis} (shape {x.shape}): a slice needs ≥ 1 symbol")
  return x


def _sorted_row_entropy_bits(z: Array) -> Array:
  """Plug-in entropy (bits) of each row of ``z``: ``log2 m − (1/m) Σ_j log2 c(z_j)``, where
  ``c(z_j)`` counts the row's entries equal to ``z_j``, read off run boundaries of the sorted
  row (two cumulative scans) — a sort and no binary searches."""
  m = z.shape[-1]
  srt = jnp.sort(z, axis=-1)
  idx = jnp.broadcast_to(jnp.arange(m), srt.shape)
  new_run = jnp.concatenate([jnp.ones_like(srt[..., :1], bool), srt[..., 1:] != srt[..., :-1]], axis=-1)
  run_end = jnp.concatenate([srt[..., 1:] != srt[..., :-1], jnp.ones_like(srt[..., :1], bool)], axis=-1)
  start = lax.cummax(jnp.where(new_run, idx, 0), axis=srt.ndim - 1)
  end = lax.cummin(jnp.where(run_end, idx, m - 1), axis=srt.ndim - 1, reverse=True)
  count = (end - start + 1).astype(jnp.float32)
  return jnp.log2(jnp.float32(m)) - jnp.sum(jnp.log2(count), axis=-1) / m


def _row_entropy_bits(z: Array) -> Array:
  """Plug-in entropy (bits) of each row of the integer codes ``z: (n, m)``, for
  ``empirical_entropy_bits``, WaterSIC's rate search and GPTQ's report: ``log2 m − (1/m) Σ_s c_s
  log2 c_s`` from per-row histograms (one scatter-add into m bins per row, offsets from the row
  minimum) when every row spans fewer than m values, else from sorted rows; the histogram is
  ~10x faster than sorting on CPU."""
  return _row_entropy_and_counts(z, 0)[0]


def _row_entropy_and_counts(z: Array, bins: int) -> tuple[Array, Array]:
  """``_row_entropy_bits(z)`` and the first ``bins`` bins of the per-row histograms (counts of
  ``z_ij − min_j z_ij = k``, k < bins), zeros where the rows were sorted instead."""
  n, m = z.shape
  # int32 offsets from the row minimum: ≤ 32-bit symbols stay distinct mod 2^32, and an offset that
  # wrapped (a span ≥ 2^31) is negative, which the guard sends to the sort; wider symbols always sort
  zi = z.astype(jnp.int32)
  off = zi - jnp.min(zi, axis=1, keepdims=True)

  def by_histogram(_):
    flat = (jnp.arange(n)[:, None] * m + jnp.minimum(off, m - 1)).reshape(-1)
    c = jnp.zeros((n * m,), jnp.float32).at[flat].add(1.0).reshape(n, m)
    return jnp.log2(jnp.float32(m)) - jnp.sum(c * jnp.log2(jnp.maximum(c, 1.0)), axis=1) / m, c[:, :bins]

  def by_sort(_):
    return _sorted_row_entropy_bits(z), jnp.zeros((n, min(bins, m)), jnp.float32)

  if z.dtype.itemsize > 4:
    return by_sort(None)
  return lax.cond((jnp.min(off) >= 0) & (jnp.max(off) < m), by_histogram, by_sort, None)


def empirical_entropy_bits(codes: ArrayLike, axis: int = -1) -> Float[Array, "..."]:
  """Plug-in entropy in bits per symbol of each slice of ``codes`` along ``axis``.

  .. math:: \\hat H = -\\sum_s \\hat p_s \\log_2 \\hat p_s,\\quad \\hat p_s = \\#\\{x_i = s\\}/N.

  Args:
    codes: integer (or any exactly comparable) symbols.
    axis: the axis holding the N symbols of one histogram; the other axes are batch.

  Returns:
    Entropy per slice, shape of ``codes`` without ``axis``. Jit-able: integer codes spanning
    fewer than N values per slice by one scatter-add histogram (O(N)), others from run lengths
    of the sorted slice (O(N log N)).
  """
  x = jnp.moveaxis(_check_codes(codes, axis), axis, -1)
  return _slice_entropy_bits(x.reshape((-1, x.shape[-1]))).reshape(x.shape[:-1])


@jax.jit
def _slice_entropy_bits(flat: Array) -> Array:
  # one compiled program per shape and dtype, also when called eagerly (lax.cond's branches are
  # closures, which an eager call would trace and compile again every time)
  if jnp.issubdtype(flat.dtype, jnp.integer):
    return _row_entropy_bits(flat)
  return _sorted_row_entropy_bits(flat)


def fixed_length_bits(codes: Int[ArrayLike, "..."], axis: int = -1) -> Float[Array, "..."]:
  """Bits per symbol of a fixed-length code for each slice: ``⌈log2(max − min + 1)⌉``."""
  x = _check_codes(codes, axis)
  span = (jnp.max(x, axis=axis) - jnp.min(x, axis=axis)).astype(jnp.float32) + 1.0
  return jnp.ceil(jnp.log2(span) - 1e-6)


def _gaussian_params(x: Array):
  mu = jnp.mean(x).astype(jnp.float16).astype(jnp.float32)
  sd = jnp.maximum(jnp.std(x), 0.3).astype(jnp.float16).astype(jnp.float32)
  return mu, sd


def _gaussian_bits_1d(x: Array) -> Array:
  x = x.astype(jnp.float32)
  mu, sd = _gaussian_params(x)
  lo, hi = jnp.min(x), jnp.max(x)
  cdf = lambda t: jax.scipy.stats.norm.cdf((t - mu) / sd)  # noqa: E731
  total = cdf(hi + 0.5) - cdf(lo - 0.5)
  p = (cdf(x + 0.5) - cdf(x - 0.5)) / total
  p = jnp.maximum(p, 2.0**-24)  # the coder gives every symbol of the support mass ≥ 2^-24
  return -jnp.mean(jnp.log2(p))


def gaussian_code_bits(codes: ArrayLike, axis: int = -1) -> Float[Array, "..."]:
  """Ideal code length (bits per symbol) of each slice under its own quantized Gaussian.

  The model is the one ``ans_coded_bits(model="gaussian")`` uses: ``N(μ, σ²)`` with the
  slice's mean and standard deviation (stored as fp16; σ ≥ 0.3), integrated over
  ``[z − ½, z + ½]`` and renormalized to the slice's support ``[min, max]``:

  .. math:: \\ell = -\\frac1N \\sum_i \\log_2 P(z_i).

  Unlike the plug-in entropy this is an **achievable** rate (add ``GAUSSIAN_MODEL_BITS``
  per slice for the model); it is near the entropy when the codes are Gaussian-like.
  Jit-able.
  """
  x = jnp.moveaxis(_check_codes(codes, axis), axis, -1)
  flat = x.reshape((-1, x.shape[-1]))
  return jax.vmap(_gaussian_bits_1d)(flat).reshape(x.shape[:-1])


class CodedSize(NamedTuple):
  """Size of a real ANS bitstream.

  Attributes:
    payload_bits: total bits of the compressed words (32-bit words × 32).
    model_bits: bits of the per-slice model parameters that the decoder also needs
      (``"gaussian"``: 64 bits per slice — mean and std as fp16, support min and max as
      int16; ``"empirical"``: 0 — the probability table is **not** counted).
    num_symbols: number of coded symbols.
  """

  payload_bits: int
  model_bits: int
  num_symbols: int

  @property
  def bits_per_symbol(self) -> float:
    """``(payload + model) / num_symbols``."""
    return (self.payload_bits + self.model_bits) / self.num_symbols


def ans_coded_bits(
    codes: Int[ArrayLike, "n m"], model: Literal["empirical", "gaussian"] = "empirical"
) -> CodedSize:
  """Encode each row of ``codes`` with ``constriction``'s ANS coder and measure the bits.

  Each row (one input feature's ``m`` codes) is coded with its own model:

  * ``"empirical"`` — a categorical model on ``[min, max]`` of the row with the row's
    empirical frequencies (the table is side information not counted here); the payload
    should be within a few words of ``m · empirical_entropy_bits``.
  * ``"gaussian"`` — a quantized Gaussian on the row's support ``[min, max]`` with the row's
    mean and standard deviation (64 bits of model per row, counted in ``model_bits``): a
    complete, decodable rate.

  The stream is decoded again and compared with the input (raises ``RuntimeError`` on a
  mismatch), so the size is that of a verified lossless code.

  Args:
    codes: ``(n, m)`` integers, one row per histogram (host array; not jit-able).
    model: see above.
  """
  import constriction

  z = np.asarray(codes)
  if z.ndim != 2:
    raise ValueError(f"codes must be a 2-D (n, m) array, one row per histogram; got shape {z.shape}")
  if not np.issubdtype(z.dtype, np.integer):
    raise TypeError(f"codes must be integers; got dtype {z.dtype}")
  if model not in ("empirical", "gaussian"):
    raise ValueError(f"model={model!r} must be 'empirical' or 'gaussian'")
  if z.shape[1] == 0:
    raise ValueError(f"codes has no symbols per row (shape {z.shape}); ans_coded_bits needs m ≥ 1")
  z = z.astype(np.int64)
  coder = constriction.stream.stack.AnsCoder()
  models = []
  for row in z:
    lo, hi = int(row.min()), int(row.max())
    if model == "empirical":
      freq = np.bincount(row - lo, minlength=hi - lo + 1).astype(np.float64)
      cat = constriction.stream.model.Categorical(freq / freq.sum(), perfect=False)
      models.append((cat, lo, None))
    else:
      mu = float(np.float16(np.float32(row.mean())))
      sd = float(np.float16(np.float32(max(row.std(), 0.3))))
      # Gaussian restricted to the row's support (every symbol in it gets nonzero mass).
      gm = constriction.stream.model.QuantizedGaussian(lo, hi, mu, sd)
      models.append((gm, 0, None))
  # ANS is a stack: encode rows in reverse so they decode in order.
  for row, (mdl, shift, _) in zip(z[::-1], models[::-1]):
    coder.encode_reverse((row - shift).astype(np.int32), mdl)
  words = coder.get_compressed()
  payload = 32 * int(words.size)
  decoder = constriction.stream.stack.AnsCoder(words)
  for row, (mdl, shift, _) in zip(z, models):
    out = decoder.decode(mdl, row.shape[0]).astype(np.int64) + shift
    if not np.array_equal(out, row):
      raise RuntimeError("ANS round trip failed: decoded symbols differ from the input")
  model_bits = GAUSSIAN_MODEL_BITS * z.shape[0] if model == "gaussian" else 0
  return CodedSize(payload_bits=payload, model_bits=model_bits, num_symbols=int(z.size))
