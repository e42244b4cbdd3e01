"""Reverse waterfilling: the rate–distortion limit of weight-only quantization with known Σ.

Setting. ``W ∈ R^{n×m}`` (n input features, m output features) has iid ``N(0, σ²)``
entries and the distortion is the weighted MSE

.. math::  D = \\frac{1}{n m}\\, \\mathbb{E}\\,\\mathrm{tr}\\big((W-\\hat W)^\\top Σ (W-\\hat W)\\big).

Rotating each output column into the eigenbasis ``Σ = Q diag(λ) Qᵀ`` turns it into n
independent Gaussian components of variances ``σ² λ_i`` under plain squared error, so the
limit is classical reverse waterfilling over ``μ_i = σ² λ_i`` with water level θ:

.. math::
   D(θ) = \\frac1n \\sum_i \\min(θ, μ_i), \\qquad
   R(θ) = \\frac1n \\sum_i \\max\\big(0, \\tfrac12 \\log_2 (μ_i / θ)\\big)
   \\quad\\text{bits per entry.}

Both are solved exactly here (no bisection): with ``μ`` sorted descending and ``k``
active components, ``log2 θ = (Σ_{i≤k} log2 μ_i − 2nR)/k`` for a rate target and
``θ = (nD − Σ_{i>k} μ_i)/k`` for a distortion target; the unique consistent ``k`` is picked.

High rate (``θ ≤ min μ``): ``D = σ² (det Σ)^{1/n} 2^{−2R}`` — only the geometric mean of the
eigenvalues matters. An entropy-coded uniform scalar quantizer loses the factor
``2πe/12`` in distortion, i.e. ``½ log2(πe/6) ≈ 0.2546`` bit in rate (``ECSQ_GAP_BITS``).

References:
  T. M. Cover & J. A. Thomas, *Elements of Information Theory*, 2nd ed., Theorem 10.3.3
  (reverse waterfilling for independent Gaussians). Gish & Pierce, "Asymptotically efficient
  quantizing", IEEE Trans. IT 14(5), 1968 (the ``πe/6`` ECSQ gap). Ordentlich & Polyanskiy,
  "High-Rate Quantized Matrix Multiplication II" (2026), abstract (weight-only = WMSE reverse
  waterfilling; WaterSIC within ``2πe/12``); Lifar et al., "WaterSIC", arXiv 2603.04956 (0.255 bit).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from rdq.checks import is_concrete, require
from rdq.limits._checks import (
  _F32_TINY,
  check_positive,
  check_real,
  device_log2,
  exp2_accurate,
  host_log2,
  log2_of,
  safe_log2,
)
from rdq.limits.ecsq import ECSQ_GAP_BITS  # re-exported

__all__ = [
    "ECSQ_GAP_BITS",
    "WaterfillResult",
    "waterfill",
    "waterfill_gap_bits",
    "waterfill_high_rate",
    "waterfill_rate",
]



class WaterfillResult(NamedTuple):
  """Reverse-waterfilling solution (leading batch axes allowed).

  Attributes:
    distortion: ``D`` per entry, ``(1/n) Σ min(θ, σ²λ_i)``.
    rate_bits: ``R`` in bits per entry, ``(1/n) Σ max(0, ½ log2(σ²λ_i/θ))``.
    water_level: θ.
    rates_bits: per-eigendirection rates ``max(0, ½ log2(σ²λ_i/θ))`` in the input order.
  """

  distortion: Float[Array, "*b"]
  rate_bits: Float[Array, "*b"]
  water_level: Float[Array, "*b"]
  rates_bits: Float[Array, "*b n"]


def _check_eigenvalues(eigenvalues) -> None:
  """Require a real, finite, non-negative, not-all-zero spectrum (trailing axis n ≥ 1)."""
  check_real(eigenvalues, "eigenvalues")
  shape = np.shape(eigenvalues)
  if len(shape) < 1 or shape[-1] < 1:
    raise ValueError(f"eigenvalues must have a trailing axis of length n ≥ 1; got shape {shape}")
  if is_concrete(eigenvalues):
    arr = np.asarray(eigenvalues, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
      raise ValueError(f"eigenvalues must be finite; got {int(np.sum(~np.isfinite(arr)))} NaN/Inf entries")
    if np.any(arr < 0):
      raise ValueError(f"eigenvalues must be ≥ 0 (Σ is PSD); got min {arr.min():.3g}")
    if np.any(np.max(arr, axis=-1) <= 0):
      raise ValueError("eigenvalues must not be all zero (Σ = 0 has no distortion to remove)")
    return
  e = jnp.asarray(eigenvalues)
  require(jnp.all(jnp.isfinite(e)), "eigenvalues must be finite; got {} NaN/Inf entries", jnp.sum(~jnp.isfinite(e)))
  require(jnp.all(e >= 0), "eigenvalues must be ≥ 0 (Σ is PSD); got min {}", jnp.min(e))
  require(jnp.all(jnp.max(e, axis=-1) > 0), "eigenvalues must not be all zero (Σ = 0 has no distortion to remove)")


def _finish(log_mu: Array, log_theta: Array, log_d: Array | None = None) -> WaterfillResult:
  """Result from ``log2 μ`` and ``log2 θ``; every rate is a difference of logarithms (finite)."""
  active = log_mu > log_theta
  r_i = jnp.where(active, 0.5 * (log_mu - jnp.where(active, log_theta, 0.0)), 0.0)
  if log_d is None:
    # D = θ · mean(min(1, μ/θ)): the mean is in [1/n, 1], so log2 D never underflows.
    log_d = log_theta + jnp.log2(jnp.mean(jnp.exp2(jnp.minimum(log_mu - log_theta, 0.0))))
  return WaterfillResult(
      distortion=exp2_accurate(log_d), rate_bits=jnp.mean(r_i), water_level=exp2_accurate(log_theta), rates_bits=r_i
  )


def _sorted_logs(log_mu: Array) -> tuple[Array, Array]:
  """``log2 μ`` descending and the next smaller one (−inf after the last)."""
  ls = jnp.sort(log_mu)[::-1]
  nxt = jnp.concatenate([ls[1:], jnp.full((1,), -jnp.inf, ls.dtype)])
  return ls, nxt


def _log_theta_for_rate(log_mu: Array, rate_bits: Array) -> Array:
  n = log_mu.shape[0]
  ls, nxt = _sorted_logs(log_mu)
  k = jnp.arange(1, n + 1, dtype=ls.dtype)
  # k active components: log2 θ = (Σ_{i≤k} log2 μ_i − 2nR)/k; zeros (−inf) are never active.
  csum = jnp.cumsum(jnp.where(jnp.isfinite(ls), ls, 0.0))
  log_theta = (csum - 2.0 * n * rate_bits) / k
  valid = (log_theta < ls) & (log_theta >= nxt)
  return log_theta[jnp.argmax(valid)]


def _log_theta_for_distortion(log_mu: Array, log_d: Array) -> Array:
  n = log_mu.shape[0]
  ls, nxt = _sorted_logs(log_mu)
  top = ls[0]
  s = jnp.exp2(ls - top)  # μ / max μ ∈ [0, 1]: no overflow whatever the scale
  d = jnp.exp2(log_d - top)  # may underflow: handled below
  k = jnp.arange(1, n + 1, dtype=s.dtype)
  # Σ_{i>k} s_i as a reverse cumulative sum (smallest terms first): sum(s) − cumsum(s) cancels
  # catastrophically at high rate, where the tail is tiny.
  rev = jnp.cumsum(s[::-1])[::-1]
  tail = jnp.concatenate([rev[1:], jnp.zeros((1,), s.dtype)])
  # θ_k = (nD − tail_k)/k; with an empty tail this is exact in the log domain (no underflow).
  # log2 of the positive part, −inf elsewhere; the inner where keeps the gradient finite
  # (d log2(x)/dx at x ≤ 0 would turn into NaN through the outer where).
  arg = n * d - tail
  pos = arg > 0
  lin = jnp.where(pos, jnp.log2(jnp.where(pos, arg, 1.0)), -jnp.inf) - jnp.log2(k) + top
  log_theta_k = jnp.where(tail == 0, log_d + jnp.log2(n / k), lin)
  valid = (log_theta_k <= ls) & (log_theta_k >= nxt)
  # D ≥ mean(μ): zero rate, θ = max μ.
  return jnp.where(d >= jnp.mean(s), top, log_theta_k[jnp.argmax(valid)])


def _wf_rate_log(eig, rate, log_var):
  log_mu = safe_log2(eig) + log_var
  return _finish(log_mu, _log_theta_for_rate(log_mu, rate))


def _wf_dist_log(eig, log_d, log_var):
  log_mu = safe_log2(eig) + log_var
  log_theta = _log_theta_for_distortion(log_mu, log_d)
  res = _finish(log_mu, log_theta)
  at_target = log_theta < jnp.max(log_mu)  # below mean μ the distortion is the target itself
  return res._replace(distortion=jnp.where(at_target, exp2_accurate(log_d), res.distortion))


def _wf_rate(eig, rate, var):
  """Waterfilling at ``rate`` for one spectrum (linear-domain arguments; used by other modules)."""
  return _wf_rate_log(eig, rate, safe_log2(var))


def _wf_dist(eig, d, var):
  """Waterfilling at distortion ``d`` for one spectrum (linear-domain arguments)."""
  return _wf_dist_log(eig, safe_log2(d), safe_log2(var))


_SIG = "(n),(),()->(),(),(),(n)"


@jax.jit
def _waterfill_core(eig, rate, var, host_log_var):
  log_var = device_log2(var, host_log_var)
  return WaterfillResult(*jnp.vectorize(_wf_rate_log, signature=_SIG)(eig, rate, log_var))


@jax.jit
def _waterfill_rate_core(eig, d, host_log_d, var, host_log_var):
  log_d, log_var = device_log2(d, host_log_d), device_log2(var, host_log_var)
  return WaterfillResult(*jnp.vectorize(_wf_dist_log, signature=_SIG)(eig, log_d, log_var))


def _as_f32(x, name):
  check_real(x, name)
  return jnp.asarray(x, jnp.float32)


def waterfill(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> WaterfillResult:
  """Weight-only distortion limit ``D(R)`` by reverse waterfilling (see module docstring).

  Computed in the log domain: rates are exact differences of ``log2 μ_i`` and ``log2 θ``,
  whatever the scale of the spectrum. A distortion below float32's smallest normal number
  (``2^-126``) cannot be returned: it raises ``ValueError`` (D scales linearly with
  ``variance``: rescale it).

  Args:
    eigenvalues: eigenvalues λ of Σ (any order, ≥ 0), trailing axis n; leading axes batch.
    rate_bits: R > 0, bits per weight entry; broadcasts against the batch axes.
    variance: σ², the variance of the iid Gaussian weight entries.

  Returns:
    ``WaterfillResult`` with the distortion per entry (``tr((W−Ŵ)ᵀΣ(W−Ŵ))/(n·m)``), the rate,
    the water level θ and per-eigendirection rates.

  Raises:
    ValueError: eagerly, for a bad argument (the message names it); under ``jit`` through
      ``rdq.checks.checked`` (``checkify``).

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(waterfill(jnp.ones(4), 1.0).distortion), 6)  # = 2^-2
    0.25
  """
  _check_eigenvalues(eigenvalues)
  check_positive(rate_bits, "rate_bits")
  check_positive(variance, "variance")
  res = _waterfill_core(
      _as_f32(eigenvalues, "eigenvalues"), _as_f32(rate_bits, "rate_bits"), _as_f32(variance, "variance"),
      host_log2(variance))
  d = res.distortion
  require(jnp.all(d >= _F32_TINY),
          "waterfill: the distortion underflows float32 (D < 2^-126 ≈ 1.2e-38) at rate_bits (max {}); "
          "D scales linearly with variance: multiply variance by 2^k to shift D by 2^k",
          jnp.max(jnp.asarray(rate_bits)))
  return res


def waterfill_rate(
    eigenvalues: Float[ArrayLike, "*b n"], distortion: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> WaterfillResult:
  """Inverse of ``waterfill``: the least rate ``R(D)`` (bits per entry) reaching distortion D.

  The rate is computed from ``log2 D`` (taken on the host in float64 for a concrete D outside
  float32's range), so e.g. ``D = 2^-200`` gives 100 bits, not inf.

  Args:
    eigenvalues: eigenvalues of Σ (≥ 0), trailing axis n.
    distortion: target D > 0 per entry; ``D ≥ σ²·mean(λ)`` gives rate 0.
    variance: σ².

  Returns:
    ``WaterfillResult`` (``rate_bits`` is the answer; ``distortion`` equals the target
    up to float error when it is below ``σ²·mean(λ)``; ``distortion`` and ``water_level``
    are float32 and flush to 0 below ``2^-126``, the rates stay exact).
  """
  _check_eigenvalues(eigenvalues)
  check_positive(distortion, "distortion")
  check_positive(variance, "variance")
  return _waterfill_rate_core(
      _as_f32(eigenvalues, "eigenvalues"), _as_f32(distortion, "distortion"), host_log2(distortion),
      _as_f32(variance, "variance"), host_log2(variance))


def waterfill_gap_bits(
    eigenvalues: Float[ArrayLike, "*b n"],
    rate_bits: Float[ArrayLike, "*b"],
    distortion: Float[ArrayLike, "*b"],
    variance: ArrayLike = 1.0,
) -> Float[Array, "*b"]:
  """Rate gap to reverse waterfilling, ``R − R*(D)`` bits per entry: the extra rate a scheme at
  rate R and distortion D spends over the least rate reaching D (``waterfill_rate``).

  The one definition of "gap to waterfilling" in rdq (experiments, notebooks and the
  universal-codebook gap use it). ≥ 0 for an achievable (R, D) of Gaussian weights with iid
  ``N(0, variance)`` entries; the high-rate gap of entropy-coded scalar quantization with SIC
  is ``ECSQ_GAP_BITS`` (WaterSIC). Jit-able and vectorized like ``waterfill_rate``.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(waterfill_gap_bits(jnp.ones(4), 1.5, 0.25)), 6)  # R*(1/4) = 1 bit
    0.5
  """
  check_real(rate_bits, "rate_bits")
  return jnp.asarray(rate_bits, jnp.float32) - waterfill_rate(eigenvalues, distortion, variance).rate_bits


def waterfill_high_rate(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> Float[Array, "*b"]:
  """High-rate form ``σ² (Π λ_i)^{1/n} 2^{−2R}`` (exact once ``θ ≤ min σ²λ_i``).

  Multiply by ``2^{2·ECSQ_GAP_BITS} = πe/6`` for the high-rate distortion of WaterSIC /
  entropy-coded scalar quantization with successive interference cancellation.
  Computed as ``exp2(log2 σ² + mean log2 λ − 2R)`` (no overflow of the product).
  """
  _check_eigenvalues(eigenvalues)
  check_positive(rate_bits, "rate_bits")
  check_positive(variance, "variance")
  eig = _as_f32(eigenvalues, "eigenvalues")
  log_gm = jnp.mean(safe_log2(eig), axis=-1)
  return exp2_accurate(log2_of(variance, "variance") + log_gm - 2.0 * _as_f32(rate_bits, "rate_bits"))
