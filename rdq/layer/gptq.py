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

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

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

__all__ = ["GPTQConfig", "gptq", "gptq_traced"]


@dataclasses.dataclass(frozen=True)
class GPTQConfig:
  """GPTQ hyperparameters (hashable; a static ``jit`` argument).

  Attributes:
    grid: ``MinMaxGrid(bits, sym, group_size)`` (GPTQ's own) or ``UniformGrid(rate_bits)``.
    block_size: lazy-update block (128 in the paper); with groups, one of ``block_size``
      and ``group_size`` must divide the other.
    percdamp: damping relative to ``mean(diag H)`` (0.01 in the paper).
    act_order: process input features by decreasing ``diag H``.
  """

  grid: MinMaxGrid | UniformGrid = MinMaxGrid(bits=4)
  block_size: int = 128
  percdamp: float = 0.01
  act_order: bool = False

  def __post_init__(self):
    if not isinstance(self.grid, (MinMaxGrid, UniformGrid)):
      raise TypeError(f"grid must be a MinMaxGrid or UniformGrid; got {type(self.grid).__name__}")
    if not isinstance(self.block_size, int) or self.block_size < 1:
      raise ValueError(f"block_size={self.block_size!r} must be a positive integer")
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


def gptq_traced(w, h, config: GPTQConfig, key=None, *, rate_bits=None):
  """The GPTQ core: float32 ``w`` and ``h``, no checks (jit-able, vmappable over ``w`` and ``h``).

  ``rate_bits`` (bits per weight incl. side information) overrides the grid's rate: for a
  ``MinMaxGrid`` the most bits within it (concrete), for a ``UniformGrid`` the entropy
  target (may be traced, so a rate sweep compiles once). ``None``: the grid's own.
  """
  del key
  n, m = w.shape
  if isinstance(config.grid, UniformGrid):
    rate = config.grid.rate_bits if rate_bits is None else rate_bits
    config = dataclasses.replace(config, grid=UniformGrid(1.0))
  else:
    if rate_bits is not None:
      grid = config.grid.for_budget(concrete_rate(rate_bits, "gptq on a min–max grid"), n, m)
      config = dataclasses.replace(config, grid=grid)
    rate = 0.0
  return _gptq(w, h, jnp.asarray(rate, jnp.float32), config)


@functools.partial(jax.jit, static_argnums=3)
def _gptq(w, h, rate_bits, config: GPTQConfig):
  n, m = w.shape
  grid = config.grid
  if config.act_order:
    perm = jnp.argsort(-jnp.diagonal(h), stable=True)
    inv = jnp.argsort(perm)
    wp, hp = w[perm], h[perm][:, perm]
  else:
    wp, hp = w, h
  u = inverse_cholesky_upper(damp_hessian(hp, config.percdamp))
  side = grid.side_bits(n, m)
  if isinstance(grid, UniformGrid):
    step = high_rate_step(w, rate_bits - side)
    steps = jnp.full((n,), step, jnp.float32)
    q, z, _ = sic(wp, u, StepGrid(lmmse=False), steps, config.block_size)
    nominal, scale, kind = None, steps, "entropy"
  else:
    q, z, _ = sic(wp, u, grid, None, config.block_size)
    nominal, scale, kind = grid.bits, None, "nominal"
  if config.act_order:
    q, z = q[inv], z[inv]
  return q, make_report(w, q, h, z, side, nominal, scale, rate=kind)
