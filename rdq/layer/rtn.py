"""Round-to-nearest (RTN) weight quantization: no use of H except to score the result.

Groups run along the **input features**, as in GPTQ: the registered scalar quantizers act on
the last axis, so rdq quantizes ``Wᵀ`` (shape ``(m, n)``) and transposes back; e.g.
``"int4_block32"`` gives each output feature one scale per 32 consecutive input features.

References:
  The RTN baseline of Frantar et al., "GPTQ", ICLR 2023 (``--nearest``); Dettmers et al.,
  "LLM.int8()", 2022 (absmax scaling).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.layer._sic import MinMaxGrid, StepGrid, UniformGrid, high_rate_step
from rdq.layer.gptq import aim_rate, coded_entropy_bits
from rdq.layer.report import LayerReport, check_layer_inputs, concrete_rate, make_report
from rdq.quantizers import get as get_quantizer

__all__ = ["RTNConfig", "rtn", "rtn_traced"]


@dataclasses.dataclass(frozen=True)
class RTNConfig:
  """Which grid RTN rounds to.

  Attributes:
    quantizer: a registered quantizer name (``rdq.quantizers.names()``, e.g. ``"int4_row"``,
      ``"nvfp4"``), or GPTQ's ``MinMaxGrid`` / ``UniformGrid`` (so RTN and GPTQ can be
      compared on the same grid).
    rate_iters: ``UniformGrid`` only: secant refinements of the step so that the measured
      entropy plus side information meets the rate (``rdq.layer.gptq.aim_rate``). 0: the
      high-rate rule alone.
  """

  quantizer: str | MinMaxGrid | UniformGrid = "int4_row"
  rate_iters: int = 0

  def __post_init__(self):
    q = self.quantizer
    if isinstance(q, str):
      get_quantizer(q)  # raises ValueError for unknown names
    elif not isinstance(q, (MinMaxGrid, UniformGrid)):
      raise TypeError(f"quantizer must be a registry name, MinMaxGrid or UniformGrid; got {type(q).__name__}")
    if not isinstance(self.rate_iters, int) or isinstance(self.rate_iters, bool) or self.rate_iters < 0:
      raise ValueError(f"rate_iters={self.rate_iters!r} must be an integer ≥ 0")

  @property
  def group_size(self) -> int | None:
    return self.quantizer.group_size if isinstance(self.quantizer, MinMaxGrid) else None


def rtn(
    w: Float[Array, "n m"],
    h: Float[Array, "n n"],
    config: RTNConfig = RTNConfig(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "n m"], LayerReport]:
  """Round ``W`` to the grid, independently per entry; score it under ``H``.

  Same as ``rdq.layer.get("rtn", …)(w, h, key=key)`` with this config (eager checks, scale
  normalization). Args: ``w`` ``(n, m) = (in_features, out_features)``; ``h`` ``(n, n)`` PSD
  ``E[x xᵀ]``, used only for the reported distortion; ``key`` for randomized registry
  quantizers (dithered ones). Returns ``(Ŵ, report)``; for registry quantizers the codes are
  the ``encode`` integers (FP element codes are their bit patterns) and the side bits come
  from ``quantizer.rate``.
  """
  from rdq.layer.registry import LayerAlgorithm

  return LayerAlgorithm("rtn", config)(w, h, key=key)


def _check(w, h, config: RTNConfig, key, rate_bits=None) -> None:
  """Eager checks of ``rtn`` (skipped for tracers): W/H, group and block sizes dividing n."""
  del key, rate_bits  # the core sizes the grid (and raises) for a budget
  check_layer_inputs(w, h, None, config.group_size)  # RTN never factors H
  if isinstance(config.quantizer, str):
    get_quantizer(config.quantizer).rate((w.shape[1], w.shape[0]))  # raises if a block size does not divide n


def _split(config: RTNConfig, n: int, m: int, rate_bits=None) -> tuple[RTNConfig, dict] | None:
  """``LayerAlgorithm.split`` of a min–max grid (as ``rdq.layer.gptq._split``); None otherwise."""
  if not isinstance(config.quantizer, MinMaxGrid):
    return None
  budget = None if rate_bits is None else concrete_rate(rate_bits, "rtn on a min–max grid")
  grid, levels = config.quantizer.split(n, m, budget)
  return RTNConfig(grid, config.rate_iters), levels


def rtn_traced(w, h, config: RTNConfig, key=None, *, rate_bits=None, scalars=None):
  """The RTN core: float32 ``w`` and ``h``, no checks (jit-able, vmappable over ``w``, ``h``, ``key``).

  ``rate_bits`` (bits per weight incl. side information) overrides the config's rate: for a
  ``MinMaxGrid`` the most bits within it (concrete), for a ``UniformGrid`` the entropy target
  (may be traced, so a rate sweep compiles once); a registry quantizer has a fixed rate, which
  must be within it. ``None``: the config's own. ``scalars`` (from ``LayerAlgorithm.split``,
  may be traced): a min–max grid's bit width, instead of the config's (one program for every
  bit width).
  """
  grid = config.quantizer
  n, m = w.shape
  rate = 0.0
  levels = None
  if isinstance(grid, UniformGrid):
    rate = grid.rate_bits if rate_bits is None else rate_bits
    config = RTNConfig(UniformGrid(1.0), config.rate_iters)
  elif isinstance(grid, MinMaxGrid):
    if scalars is None:
      config, scalars = _split(config, n, m, rate_bits)
    levels = {k: jnp.float32(v) for k, v in scalars.items()}
  elif isinstance(grid, str) and rate_bits is not None:
    budget = concrete_rate(rate_bits, f"rtn with quantizer {grid!r}")
    have = get_quantizer(grid).rate((m, n)).effective
    if have > budget + 1e-9:
      raise ValueError(f"rate_bits={rate_bits!r} is below the rate {have:.4g} of quantizer {grid!r} on an ({n}, {m}) layer")
  return _rtn(w, h, jnp.asarray(rate, jnp.float32), config, key, levels)


@functools.partial(jax.jit, static_argnums=3)
def _rtn(w, h, rate_bits, config: RTNConfig, key, levels):
  n, m = w.shape
  grid = config.quantizer
  if isinstance(grid, MinMaxGrid):  # its bit width is the traced ``levels``
    g = grid.group_size or n
    levels_grid = grid.with_levels(levels)
    wg = w.reshape(n // g, g, m)
    params = jax.vmap(levels_grid.fit)(wg)
    quant_rows = jax.vmap(lambda rows, p: jax.vmap(lambda r: levels_grid.quantize(r, p)[:2])(rows))
    q, z = quant_rows(wg, params)
    return q.reshape(n, m), make_report(w, q.reshape(n, m), h, z.reshape(n, m), levels["side"], levels["bits"])
  if isinstance(grid, UniformGrid):
    side = grid.side_bits(n, m)

    def run(r):
      step = high_rate_step(w, r)
      q, z, _ = jax.vmap(lambda row: StepGrid().quantize(row, (), step))(w)
      return (q, z, step), coded_entropy_bits(z, side)

    q, z, step = aim_rate(run, rate_bits, side, config.rate_iters)
    return q, make_report(w, q, h, z, side, None, jnp.full((n,), step), rate="entropy")
  quant = get_quantizer(grid)
  wt_hat = quant.quantize(w.T, key=key)
  if hasattr(quant, "encode"):
    raw = quant.encode(w.T).codes
    codes = raw.astype(jnp.int32) if jnp.issubdtype(raw.dtype, jnp.integer) else jax.lax.bitcast_convert_type(
        raw.astype(jnp.float32), jnp.int32)
  else:  # distinct reconstruction values ↔ distinct codes within an input feature
    codes = jax.lax.bitcast_convert_type(wt_hat.astype(jnp.float32), jnp.int32)
  r = quant.rate(w.T.shape)
  return wt_hat.T, make_report(w, wt_hat.T, h, codes.T, r.side, r.nominal)
