"""WaterSIC (Lifar, Savkin, Ordentlich & Polyanskiy, 2026): SIC with waterfilling-like steps.

Same successive-interference-cancellation recursion as GPTQ, but every input feature gets its
own step, chosen from the Cholesky diagonal of H so that all features contribute the same
output error — which makes the per-feature rates mimic reverse waterfilling:

1. ``H_d = H + percdamp·mean(diag H)·I`` (``percdamp = 1e-4`` as in the paper's code),
   ``H_d = L Lᵀ`` (lower Cholesky); features are processed last → first (the paper's order).
2. One constant ``c`` for the layer (the high-rate rule, ``high_rate_step``):
   ``c = 2^{−R} · exp(mean_i ½ ln(12 s_i L_ii²))``, ``s_i = mean_j W_ij²``.
3. Per-feature step ``α_i = c / L_ii`` (stored in fp16): the rounding error of feature i,
   ``α_i²/12`` per entry, enters the output multiplied by ``L_ii²``, i.e. ``c²/12`` for all i.
4. SIC: ``z_i = round(w̃_i / α_i)`` on the interference-cancelled target ``w̃_i``; LMMSE gain
   ``γ_i = ⟨z_i, w̃_i⟩ / (α_i ‖z_i‖²)``; ``ŵ_i = γ_i α_i z_i``; the error is fed to the
   not-yet-quantized features exactly as in GPTQ (``rdq.layer._sic``).
5. Optional diagonal rescalers ``Ŵ = diag(Γ) Ŵ₀ diag(T)`` by alternating least squares on
   ``tr((W−Ŵ)ᵀ H_d (W−Ŵ))`` (the paper's rescaling; kept only if it lowers that loss).
6. Rate: per-input-feature empirical entropy of the integers ``z`` plus 16 bits per input
   feature (the scale ``γ_i α_i Γ_i``) and, with rescalers, 16 bits per output feature (T).

High-rate analysis (why it works). Only the paper's abstract and official code were
available to us, so the equation numbers are not cited; this derivation is ours and is
what the tests check: ``D = c²/12`` and the mean rate is ``h(w) + mean_i log2 L_ii − log2 c``, so
``D = (2πe/12)·σ²·det(H_d)^{1/n}·2^{−2R}`` — a factor ``πe/6`` (``0.2546`` bit) above the
waterfilling limit ``σ² det(Σ)^{1/n} 2^{−2R}``, **whatever Σ is** (basis free). GPTQ with one
step for all features gets ``AM(L_ii²)`` in place of ``GM(L_ii²) = det^{1/n}``.

Processing last → first with the Cholesky factor of H is the same recursion as GPTQ's first
→ last with the Cholesky factor of H⁻¹ on the feature-reversed problem (``L_ii = 1/U_ii``
there; the reversal turns one Cholesky factor into the other), which is how it is computed here.

References:
  E. Lifar, S. Savkin, O. Ordentlich, Y. Polyanskiy, "WaterSIC: information-theoretically
  (near) optimal linear layer quantization", ICML 2026, arXiv 2603.04956 (abstract: within
  0.255 bit of the limit uniformly over Σ_X); official code ``compress_w2q``.
  O. Ordentlich & Y. Polyanskiy, "High-Rate Quantized Matrix Multiplication II" (2026).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.checks import require
from rdq.layer._sic import StepGrid, _fp16, damp_hessian, high_rate_step, sic
from rdq.layer.report import LayerReport, check_layer_inputs, layer_distortion, make_report
from rdq.limits.waterfill import ECSQ_GAP_BITS

__all__ = ["WaterSICConfig", "max_rate_bits", "watersic", "watersic_traced"]


@dataclasses.dataclass(frozen=True)
class WaterSICConfig:
  """WaterSIC hyperparameters (hashable; a static ``jit`` argument).

  Attributes:
    rate_bits: target entropy-coded rate in bits per entry **including** side information.
      The first guess of ``c`` assumes Gaussian-like weights (nominal rate
      ``rate_bits − side − 0.2546``); ``rate_iters`` secant steps then match the measured
      entropy (each step is one more SIC pass).
    rate_iters: secant refinements of the rate (0: high-rate rule only).
    percdamp: damping relative to ``mean(diag H)`` (paper: 1e-4).
    lmmse: per-feature least-squares gain γ_i.
    rescale_iters: alternating-least-squares rounds for the diagonal rescalers (0: off,
      the default: their 16 bits per output feature cost ``16/n`` bit per entry, more than
      they gain on Gaussian weights at moderate n).
    block_size: lazy-update block of the SIC core (does not change the result).
  """

  rate_bits: float = 4.0
  rate_iters: int = 2
  percdamp: float = 1e-4
  lmmse: bool = True
  rescale_iters: int = 0
  block_size: int = 128

  def __post_init__(self):
    if not (isinstance(self.rate_bits, (int, float)) and self.rate_bits > 0):
      raise ValueError(f"rate_bits={self.rate_bits!r} must be > 0 (bits per entry)")
    for f in ("rate_iters", "rescale_iters"):
      v = getattr(self, f)
      if not isinstance(v, int) or v < 0:
        raise ValueError(f"{f}={v!r} must be an integer ≥ 0")
    if not isinstance(self.block_size, int) or self.block_size < 1:
      raise ValueError(f"block_size={self.block_size!r} must be a positive integer")

  def side_bits(self, n: int, m: int) -> float:
    """16-bit scale per input feature, plus a 16-bit scale per output feature if rescaling."""
    return 16.0 / m + (16.0 / n if self.rescale_iters > 0 else 0.0)


def watersic(
    w: Float[Array, "n m"],
    h: Float[Array, "n n"],
    config: WaterSICConfig = WaterSICConfig(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "n m"], LayerReport]:
  """Quantize ``W`` with WaterSIC under the input second moment ``H``.

  Same as ``rdq.layer.get("watersic", …)(w, h)`` with this config (eager checks, scale
  normalization).

  Args:
    w: ``(n, m) = (in_features, out_features)`` weights.
    h: ``(n, n)`` symmetric PSD ``E[x xᵀ]`` (undamped; the distortion uses it as is).
    config: ``WaterSICConfig``.
    key: unused (deterministic); accepted for the common layer-algorithm signature.

  Returns:
    ``(Ŵ, report)``; ``report.feature_scale`` holds the stored per-feature scales
    ``γ_i α_i Γ_i`` and ``report.feature_rate_bits`` the per-feature entropies.

  Raises:
    ValueError: bad W/H, or a rate the plug-in entropy of m codes per input feature cannot
      reach (``max_rate_bits``).
  """
  from rdq.layer.registry import LayerAlgorithm

  return LayerAlgorithm("watersic", config)(w, h, key=key)


def max_rate_bits(config: WaterSICConfig, n: int, m: int) -> float:
  """The largest rate target WaterSIC accepts on an ``(n, m)`` layer: ``log2(m) − 1 + side``.

  The plug-in entropy of the m codes of one input feature is at most ``log2 m`` (all
  distinct); near that ceiling it saturates and the rate can no longer be steered, so
  targets within 1 bit of it are refused rather than silently missed.
  """
  return float(np.log2(m)) - 1.0 + config.side_bits(n, m)


def _check(w, h, config: WaterSICConfig, key, rate_bits=None) -> None:
  """Eager checks of ``watersic`` (skipped for tracers), including a reachable rate."""
  del key
  check_layer_inputs(w, h, config.percdamp)
  rate = config.rate_bits if rate_bits is None else rate_bits
  if isinstance(rate, jax.core.Tracer):
    return
  n, m = np.shape(w)
  r = float(np.asarray(rate))
  top = max_rate_bits(config, n, m)
  if not (np.isfinite(r) and 0 < r <= top):
    raise ValueError(
        f"rate_bits={rate!r} is out of WaterSIC's reach on an ({n}, {m}) layer: the plug-in entropy of "
        f"m={m} codes per input feature is at most log2(m) = {np.log2(m):.3g} bits, so the target must be in "
        f"(0, {top:.4g}] (log2 m − 1 + side bits)"
    )


def watersic_traced(w, h, config: WaterSICConfig, key=None, *, rate_bits=None):
  """The WaterSIC core: float32 ``w`` and ``h``, no checks; ``rate_bits`` may be traced.

  Jit-able and vmappable over ``w``, ``h`` and ``rate_bits`` (so a rate sweep compiles
  once); ``rate_bits=None`` uses ``config.rate_bits``. A traced target outside
  ``(0, max_rate_bits]`` fails under ``rdq.checks.checked``; under plain ``jit`` it is
  clipped into that range (``report.rate_bits`` shows the rate reached).
  """
  del key
  n, m = w.shape
  rate = jnp.asarray(config.rate_bits if rate_bits is None else rate_bits, jnp.float32)
  top = max_rate_bits(config, n, m)
  require((rate > 0) & (rate <= top), f"watersic: rate_bits={{}} must be in (0, {top:.4g}] on an ({n}, {m}) layer "
          "(plug-in entropy of m codes per input feature ≤ log2 m)", rate)
  rate = jnp.clip(rate, 1e-3, top)
  return _watersic(w, h, rate, dataclasses.replace(config, rate_bits=1.0))


def _rescale(w, h, z, s, iters: int):
  """Diagonal rescalers Γ (input features) and T (output features) by alternating LS."""
  w0 = z.astype(jnp.float32) * s[:, None]
  hw = h @ w
  n, m = w.shape

  def body(_, carry):
    gam, t = carry
    v = w0 * t[None, :]
    a = h * (v @ v.T)
    ridge = 1e-6 * jnp.mean(jnp.diagonal(a)) + 1e-30
    b = jnp.sum(v * hw, axis=1)
    gam = jnp.linalg.solve(a + ridge * jnp.eye(n, dtype=a.dtype), b)
    uu = w0 * gam[:, None]
    num = jnp.sum(uu * hw, axis=0)
    den = jnp.sum(uu * (h @ uu), axis=0)
    t = jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 1.0)
    mu = jnp.mean(jnp.abs(t))
    mu = jnp.where(mu > 0, mu, 1.0)
    return gam * mu, t / mu

  gam, t = lax.fori_loop(0, iters, body, (jnp.ones((n,), jnp.float32), jnp.ones((m,), jnp.float32)))
  return _fp16(s * gam), _fp16(t)


def _sorted_row_entropy_bits(z: Array) -> Array:
  """Plug-in entropy (bits) of each row of ``z``: ``log2 m − (1/m) Σ_j log2 c(z_j)``, where
  ``c(z_j)`` counts the row's entries equal to ``z_j``, read off run boundaries of the sorted
  row (two cumulative scans) — ``rdq.rate.empirical_entropy_bits`` without its binary searches."""
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
  """Plug-in entropy (bits) of each row of the integer codes ``z: (n, m)``, used once per pass
  of the rate search: ``log2 m − (1/m) Σ_s c_s log2 c_s`` from per-row histograms (one
  scatter-add into m bins per row, offsets from the row minimum) when every row spans fewer
  than m values, else from sorted rows. Same counts as ``rdq.rate.empirical_entropy_bits``;
  ~10x faster than sorting on CPU."""
  n, m = z.shape
  off = z - jnp.min(z, axis=1, keepdims=True)

  def by_histogram(_):
    flat = (jnp.arange(n)[:, None] * m + jnp.minimum(off, m - 1)).reshape(-1)
    c = jnp.zeros((n * m,), jnp.float32).at[flat].add(1.0).reshape(n, m)
    return jnp.log2(jnp.float32(m)) - jnp.sum(c * jnp.log2(jnp.maximum(c, 1.0)), axis=1) / m

  return lax.cond(jnp.max(off) < m, by_histogram, lambda _: _sorted_row_entropy_bits(z), None)


def _reversed_inverse_cholesky(hd: Array) -> Array:
  """``U`` (upper) with ``(J H_d J)^{-1} = UᵀU`` for the reversal J, as ``J L^{-1} J``.

  With ``H_d = L Lᵀ`` (the paper's lower Cholesky factor), ``J H_d J = (J L J)(J L J)ᵀ`` and
  ``J L J`` is upper triangular, so ``U = (J L J)^{-1} = J L^{-1} J`` is the upper Cholesky
  factor of the inverse of the reversed problem: one Cholesky and one triangular solve,
  instead of the generic Cholesky → inverse → Cholesky of ``inverse_cholesky_upper``.
  """
  n = hd.shape[-1]
  lower = jnp.linalg.cholesky(hd)
  l_inv = jax.scipy.linalg.solve_triangular(lower, jnp.eye(n, dtype=hd.dtype), lower=True)
  return l_inv[::-1, ::-1]


@functools.partial(jax.jit, static_argnums=3)
def _watersic(w, h, rate_bits, config: WaterSICConfig):
  n, m = w.shape
  hd = damp_hessian(h, config.percdamp)
  wr = w[::-1]  # paper order: last input feature first
  u = _reversed_inverse_cholesky(hd)
  u_diag = jnp.diagonal(u)  # = 1 / L_ii of the paper
  grid = StepGrid(lmmse=config.lmmse)
  side = config.side_bits(n, m)

  def run(r_nominal):
    c = high_rate_step(wr, r_nominal, weights=1.0 / u_diag**2)
    steps = _fp16(c * u_diag)
    q, z, s = sic(wr, u, grid, steps, config.block_size)
    return q, z, s, steps

  def evaluate(r_nominal):
    """(rate gap, SIC outputs) at one nominal rate: one SIC pass, kept for reuse."""
    out = run(r_nominal)
    return jnp.mean(_row_entropy_bits(out[1])) + side - rate_bits, out

  def pick(better, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(better, x, y), a, b)

  r0 = rate_bits - side - ECSQ_GAP_BITS
  if config.rate_iters > 0:
    # Secant root find of the entropy on the nominal rate; every pass's outputs are kept,
    # so the best point is returned as computed (no extra SIC pass at the end).
    f0, out0 = evaluate(r0)
    r1 = r0 - f0
    f1, out1 = evaluate(r1)

    def secant(_, carry):
      ra, fa, rb, fb, best_f, best_out = carry
      slope = jnp.where(jnp.abs(fb - fa) > 1e-6, (fb - fa) / jnp.where(rb != ra, rb - ra, 1.0), 1.0)
      slope = jnp.clip(slope, 0.25, 4.0)  # entropy vs nominal rate has slope ≈ 1
      rc = rb - fb / slope
      fc, out_c = evaluate(rc)
      better = jnp.abs(fc) < jnp.abs(best_f)
      return rb, fb, rc, fc, jnp.where(better, fc, best_f), pick(better, out_c, best_out)

    first_better = jnp.abs(f1) < jnp.abs(f0)
    init = (r0, f0, r1, f1, jnp.where(first_better, f1, f0), pick(first_better, out1, out0))
    q, z, s, steps = lax.fori_loop(0, config.rate_iters - 1, secant, init)[5]
  else:
    q, z, s, steps = run(r0)
  q, z, s, steps = q[::-1], z[::-1], s[::-1], steps[::-1]
  if config.rescale_iters > 0:
    s2, t = _rescale(w, hd, z, s, config.rescale_iters)
    q2 = z.astype(jnp.float32) * s2[:, None] * t[None, :]
    keep = layer_distortion(w, q2, hd) < layer_distortion(w, q, hd)
    q = jnp.where(keep, q2, q)
    s = jnp.where(keep, s2, s)
  return q, make_report(w, q, h, z, side, None, s, rate="entropy")
