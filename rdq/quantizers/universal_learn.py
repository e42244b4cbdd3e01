"""A learned minimax universal codebook: optax Adam on a smooth worst case of the rate gap over
training covariances (``rdq.quantizers.universal``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import ArrayLike, Float, PRNGKeyArray

from rdq.limits.waterfill import waterfill_gap_bits
from rdq.quantizers.universal_codebook import _HI, Codebook, _check_sigma

__all__ = ["LearnConfig", "LearnHistory", "learn_minimax_codebook"]

# ----------------------------------------------------------------------------- learned minimax codebook
@dataclasses.dataclass(frozen=True)
class LearnConfig:
  """Hyperparameters of ``learn_minimax_codebook`` (frozen, hashable).

  Attributes:
    steps: optimizer steps.
    batch: fresh w draws per step (shared by all training Σ).
    learning_rate: Adam peak learning rate, relative to the codebook's rms coordinate.
    temp_start, temp_end: soft-assignment temperature, relative to each Σ's current
      distortion, annealed geometrically (``→ 0`` is the hard nearest codeword).
    smooth_max_bits: temperature (bits) of the log-sum-exp smooth maximum over Σ.
    sigma_batch: training Σ per step (a random subset; ``0`` = all). Memory per step is
      ``sigma_batch × batch × K`` floats (the Σ are vmapped).
  """

  steps: int = 300
  batch: int = 256
  learning_rate: float = 0.02
  temp_start: float = 0.3
  temp_end: float = 0.003
  smooth_max_bits: float = 0.01
  sigma_batch: int = 16

  def __post_init__(self):
    for name in ("steps", "batch"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{name}={v!r} must be a positive integer")
    for name in ("learning_rate", "temp_start", "temp_end", "smooth_max_bits"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
    if not isinstance(self.sigma_batch, int) or self.sigma_batch < 0:
      raise ValueError(f"sigma_batch={self.sigma_batch!r} must be an integer ≥ 0")


class LearnHistory(NamedTuple):
  """Per-step training record (NumPy arrays of length ``steps``).

  Attributes:
    smooth_max_gap_bits: the optimised loss (soft assignment, smooth max over Σ).
    max_gap_bits: hard-assignment worst-case gap over the step's training Σ on the step's w draws.
    mean_gap_bits: hard-assignment mean gap over the step's training Σ.
  """

  smooth_max_gap_bits: np.ndarray
  max_gap_bits: np.ndarray
  mean_gap_bits: np.ndarray


def _soft_and_hard(points, sigma, w, temp_rel):
  """Soft (softmax-weighted) and hard distortion per entry for one Σ, mean over w (B, n)."""
  q = jnp.sum(jnp.dot(points, sigma, precision=_HI) * points, axis=-1)
  u = jnp.dot(w, sigma, precision=_HI)
  base = jnp.sum(u * w, axis=-1, keepdims=True)
  d = (base + q[None, :] - 2.0 * jnp.dot(u, points.T, precision=_HI)) / w.shape[-1]
  d = jnp.maximum(d, 0.0)
  hard = jnp.mean(jnp.min(d, axis=-1))
  t = temp_rel * jax.lax.stop_gradient(hard) + 1e-12
  pi = jax.nn.softmax(-d / t, axis=-1)
  soft = jnp.mean(jnp.sum(pi * d, axis=-1))
  return soft, hard


def learn_minimax_codebook(
    init: Codebook,
    train_sigmas: Float[ArrayLike, "s n n"],
    key: PRNGKeyArray,
    config: LearnConfig = LearnConfig(),
) -> tuple[Codebook, LearnHistory]:
  """Optimise codebook points to minimise the worst-case rate gap over training Σ (optax Adam).

  .. math::
     \\mathcal L(C) = T \\log \\sum_j \\exp\\!\\big(g_j(C)/T\\big),\\qquad
     g_j = R - R_{wf}\\big(\\tilde D_j(C); \\mathrm{eig}\\,Σ_j\\big),\\qquad
     \\tilde D_j = \\mathbb E_w \\sum_k π_k(w)\\, \\tfrac1n (w-c_k)^\\top Σ_j (w-c_k),

  with ``π(w) = softmax(−d(w)/t_j)`` (a soft nearest-codeword assignment; ``D̃_j`` is an upper
  bound on the hard distortion that tends to it as ``t_j → 0``) and ``t_j`` the temperature
  times Σ_j's current distortion, annealed from ``temp_start`` to ``temp_end``. ``R_wf`` is
  the exact reverse-waterfilling inverse (differentiable in D), T = ``smooth_max_bits``. The
  rate R = log2(K)/n is fixed by the number of points.

  Args:
    init: starting codebook (e.g. ``gaussian_codebook``); its K and n are kept.
    train_sigmas: ``(S, n, n)`` training covariances.
    key: PRNG key for the w draws (and Σ subsets).
    config: ``LearnConfig``.

  Returns:
    ``(codebook, history)``: the learned ``Codebook`` (name ``"learned"``) and a ``LearnHistory``.

  References:
    Objective: the rate gap of Harbuzova, Ordentlich & Polyanskiy (2026), minimised in the worst
    case over Σ (smooth max). Optimiser: D. P. Kingma & J. Ba, "Adam", ICLR 2015 (optax.adam).
  """
  if not isinstance(init, Codebook):
    raise TypeError(f"init must be a Codebook; got {type(init).__name__}")
  if not isinstance(config, LearnConfig):
    raise TypeError(f"config must be a LearnConfig; got {type(config).__name__}")
  n = init.n
  sig = _check_sigma(train_sigmas, n)
  if sig.ndim != 3:
    raise ValueError(f"train_sigmas must be a batch (S, {n}, {n}); got shape {sig.shape}")
  s_all = sig.shape[0]
  sb = s_all if config.sigma_batch in (0, None) or config.sigma_batch >= s_all else config.sigma_batch
  lam = jnp.asarray(np.clip(np.linalg.eigvalsh(np.asarray(sig, np.float64)), 0.0, None), jnp.float32)
  rate = jnp.float32(init.rate_bits)
  rms = float(jnp.sqrt(jnp.mean(init.points**2)))
  sched = optax.cosine_decay_schedule(config.learning_rate * rms, config.steps, alpha=0.05)
  opt = optax.adam(sched)
  ratio = config.temp_end / config.temp_start

  def loss_fn(points, sig_b, lam_b, w, temp_rel):
    soft, hard = jax.vmap(lambda a: _soft_and_hard(points, a, w, temp_rel))(sig_b)
    def gap_fn(l, d):
      return waterfill_gap_bits(l, rate, d)
    g_soft = gap_fn(lam_b, soft)
    g_hard = gap_fn(lam_b, jax.lax.stop_gradient(hard))
    tmax = config.smooth_max_bits
    loss = tmax * jax.nn.logsumexp(g_soft / tmax)
    return loss, (jnp.max(g_hard), jnp.mean(g_hard))

  @jax.jit
  def step(points, opt_state, i, k):
    k_w, k_s = jax.random.split(k)
    w = jax.random.normal(k_w, (config.batch, n), jnp.float32)
    sel = jax.random.permutation(k_s, s_all)[:sb]
    temp_rel = config.temp_start * ratio ** (i / jnp.maximum(config.steps - 1, 1))
    (loss, (gmax, gmean)), grad = jax.value_and_grad(loss_fn, has_aux=True)(points, sig[sel], lam[sel], w, temp_rel)
    upd, opt_state = opt.update(grad, opt_state, points)
    return optax.apply_updates(points, upd), opt_state, jnp.stack([loss, gmax, gmean])

  points = init.points
  opt_state = opt.init(points)
  rec = []
  for i in range(config.steps):
    points, opt_state, m = step(points, opt_state, jnp.float32(i), jax.random.fold_in(key, i))
    rec.append(m)
  rec = np.asarray(jnp.stack(rec))
  hist = LearnHistory(rec[:, 0], rec[:, 1], rec[:, 2])
  return Codebook(points, name="learned", chunk=init.chunk), hist
