"""Nested-lattice codes with SIC error feedback (NestQuant's weight path; QuIP#'s LDLQ).

Layout as everywhere in ``rdq.layer``: ``W ∈ R^{n×m}`` (n input features, m output
features), ``H = E[x xᵀ]`` ``(n, n)``. A lattice *block* is ``d`` consecutive input features
of one output feature, ``W[i:i+d, j]`` (E8: d = 8), exactly the block ``rtn`` with the same
registry quantizer rounds (it acts on ``Wᵀ``, whose last axis is the input features).

**Scale.** Each output feature ``j`` gets one RMS scale ``s_j = ‖W[:, j]‖/√n`` of the
*original* weights, stored in the quantizer's ``norm`` format (NestQuant normalizes every
weight row to norm ``√n`` and keeps the norm; ``bits(norm)/n`` per weight). Without ``norm``,
``s_j = 1``.

**SIC pass** (``rdq.layer._sic.sic`` with ``vec_dim = d``). Blocks ``P`` of d features are
visited in order; the current (error-updated) rows are divided by ``s``, each d-vector is
rounded by the nested-lattice quantizer (Voronoi code ``Λ/qΛ``, β chosen per block by least
**Euclidean** error, as NestQuant's ``try_all``), and the error is fed forward with the block
recursion of GPTQ,

.. math::
   U_{PP}^\\top E_P = W_P - Q_P, \\qquad W_j \\leftarrow W_j - U_{Pj}^\\top E_P\\quad (j > P),

so ``W − Q = UᵀE`` and ``tr((W−Q)ᵀH_d(W−Q)) = ‖E‖²_F`` (``H_d^{-1} = UᵀU``). This is the
block-LDL feedback of LDLQ with block size d (QuIP#, NestQuant), run first-to-last with the
Cholesky factor of ``H_d^{-1}`` instead of last-to-first with the LDL of ``H``: the same
recursion on the reversed feature order. With a diagonal H there is no feedback and the result
equals ``rtn`` with the same quantizer bit for bit.

**Rotation** (``rotate=True``, incoherence processing as in QuIP/QuIP#/NestQuant). With a
random orthogonal ``Q`` drawn from an explicit key (``rotation="haar"``:
``rdq.covariance.haar_orthogonal``; ``"hadamard"``: ``rdq.layer.hadamard``) the
layer ``y = Wᵀx`` is quantized in the rotated input basis, ``W' = QᵀW``, ``H' = QᵀHQ``, and
``Ŵ = QŴ'``; the distortion is basis-free, ``tr((W−Ŵ)ᵀH(W−Ŵ)) = tr((W'−Ŵ')ᵀH'(W'−Ŵ'))``, and
the column norms (hence the scales) are unchanged. It spreads outlier weights (MiniLM's FFN
output layers have single weights 80–175× their RMS), which otherwise overload every β of the
code. The rotation is free in rate (a shared seed). A dense Haar ``Q`` costs an ``n × n``
product on the activations at inference; ``rotation="hadamard"`` uses the randomized Hadamard
transform instead (``rdq.layer.hadamard``, ``O(n log n)``, as NestQuant and QuIP#).

``feedback=False`` drops the SIC feedback (``U = I``): round-to-nearest in the (possibly
rotated) basis, equal to ``rtn`` with the same quantizer when not rotated.

**QA-LDLQ** (``act_noise = ε²/mean(diag H) > 0``; NestQuant's "quantization-aware LDLQ").
When the layer's *inputs* are quantized too (NestQuant quantizes weights, activations and KV
cache), the layer computes ``ŴᵀX̂`` with ``X̂ = X + Z``; model the activation error as white,
``E[ZZᵀ] = ε²I`` and independent of X. The output error is then

.. math::
   D_ε(Ŵ) = \\mathrm{tr}\\big((W−Ŵ)^\\top H (W−Ŵ)\\big) + ε^2 \\|Ŵ\\|_F^2
          = \\mathrm{tr}\\big((W_ε−Ŵ)^\\top H_ε (W_ε−Ŵ)\\big)
            + ε^2\\,\\mathrm{tr}\\big(W^\\top H H_ε^{-1} W\\big),

with ``H_ε = H + ε²I`` and ``W_ε = H_ε^{-1} H W = W − ε² H_ε^{-1} W`` (complete the square),
so LDLQ on the pair ``(W_ε, H_ε)`` minimizes ``D_ε`` (the shrinkage is the Wiener/LMMSE
correction for noisy inputs). The substitution commutes with the rotation (ε²I is rotation
invariant) and is done before it. ``LayerReport.d_per_entry`` stays the clean
``tr((W−Ŵ)ᵀH(W−Ŵ))/(nm)``; ``noisy_input_distortion`` gives ``D_ε/(nm)``.

*Source and check.* The paper's QA-LDLQ section could not be read here (the reachable copies of
arXiv 2502.09720 hold only its abstract), so this follows the authors' reference code,
github.com/eitanporat/nestquant at commit 6b269f8: ``parallel/quant_utils.py::quantsim``
(argument ``eps``) replaces the weights ``X`` (``(out, in)``) by ``X(I − ε²(H + ε²I)^{-1})``
and ``H`` by ``H + ε²I`` before the row normalization, the Hadamard rotation and block LDLQ —
the transpose of ``W_ε`` above, in the same order as here; ``parallel/w_quant.py`` sets
``ε² = x_var/eps_cons`` with ``eps_cons = 155`` ("estimates ‖x‖²/‖q(x)−x‖²", the 4-bit
activation quantizer's SNR) and ``parallel/err.py`` measures ``x_var`` as the mean squared
activation entry, i.e. ``mean(diag H)`` for ``H = E[x xᵀ]``: rdq's ``act_noise = 1/155``
(``tests/layer/test_lattice_sic.py::test_qa_ldlq_matches_the_reference_code_form``).
Differences, none a change of QA-LDLQ itself: (i) the reference damps the rotated ``H_ε`` with
a fixed ``100·I`` (absolute, in its activation units), rdq with ``percdamp·mean(diag H_ε)``;
(ii) a later reference script (``parallel/sequential_quantize.py``, commit 2fa1218) uses a
measured, non-white noise covariance ``J`` (``X ← XH(H+J)^{-1}``, ``H ← H + J``, with ``J`` the
quantized-model Hessian minus the clean one); rdq has the white ``J = ε²I`` only.

**Rate** (bits per weight, side information counted, fixed length): the quantizer's
``rate((m, n))`` — ``log2 q`` for the Voronoi coordinates, ``log2(k)/d`` for the β indices
(enumerated jointly over a row) and ``bits(norm)/n`` for the scale; the same as ``rtn``.

References:
  K. Savkin, E. Porat, O. Ordentlich, Y. Polyanskiy, "NestQuant: nested lattice quantization
  for matrix products and LLMs", ICML 2025 (PMLR 267:53042–53062), arXiv 2502.09720 (E8
  Voronoi codes with k scales, per-row norm, LDLQ with 8×8 block LDL for the weights,
  QA-LDLQ); reference code github.com/eitanporat/nestquant (``parallel/quant_utils.py``,
  ``parallel/w_quant.py``, ``parallel/err.py``).
  A. Tseng, J. Chee, Q. Sun, V. Kuleshov, C. De Sa, "QuIP#", ICML 2024, arXiv 2402.04396
  (block LDLQ with E8 codebooks). E. Frantar et al., "GPTQ", ICLR 2023, Algorithm 1.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.covariance import haar_orthogonal
from rdq.layer._sic import damp_hessian, inverse_cholesky_upper, sic
from rdq.layer.hadamard import randomized_hadamard
from rdq.layer.report import LayerReport, check_layer_inputs, concrete_rate, layer_distortion, make_report
from rdq.quantizers import NestedLatticeQuantizer
from rdq.quantizers import get as get_quantizer

__all__ = ["LatticeSICConfig", "lattice_for_budget", "lattice_sic", "lattice_sic_traced", "noisy_input_distortion"]

HIGHEST = jax.lax.Precision.HIGHEST
ROTATIONS = ("haar", "hadamard")


@dataclasses.dataclass(frozen=True)
class LatticeSICConfig:
  """Nested-lattice SIC hyperparameters (hashable; a static ``jit`` argument).

  Attributes:
    quantizer: registry name of a nested-lattice quantizer without dither, e.g.
      ``"e8_nested_q8_norm"`` (``rdq.quantizers`` name grammar ``<lattice>_nested_q<q>…``).
    block_size: lazy-update block; a multiple of the lattice dimension.
    percdamp: damping relative to ``mean(diag H)`` (0.01 as GPTQ).
    feedback: SIC error feedback (False: round to nearest, no use of H).
    act_noise: QA-LDLQ's activation-noise variance relative to the mean input power,
      ``ε²/mean(diag H) ≥ 0`` (0: plain LDLQ; NestQuant's 4-bit activations: 1/155).
    rotate: quantize in a random rotated input basis (needs a PRNG key).
    rotation: the random rotation when ``rotate``: ``"haar"`` (dense Haar-random ``Q``,
      ``rdq.covariance.haar_orthogonal``) or ``"hadamard"`` (randomized Hadamard transform,
      ``rdq.layer.hadamard``; ``O(n log n)`` per vector, n signs of storage).
  """

  quantizer: str = "e8_nested_q8_norm"
  block_size: int = 128
  percdamp: float = 0.01
  feedback: bool = True
  rotate: bool = False
  rotation: str = "haar"
  act_noise: float = 0.0

  def __post_init__(self):
    q = get_quantizer(self.quantizer)  # ValueError for unknown names
    if not isinstance(q, NestedLatticeQuantizer):
      raise ValueError(f"quantizer={self.quantizer!r} is a {type(q).__name__}; lattice SIC needs a nested-lattice name")
    if q.dither:
      raise ValueError(f"quantizer={self.quantizer!r}: dithered codes are not supported by lattice SIC")
    if not isinstance(self.block_size, int) or self.block_size < 1 or self.block_size % q.dim:
      raise ValueError(f"block_size={self.block_size!r} must be a positive multiple of the lattice dimension {q.dim}")
    if not (isinstance(self.percdamp, (int, float)) and self.percdamp >= 0):
      raise ValueError(f"percdamp={self.percdamp!r} must be ≥ 0")
    for name in ("feedback", "rotate"):
      if not isinstance(getattr(self, name), bool):
        raise TypeError(f"{name}={getattr(self, name)!r} must be a bool")
    if not (isinstance(self.act_noise, (int, float)) and not isinstance(self.act_noise, bool)
            and 0 <= self.act_noise < float("inf")):
      raise ValueError(f"act_noise={self.act_noise!r} must be a finite float ≥ 0 (ε²/mean diag H)")
    if self.rotation not in ROTATIONS:
      raise ValueError(f"rotation={self.rotation!r} must be one of {ROTATIONS}")

  @property
  def lattice_quantizer(self) -> NestedLatticeQuantizer:
    return get_quantizer(self.quantizer)


@dataclasses.dataclass(frozen=True)
class _LatticeGrid:
  """SIC grid: d input features of every output feature rounded jointly to the nested code."""

  quant: NestedLatticeQuantizer
  group_size = None

  @property
  def vec_dim(self) -> int:
    return self.quant.dim

  def fit(self, w: Float[Array, "n m"]):
    """Per-output-feature RMS scale of the original W, ``(m, 1)`` in float32 (1 without norm)."""
    s = self.quant._scale(w.T)
    return jnp.ones((w.shape[1], 1), jnp.float32) if s is None else s.astype(jnp.float32)

  def quantize(self, rows: Float[Array, "d m"], s, feats):
    del feats
    plain = dataclasses.replace(self.quant, norm=None)
    y = rows.T / jnp.where(s > 0, s, 1.0)  # (m, d): one lattice block per output feature
    code = plain._encode(y, None)
    q = plain.decode(code) * s
    return q.T, code.codes.T.astype(jnp.int32), jnp.zeros(rows.shape[:1], jnp.float32)


def lattice_sic(
    w: Float[Array, "n m"],
    h: Float[Array, "n n"],
    config: LatticeSICConfig = LatticeSICConfig(),
    key: PRNGKeyArray | None = None,
) -> tuple[Float[Array, "n m"], LayerReport]:
  """Quantize ``W`` to a nested-lattice code with SIC error feedback under ``H`` (module docstring).

  Args:
    w: ``(n, m) = (in_features, out_features)`` weights; n a multiple of the lattice dimension.
    h: ``(n, n)`` symmetric PSD ``E[x xᵀ]`` (undamped; used as is for the distortion).
    config: ``LatticeSICConfig``.
    key: PRNG key of the rotation; required iff ``config.rotate`` (else unused).

  Returns:
    ``(Ŵ, report)``: ``Ŵ`` in float32 and a ``LayerReport``; ``rate_nominal_bits`` is the
    quantizer's fixed-length rate incl. β indices and scales, ``codes`` the Voronoi
    coordinates in ``[0, q)``.

  Raises:
    ValueError: bad W/H (shape, non-symmetric, non-PSD, non-finite, singular with
      ``percdamp = 0`` and feedback on), n not a multiple of the lattice dimension, or a
      missing key with ``rotate``.
  """
  from rdq.layer.registry import LayerAlgorithm

  return LayerAlgorithm("lattice_sic", config)(w, h, key=key)


def lattice_for_budget(config: LatticeSICConfig, n: int, m: int, rate_bits: float) -> LatticeSICConfig:
  """``config`` with the largest Voronoi modulus q whose rate on an ``(n, m)`` layer is ≤ ``rate_bits``.

  The quantizer name keeps its lattice, β count and scale (``e8_nested_q8_k4_norm`` →
  ``e8_nested_q<q>_k4_norm``); the rate counts ``log2 q`` per coordinate, the β indices and
  the scale (``quantizer.rate((m, n)).effective``).
  """
  name = config.quantizer
  if not re.search(r"_q\d+", name):
    raise ValueError(f"quantizer={name!r} has no _q<modulus> to size for rate_bits={rate_bits}")

  def with_q(q):
    return re.sub(r"_q\d+", f"_q{q}", name, count=1)

  def rate(q):
    return get_quantizer(with_q(q)).rate((m, n)).effective

  if rate(2) > rate_bits + 1e-9:
    raise ValueError(
        f"rate_bits={rate_bits!r} is below the smallest code {with_q(2)!r} ({rate(2):.4g} bits) of an ({n}, {m}) layer"
    )
  q = 2
  while rate(q + 1) <= rate_bits + 1e-9:
    q += 1
  return dataclasses.replace(config, quantizer=with_q(q))


def _check(w, h, config: LatticeSICConfig, key, rate_bits=None) -> None:
  """Eager checks of ``lattice_sic`` (skipped for tracers)."""
  if rate_bits is not None and np.ndim(w) == 2 and not isinstance(rate_bits, jax.core.Tracer):
    config = lattice_for_budget(config, *np.shape(w), concrete_rate(rate_bits, "lattice_sic"))
  check_layer_inputs(w, h, config.percdamp if config.feedback else None)
  config.lattice_quantizer.rate((w.shape[1], w.shape[0]))  # raises if d does not divide n
  if config.rotate and key is None:
    raise ValueError("rotate=True needs a PRNG key for the rotation (key=jax.random.key(…))")


def noisy_input_distortion(
    w: Float[Array, "n m"], w_hat: Float[Array, "n m"], h: Float[Array, "n n"], act_noise: float
) -> Float[Array, ""]:
  """``D_ε/(nm) = [tr((W−Ŵ)ᵀH(W−Ŵ)) + ε²‖Ŵ‖²_F]/(nm)``, ``ε² = act_noise·mean(diag H)``: the
  output MSE per entry of ``ŴᵀX̂`` against ``WᵀX`` with white activation noise (QA-LDLQ's
  objective, module docstring)."""
  eps2 = act_noise * jnp.mean(jnp.diagonal(h))
  return layer_distortion(w, w_hat, h) + eps2 * jnp.sum(jnp.square(w_hat.astype(jnp.float32))) / w.size


class _HaarRotation(NamedTuple):
  """The basis change ``x ↦ Qᵀx`` of a dense Haar ``Q`` (interface of ``RandomizedHadamard``)."""

  q: Float[Array, "n n"]

  def forward(self, x):
    return jnp.matmul(self.q.T, x, precision=HIGHEST)

  def inverse(self, x):
    return jnp.matmul(self.q, x, precision=HIGHEST)

  def rotate_hessian(self, h):
    g = jnp.matmul(jnp.matmul(self.q.T, h, precision=HIGHEST), self.q, precision=HIGHEST)
    return 0.5 * (g + g.T)


def _rotation(kind: str, key, n: int):
  """The input-basis rotation ``Q`` of ``config.rotation`` drawn from ``key``."""
  if kind == "hadamard":
    return randomized_hadamard(key, n)
  return _HaarRotation(haar_orthogonal(key, n))


def _split(config: LatticeSICConfig, n: int, m: int, rate_bits=None) -> tuple[LatticeSICConfig, dict]:
  """``(structure, scalars)`` of ``LayerAlgorithm.split``: the config sized for a concrete budget
  (``lattice_for_budget``), with ``percdamp``, ``act_noise`` and ``feedback`` moved to traced scalars."""
  if rate_bits is not None:
    config = lattice_for_budget(config, n, m, concrete_rate(rate_bits, "lattice_sic"))
  structure = dataclasses.replace(config, percdamp=0.0, act_noise=0.0, feedback=True)
  return structure, {"percdamp": np.float32(config.percdamp), "act_noise": np.float32(config.act_noise),
                     "feedback": np.bool_(config.feedback)}


def lattice_sic_traced(w, h, config: LatticeSICConfig, key=None, *, rate_bits=None, scalars=None):
  """The lattice-SIC core: float32 ``w`` and ``h``, no checks (jit-able, vmappable over ``w``, ``h``, ``key``).

  ``rate_bits`` (concrete, bits per weight incl. β indices and scale) picks the largest
  modulus q within it (``lattice_for_budget``); ``None`` keeps the config's quantizer.
  ``scalars`` (from ``LayerAlgorithm.split``, may be traced): ``percdamp``, ``act_noise`` and
  ``feedback`` instead of the config's.
  """
  if scalars is None:
    config, scalars = _split(config, w.shape[0], w.shape[1], rate_bits)
  # percdamp, act_noise and feedback enter as traced scalars: RTN, LDLQ, damped LDLQ and QA-LDLQ
  # with one quantizer and rotation share one compiled program.
  structure = dataclasses.replace(config, percdamp=0.0, act_noise=0.0, feedback=True)
  return _lattice_sic(w, h, structure, key, jnp.float32(scalars["percdamp"]), jnp.float32(scalars["act_noise"]),
                      jnp.asarray(scalars["feedback"], jnp.bool_))


@functools.partial(jax.jit, static_argnames="config")
def _lattice_sic(w, h, config: LatticeSICConfig, key, percdamp, act_noise, feedback):
  n, m = w.shape
  quant = config.lattice_quantizer

  def shrink(wh):  # QA-LDLQ: LDLQ on (W_ε, H_ε) (module docstring)
    w, h = wh
    eps2 = act_noise * jnp.mean(jnp.diagonal(h))
    h_eps = h + eps2 * jnp.eye(n, dtype=h.dtype)
    chol = jnp.linalg.cholesky(h_eps)
    return w - eps2 * jax.scipy.linalg.cho_solve((chol, True), w), h_eps

  w_in, h_in = jax.lax.cond(act_noise > 0, shrink, lambda wh: wh, (w, h))
  if config.rotate:
    rot = _rotation(config.rotation, key, n)
    w_in = rot.forward(w_in)
    h_in = rot.rotate_hessian(h_in)
  # Without feedback U = I: the SIC's feed-forward then adds exact zeros to the later rows, so the
  # pass is round-to-nearest bit for bit, with the same program as LDLQ.
  u = jax.lax.cond(feedback, lambda h: inverse_cholesky_upper(damp_hessian(h, percdamp)),
                   lambda h: jnp.eye(n, dtype=jnp.float32), h_in)
  # a block that divides n avoids the core's zero padding (the result does not depend on it)
  bs = config.block_size if n % min(config.block_size, n) == 0 else quant.dim
  q, z, _ = sic(w_in, u, _LatticeGrid(quant), None, bs)
  if config.rotate:
    q = rot.inverse(q)
  r = quant.rate((m, n))
  return q, make_report(w, q, h, z, r.side, r.nominal)
