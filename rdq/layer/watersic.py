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
there; the reversal turns one Cholesky factor into the other). It is computed here in the
reference code's form, on ``Y = Lᵀ W`` with L itself (``_ysic``: no inverse), blocked twice
with lazy GEMM updates as GPTQ does. The rate search runs all its SIC passes in one loop and
reuses the best pass; the report takes its distortion from that pass's residuals, its signal
from ``LᵀW`` and its Gaussian code length from the pass's histograms (no ``n²m`` products). Positive semidefiniteness of H is certified by that Cholesky factor
(``_factor``), so the eager checks are O(n²); eigenvalues are computed only for the message
of a failed certificate.

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
from rdq.layer._sic import StepGrid, _fp16, damp_hessian, high_rate_step
from rdq.layer.report import LayerReport, check_layer_inputs, layer_distortion, make_report
from rdq.limits.waterfill import ECSQ_GAP_BITS
from rdq.rate import GAUSSIAN_MODEL_BITS, _gaussian_params, _row_entropy_and_counts, gaussian_code_bits

__all__ = ["WaterSICConfig", "max_rate_bits", "watersic", "watersic_traced"]


@dataclasses.dataclass(frozen=True)
class WaterSICConfig:
  """WaterSIC hyperparameters (hashable; a static ``jit`` argument).

  Attributes:
    rate_bits: target entropy-coded rate in bits per entry **including** side information.
      The first guess of ``c`` assumes Gaussian-like weights (nominal rate
      ``rate_bits − side − 0.2546``); ``rate_iters`` secant steps then match the measured
      entropy (each step is one more SIC pass).
    rate_iters: secant refinements of the rate at most (0: high-rate rule only).
    rate_tol: stop refining once the measured rate is within this many bits of the target
      (0: always run all ``rate_iters``; the reference code stops at 0.005).
    percdamp: damping relative to ``mean(diag H)`` (paper: 1e-4).
    lmmse: per-feature least-squares gain γ_i.
    rescale_iters: alternating-least-squares rounds for the diagonal rescalers (0: off,
      the default: their 16 bits per output feature cost ``16/n`` bit per entry, more than
      they gain on Gaussian weights at moderate n).
    block_size: lazy-update block of the SIC core (changes the result only through float
      summation order).
  """

  rate_bits: float = 4.0
  rate_iters: int = 2
  rate_tol: float = 1e-3
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
    if not (isinstance(self.rate_tol, (int, float)) and 0 <= self.rate_tol < 1):
      raise ValueError(f"rate_tol={self.rate_tol!r} must be in [0, 1) bits")
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
  # PSD is certified by the core's own Cholesky factor (``_factor``), not by O(n³) eigenvalues
  # here; with percdamp = 0 the exact singularity check needs them anyway.
  check_layer_inputs(w, h, config.percdamp, psd=config.percdamp == 0)
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
  q, rep, cert = _watersic(w, h, rate, dataclasses.replace(config, rate_bits=1.0))
  _check_factor(*cert, config.percdamp)
  return q, rep


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


CODED_BINS = 64
"""Histogram bins kept from the rate search for the report's Gaussian code length (``_coded_bits``)."""


def _coded_bits(z: Array, counts: Array) -> Array:
  """``mean(rdq.rate.gaussian_code_bits(z, axis=1))`` from the rate search's histograms.

  Each row's code length ``−(1/m) Σ_j log2 P(z_j)`` is ``−(1/m) Σ_k c_k log2 P(lo + k)`` over its
  histogram ``c`` (offsets k from the row minimum lo), so the quantized-Gaussian CDF is evaluated
  at the ``CODED_BINS + 1`` bin edges of a row instead of twice per entry. Rows spanning
  ``CODED_BINS`` values or more (rates above ~5 bits) take ``gaussian_code_bits`` itself.
  """
  n, m = z.shape
  bins = counts.shape[1]
  lo, hi = jnp.min(z, axis=1), jnp.max(z, axis=1)

  def binned(_):
    mu, sd = jax.vmap(_gaussian_params)(z.astype(jnp.float32))
    cdf = lambda t: jax.scipy.stats.norm.cdf((t - mu[:, None]) / sd[:, None])  # noqa: E731
    lo_f = lo.astype(jnp.float32)[:, None]
    edges = cdf(lo_f + (jnp.arange(bins + 1, dtype=jnp.float32) - 0.5))  # same arguments as per entry
    total = cdf(hi.astype(jnp.float32)[:, None] + 0.5) - cdf(lo_f - 0.5)
    p = jnp.maximum((edges[:, 1:] - edges[:, :-1]) / total, 2.0**-24)
    return jnp.mean(-jnp.sum(jnp.where(counts > 0, counts * jnp.log2(p), 0.0), axis=1) / m)

  fits = (jnp.max(hi - lo) < bins) & (jnp.sum(counts) == n * m)  # histograms, not sorted rows
  return lax.cond(fits, binned, lambda _: jnp.mean(gaussian_code_bits(z, axis=1)), None)


def _reversed_inverse_cholesky(hd: Array) -> Array:
  """``U`` (upper) with ``(J H_d J)^{-1} = UᵀU`` for the reversal J, as ``J L^{-1} J``.

  With ``H_d = L Lᵀ`` (the paper's lower Cholesky factor), ``J H_d J = (J L J)(J L J)ᵀ`` and
  ``J L J`` is upper triangular, so ``U = (J L J)^{-1} = J L^{-1} J`` is the upper Cholesky
  factor of the inverse of the reversed problem (the factor ``rdq.layer.sic`` runs on). The
  core does not need it (``_ysic`` runs on ``J L J`` itself); kept as the tests' bridge to
  the GPTQ form.
  """
  n = hd.shape[-1]
  lower = jnp.linalg.cholesky(hd)
  l_inv = jax.scipy.linalg.solve_triangular(lower, jnp.eye(n, dtype=hd.dtype), lower=True)
  return l_inv[::-1, ::-1]


def _ysic_rows(y1, l1, d1, steps1, lmmse: bool, inner: int):
  """SIC on one block of rows of ``Y`` (see ``_ysic``), ``inner`` rows at a time.

  Inside a sub-block of ``inner`` rows the fed-back codes update only that sub-block (one
  rank-1 update per row); the rest of the block is updated once per sub-block by a GEMM.
  Also returns each row's residual energy ``‖Y_i − Lᵣ,ii q_i‖²`` (see ``_ysic``).
  """
  b, m = y1.shape
  grid = StepGrid(lmmse=lmmse)

  def sub(k, carry):
    y1, q1, z1, s1, e1 = carry
    i1 = k * inner
    ys = lax.dynamic_slice_in_dim(y1, i1, inner, 0)
    l_rows = lax.dynamic_slice_in_dim(l1, i1, inner, 0)  # (inner, b)
    ls = lax.dynamic_slice_in_dim(l_rows, i1, inner, 1)  # (inner, inner), upper
    ds = lax.dynamic_slice_in_dim(d1, i1, inner, 0)
    st = lax.dynamic_slice_in_dim(steps1, i1, inner, 0)

    def row(i, c):
      ys, qs, zs, ss, es = c
      qi, zi, si = grid.quantize(ys[i] / ds[i], (), st[i])  # target w̃_i = Y_i / L_ii
      res = ys[i] - ds[i] * qi  # row i of Lᵣᵀ(W − Q)
      ys = ys - jnp.outer(ls[i], qi)  # Y_j −= L_ij q_i (ls[i, j] = 0 for j < i)
      return ys, qs.at[i].set(qi), zs.at[i].set(zi), ss.at[i].set(si), es.at[i].set(jnp.sum(res * res))

    vec = jnp.zeros((inner,), jnp.float32)
    init = (ys, jnp.zeros((inner, m), jnp.float32), jnp.zeros((inner, m), jnp.int32), vec, vec)
    _, qs, zs, ss, es = lax.fori_loop(0, inner, row, init)
    y1 = y1 - l_rows.T @ qs  # rows before the sub-block get zero (upper), its own rows are done
    return (y1, lax.dynamic_update_slice_in_dim(q1, qs, i1, 0), lax.dynamic_update_slice_in_dim(z1, zs, i1, 0),
            lax.dynamic_update_slice_in_dim(s1, ss, i1, 0), lax.dynamic_update_slice_in_dim(e1, es, i1, 0))

  vec = jnp.zeros((b,), jnp.float32)
  init = (y1, jnp.zeros((b, m), jnp.float32), jnp.zeros((b, m), jnp.int32), vec, vec)
  _, q1, z1, s1, e1 = lax.fori_loop(0, b // inner, sub, init)
  return q1, z1, s1, e1


def _ysic(y: Array, lr: Array, steps: Array, lmmse: bool, block_size: int, inner: int = 16):
  """WaterSIC's SIC in the paper's form, on ``Y = Lᵣᵀ Wᵣ`` (processing order, ``Lᵣ = J L J``).

  The reference code runs the recursion on ``Y = W L`` (torch layout) with the lower factor
  itself: for feature i (processing order), the cancelled target is ``w̃_i = Y_i / Lᵣ,ii``,
  it is quantized to ``q_i = s_i z_i`` (``rdq.layer.StepGrid``), and ``Y_j −= Lᵣ,ij q_i`` for
  the later features j. Then ``Lᵣᵀ(W−Q)`` has rows ``Lᵣ,ii (w̃_i − q_i)``, so the loss
  ``tr((W−Q)ᵀH_d(W−Q)) = Σ_i Lᵣ,ii² ‖w̃_i − q_i‖²`` — the same recursion and identity as the
  GPTQ form of ``rdq.layer.sic`` with ``U = Lᵣ⁻¹``, without forming the inverse. Blocked
  twice (Frantar et al. 2023, Sec. 3, lazy batch updates): ``block_size`` rows at a time, each
  block brought up to date by one GEMM per earlier block (left-looking: the flops of the
  triangle only), ``inner`` rows at a time inside a block.

  Returns ``(Q, Z, scales, residual)`` with ``residual_i = Lᵣ,ii² ‖w̃_i − q_i‖²`` (the row's
  share of the damped loss), so ``Σ residual = tr((W−Q)ᵀH_d(W−Q))`` without an ``n²m`` product.
  """
  n, m = y.shape
  bs = min(block_size, n)
  inner = max(1, min(inner, bs))
  bs = -(-bs // inner) * inner
  nb = -(-n // bs)
  pad = nb * bs - n
  if pad:  # zero rows on an identity block: decoupled, quantized to 0
    y = jnp.concatenate([y, jnp.zeros((pad, m), y.dtype)])
    lr = jnp.block([[lr, jnp.zeros((n, pad), lr.dtype)], [jnp.zeros((pad, n), lr.dtype), jnp.eye(pad, dtype=lr.dtype)]])
    steps = jnp.concatenate([steps, jnp.ones((pad,), steps.dtype)])
  d = jnp.diagonal(lr)

  def block(k, carry):
    q, z, s, e = carry
    i1 = k * bs
    l_cols = lax.dynamic_slice_in_dim(lr, i1, bs, 1)  # (N, bs): Lᵣ[:, block k], zero below the block

    def earlier(j, y1):  # left-looking lazy update: only the blocks before k, no zero rows
      j1 = j * bs
      return y1 - lax.dynamic_slice_in_dim(l_cols, j1, bs, 0).T @ lax.dynamic_slice_in_dim(q, j1, bs, 0)

    y1 = lax.fori_loop(0, k, earlier, lax.dynamic_slice_in_dim(y, i1, bs, 0))
    q1, z1, s1, e1 = _ysic_rows(y1, lax.dynamic_slice_in_dim(l_cols, i1, bs, 0), lax.dynamic_slice_in_dim(d, i1, bs, 0),
                            lax.dynamic_slice_in_dim(steps, i1, bs, 0), lmmse, inner)
    return (lax.dynamic_update_slice_in_dim(q, q1, i1, 0), lax.dynamic_update_slice_in_dim(z, z1, i1, 0),
            lax.dynamic_update_slice_in_dim(s, s1, i1, 0), lax.dynamic_update_slice_in_dim(e, e1, i1, 0))

  big = nb * bs
  vec = jnp.zeros((big,), jnp.float32)
  init = (jnp.zeros((big, m), jnp.float32), jnp.zeros((big, m), jnp.int32), vec, vec)
  q, z, s, e = lax.fori_loop(0, nb, block, init)
  return q[:n], z[:n], s[:n], e[:n]


PSD_TOL = 1e-4
"""Relative tolerance of the positive-semidefiniteness of H (``rdq.layer.check_layer_inputs``'s)."""


def _only_if(pred, fn, args: tuple):
  """``fn(*args)`` where ``pred`` holds, else zeros of its output — computing ``fn`` only if
  ``pred`` holds, also under ``vmap``, where a ``lax.cond`` on a batched predicate would run
  both branches (here: only if ``pred`` holds for some batch element)."""
  zeros = lambda *a: jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(fn, *a))  # noqa: E731

  @jax.custom_batching.custom_vmap
  def run(pred, *args):
    return lax.cond(pred, fn, zeros, *args)

  @run.def_vmap
  def _(axis_size, in_batched, pred, *args):
    def bcast(x, b):
      return x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))

    pred = bcast(pred, in_batched[0])
    args = tuple(bcast(a, b) for a, b in zip(args, in_batched[1:]))

    def some(*a):
      out = jax.vmap(fn)(*a)
      return jax.tree_util.tree_map(lambda o: jnp.where(pred.reshape((-1,) + (1,) * (o.ndim - 1)), o, jnp.zeros_like(o)), out)

    out = lax.cond(jnp.any(pred), some, lambda *a: jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(some, *a)), *args)
    return out, jax.tree_util.tree_map(lambda _: True, out)

  return run(pred, *args)


def _factor(h: Array, percdamp: float):
  """Lower Cholesky factor of ``H_d``, and a certificate that H passes the PSD check.

  A finite factor with a positive diagonal proves ``λ_min(H) > −percdamp·mean(diag H)``; as
  ``mean(diag H) ≤ max|H| ≤ ‖H‖₂``, that is the check's ``λ_min ≥ −tol·‖H‖₂`` whenever
  ``percdamp·mean(diag H) ≤ tol·max|H|`` (the default ``percdamp = tol``). Otherwise a second
  factor of ``H + tol·max|H|·I`` is the certificate (computed only then, ``_only_if``).
  Eigenvalues are computed only when a certificate fails, for the error message.
  """
  hd = damp_hessian(h, percdamp)
  lower = jnp.linalg.cholesky(hd)

  def good(x):
    dg = jnp.diagonal(x)
    return jnp.all(jnp.isfinite(dg) & (dg > 0))

  ok = good(lower)
  scale = jnp.max(jnp.abs(h))
  damp = percdamp * jnp.mean(jnp.diagonal(h))
  n = h.shape[-1]
  if percdamp <= PSD_TOL:  # mean(diag H) ≤ max|H|: the factor of H_d is the certificate
    psd = ok
  else:
    psd = ok & (damp <= PSD_TOL * scale)
    psd = psd | _only_if(~psd, lambda h, s: good(jnp.linalg.cholesky(h + PSD_TOL * s * jnp.eye(n, dtype=h.dtype))), (h, scale))

  def eig_stats(h):
    e = jnp.linalg.eigvalsh(h)  # symmetrized: (h + hᵀ)/2
    return e[0], jnp.max(jnp.abs(e))

  min_eig, norm = _only_if(~(ok & psd), eig_stats, (h,))
  return hd, lower, ok, psd, min_eig, norm


def _check_factor(ok, psd, min_eig, norm, percdamp: float) -> None:
  """The errors of ``_factor``'s certificate (eager: ``ValueError``; traced: ``rdq.checks``)."""
  require(psd | (min_eig >= -PSD_TOL * norm),
          f"H must be positive semidefinite; min eigenvalue {{:.3g}} < −{PSD_TOL}·‖H‖ = {{:.3g}}", min_eig, -PSD_TOL * norm)
  require(ok, f"watersic: the Cholesky factor of H + percdamp·mean(diag H)·I failed (min eigenvalue of H {{:.3g}}, "
          f"‖H‖ = {{:.3g}}): H is too ill-conditioned for percdamp={percdamp}; raise percdamp", min_eig, norm)


@functools.partial(jax.jit, static_argnums=3)
def _watersic(w, h, rate_bits, config: WaterSICConfig):
  n, m = w.shape
  hd, lower, ok, psd, min_eig, norm = _factor(h, config.percdamp)
  lr = lower[::-1, ::-1]  # J L J, upper: paper order (last input feature first) as rows 0..n−1
  wr = w[::-1]
  y = lr.T @ wr
  l_diag = jnp.diagonal(lr)  # L_ii of the paper
  side = config.side_bits(n, m)
  c_unit = high_rate_step(wr, 0.0, weights=l_diag**2)  # c(R) = c_unit · 2^{−R}

  def evaluate(r_nominal):
    """(rate gap, SIC outputs) at one nominal rate: one SIC pass."""
    steps = _fp16(c_unit * jnp.exp2(-r_nominal) / l_diag)
    q, z, s, res = _ysic(y, lr, steps, config.lmmse, config.block_size)
    bits, counts = _row_entropy_and_counts(z, CODED_BINS)
    return jnp.mean(bits) + side - rate_bits, (q, z, s, bits, res, counts)

  r0 = rate_bits - side - ECSQ_GAP_BITS
  # Secant root find of the entropy on the nominal rate: r0 (high-rate rule), r1 = r0 − f0
  # (slope 1), then secant steps until within rate_tol — one SIC pass each, all in one loop
  # (one compiled pass); the pass closest to the target is returned as computed.

  def secant(k, carry):
    ra, fa, rb, fb, best_f, best_out = carry  # k = 0: rb = r0, fb = 0, so rc = r0
    slope = jnp.where(jnp.abs(fb - fa) > 1e-6, (fb - fa) / jnp.where(rb != ra, rb - ra, 1.0), 1.0)
    slope = jnp.where(k <= 1, 1.0, jnp.clip(slope, 0.25, 4.0))  # entropy vs nominal rate has slope ≈ 1
    rc = rb - fb / slope
    fc, out_c = evaluate(rc)
    better = jnp.abs(fc) < jnp.abs(best_f)
    best_out = jax.tree_util.tree_map(lambda x, y: jnp.where(better, x, y), out_c, best_out)
    return rb, fb, rc, fc, jnp.where(better, fc, best_f), best_out

  def step(k, carry):  # a fixed trip count (checkify cannot take a batched while loop)
    return lax.cond(jnp.abs(carry[4]) > config.rate_tol, lambda c: secant(k, c), lambda c: c, carry)

  zero = jnp.zeros((), jnp.float32)
  vec = jnp.zeros((n,), jnp.float32)
  out0 = (jnp.zeros((n, m), jnp.float32), jnp.zeros((n, m), jnp.int32), vec, vec, vec,
          jnp.zeros((n, min(CODED_BINS, m)), jnp.float32))
  init = (r0, zero, r0, zero, jnp.float32(jnp.inf), out0)
  if config.rate_iters > 0:
    q, z, s, bits, res, counts = lax.fori_loop(0, config.rate_iters + 1, step, init)[5]
  else:  # the high-rate rule alone: one pass, no loop
    q, z, s, bits, res, counts = evaluate(r0)[1]
  q, z, s, bits = q[::-1], z[::-1], s[::-1], bits[::-1]
  coded = _coded_bits(z, counts[::-1]) + GAUSSIAN_MODEL_BITS / m
  # The report's distortion and signal from the factor instead of two n²m products: the SIC's
  # residuals give tr(EᵀH_dE) (``_ysic``), ‖Y‖² = ‖LᵀW‖² = tr(WᵀH_dW), and H = H_d − δI. Exact
  # for H_d = L Lᵀ; the float32 factor's rounding moves D by ≤ 1e-6 relative on well-conditioned
  # H and up to ~7e-4 on MiniLM's most ill-conditioned layers (the float32 products: ~1e-4).
  delta = config.percdamp * jnp.mean(jnp.diagonal(h))  # damp_hessian's δ
  d_damped = jnp.sum(res) / (n * m)
  if config.rescale_iters > 0:
    s2, t = _rescale(w, hd, z, s, config.rescale_iters)
    q2 = z.astype(jnp.float32) * s2[:, None] * t[None, :]
    d2, d1 = layer_distortion(w, q2, hd), layer_distortion(w, q, hd)
    keep = d2 < d1
    q = jnp.where(keep, q2, q)
    s = jnp.where(keep, s2, s)
    d_damped = jnp.where(keep, d2, d_damped)
  d = d_damped - delta * jnp.mean((w - q) ** 2)
  signal = (jnp.sum(y * y) - delta * jnp.sum(w * w)) / (n * m)
  rep = make_report(w, q, h, z, side, None, s, rate="entropy", feature_bits=bits, distortion=d, signal=signal,
                    coded_bits=coded)
  return q, rep, (ok, psd, min_eig, norm)
