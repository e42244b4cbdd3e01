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

from rdq.limits.ecsq import ECSQ_GAP_BITS  # re-exported
from rdq.limits._checks import check_positive

__all__ = [
    "ECSQ_GAP_BITS",
    "WaterfillResult",
    "waterfill",
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
  if isinstance(eigenvalues, jax.core.Tracer):
    return
  arr = np.asarray(eigenvalues, dtype=np.float64)
  if arr.ndim < 1 or arr.shape[-1] < 1:
    raise ValueError(f"eigenvalues must have a trailing axis of length n ≥ 1; got shape {arr.shape}")
  if not np.all(np.isfinite(arr)):
    raise ValueError("eigenvalues must be finite")
  if np.any(arr < 0):
    raise ValueError(f"eigenvalues must be ≥ 0 (Σ is PSD); got min {arr.min():.3g}")
  if np.any(np.max(arr, axis=-1) <= 0):
    raise ValueError("eigenvalues must not be all zero (Σ = 0 has no distortion to remove)")


def _finish(mu: Array, theta: Array) -> WaterfillResult:
  d = jnp.mean(jnp.minimum(theta, mu))
  r_i = jnp.where(mu > theta, 0.5 * (jnp.log2(jnp.maximum(mu, 1e-38)) - jnp.log2(theta)), 0.0)
  return WaterfillResult(distortion=d, rate_bits=jnp.mean(r_i), water_level=theta, rates_bits=r_i)


def _theta_for_rate(mu: Array, rate_bits: Array) -> Array:
  n = mu.shape[0]
  s = jnp.sort(mu)[::-1]
  k = jnp.arange(1, n + 1, dtype=s.dtype)
  log_s = jnp.log2(jnp.maximum(s, 0.0))  # log2(0) = -inf: never active
  log_theta = (jnp.cumsum(log_s) - 2.0 * n * rate_bits) / k
  theta_k = jnp.exp2(log_theta)
  nxt = jnp.concatenate([s[1:], jnp.zeros((1,), s.dtype)])
  valid = (theta_k < s) & (theta_k >= nxt)
  idx = jnp.argmax(valid)
  return theta_k[idx]


def _theta_for_distortion(mu: Array, d: Array) -> Array:
  n = mu.shape[0]
  s = jnp.sort(mu)[::-1]
  k = jnp.arange(1, n + 1, dtype=s.dtype)
  # Σ_{i>k} s_i as a reverse cumulative sum (smallest terms first): sum(s) − cumsum(s) cancels
  # catastrophically at high rate, where the tail is tiny.
  rev = jnp.cumsum(s[::-1])[::-1]
  tail = jnp.concatenate([rev[1:], jnp.zeros((1,), s.dtype)])
  theta_k = (n * d - tail) / k
  nxt = jnp.concatenate([s[1:], jnp.zeros((1,), s.dtype)])
  valid = (theta_k <= s) & (theta_k >= nxt)
  # D ≥ mean(μ): zero rate, θ = max μ.
  return jnp.where(d >= jnp.mean(s), s[0], theta_k[jnp.argmax(valid)])


def _wf_rate(eig, rate, var):
  mu = var * eig
  return _finish(mu, _theta_for_rate(mu, rate))


def _wf_dist(eig, d, var):
  mu = var * eig
  return _finish(mu, _theta_for_distortion(mu, d))


_SIG = "(n),(),()->(),(),(),(n)"


def waterfill(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> WaterfillResult:
  """Weight-only distortion limit ``D(R)`` by reverse waterfilling (see module docstring).

  Args:
    eigenvalues: eigenvalues λ of Σ (any order, ≥ 0), trailing axis n; leading axes batch.
    rate_bits: R > 0, bits per weight entry; broadcasts against the batch axes.
    variance: σ², the variance of the iid Gaussian weight entries.

  Returns:
    ``WaterfillResult`` with the distortion per entry (``tr((W−Ŵ)ᵀΣ(W−Ŵ))/(n·m)``), the rate,
    the water level θ and per-eigendirection rates.

  Examples:
    >>> import jax.numpy as jnp
    >>> round(float(waterfill(jnp.ones(4), 1.0).distortion), 6)  # = 2^-2
    0.25
  """
  _check_eigenvalues(eigenvalues)
  check_positive(rate_bits, "rate_bits")
  check_positive(variance, "variance")
  eig = jnp.asarray(eigenvalues, jnp.float32)
  return WaterfillResult(*jnp.vectorize(_wf_rate, signature=_SIG)(
      eig, jnp.asarray(rate_bits, jnp.float32), jnp.asarray(variance, jnp.float32)))


def waterfill_rate(
    eigenvalues: Float[ArrayLike, "*b n"], distortion: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> WaterfillResult:
  """Inverse of ``waterfill``: the least rate ``R(D)`` (bits per entry) reaching distortion D.

  Args:
    eigenvalues: eigenvalues of Σ (≥ 0), trailing axis n.
    distortion: target D > 0 per entry; ``D ≥ σ²·mean(λ)`` gives rate 0.
    variance: σ².

  Returns:
    ``WaterfillResult`` (``rate_bits`` is the answer; ``distortion`` equals the target
    up to float error when it is below ``σ²·mean(λ)``).
  """
  _check_eigenvalues(eigenvalues)
  check_positive(distortion, "distortion")
  check_positive(variance, "variance")
  eig = jnp.asarray(eigenvalues, jnp.float32)
  return WaterfillResult(*jnp.vectorize(_wf_dist, signature=_SIG)(
      eig, jnp.asarray(distortion, jnp.float32), jnp.asarray(variance, jnp.float32)))


def waterfill_high_rate(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"], variance: ArrayLike = 1.0
) -> Float[Array, "*b"]:
  """High-rate form ``σ² (Π λ_i)^{1/n} 2^{−2R}`` (exact once ``θ ≤ min σ²λ_i``).

  Multiply by ``2^{2·ECSQ_GAP_BITS} = πe/6`` for the high-rate distortion of WaterSIC /
  entropy-coded scalar quantization with successive interference cancellation.
  """
  _check_eigenvalues(eigenvalues)
  check_positive(rate_bits, "rate_bits")
  eig = jnp.asarray(eigenvalues, jnp.float32)
  gm = jnp.exp(jnp.mean(jnp.log(eig), axis=-1))
  return jnp.asarray(variance, jnp.float32) * gm * jnp.exp2(-2.0 * jnp.asarray(rate_bits, jnp.float32))
