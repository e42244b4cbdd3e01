"""The rate gap of a universal codebook to reverse waterfilling, by Monte Carlo
(``rdq.quantizers.universal``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from rdq.limits.waterfill import waterfill, waterfill_rate
from rdq.montecarlo import Estimate
from rdq.quantizers.universal_codebook import (
  DEFAULT_MAX_BYTES,
  Codebook,
  StreamCodebook,
  _check_chunk,
  _check_sigma,
  _normal,
  _weighted_sq,
)
from rdq.quantizers.universal_product import ProductCodebook

__all__ = ["GapResult", "rate_gap"]

# ----------------------------------------------------------------------------- rate gap (Monte Carlo)
class GapResult(NamedTuple):
  """Rate gap of a codebook over a batch of S covariance matrices.

  Attributes:
    distortion: ``Estimate`` of ``D_C(Σ) = E(w−ĉ)ᵀΣ(w−ĉ)/n`` per Σ, shape (S,).
    gap_bits: ``R − R_wf(D_C(Σ))`` per Σ (S,), bits per entry.
    gap_stderr_bits: delta-method standard error of ``gap_bits`` (S,).
    scale: the encoder-selected τ per Σ (S,).
    limit_distortion: waterfilling ``D_wf(R)`` per Σ (S,).
  """

  distortion: Estimate
  gap_bits: np.ndarray
  gap_stderr_bits: np.ndarray
  scale: np.ndarray
  limit_distortion: np.ndarray


@functools.partial(jax.jit, static_argnames=("batch",))
def _mean_distortion(cb, sigma, w, tau, batch: int):
  """Per-sample distortions (S, N) for each (Σ, τ) pair; samples in batches (lax.map)."""
  nb = w.shape[0] // batch
  wb = w.reshape(nb, batch, w.shape[-1])

  def per_sigma(args):
    s, t = args
    f = lambda x: _weighted_sq(x - cb._reconstruct(s, x, t), s)
    return jax.lax.map(f, wb).reshape(-1)

  return jax.lax.map(per_sigma, (sigma, tau))


@functools.partial(jax.jit, static_argnames=("batch",))
def _select_distortion(cb: Codebook | StreamCodebook, sigma, w, taus, batch: int):
  """Per-sample distortions (J, N) of the codebooks ``τ_j·C`` at one Σ (n, n), every scale in one
  pass over the codebook (``_nearest_scales``); samples in batches (lax.map)."""
  nb = w.shape[0] // batch
  wb = w.reshape(nb, batch, w.shape[-1])

  def f(x):
    idx = cb._nearest_scales(sigma, x, taus)  # (J, B)
    rec = cb._points_at(idx.reshape(-1)).reshape(idx.shape + (x.shape[-1],)) * taus[:, None, None]
    return jax.vmap(lambda r: _weighted_sq(x - r, sigma))(rec)  # (J, B)

  return jnp.moveaxis(jax.lax.map(f, wb), 0, 1).reshape(taus.shape[0], -1)


def _canonical(cb: Codebook | ProductCodebook | StreamCodebook) -> Codebook | ProductCodebook | StreamCodebook:
  """The same codebook without its label: ``name`` is static in the pytree, so codebooks of equal
  shape but different construction would each compile ``_mean_distortion`` again."""
  if isinstance(cb, StreamCodebook):
    return cb
  if isinstance(cb, Codebook):
    return Codebook(cb.points, chunk=cb.chunk)
  return ProductCodebook(Codebook(cb.block.points, chunk=cb.block.chunk), num_blocks=cb.num_blocks, damp=cb.damp)


def _distortions(cb, sigma, w, tau, batch: int) -> np.ndarray:
  """``_mean_distortion`` one Σ per call: one compiled program per (codebook shape, draws, batch)
  whatever the number of Σ (bitwise the same numbers as one call over the whole batch)."""
  cb = _canonical(cb)
  sigma, tau = np.asarray(sigma, np.float32), np.asarray(tau, np.float32)  # NumPy slices: no eager slicing programs
  return np.concatenate([np.asarray(_mean_distortion(cb, sigma[i:i + 1], w, tau[i:i + 1], batch))
                         for i in range(sigma.shape[0])])


def rate_gap(
    codebook: Codebook | ProductCodebook | StreamCodebook,
    sigmas: Float[ArrayLike, "s n n"],
    key: PRNGKeyArray,
    *,
    num_samples: int = 1024,
    scales: tuple[float, ...] = (1.0,),
    num_select: int = 256,
    batch: int = 256,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> GapResult:
  """Monte Carlo rate gap ``R − R_wf(D_C(Σ))`` of a codebook on each Σ of a batch.

  For each Σ the encoder picks the scale τ from ``scales`` that minimises the mean distortion
  over ``num_select`` selection draws of w; the distortion is then estimated on
  ``num_samples`` fresh draws (so the choice does not bias the estimate). The same w draws
  are used for every Σ (common random numbers). ``w ~ N(0, I_n)``.

  Args:
    codebook: a ``Codebook``, ``ProductCodebook`` or ``StreamCodebook``.
    sigmas: ``(S, n, n)`` symmetric PSD matrices.
    key: PRNG key for the w draws.
    num_samples: evaluation draws per Σ (≥ 2).
    scales: candidate τ (one per Σ is chosen; a single value means no selection).
    num_select: selection draws (ignored for a single scale).
    batch: vectors encoded at once (working memory ``batch × chunk`` floats).
    max_bytes: memory budget.

  Returns:
    ``GapResult`` (NumPy arrays; ``distortion`` an ``Estimate`` with per-Σ mean/stderr).
  """
  if not isinstance(codebook, (Codebook, ProductCodebook, StreamCodebook)):
    raise TypeError(f"codebook must be a Codebook, ProductCodebook or StreamCodebook; got {type(codebook).__name__}")
  n = codebook.n
  sig = _check_sigma(sigmas, n)
  if sig.ndim != 3:
    raise ValueError(f"sigmas must be a batch (S, {n}, {n}); got shape {sig.shape}")
  for name, v in (("num_samples", num_samples), ("num_select", num_select), ("batch", batch)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 2:
      raise ValueError(f"{name}={v!r} must be an integer ≥ 2")
  scales = tuple(float(t) for t in scales)
  if not scales or any(not t > 0 for t in scales):
    raise ValueError(f"scales={scales!r} must be a non-empty tuple of values > 0")
  chunk = codebook.block.chunk if isinstance(codebook, ProductCodebook) else codebook.chunk
  _check_chunk(chunk, batch, max_bytes)
  s = sig.shape[0]
  k_sel, k_eval = jax.random.split(key)

  def draws(k, num):
    m = -(-num // batch) * batch
    return _normal(k, (m, n)), num

  if len(scales) > 1:
    w_sel, num_sel = draws(k_sel, num_select)
    b_sel = min(batch, num_sel)  # encode only the selection draws that are used
    w_sel = w_sel[: -(-num_sel // b_sel) * b_sel]
    if not isinstance(codebook, ProductCodebook):  # every scale in one pass over the codebook
      cb, sig_np, taus = _canonical(codebook), np.asarray(sig), np.asarray(scales, np.float32)
      dsel = np.stack([np.asarray(_select_distortion(cb, sig_np[i], w_sel, taus, b_sel)) for i in range(s)])
    else:
      sig_rep = np.repeat(np.asarray(sig), len(scales), axis=0)
      tau_rep = np.tile(np.asarray(scales, np.float32), s)
      dsel = _distortions(codebook, sig_rep, w_sel, tau_rep, b_sel).reshape(s, len(scales), -1)
    dsel = dsel[:, :, :num_sel].mean(axis=2)
    tau = np.asarray(scales, np.float32)[np.argmin(dsel, axis=1)]
  else:
    tau = np.full((s,), scales[0], np.float32)
  w_ev, num = draws(k_eval, num_samples)
  vals = _distortions(codebook, sig, w_ev, tau, batch).astype(np.float64)[:, :num]
  mean = vals.mean(axis=1)
  se = vals.std(axis=1, ddof=1) / math.sqrt(num)
  lam = np.clip(np.linalg.eigvalsh(np.asarray(sig, np.float64)), 0.0, None).astype(np.float32)
  r = codebook.rate_bits
  def wf_rate(l, d):
    return waterfill_rate(l, d).rate_bits
  lam_j = jnp.asarray(lam)
  r_mid = np.asarray(wf_rate(lam_j, jnp.asarray(mean, jnp.float32)))
  r_lo = np.asarray(wf_rate(lam_j, jnp.asarray(np.maximum(mean - se, 1e-30), jnp.float32)))
  r_hi = np.asarray(wf_rate(lam_j, jnp.asarray(mean + se, jnp.float32)))
  d_lim = np.asarray(waterfill(lam_j, jnp.full(lam_j.shape[:-1], r, jnp.float32)).distortion)
  return GapResult(
      distortion=Estimate(mean=mean, stderr=se, n=num),
      gap_bits=r - r_mid,
      gap_stderr_bits=np.abs(r_lo - r_hi) / 2.0,
      scale=tau,
      limit_distortion=d_lim,
  )
