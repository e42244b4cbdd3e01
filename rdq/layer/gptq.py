"""GPTQ (Frantar et al., 2023): SIC over input features with H⁻¹-Cholesky error feedback.

For ``W ∈ R^{n×m}`` (n input features) and ``H = E[x xᵀ]`` (``(n, n)``; GPTQ's ``2XXᵀ/N``
differs by a factor that relative damping makes irrelevant), GPTQ quantizes input feature
``i`` (row ``W[i, :]``), then corrects the later features to absorb its error:

.. math::
   q_i = \\mathrm{quant}(w_i),\\quad e_i = (w_i - q_i)/U_{ii},\\quad
   w_j \\leftarrow w_j - U_{ij} e_i\\ (j > i),\\qquad H_d^{-1} = U^\\top U,

with ``H_d = H + percdamp·mean(diag H)·I``; features in blocks of ``block_size`` with lazy
updates of the later rows (Sec. 3, "Step 2"/"Step 3"); optional act-order (features sorted
by decreasing ``diag H``, "Additional details"); group-wise min–max grids (symmetric or
asymmetric, ``MinMaxGrid``) or an entropy-coded uniform grid (``UniformGrid``).

High rate (entropy-coded, equal step Δ): ``D = (Δ²/12)·mean_i d_i`` with ``d_i = 1/U_ii²``,
whereas the limit depends on ``(Π d_i)^{1/n} = det(H_d)^{1/n}``: GPTQ's rate gap to
WaterSIC is ``½ log2(AM(d)/GM(d))``, unbounded over H (Lifar et al., WaterSIC, Sec. on
GPTQ's suboptimality).

References:
  E. Frantar, S. Ashkboos, T. Hoefler, D. Alistarh, "GPTQ: Accurate Post-Training
  Quantization for Generative Pre-trained Transformers", ICLR 2023, arXiv 2210.17323,
  Algorithm 1 and Sec. 3. Reference code IST-DASLab/gptq ``fasterquant`` / ``quant.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rdq.layer._sic import (
  MinMaxGrid,
  StepGrid,
  UniformGrid,
  damp_hessian,
  high_rate_step,
  inverse_cholesky_upper,
  sic,
)
from rdq.layer.report import LayerReport, check_layer_inputs, concrete_rate, make_report
from rdq.limits.waterfill import ECSQ_GAP_BITS
from rdq.rate import _row_entropy_bits

__all__ = ["GPTQConfig", "aim_rate", "coded_entropy_bits", "gptq", "gptq_traced"]


@dataclasses.dataclass(frozen=True)
class GPTQConfig:
  """GPTQ hyperparameters (hashable; a static ``jit`` argument).

  Attributes:
    grid: ``MinMaxGrid(bits, sym, group_size)`` (GPTQ's own) or ``UniformGrid(rate_bits)``.
    block_size: lazy-update block (128 in the paper); with groups, one of ``block_size``
      and ``group_size`` must divide the other.
    percdamp: damping relative to ``mean(diag H)`` (0.01 in the paper).
    act_order: process input features by decreasing ``diag H``.
    rate_iters: ``UniformGrid`` only: secant refinements of the step so that the measured
      entropy of the codes plus side information meets the rate (``aim_rate``; each is one
      more GPTQ pass). 0: the high-rate rule ``high_rate_step(W, rate − side)`` alone.
  """

  grid: MinMaxGrid | UniformGrid = MinMaxGrid(bits=4)
  block_size: int = 128
  percdamp: float = 0.01
  act_order: bool = False
  rate_iters: int = 0

  def __post_init__(self):
    if not isinstance(self.grid, (MinMaxGrid, UniformGrid)):
      raise TypeError(f"grid must be a MinMaxGrid or UniformGrid; got {type(self.grid).__name__}")
    if not isinstance(self.block_size, int) or self.block_size < 1:
      raise ValueError(f"block_size={self.block_size!r} must be a positive integer")
    if not isinstance(self.rate_iters, int) or isinstance(self.rate_iters, bool) or self.rate_iters < 0:
      raise ValueError(f"rate_iters={self.rate_iters!r} must be an integer ≥ 0")
    g = self.grid.group_size
    if g is not None and self.block_size % g and g % self.block_size:
      raise ValueError(f"block_size={self.block_size} and group_size={g}: one must divide the other")


def gptq(
    w: Float[Array, "n m"],
    h: Float[Array, "n n"],
    config: GPTQConfig = GPTQConfig(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "n m"], LayerReport]:
  """Quantize ``W`` with GPTQ under the input second moment ``H``.

  Same as ``rdq.layer.get("gptq", …)(w, h)`` with this config (eager checks, scale
  normalization).

  Args:
    w: ``(n, m) = (in_features, out_features)`` weights.
    h: ``(n, n)`` symmetric PSD ``E[x xᵀ]`` (undamped; used as is for the distortion).
    config: ``GPTQConfig``.
    key: unused (GPTQ is deterministic); accepted for the common layer-algorithm signature.

  Returns:
    ``(Ŵ, report)``: ``Ŵ`` in float32 and a ``LayerReport`` (distortion per entry,
    nominal and entropy-coded rates incl. side information, per-feature entropies, codes).
    Integer codes are the grid indices (``[0, 2^bits−1]`` for ``MinMaxGrid``).

  Raises:
    ValueError: bad W/H (shape mismatch, non-symmetric, non-PSD, non-finite, singular with
      ``percdamp = 0``) or a group size that does not divide n.
  """
  from rdq.layer.registry import LayerAlgorithm

  return LayerAlgorithm("gptq", config)(w, h, key=key)


def _check(w, h, config: GPTQConfig, key, rate_bits=None) -> None:
  """Eager checks of ``gptq`` (skipped for tracers)."""
  del key, rate_bits  # the core sizes the grid (and raises) for a budget
  check_layer_inputs(w, h, config.percdamp, config.grid.group_size)


def _split(config: GPTQConfig, n: int, m: int, rate_bits=None) -> tuple[GPTQConfig, dict] | None:
  """``LayerAlgorithm.split`` of a min–max grid: the grid sized for a concrete budget, its bit
  width moved to traced scalars (``MinMaxGrid.levels``); None for a ``UniformGrid`` (its rate is
  already traced)."""
  if isinstance(config.grid, UniformGrid):
    return None
  budget = None if rate_bits is None else concrete_rate(rate_bits, "gptq on a min–max grid")
  grid, levels = config.grid.split(n, m, budget)
  return dataclasses.replace(config, grid=grid), levels


def gptq_traced(w, h, config: GPTQConfig, key=None, *, rate_bits=None, scalars=None):
  """The GPTQ core: float32 ``w`` and ``h``, no checks (jit-able, vmappable over ``w`` and ``h``).

  ``rate_bits`` (bits per weight incl. side information) overrides the grid's rate: for a
  ``MinMaxGrid`` the most bits within it (concrete), for a ``UniformGrid`` the entropy
  target (may be traced, so a rate sweep compiles once). ``None``: the grid's own.
  ``scalars`` (from ``LayerAlgorithm.split``, may be traced): a min–max grid's bit width,
  instead of the config's; every bit width runs one compiled program.
  """
  del key
  n, m = w.shape
  if isinstance(config.grid, UniformGrid):
    rate = config.grid.rate_bits if rate_bits is None else rate_bits
    config = dataclasses.replace(config, grid=UniformGrid(1.0))
    return _gptq(w, h, jnp.asarray(rate, jnp.float32), config, None)
  if scalars is None:
    config, scalars = _split(config, n, m, rate_bits)
  return _gptq(w, h, jnp.float32(0.0), config, {k: jnp.float32(v) for k, v in scalars.items()})


def coded_entropy_bits(z: Int[Array, "n m"], side) -> Float[Array, ""]:
  """The entropy-coded rate of ``make_report``: mean over input features of the plug-in
  entropy of their ``m`` codes, plus ``side`` bits per weight."""
  return jnp.mean(_row_entropy_bits(z)) + side


def aim_rate(run: Callable[[Array], tuple[Any, Array]], rate_bits, side: float, iters: int):
  """Outputs of ``run(r)`` whose measured rate is closest to ``rate_bits`` (jit-able).

  ``run(r) -> (outputs, rate)`` quantizes with the high-rate step for nominal rate ``r``
  (``high_rate_step``) and measures the entropy-coded rate incl. side information.
  ``iters = 0``: one pass at ``r₀ = rate_bits − side`` (the high-rate rule as is).
  Otherwise the first guess subtracts the ECSQ gap ``½ log2(2πe/12) = 0.2546`` bit of
  a uniform quantizer on Gaussian-like weights, a second pass takes a unit-slope step
  to the measured error and ``iters − 1`` secant steps follow (slope clipped to
  [0.25, 4]); of all passes the one closest to the target is returned as computed, as
  WaterSIC's rate search does (Lifar et al., arXiv 2603.04956; ``rdq.layer.watersic``).
  """
  r0 = rate_bits - side
  if iters == 0:
    return run(r0)[0]
  r0 = r0 - ECSQ_GAP_BITS

  def pick(better, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(better, x, y), a, b)

  out0, h0 = run(r0)
  f0 = h0 - rate_bits
  r1 = r0 - f0
  out1, h1 = run(r1)
  f1 = h1 - rate_bits

  def secant(_, carry):
    ra, fa, rb, fb, best_f, best = carry
    slope = jnp.where(jnp.abs(fb - fa) > 1e-6, (fb - fa) / jnp.where(rb != ra, rb - ra, 1.0), 1.0)
    rc = rb - fb / jnp.clip(slope, 0.25, 4.0)
    out_c, hc = run(rc)
    fc = hc - rate_bits
    better = jnp.abs(fc) < jnp.abs(best_f)
    return rb, fb, rc, fc, jnp.where(better, fc, best_f), pick(better, out_c, best)

  first = jnp.abs(f1) < jnp.abs(f0)
  init = (r0, f0, r1, f1, jnp.where(first, f1, f0), pick(first, out1, out0))
  return jax.lax.fori_loop(0, iters - 1, secant, init)[5]


@functools.partial(jax.jit, static_argnums=3)
def _gptq(w, h, rate_bits, config: GPTQConfig, levels):
  n, m = w.shape
  grid = config.grid
  if config.act_order:
    perm = jnp.argsort(-jnp.diagonal(h), stable=True)
    inv = jnp.argsort(perm)
    wp, hp = w[perm], h[perm][:, perm]
  else:
    wp, hp = w, h
  u = inverse_cholesky_upper(damp_hessian(hp, config.percdamp))
  if isinstance(grid, UniformGrid):
    side = grid.side_bits(n, m)

    def run(r):
      steps = jnp.full((n,), high_rate_step(w, r), jnp.float32)
      q, z, _ = sic(wp, u, StepGrid(lmmse=False), steps, config.block_size)
      return (q, z, steps), coded_entropy_bits(z, side)

    q, z, steps = aim_rate(run, rate_bits, side, config.rate_iters)
    nominal, scale, kind = None, steps, "entropy"
  else:  # a min–max grid whose bit width is the traced ``levels``
    side = levels["side"]
    q, z, _ = sic(wp, u, grid.with_levels(levels), None, config.block_size)
    nominal, scale, kind = levels["bits"], None, "nominal"
  if config.act_order:
    q, z = q[inv], z[inv]
  return q, make_report(w, q, h, z, side, nominal, scale, rate=kind, feature_bits=_row_entropy_bits(z))
