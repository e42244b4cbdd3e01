"""Random-coding rate of a Σ-independent (universal) Gaussian codebook, and its gap to waterfilling.

Setting (Harbuzova, Ordentlich & Polyanskiy 2026). ``w ∈ Rⁿ`` has iid ``N(0, 1)`` entries; the
codebook ``C`` holds ``2^{nR}`` codewords drawn iid ``N(0, c·I_n)`` *without* knowledge of Σ;
the encoder knows Σ (eigenvalues ``λ``) and picks the codeword minimising
``d_Σ(w, ĉ) = (1/n)(w − ĉ)ᵀΣ(w − ĉ)``, and also the codebook scale (the variance ``c = τ²``;
one number per Σ, i.e. per layer, so its side information vanishes per weight entry). In the
eigenbasis of Σ the codebook is still iid ``N(0, c)`` (it is isotropic), so the distortion is
the separable weighted MSE ``(1/n) Σ_i λ_i (w_i − ĉ_i)²`` with a mismatched iid codebook. The
random-coding (generalized AEP) rate at which such a codebook reaches distortion D is

.. math::
   R_{rc}(D; λ, c) = \\sup_{s \\ge 0} \\Big[ -sD + \\frac1n \\sum_i \\Big(
      \\tfrac12 \\ln(1 + 2sλ_i c) + \\frac{sλ_i}{1 + 2sλ_i c} \\Big) \\Big] \\ \\text{nats},

the Legendre transform of ``−E_w ln E_ĉ exp(−s·λ_i(w_i − ĉ_i)²)`` summed over coordinates
(both expectations are Gaussian integrals). With the encoder-selected scale,
``R_univ(D; λ) = min_c R_rc(D; λ, c)``. The price of universality at Σ is
``R_univ(D; λ) − R_wf(D; λ)`` (``R_wf``: reverse waterfilling, ``rdq.limits.waterfill_rate``);
its supremum over all spectra and distortions is the paper's "at most 0.11 bit".

For ``λ ≡ 1`` the optimum is ``c = 1 − D`` and ``R_univ = R_wf = ½ log2(1/D)``: no loss.
Numerically (tests) the supremum over two-level spectra is ``≈ 0.108`` bit, reached with a
fraction ``≈ 0.2`` of large eigenvalues and ``D`` comparable to the small eigenvalue.

All rates are in **bits** per entry (nats ÷ ln 2). These are asymptotic (``n → ∞``) values
for iid Gaussian codebooks: finite-n codebooks lose more (see ``rdq.quantizers.universal``).

References:
  A. Harbuzova, O. Ordentlich, Y. Polyanskiy, "Price of (metric) universality in vector
  quantization is at most 0.11 bit", arXiv 2602.05790, COLT 2026 (PMLR 336:3143–3183):
  main theorem (0.11 bit) and the random-coding construction with an isotropic Gaussian
  codebook and an encoder-selected scale τ. The single-letter random-coding rate of a
  mismatched iid codebook: E.-H. Yang & J. C. Kieffer, "On the performance of data
  compression algorithms based upon string matching", IEEE Trans. IT 44(1), 1998, and
  I. Kontoyiannis & R. Zamir, "Mismatched codebooks and the role of entropy coding in lossy
  data compression", IEEE Trans. IT 52(5), 2006, Thm. 1 (``R(P, Q, D) = sup_s[−sD − E_P log
  E_Q e^{−s d}]``). The closed Gaussian form above is derived and evaluated here; it is not
  transcribed from the paper, whose exact expression rdq has not confirmed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from rdq.limits._checks import check_positive
from rdq.limits.waterfill import _check_eigenvalues, waterfill_gap_bits

__all__ = [
    "UNIVERSALITY_GAP_BITS",
    "random_coding_rate",
    "universal_distortion",
    "universal_gap",
    "universal_rate",
]

UNIVERSALITY_GAP_BITS: float = 0.11
"""The paper's bound on the price of universality, bits per dimension (Harbuzova et al. 2026)."""

_LN2 = math.log(2.0)
_S_ITERS = 48  # bisection steps on log s
_C_GRID = 32  # log-grid points for the codebook variance c
_C_ITERS = 32  # golden-section steps on log c
_D_ITERS = 40  # bisection steps on log D


def _rrc_nats(lam: Array, d: Array, c: Array) -> Array:
  """``R_rc(D; λ, c)`` in nats for one spectrum (n,), scalar D and c: bisection on the
  stationarity condition ``g(s) = 0`` (g is decreasing: the objective is concave in s)."""
  lc = lam * c

  def g(s):
    u = 1.0 + 2.0 * s * lc
    return -d + jnp.mean(lc / u + lam / (u * u))

  def objective(s):
    return -s * d + jnp.mean(0.5 * jnp.log1p(2.0 * s * lc) + s * lam / (1.0 + 2.0 * s * lc))

  # s* is of order 1/(2D) (λ ≡ 1 gives exactly 1/(2D)): bracket log s in that scale.
  lo = jnp.log(1e-6 / d)
  hi = jnp.log(1e8 / d)

  def step(_, bounds):
    a, b = bounds
    m = 0.5 * (a + b)
    pos = g(jnp.exp(m)) > 0
    return jnp.where(pos, m, a), jnp.where(pos, b, m)

  a, b = jax.lax.fori_loop(0, _S_ITERS, step, (lo, hi))
  s = jnp.exp(0.5 * (a + b))
  # g(0) = mean(λ)(1 + c) − D ≤ 0: the supremum is at s = 0 (rate 0).
  return jnp.where(g(0.0) <= 0, 0.0, jnp.maximum(objective(s), 0.0))


def _runiv_nats(lam: Array, d: Array) -> tuple[Array, Array]:
  """``min_c R_rc`` (nats) and the minimiser c: log-grid, then golden section around the best."""
  log_c = jnp.linspace(jnp.log(1e-5), jnp.log(4.0), _C_GRID)
  vals = jax.vmap(lambda lc: _rrc_nats(lam, d, jnp.exp(lc)))(log_c)
  i = jnp.argmin(vals)
  step = log_c[1] - log_c[0]
  a = log_c[i] - step
  b = log_c[i] + step
  inv_phi = (math.sqrt(5.0) - 1.0) / 2.0

  def body(_, ab):
    a, b = ab
    x1 = b - inv_phi * (b - a)
    x2 = a + inv_phi * (b - a)
    f1 = _rrc_nats(lam, d, jnp.exp(x1))
    f2 = _rrc_nats(lam, d, jnp.exp(x2))
    return jnp.where(f1 < f2, a, x1), jnp.where(f1 < f2, x2, b)

  a, b = jax.lax.fori_loop(0, _C_ITERS, body, (a, b))
  c = jnp.exp(0.5 * (a + b))
  r = jnp.minimum(_rrc_nats(lam, d, c), vals[i])
  return r, c


def _check_rate_args(eigenvalues, value, name):
  _check_eigenvalues(eigenvalues)
  check_positive(value, name)


def random_coding_rate(
    eigenvalues: Float[ArrayLike, "*b n"], distortion: Float[ArrayLike, "*b"], codebook_variance: Float[ArrayLike, "*b"]
) -> Float[Array, "*b"]:
  """``R_rc(D; λ, c)``: rate (bits per entry) at which an iid ``N(0, c)`` codebook reaches D.

  See the module docstring for the formula. ``D`` is per entry, ``(1/n) E(w−ĉ)ᵀΣ(w−ĉ)``,
  for ``w ~ N(0, I)``; ``λ`` are the eigenvalues of Σ.

  Args:
    eigenvalues: λ ≥ 0, trailing axis n; leading axes batch.
    distortion: target D > 0 per entry.
    codebook_variance: c > 0, variance of the codeword entries.

  Returns:
    The random-coding rate in bits per entry (an asymptotic, n → ∞, achievability value).

  References:
    Kontoyiannis & Zamir (2006), Thm. 1; Harbuzova, Ordentlich & Polyanskiy (2026).
  """
  _check_rate_args(eigenvalues, distortion, "distortion")
  check_positive(codebook_variance, "codebook_variance")
  lam = jnp.asarray(eigenvalues, jnp.float32)
  f = jnp.vectorize(_rrc_nats, signature="(n),(),()->()")
  return f(lam, jnp.asarray(distortion, jnp.float32), jnp.asarray(codebook_variance, jnp.float32)) / _LN2


def universal_rate(
    eigenvalues: Float[ArrayLike, "*b n"], distortion: Float[ArrayLike, "*b"]
) -> tuple[Float[Array, "*b"], Float[Array, "*b"]]:
  """``R_univ(D; λ) = min_c R_rc(D; λ, c)`` (bits per entry) and the best codebook variance c.

  Args:
    eigenvalues: λ ≥ 0, trailing axis n.
    distortion: target D > 0 per entry.

  Returns:
    ``(rate_bits, codebook_variance)``.

  Examples:
    >>> import jax.numpy as jnp
    >>> r, c = universal_rate(jnp.ones(4), 0.25)   # isotropic: ½ log2(1/D) = 1, c = 1 − D
    >>> round(float(r), 4), round(float(c), 3)
    (1.0, 0.75)
  """
  _check_rate_args(eigenvalues, distortion, "distortion")
  lam = jnp.asarray(eigenvalues, jnp.float32)
  r, c = jnp.vectorize(_runiv_nats, signature="(n),()->(),()")(lam, jnp.asarray(distortion, jnp.float32))
  return r / _LN2, c


def _dist_for_rate(lam: Array, rate_bits: Array) -> Array:
  target = rate_bits * _LN2
  lo = jnp.log(jnp.mean(lam) * 1e-9)
  hi = jnp.log(jnp.mean(lam))  # D = mean λ: rate 0 with c → 0

  def step(_, ab):
    a, b = ab
    m = 0.5 * (a + b)
    too_low_rate = _runiv_nats(lam, jnp.exp(m))[0] < target  # D too large
    return jnp.where(too_low_rate, a, m), jnp.where(too_low_rate, m, b)

  a, b = jax.lax.fori_loop(0, _D_ITERS, step, (lo, hi))
  return jnp.exp(0.5 * (a + b))


def universal_distortion(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"]
) -> Float[Array, "*b"]:
  """``D_univ(R; λ)``: the inverse of ``universal_rate`` (bisection on log D).

  Args:
    eigenvalues: λ ≥ 0 (not all zero), trailing axis n.
    rate_bits: R > 0, bits per entry.

  Returns:
    Distortion per entry ``(1/n) E(w−ĉ)ᵀΣ(w−ĉ)`` of the best-scaled iid Gaussian codebook
    (n → ∞).
  """
  _check_rate_args(eigenvalues, rate_bits, "rate_bits")
  lam = jnp.asarray(eigenvalues, jnp.float32)
  return jnp.vectorize(_dist_for_rate, signature="(n),()->()")(lam, jnp.asarray(rate_bits, jnp.float32))


def universal_gap(
    eigenvalues: Float[ArrayLike, "*b n"], rate_bits: Float[ArrayLike, "*b"]
) -> Float[Array, "*b"]:
  """Asymptotic price of universality at rate R: ``R − R_wf(D_univ(R; λ); λ)`` in bits.

  The rate the Σ-adapted waterfilling codebook would save at the distortion the universal
  Gaussian codebook (best scale) reaches at rate R. Bounded by ``UNIVERSALITY_GAP_BITS``.

  Args:
    eigenvalues: λ ≥ 0, trailing axis n.
    rate_bits: R > 0.

  Returns:
    The rate gap in bits per entry (≥ 0 up to float error).

  References:
    Harbuzova, Ordentlich & Polyanskiy (2026), main theorem (≤ 0.11 bit).
  """
  _check_rate_args(eigenvalues, rate_bits, "rate_bits")
  lam = jnp.asarray(eigenvalues, jnp.float32)
  r = jnp.asarray(rate_bits, jnp.float32)

  d = jnp.vectorize(_dist_for_rate, signature="(n),()->()")(lam, r)
  return waterfill_gap_bits(lam, r, d)
