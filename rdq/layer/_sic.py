"""Successive interference cancellation (SIC) over input features: the core of GPTQ and WaterSIC.

Layout: ``W ∈ R^{n×m}`` (n input features, m output features), ``H ∈ R^{n×n}``. Input
feature ``i`` is the row ``W[i, :]`` (the "column" of torch's ``(out, in)`` layout).

With ``H_d = H + δ·mean(diag H)·I`` and ``U`` the upper Cholesky factor of ``H_d^{-1}``
(``H_d^{-1} = UᵀU``), features are quantized in order ``i = 0..n−1``; after row ``i`` is
quantized to ``q_i`` its error is fed forward to the not-yet-quantized rows:

.. math::
   e_i = (w_i - q_i)/U_{ii}, \\qquad w_j \\leftarrow w_j - U_{ij}\\, e_i \\quad (j > i).

This is Frantar et al. (2023), Algorithm 1 ("GPTQ"), and equals Babai's nearest-plane /
LDLQ recursion; it gives the exact identity ``W − Q = Uᵀ E`` (E stacks the ``e_i``), so
``tr((W−Q)ᵀ H_d (W−Q)) = ‖E‖²_F``. The effective weight of feature ``i``'s rounding error is
``d_i = 1/U_ii²`` = var(x_i | x_{>i}) under ``H_d`` (the LDL diagonal), and ``Π d_i = det H_d``.

Lazy batch updates (Frantar et al., Sec. 3, "Step 2"): features are processed in blocks of
``block_size``; inside a block the update touches only the block's rows, and the rows after
the block are updated once per block with ``W[i2:] −= U[i1:i2, i2:]ᵀ E_block``. The result
equals the unblocked recursion up to float summation order.

A *grid* decides how one row is rounded (``fit`` group parameters on the current rows,
``quantize`` one row). A grid with ``vec_dim = d > 1`` (GPTVQ's vector quantizer) quantizes
``d`` consecutive rows ``P`` jointly; its error ``δ_P = W_P − Q_P`` is fed forward with the
block form of the same recursion, ``U_PPᵀ e_P = δ_P``, ``W_j ← W_j − U_Pjᵀ e_P`` — exactly
what the scalar recursion gives on the rows of ``P`` with their quantized values held
fixed, so ``W − Q = UᵀE`` still holds. A grid with a ``fit_group(rows, feats, key)`` method
gets the group's per-feature data and a PRNG key (``fold_in(key, first feature)``). Group parameters are fitted on the **current** (error-updated)
rows of the group, exactly as in the unblocked recursion. (The reference GPTQ code reads
partly stale weights when a group starts inside a lazy block; rdq does not.)

References:
  E. Frantar, S. Ashkboos, T. Hoefler, D. Alistarh, "GPTQ: Accurate Post-Training
  Quantization for Generative Pre-trained Transformers", ICLR 2023 (arXiv 2210.17323),
  Algorithm 1 and Sec. 3. J. Chee et al., "QuIP", NeurIPS 2023, Sec. 3 (LDLQ ≡ GPTQ).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float

__all__ = ["MinMaxGrid", "MinMaxLevels", "StepGrid", "UniformGrid", "damp_hessian", "high_rate_step", "inverse_cholesky_upper", "sic"]


def damp_hessian(h: Float[Array, "n n"], percdamp: float | Float[Array, ""]) -> Float[Array, "n n"]:
  """``H + percdamp · mean(diag H) · I`` (relative damping, GPTQ's ``percdamp``)."""
  n = h.shape[-1]
  return h + percdamp * jnp.mean(jnp.diagonal(h)) * jnp.eye(n, dtype=h.dtype)


def inverse_cholesky_upper(h_damped: Float[Array, "n n"]) -> Float[Array, "n n"]:
  """Upper-triangular ``U`` with ``H_d^{-1} = UᵀU`` (GPTQ's ``Hinv``).

  With ``J`` the exchange matrix and ``J H_d J = M Mᵀ`` (lower Cholesky), ``H_d = R Rᵀ`` for the
  upper-triangular ``R = J M J``, so ``U = R⁻¹ = J M⁻¹ J``: one Cholesky and one triangular solve
  (≈ 4n³/3 flops), where GPTQ's reference code forms ``H_d⁻¹`` and factors it again (≈ 5n³/3 and
  a second Cholesky). ``U`` is unique (positive diagonal), so both give the same factor up to
  rounding.
  """
  n = h_damped.shape[-1]
  m = jnp.linalg.cholesky(h_damped[::-1, ::-1])
  m_inv = jax.scipy.linalg.solve_triangular(m, jnp.eye(n, dtype=h_damped.dtype), lower=True)
  return m_inv[::-1, ::-1]


def _fp16(x: Array) -> Array:
  return x.astype(jnp.float16).astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class MinMaxGrid:
  """GPTQ's min–max integer grid, one ``(scale, zero)`` per output feature and group.

  For the group's current rows ``G`` (``group_size`` input features × m outputs), per output
  feature: ``x_min = min(min G, 0)``, ``x_max = max(max G, 0)``; symmetric: ``x_max = max|G|,
  x_min = −x_max``; a zero range becomes ``[−1, 1]``. ``scale = (x_max − x_min)/q_max`` with
  ``q_max = 2^bits − 1`` (rounded to fp16, the stored format), ``zero = (q_max+1)/2``
  (symmetric) or ``round(−x_min/scale)``; ``z = clip(round(w/scale) + zero, 0, q_max)``,
  ``ŵ = scale·(z − zero)``.

  Attributes:
    bits: bits per code, 2..8.
    sym: symmetric grid (no stored zero point).
    group_size: input features per group (must divide n); ``None`` = one group per output
      feature over all n input features (fitted on the original W, as in GPTQ).

  References:
    Frantar et al. (2023), the paper's public reference code ``quant.py``
    (``Quantizer.find_params``).
  """

  bits: int = 4
  sym: bool = True
  group_size: int | None = None

  def __post_init__(self):
    if not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
      raise ValueError(f"bits={self.bits!r} must be an integer in [2, 8]")
    if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
      raise ValueError(f"group_size={self.group_size!r} must be a positive integer or None")

  @property
  def q_max(self) -> int:
    return 2**self.bits - 1

  def for_budget(self, rate_bits: float, n: int, m: int) -> "MinMaxGrid":
    """The same grid with the most bits whose rate ``bits + side_bits(n, m)`` is ≤ ``rate_bits``.

    Raises ``ValueError`` if that is outside ``[2, 8]`` bits.
    """
    fits = [b for b in range(2, 9) if b + dataclasses.replace(self, bits=b).side_bits(n, m) <= rate_bits + 1e-9]
    if not fits:
      side = dataclasses.replace(self, bits=2).side_bits(n, m)
      raise ValueError(
          f"rate_bits={rate_bits!r} is below the smallest min–max grid of an ({n}, {m}) layer: "
          f"2 bits + {side:.4g} side bits"
      )
    return dataclasses.replace(self, bits=max(fits))

  def side_bits(self, n: int, m: int) -> float:
    """Bits per entry of the stored scales (fp16) and zero points (``bits``, asymmetric only)."""
    g = n if self.group_size is None else self.group_size
    return (16 + (0 if self.sym else self.bits)) / g

  def init(self, m: int):
    return jnp.ones((m,), jnp.float32), jnp.zeros((m,), jnp.float32)

  def fit(self, rows: Float[Array, "g m"]):
    return _minmax_fit(rows, self.sym, self.q_max)

  def quantize(self, row: Float[Array, " m"], params, feat=None):
    return _minmax_round(row, params, self.q_max)

  def levels(self, n: int, m: int) -> dict:
    """The scalars of this grid that only enter arithmetic: ``bits``, ``q_max`` and ``side`` bits
    (float32), for ``MinMaxLevels`` (one compiled program for every bit width)."""
    return {"bits": np.float32(self.bits), "q_max": np.float32(self.q_max), "inv_q": np.float32(1) / np.float32(self.q_max),
            "side": np.float32(self.side_bits(n, m))}

  def split(self, n: int, m: int, budget: float | None = None) -> tuple["MinMaxGrid", dict]:
    """``(structure, levels)`` for ``LayerAlgorithm.split``: the grid sized for a concrete
    ``budget`` (``for_budget``; None keeps its bits) with its bit width moved to ``levels``; the
    structure's own ``bits`` is a placeholder, so every bit width shares one program."""
    grid = self if budget is None else self.for_budget(budget, n, m)
    return dataclasses.replace(grid, bits=8), grid.levels(n, m)

  def with_levels(self, levels: dict) -> "MinMaxLevels":
    """This grid rounding with the (possibly traced) ``levels`` of ``split``."""
    return MinMaxLevels(self.sym, self.group_size, levels["q_max"], levels["inv_q"])


def _minmax_fit(rows: Float[Array, "g m"], sym: bool, q_max, inv_q=None) -> tuple[Array, Array]:
  """``(scale, zero)`` per output feature of ``MinMaxGrid`` with ``q_max`` levels (a number or traced).

  ``inv_q`` (traced): the float32 ``1/q_max``; the range is multiplied by it, which is what XLA
  makes of the division by a constant ``q_max`` (so both give the same fp16 scales bit for bit).
  """
  xmin = jnp.minimum(jnp.min(rows, axis=0), 0.0)
  xmax = jnp.maximum(jnp.max(rows, axis=0), 0.0)
  if sym:
    xmax = jnp.maximum(-xmin, xmax)
    xmin = -xmax
  zero_range = (xmax - xmin) == 0
  xmin = jnp.where(zero_range, -1.0, xmin)
  xmax = jnp.where(zero_range, 1.0, xmax)
  scale = _fp16((xmax - xmin) / q_max if inv_q is None else (xmax - xmin) * inv_q)
  if sym:
    zero = jnp.full_like(scale, (q_max + 1) / 2)
  else:
    zero = jnp.round(-xmin / scale)
  return scale, zero


def _minmax_round(row: Float[Array, " m"], params, q_max):
  scale, zero = params
  z = jnp.clip(jnp.round(row / scale) + zero, 0, q_max)
  return scale * (z - zero), z.astype(jnp.int32), jnp.float32(1.0)


@dataclasses.dataclass(frozen=True)
class MinMaxLevels:
  """``MinMaxGrid`` whose number of levels is a value, not part of the program: built inside a
  traced function from ``MinMaxGrid.levels`` (``q_max = 2^bits − 1`` as a float32, possibly
  traced), it rounds exactly as ``MinMaxGrid(bits, sym, group_size)``, so one compiled program
  serves every bit width."""

  sym: bool
  group_size: int | None
  q_max: Any
  inv_q: Any  # float32 1/q_max

  def init(self, m: int):
    return jnp.ones((m,), jnp.float32), jnp.zeros((m,), jnp.float32)

  def fit(self, rows: Float[Array, "g m"]):
    return _minmax_fit(rows, self.sym, self.q_max, self.inv_q)

  def quantize(self, row: Float[Array, " m"], params, feat=None):
    return _minmax_round(row, params, self.q_max)


def high_rate_step(
    w: Float[Array, "n m"], rate_bits, weights: Float[Array, " n"] | None = None
) -> Float[Array, ""]:
  """Step ``c`` of an entropy-coded uniform quantizer aimed at ``rate_bits`` (high-rate rule).

  .. math:: c = 2^{-R} \\exp\\big(\\mathrm{mean}_i \\tfrac12 \\ln(12\\, s_i\\, v_i)\\big),
     \\qquad s_i = \\tfrac1m \\textstyle\\sum_j W_{ij}^2,

  with ``v_i = weights`` (1 if None), over the input features with ``s_i v_i > 0``: a
  uniform variable of variance σ² spans ``√12 σ``, and the mean of ``log2(√(12 s_i v_i)/c)``
  is R. WaterSIC uses ``v_i = L_ii²`` (its steps are ``c/L_ii``).

  References:
    Lifar et al., "WaterSIC", arXiv 2603.04956; reference code ``compress_w2q``
    (its layer step-size rule).
  """
  s = jnp.mean(w.astype(jnp.float32) ** 2, axis=1)
  if weights is not None:
    s = s * weights
  live = s > 0
  log_mean = jnp.sum(jnp.where(live, 0.5 * jnp.log(12.0 * jnp.where(live, s, 1.0)), 0.0)) / jnp.maximum(
      jnp.sum(live), 1
  )
  return jnp.exp(log_mean) * jnp.exp2(-jnp.asarray(rate_bits, jnp.float32))


@dataclasses.dataclass(frozen=True)
class UniformGrid:
  """Entropy-coded uniform scalar quantization (ECSQ) with one step Δ for the whole layer.

  ``Δ = high_rate_step(W, rate_bits − side)``: the step at which the codes' entropy plus the
  side information is about ``rate_bits`` at high rate. Codes are unbounded integers (no clipping); the side
  information is one 16-bit step per layer. This is the "GPTQ with entropy coding" whose
  high-rate distortion is ``(Δ²/12)·mean_i d_i`` (arithmetic mean of the LDL diagonal).

  Attributes:
    rate_bits: target rate in bits per entry (entropy of the codes + side information), > 0.
  """

  rate_bits: float = 4.0
  group_size = None

  def __post_init__(self):
    if not (isinstance(self.rate_bits, (int, float)) and self.rate_bits > 0):
      raise ValueError(f"rate_bits={self.rate_bits!r} must be > 0")

  def side_bits(self, n: int, m: int) -> float:
    return 16.0 / (n * m)


@dataclasses.dataclass(frozen=True)
class StepGrid:
  """Unbounded integer lattice with a per-feature step ``Δ_i`` (given as ``feat``).

  ``z = round(w/Δ_i)`` (round-half-even, no clipping). With ``lmmse`` the reconstruction
  is ``γ Δ_i z`` with the least-squares gain ``γ = ⟨z, w⟩/(Δ_i ‖z‖²)`` (0 if z = 0), and
  the stored per-feature scale ``γΔ_i`` is rounded to fp16 (it is side information).
  Returned ``aux`` is the stored per-feature scale.

  References:
    Lifar et al., "WaterSIC", arXiv 2603.04956 (LMMSE gain per column; official code
    ``compress_w2q``).
  """

  lmmse: bool = False
  group_size = None

  def init(self, m: int):
    return ()

  def fit(self, rows):
    return ()

  def quantize(self, row: Float[Array, " m"], params, step: Float[Array, ""]):
    z = jnp.round(row / step)
    if self.lmmse:
      zz = jnp.sum(z * z)
      gamma = jnp.where(zz > 0, jnp.sum(z * row) / (step * jnp.where(zz > 0, zz, 1.0)), 0.0)
      s = _fp16(gamma * step)
    else:
      s = step
    return s * z, z.astype(jnp.int32), s


def _solve_upper_t(u_pp: Float[Array, "d d"], rhs: Float[Array, "d m"]) -> Float[Array, "d m"]:
  """``U_PPᵀ e = rhs`` for a small upper-triangular ``U_PP`` by forward substitution.

  Elementwise (fused by XLA) instead of a LAPACK ``trsm`` call per vector step, which costs
  more than the whole step for ``d ≤ 8`` (and spin-waits with multi-threaded OpenBLAS). For
  ``d > 8`` (Λ24: d = 24) the unrolled ``d²/2`` operations cost seconds of compile time and the
  step is dominated by the vector quantizer, so ``trsm`` is used.
  """
  if u_pp.shape[0] > 8:
    return lax.linalg.triangular_solve(u_pp, rhs, left_side=True, lower=False, transpose_a=True)
  rows = []
  for i in range(u_pp.shape[0]):
    acc = rhs[i]
    for j in range(i):
      acc = acc - u_pp[j, i] * rows[j]
    rows.append(acc / u_pp[i, i])
  return jnp.stack(rows)


def sic(
    w: Float[Array, "n m"],
    u: Float[Array, "n n"],
    grid,
    feat: Float[Array, " n *d"] | None,
    block_size: int,
    key=None,
):
  """Blocked SIC over input features (see module docstring).

  The blocks run in one ``lax.fori_loop`` (compile time does not grow with n). When
  ``block_size`` does not divide n, W is padded with zero rows and U with an identity block
  (padded features are exactly zero and decoupled, so they change nothing). The lazy update
  after a block is applied to all rows (rows of finished blocks are never read again), which
  keeps shapes static at the price of ≤ 2× the flops of that matmul.

  Args:
    w: weights, float32.
    u: upper Cholesky factor of the damped inverse Hessian.
    grid: ``MinMaxGrid`` or ``StepGrid``.
    feat: per-feature data ``(n, …)`` passed to ``grid.quantize`` (the steps of a
      ``StepGrid``).
    block_size: lazy-update block; if the grid has groups, one of ``block_size`` and
      ``group_size`` must divide the other (checked by the callers); a grid's ``vec_dim``
      must divide both.
    key: PRNG key passed (folded with the group's first feature) to ``grid.fit_group``;
      only grids with ``fit_group`` use it.

  Returns:
    ``(q, z, aux)``: quantized weights ``(n, m)``, integer codes ``(n, m)`` and the grid's
    per-feature ``aux`` output ``(n,)``.
  """
  n, m = w.shape
  g = grid.group_size
  bs = min(block_size, n)
  nb = -(-n // bs)
  pad = nb * bs - n
  if feat is None:
    feat = jnp.zeros((n,), jnp.float32)
  params = grid.fit(w) if g is None else grid.init(m)
  if pad:
    w = jnp.concatenate([w, jnp.zeros((pad, m), w.dtype)])
    u = jnp.block([[u, jnp.zeros((n, pad), u.dtype)], [jnp.zeros((pad, n), u.dtype), jnp.eye(pad, dtype=u.dtype)]])
    feat = jnp.concatenate([feat, jnp.ones((pad,) + feat.shape[1:], feat.dtype)])
  big_groups = g is not None and g >= bs
  vd = getattr(grid, "vec_dim", 1)
  if bs % vd or (g is not None and g % vd):
    raise ValueError(f"vec_dim={vd} must divide block_size={bs} and group_size={g}")
  if hasattr(grid, "fit_group") and key is None:
    raise ValueError("this grid fits its groups with a PRNG key; pass key=")

  def fit(rows, feats, start, params):
    del params
    if hasattr(grid, "fit_group"):
      return grid.fit_group(rows, feats, jax.random.fold_in(key, start))
    return grid.fit(rows)

  def block(k, carry):
    w, q, z, aux, params = carry
    i1 = k * bs
    if big_groups:  # group starts only at block starts; rows ≥ i1 are fully updated here
      params = lax.cond(
          i1 % g == 0,
          lambda p: fit(lax.dynamic_slice_in_dim(w, i1, g, 0), lax.dynamic_slice_in_dim(feat, i1, g, 0), i1, p),
          lambda p: p,
          params,
      )
    w1 = lax.dynamic_slice_in_dim(w, i1, bs, 0)
    u_rows = lax.dynamic_slice_in_dim(u, i1, bs, 0)  # (bs, N)
    u1 = lax.dynamic_slice_in_dim(u_rows, i1, bs, 1)  # (bs, bs)
    f1 = lax.dynamic_slice_in_dim(feat, i1, bs, 0)

    def refit(i, params, w1):
      if g is not None and not big_groups:
        params = lax.cond(
            i % g == 0,
            lambda p: fit(lax.dynamic_slice_in_dim(w1, i, g, 0), lax.dynamic_slice_in_dim(f1, i, g, 0), i1 + i, p),
            lambda p: p,
            params,
        )
      return params

    def body(i, carry):
      w1, q1, z1, e1, a1, params = carry
      params = refit(i, params, w1)
      row = w1[i]
      qi, zi, ai = grid.quantize(row, params, f1[i])
      err = (row - qi) / u1[i, i]
      w1 = w1 - jnp.outer(u1[i], err)  # u1[i, j] = 0 for j < i
      return (w1, q1.at[i].set(qi), z1.at[i].set(zi), e1.at[i].set(err), a1.at[i].set(ai), params)

    def vec_body(t, carry):  # d rows P = i..i+d−1 at once (block form of ``body``)
      w1, q1, z1, e1, a1, params = carry
      i = t * vd
      params = refit(i, params, w1)
      rows = lax.dynamic_slice_in_dim(w1, i, vd, 0)
      qp, zp, ap = grid.quantize(rows, params, lax.dynamic_slice_in_dim(f1, i, vd, 0))
      u_p = lax.dynamic_slice_in_dim(u1, i, vd, 0)  # (d, bs), zero left of P
      u_pp = lax.dynamic_slice_in_dim(u_p, i, vd, 1)  # (d, d) upper triangular
      err = _solve_upper_t(u_pp, rows - qp)
      w1 = w1 - u_p.T @ err
      return (
          w1,
          lax.dynamic_update_slice_in_dim(q1, qp, i, 0),
          lax.dynamic_update_slice_in_dim(z1, zp, i, 0),
          lax.dynamic_update_slice_in_dim(e1, err, i, 0),
          lax.dynamic_update_slice_in_dim(a1, ap, i, 0),
          params,
      )

    init = (
        w1,
        jnp.zeros((bs, m), jnp.float32),
        jnp.zeros((bs, m), jnp.int32),
        jnp.zeros((bs, m), jnp.float32),
        jnp.zeros((bs,), jnp.float32),
        params,
    )
    if vd == 1:
      _, q1, z1, e1, a1, params = lax.fori_loop(0, bs, body, init)
    else:
      _, q1, z1, e1, a1, params = lax.fori_loop(0, bs // vd, vec_body, init)
    # Lazy batch update of the later rows: W[i2:] -= U[i1:i2, i2:]ᵀ E1. U is upper
    # triangular, so rows < i1 get zero; rows of this block are finished and never reread.
    w = w - u_rows.T @ e1
    q = lax.dynamic_update_slice_in_dim(q, q1, i1, 0)
    z = lax.dynamic_update_slice_in_dim(z, z1, i1, 0)
    aux = lax.dynamic_update_slice_in_dim(aux, a1, i1, 0)
    return w, q, z, aux, params

  big_n = nb * bs
  init = (
      w,
      jnp.zeros((big_n, m), jnp.float32),
      jnp.zeros((big_n, m), jnp.int32),
      jnp.zeros((big_n,), jnp.float32),
      params,
  )
  _, q, z, aux, _ = lax.fori_loop(0, nb, block, init)
  return q[:n], z[:n], aux[:n]
