"""What every layer algorithm returns next to ``Ŵ``, and the shared argument checks.

Distortion convention (DESIGN.md): ``d_per_entry = tr((W−Ŵ)ᵀ H (W−Ŵ)) / (n·m)`` with the
**undamped** H passed by the caller (damping is part of an algorithm, not of the metric).
Rates are bits per weight entry, side information included unless the name says otherwise.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rdq.covariance import check_covariance
from rdq.rate import GAUSSIAN_MODEL_BITS, empirical_entropy_bits, fixed_length_bits, gaussian_code_bits

__all__ = ["EXTRAS_WEIGHT_POWER", "SCALAR_FIELDS", "LayerReport", "check_layer_inputs", "concrete_rate", "layer_distortion", "make_report"]


RATE_KINDS = ("nominal", "entropy")

EXTRAS_WEIGHT_POWER = {"stage_d_per_entry": 2, "stage_d_bound": 2, "codebooks": 1}
"""How ``LayerReport.extras`` entries scale with W (``W → sW`` multiplies them by ``s^p``); absent: 0."""


class LayerReport(NamedTuple):
  """Result summary of one layer quantization, the same for every algorithm (a pytree of arrays).

  Attributes:
    d_per_entry: ``tr((W−Ŵ)ᵀH(W−Ŵ))/(n·m)``.
    d_relative: ``tr((W−Ŵ)ᵀH(W−Ŵ)) / tr(WᵀHW)`` (= ``E‖WᵀX−ŴᵀX‖²/E‖WᵀX‖²``).
    rate_bits: **the** rate of the algorithm, bits per weight with side information, the one
      its ``rate_bits`` budget controls: ``rate_nominal_bits`` for fixed-length codes (RTN and
      GPTQ on a min–max or registry grid, GPTVQ, lattice SIC), ``rate_entropy_bits`` for
      entropy-coded ones (WaterSIC, the ``"uniform"`` grid). The other rates are variants.
    rate_nominal_bits: fixed-length code: bits per code (``⌈log2(range)⌉`` per input
      feature for unbounded codes) plus side information, per entry.
    rate_entropy_bits: mean over input features of the empirical (plug-in) entropy of that
      feature's m integer codes, plus side information, per entry (see ``rdq.rate``). The
      rate the papers report; optimistic by about ``(K−1)/(2m ln 2)`` bits for K symbols.
    rate_coded_bits: an achievable entropy-coded rate: each input feature's codes under
      its own quantized-Gaussian model (``rdq.rate.gaussian_code_bits``) plus the model's
      64 bits per input feature, plus side information, per entry.
    side_bits: side information per entry (scales, zero points, step sizes).
    feature_rate_bits: ``(n,)`` empirical entropy of each input feature's codes — the
      per-feature rate allocation (bits per entry, side information excluded).
    feature_scale: ``(n,)`` per-input-feature step or scale where the algorithm has one
      (WaterSIC: ``α_i γ_i``), else NaN.
    codes: ``(n, m)`` int32 integer codes (feed ``rdq.rate.ans_coded_bits`` for real bytes);
      for a vector code (GPTVQ) each of the d input features of a vector holds its index.
    extras: dict of algorithm-specific arrays (GPTVQ: per-stage distortions and rates,
      codebooks; empty for the others). ``EXTRAS_WEIGHT_POWER`` says how an entry scales
      with W (distortions as W², codebooks as W, the rest not at all).
  """

  d_per_entry: Float[Array, ""]
  d_relative: Float[Array, ""]
  rate_bits: Float[Array, ""]
  rate_nominal_bits: Float[Array, ""]
  rate_entropy_bits: Float[Array, ""]
  rate_coded_bits: Float[Array, ""]
  side_bits: Float[Array, ""]
  feature_rate_bits: Float[Array, " n"]
  feature_scale: Float[Array, " n"]
  codes: Int[Array, "n m"]
  extras: dict[str, Any] = {}

  def scalars(self) -> dict[str, float]:
    """The scalar fields (distortions, rates, side bits) as Python floats, e.g. for a JSON record."""
    return {f: float(getattr(self, f)) for f in SCALAR_FIELDS}


SCALAR_FIELDS = ("d_per_entry", "d_relative", "rate_bits", "rate_nominal_bits", "rate_entropy_bits",
                 "rate_coded_bits", "side_bits")


def layer_distortion(
    w: Float[Array, "n m"], w_hat: Float[Array, "n m"], h: Float[Array, "n n"]
) -> Float[Array, ""]:
  """``tr((W−Ŵ)ᵀ H (W−Ŵ)) / (n·m)``."""
  e = (w - w_hat).astype(jnp.float32)
  return jnp.sum(e * (h.astype(jnp.float32) @ e)) / e.size


def make_report(
    w: Float[Array, "n m"],
    w_hat: Float[Array, "n m"],
    h: Float[Array, "n n"],
    codes: Int[Array, "n m"],
    side_bits,
    nominal_bits=None,
    feature_scale=None,
    *,
    rate: str = "nominal",
    extras: dict | None = None,
    symbol_dim: int = 1,
    coded_bits=None,
    feature_bits=None,
    distortion=None,
    signal=None,
) -> LayerReport:
  """Assemble a ``LayerReport`` (jit-able).

  ``nominal_bits=None``: fixed-length per feature. ``rate``: which rate is ``rate_bits``
  (``"nominal"`` or ``"entropy"``). ``symbol_dim = d``: each code symbol covers d weights
  (a vector index repeated on d rows), so the per-feature entropies are divided by d.
  ``coded_bits``: the achievable coded rate without side information, when the
  quantized-Gaussian model does not apply (vector indices). ``feature_bits``: the per-feature
  plug-in entropies (bits per code) when the caller has computed them already (WaterSIC's rate
  search), else ``rdq.rate.empirical_entropy_bits`` of ``codes``. ``distortion`` and ``signal``:
  ``tr((W−Ŵ)ᵀH(W−Ŵ))/(nm)`` and ``tr(WᵀHW)/(nm)`` when the caller has them from its own
  factorization of H (a SIC's residuals, ``rdq.layer.watersic``), else the two ``n²m`` products
  ``layer_distortion`` and ``Wᵀ(HW)``.
  """
  if rate not in RATE_KINDS:
    raise ValueError(f"rate={rate!r} must be one of {RATE_KINDS}")
  n, m = w.shape
  d = layer_distortion(w, w_hat, h) if distortion is None else jnp.asarray(distortion, jnp.float32)
  signal = jnp.sum(w * (h @ w)) / (n * m) if signal is None else jnp.asarray(signal, jnp.float32)
  feat_h = (empirical_entropy_bits(codes, axis=1) if feature_bits is None else feature_bits) / symbol_dim
  if nominal_bits is None:
    nominal = jnp.mean(fixed_length_bits(codes, axis=1))
  else:
    nominal = jnp.float32(nominal_bits)
  side = jnp.float32(side_bits)
  if feature_scale is None:
    feature_scale = jnp.full((n,), jnp.nan, jnp.float32)
  if coded_bits is None:
    coded = jnp.mean(gaussian_code_bits(codes, axis=1)) + GAUSSIAN_MODEL_BITS / m
  else:
    coded = jnp.float32(coded_bits)
  nominal = nominal + side
  entropy = jnp.mean(feat_h) + side
  return LayerReport(
      d_per_entry=d,
      d_relative=d / signal,
      rate_bits=nominal if rate == "nominal" else entropy,
      rate_nominal_bits=nominal,
      rate_entropy_bits=entropy,
      rate_coded_bits=coded + side,
      side_bits=side,
      feature_rate_bits=feat_h,
      feature_scale=feature_scale,
      codes=codes,
      extras={} if extras is None else dict(extras),
  )


def concrete_rate(rate_bits, algorithm: str) -> float:
  """``rate_bits`` as a Python float, for algorithms whose code layout depends on the rate.

  Raises ``TypeError`` for a traced rate (the number of grid levels, centroids or lattice
  points is a static shape) and ``ValueError`` for a non-finite or non-positive one.
  """
  if isinstance(rate_bits, jax.core.Tracer):
    raise TypeError(
        f"rate_bits must be a concrete number for {algorithm} (its code size is static: pass a Python "
        "float, or close over it instead of tracing/vmapping it); got a traced value"
    )
  r = float(np.asarray(rate_bits))
  if not (np.isfinite(r) and r > 0):
    raise ValueError(f"rate_bits={rate_bits!r} must be a finite number > 0 (bits per weight, side information incl.)")
  return r


def check_layer_inputs(w, h, percdamp: float | None, group_size: int | None = None, *, psd: bool = True) -> None:
  """Eager checks shared by the layer algorithms (skipped for tracers under ``jit``).

  Raises ``ValueError`` naming the problem for: W not 2-D or non-finite; H not ``(n, n)``,
  non-symmetric, non-PSD or non-finite; ``percdamp < 0``; H singular with ``percdamp = 0``;
  ``group_size`` not dividing n. ``TypeError`` for non-float W. ``percdamp=None``: the
  algorithm never factors H (RTN), so singular H is fine. ``psd=False``: the caller checks
  positive semidefiniteness itself from its own Cholesky factor (no O(n³) eigenvalues here).
  """
  if percdamp is not None and not (isinstance(percdamp, (int, float)) and percdamp >= 0 and np.isfinite(percdamp)):
    raise ValueError(f"percdamp={percdamp!r} must be a finite float ≥ 0")
  if isinstance(w, jax.core.Tracer) or isinstance(h, jax.core.Tracer):
    if getattr(w, "ndim", 2) != 2 or getattr(h, "shape", (0, 0))[-2:] != (w.shape[0], w.shape[0]):
      raise ValueError(f"W must be (n, m) and H (n, n); got W {w.shape} and H {h.shape}")
    return
  w_np = np.asarray(w)
  if w_np.ndim != 2:
    raise ValueError(f"W must be a 2-D (n, m) = (in_features, out_features) matrix; got shape {w_np.shape}")
  if not jnp.issubdtype(w_np.dtype, jnp.floating):  # bf16/fp16/fp32/fp64; not int, bool or complex
    raise TypeError(f"W must be a real floating-point array (bf16, fp16, fp32 or fp64); got dtype {w_np.dtype}")
  w_np = w_np.astype(np.float64)
  h_dtype = np.asarray(h).dtype
  if not jnp.issubdtype(h_dtype, jnp.floating):
    raise TypeError(f"H must be a real floating-point array; got dtype {h_dtype}")
  if not np.all(np.isfinite(w_np)):
    raise ValueError(f"W must be finite; it has {int(np.sum(~np.isfinite(w_np)))} NaN/Inf entries")
  n = w_np.shape[0]
  h_np = np.asarray(h, np.float64)
  if h_np.ndim != 2 or h_np.shape != (n, n):
    raise ValueError(f"H must be (n, n) = ({n}, {n}) to match W of shape {w_np.shape} (n = input features); got {h_np.shape}")
  check_covariance(h_np, name="H", tol=1e-4, psd=psd)
  if percdamp is None:
    pass
  elif percdamp == 0:
    eig = np.linalg.eigvalsh(h_np)
    if eig[0] <= 1e-7 * max(abs(eig[-1]), 1e-30):
      raise ValueError(
          f"H is singular (min eigenvalue {eig[0]:.3g}, max {eig[-1]:.3g}) and percdamp=0; "
          "set percdamp > 0 to damp it"
      )
  elif np.mean(np.diag(h_np)) <= 0:
    raise ValueError("H has zero mean diagonal: relative damping cannot make it positive definite")
  if group_size is not None and n % group_size:
    raise ValueError(f"group_size={group_size} must divide the number of input features n={n}")
