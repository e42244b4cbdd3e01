"""Shared numerics for scalar-quantizer predictions: block-maximum law and grids.

For a block of g iid N(0, 1) entries, the largest magnitude M has CDF ``erf(m/√2)^g`` and
density ``p_g(m) = g · erf(m/√2)^(g-1) · 2φ(m)``; given M, the other g − 1 magnitudes are
iid half-normal truncated to [0, M]. Everything here is float64 NumPy (these are
closed-form evaluations, not traced code).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from scipy import special

from rdq.quantizers.fp import FPQuantizer, format_grid
from rdq.quantizers.integer import IntQuantizer

SQRT2 = np.sqrt(2.0)


def phi(x):
  return np.exp(-0.5 * x * x) / np.sqrt(2.0 * np.pi)


def Phi(x):
  return 0.5 * special.erfc(-x / SQRT2)


def max_grid(g: int, num: int = 20000) -> tuple[np.ndarray, np.ndarray]:
  """Quadrature nodes ``m`` and weights ``w`` (summing to 1) for the law of M."""
  lo = 0.0
  # the law of M concentrates near sqrt(2 ln g); cover far into both tails
  hi = 9.0 + np.sqrt(2.0 * np.log(max(g, 2)))
  m = np.linspace(lo, hi, num)
  erf = special.erf(m / SQRT2)
  with np.errstate(divide="ignore"):
    log_cdf_pow = (g - 1) * np.log(np.maximum(erf, 1e-300))
  dens = g * np.exp(log_cdf_pow) * 2.0 * phi(m)
  if g == 1:
    dens = 2.0 * phi(m)
  w = dens * np.gradient(m)
  return m, w / w.sum()


@dataclasses.dataclass(frozen=True)
class ScalarModel:
  """A scalar quantizer seen as ``x ↦ X(M) · G[k(x/X)]`` for a block with maximum M.

  Attributes:
    group: entries sharing one scale (None: no scale, elementwise on N(0, 1)).
    levels: non-negative element levels G (ascending; symmetric grid).
    scale: function of the block maxima array ``m`` returning the multiplier ``X(m)``.
    man_bits, e_min: for FP element grids (Bennett step), else None.
  """

  group: int | None
  levels: np.ndarray
  scale: object
  man_bits: int | None = None
  e_min: int | None = None


def scalar_model(q, shape: tuple[int, ...]) -> ScalarModel:
  """Describe an INT or FP quantizer (as applied to an array of ``shape``) as a ScalarModel."""
  shape = tuple(int(d) for d in shape)
  numel = int(np.prod(shape))
  if isinstance(q, IntQuantizer):
    group = {"tensor": numel, "row": shape[-1], "block": q.block_size}[q.granularity]
    levels = np.arange(q.q_max + 1, dtype=np.float64)

    def scale(m):
      return np.asarray(q.scale_from_amax(jnp.asarray(m, jnp.float32)), np.float64)

    return ScalarModel(group, levels, scale)
  if isinstance(q, FPQuantizer):
    fmt = q.fmt
    levels = format_grid(fmt)
    if q.block_size is None:
      return ScalarModel(None, levels, lambda m: np.ones_like(m), fmt.man_bits, fmt.e_min)
    t = 1.0
    if q.tensor_scale:
      # The tensor scale depends on the tensor's maximum; use its median (erf(T/√2)^numel = ½).
      big = fmt.max_value * float(jnp.finfo(jnp.float8_e4m3fn).max)
      t_max = SQRT2 * special.erfinv(0.5 ** (1.0 / numel))
      t = np.float32(t_max / big)

    def scale(m):
      s = np.asarray(q.block_scale(jnp.asarray(np.asarray(m, np.float32) / t, jnp.float32)), np.float64)
      return s * t

    return ScalarModel(q.block_size, levels, scale, fmt.man_bits, fmt.e_min)
  raise TypeError(f"no scalar model for {type(q).__name__}; INT and FP quantizers are supported")


def cells(levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Decision intervals ``[lo_k, hi_k)`` (in element units) of nearest-level rounding on
  the positive half-line; the top cell extends to +inf (saturation)."""
  mids = 0.5 * (levels[1:] + levels[:-1])
  lo = np.concatenate([[0.0], mids])
  hi = np.concatenate([mids, [np.inf]])
  return lo, hi
