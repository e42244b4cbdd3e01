"""Universal codebooks: one codebook for every Σ_X, with Σ-aware nearest-codeword encoding.

Setting (Harbuzova, Ordentlich & Polyanskiy 2026, notation of the paper). A weight vector
``w ∈ Rⁿ`` (one output feature's column of ``W ∈ R^{n×m}``, n input features) has iid
``N(0, 1)`` entries. A codebook ``C ⊂ Rⁿ`` of ``|C| = 2^{nR}`` points is fixed in advance,
without knowledge of the activation covariance ``Σ = Σ_X``. The encoder knows Σ and picks

.. math::
   \\hat c(w) = \\arg\\min_{c \\in C} (w - c)^\\top Σ (w - c), \\qquad
   D_C(Σ) = \\frac1n\\, \\mathbb{E}\\,(w - \\hat c)^\\top Σ (w - \\hat c).

The comparison is reverse waterfilling ``rdq.limits.waterfill`` on ``eig(Σ)``: the **rate gap**
of C at Σ is ``R − R_wf(D_C(Σ))``, the rate an X-adapted codebook would save at the same
distortion. The paper proves that *some* C has rate gap ``≤ 0.11`` bit for every Σ as
``n → ∞`` (non-constructively; its random-coding proof uses an isotropic Gaussian codebook with
an encoder-selected scale τ). ``rdq.limits.universal`` evaluates that asymptotic random-coding
gap; this module measures finite-n codebooks.

**Encoder-selected scale.** As in the paper, the encoder may also pick a scale τ for the whole
codebook per Σ (``encode(w, sigma, scale=τ)`` uses ``τ·C``). Σ is shared by the m output
features of a layer, so τ costs ``log2(#scales)/(n·m)`` bits per entry: it vanishes as m grows
and is not counted in ``rate``.

**Constructions** (each returns a frozen dataclass with ``points``, ``rate``, ``encode``):

* ``gaussian_codebook`` — iid ``N(0, c)`` codewords (the paper's random code);
* ``sphere_codebook`` — iid uniform on the sphere of the typical radius ``√(n c)``;
* ``lattice_codebook`` — the ``2^{nR}`` points of Zⁿ / Dₙ / E8 nearest to the origin (the
  innermost shells, the last shell cut at random), randomly rotated (Haar);
* ``leech_codebook`` — n = 24: the origin and the 196 560 minimal vectors of the Leech lattice
  Λ24 (R = log2(196 561)/24 ≈ 0.7305 bit), randomly rotated;
* ``ProductCodebook`` — a small block codebook repeated over ``n/d`` blocks of input features,
  the practical baseline (``2^{nR}`` points with only ``2^{dR}`` stored);
* ``learn_minimax_codebook`` — points optimised with optax to minimise a smooth maximum
  (log-sum-exp) of the rate gap over a training batch of Σ, with a soft (softmax-weighted)
  nearest-codeword assignment annealed towards the hard one.

Default codeword power: ``c = 1 − 2^{−2R}`` per coordinate, the reconstruction variance of the
Shannon test channel for ``N(0, 1)`` at rate R (the optimum at ``Σ = I``).

**Encoding** is exact: with ``u = Σw`` and ``q_c = cᵀΣc``, ``(w−c)ᵀΣ(w−c) = wᵀΣw + q_c − 2uᵀc``,
so the nearest codeword is ``argmin_c (q_c − 2uᵀc)``, computed over chunks of ``chunk``
codewords with a running minimum (``lax.scan``); the working memory is ``batch × chunk``
floats however large the codebook. Ties go to the lowest index. ``ProductCodebook`` encodes by
block successive interference cancellation (Babai's nearest plane on the Cholesky factor of Σ,
block by block, last block first): exact when Σ is block-diagonal over its blocks, otherwise the
practical (GPTVQ-like) heuristic; ``ProductCodebook.materialize()`` gives the exact joint search
where it fits in memory.

References:
  A. Harbuzova, O. Ordentlich, Y. Polyanskiy, "Price of (metric) universality in vector
  quantization is at most 0.11 bit", arXiv 2602.05790, COLT 2026 (PMLR 336:3143–3183), main
  theorem and its random-coding construction. Reverse waterfilling: Cover & Thomas, *Elements of
  Information Theory*, Thm. 10.3.3. Lattices and shells: Conway & Sloane, *SPLAG*, Ch. 4.
  Block SIC / nearest plane: L. Babai, "On Lovász' lattice reduction and the nearest lattice
  point problem", Combinatorica 6 (1986); van Baalen et al., "GPTVQ", arXiv 2402.15319.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Integer, PRNGKeyArray

from rdq.covariance import check_covariance, haar_orthogonal
from rdq.limits.waterfill import _wf_dist, _wf_rate
from rdq.montecarlo import Estimate
from rdq.quantizers.base import Rate
from rdq.quantizers.lattice import DnLattice, E8Lattice, Lattice, ZnLattice

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Codebook",
    "GapResult",
    "LearnConfig",
    "LearnHistory",
    "ProductCodebook",
    "gaussian_codebook",
    "lattice_codebook",
    "LEECH_SHELL_SIZES",
    "learn_minimax_codebook",
    "leech_codebook",
    "rate_gap",
    "shannon_power",
    "sphere_codebook",
]

DEFAULT_MAX_BYTES: int = 1 << 30
"""Memory budget (bytes) for a codebook's points and for one encoding chunk (1 GiB)."""

_F32 = 4
_HI = jax.lax.Precision.HIGHEST


def shannon_power(rate_bits: float) -> float:
  """``1 − 2^{−2R}``: per-coordinate power of the Shannon reconstruction of ``N(0,1)`` at rate R."""
  return 1.0 - 2.0 ** (-2.0 * rate_bits)


# ----------------------------------------------------------------------------- argument checks
def _check_rate(rate_bits) -> float:
  if isinstance(rate_bits, bool) or not isinstance(rate_bits, (int, float, np.floating, np.integer)):
    raise TypeError(f"rate_bits must be a real number; got {type(rate_bits).__name__}")
  if not math.isfinite(rate_bits) or rate_bits <= 0:
    raise ValueError(f"rate_bits={rate_bits!r} must be > 0 (bits per entry)")
  return float(rate_bits)


def _check_n(n) -> int:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n={n!r} must be a positive integer (input features per codeword)")
  return int(n)


def _num_points(n: int, rate_bits: float, max_bytes: int) -> int:
  """``2^{nR}`` rounded, refused when the float32 points would exceed ``max_bytes``."""
  log2_k = n * rate_bits
  if log2_k < 1.0 - 1e-9:
    raise ValueError(f"n·rate_bits = {n}·{rate_bits} = {log2_k:g} < 1: a codebook needs at least 2 points")
  need = (2.0 ** log2_k) * n * _F32
  if need > max_bytes:
    raise ValueError(
        f"a codebook of 2^(n·R) = 2^{log2_k:g} points × n={n} float32 needs {need / 2**30:.3g} GiB > "
        f"max_bytes={max_bytes / 2**30:.3g} GiB. Use ProductCodebook(block, num_blocks) (blocks of "
        f"d < n input features, 2^(d·R) points each), a smaller rate, or raise max_bytes; encoding "
        f"is already chunked over the codebook (chunk=…), storage is what does not fit.")
  k = int(round(2.0 ** log2_k))
  if abs(math.log2(k) - log2_k) > 1e-6:
    raise ValueError(f"2^(n·R) = 2^{log2_k:g} is not an integer number of points; choose R with n·R integral")
  return k


def _check_points(points) -> None:
  if isinstance(points, (list, tuple)):
    raise TypeError("points must be a (K, n) float array, not a Python sequence")
  if isinstance(points, jax.core.Tracer) or not isinstance(points, (np.ndarray, jax.Array)):
    return  # traced, or a placeholder leaf when JAX unflattens the pytree
  p = np.asarray(points)
  if p.ndim != 2 or p.shape[0] < 2 or p.shape[1] < 1:
    raise ValueError(f"points must be (K, n) with K ≥ 2 codewords; got shape {p.shape}")
  if not np.issubdtype(p.dtype, np.floating):
    raise TypeError(f"points must be a float array; got dtype {p.dtype}")
  if not np.all(np.isfinite(p)):
    raise ValueError("points must be finite")


def _check_w(w, n: int) -> Array:
  w = jnp.asarray(w)
  if w.ndim == 0 or w.shape[-1] != n:
    raise ValueError(f"w must have a last axis of length n={n} (the codebook dimension); got shape {w.shape}")
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"w must be a float array; got dtype {w.dtype}")
  return w.astype(jnp.float32)


def _check_sigma(sigma, n: int) -> Array:
  """Σ of shape (n, n) or a batch (S, n, n); each checked symmetric PSD when concrete."""
  if isinstance(sigma, jax.core.Tracer):
    return sigma
  s = np.asarray(sigma)
  if s.ndim not in (2, 3) or s.shape[-2:] != (n, n):
    raise ValueError(f"sigma must be ({n}, {n}) or a batch (S, {n}, {n}) matching the codebook dimension n={n}; "
                     f"got shape {s.shape}")
  for i, si in enumerate(s.reshape(-1, n, n)):
    check_covariance(si, name="Σ" if s.ndim == 2 else f"Σ[{i}]")
  return jnp.asarray(sigma, jnp.float32)


def _check_chunk(chunk, batch: int, max_bytes: int) -> None:
  if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
    raise ValueError(f"chunk={chunk!r} must be a positive integer (codewords scored at once)")
  need = 3 * batch * chunk * _F32  # scores and two temporaries
  if need > max_bytes:
    raise ValueError(f"encoding {batch} vectors against chunks of {chunk} codewords needs ~{need / 2**30:.3g} GiB > "
                     f"max_bytes={max_bytes / 2**30:.3g} GiB; use a smaller chunk or encode fewer vectors at once")


# ----------------------------------------------------------------------------- Σ-aware nearest codeword
_GROUP = 64  # codewords per group in the two-level argmin (see ``_nearest``)


def _chunk_argmin(u: Array, p: Array, qq: Array) -> tuple[Array, Array]:
  """``argmin_k (q_k − 2 uᵀp_k)`` over one chunk, and the minimum, for each row of u (B, n).

  XLA's variadic ``argmin`` reduction is slow on CPU, a plain ``min`` is fast; so the chunk's
  scores are reduced with ``min`` over groups of ``_GROUP`` codewords, the ``argmin`` runs over
  the small (B, chunk/_GROUP) array of group minima, and the winning group (one per row) is
  rescored for the ``argmin`` inside it. Ties go to the lowest index at both levels.
  """
  b = u.shape[0]
  c, n = p.shape
  scores = qq[None, :] - 2.0 * jnp.dot(u, p.T, precision=_HI)
  if c % _GROUP or c == _GROUP:
    j = jnp.argmin(scores, axis=-1)
    return j, jnp.take_along_axis(scores, j[:, None], axis=-1)[:, 0]
  g = c // _GROUP
  j1 = jnp.argmin(jnp.min(scores.reshape(b, g, _GROUP), axis=-1), axis=-1)
  ps = p.reshape(g, _GROUP, n)[j1]
  qs = qq.reshape(g, _GROUP)[j1]
  sub = qs - 2.0 * jnp.einsum("bn,bgn->bg", u, ps, precision=_HI)
  j2 = jnp.argmin(sub, axis=-1)
  return j1 * _GROUP + j2, jnp.take_along_axis(sub, j2[:, None], axis=-1)[:, 0]


def _nearest(points: Array, sigma: Array, w: Array, chunk: int) -> Array:
  """Index of ``argmin_c (w−c)ᵀΣ(w−c)`` for each row of ``w`` (B, n), codebook in chunks."""
  k, n = points.shape
  chunk = min(chunk, k)
  if k > _GROUP:
    chunk = -(-chunk // _GROUP) * _GROUP
  num_chunks = -(-k // chunk)
  pad = num_chunks * chunk - k
  q = jnp.sum(jnp.dot(points, sigma, precision=_HI) * points, axis=-1)
  pts = jnp.concatenate([points, jnp.zeros((pad, n), points.dtype)]).reshape(num_chunks, chunk, n)
  q = jnp.concatenate([q, jnp.full((pad,), jnp.inf, q.dtype)]).reshape(num_chunks, chunk)
  u = jnp.dot(w, sigma, precision=_HI)  # Σ symmetric: rows are (Σw)ᵀ
  b = w.shape[0]

  def body(carry, xs):
    best, idx = carry
    p, qq, c = xs
    j, s = _chunk_argmin(u, p, qq)
    better = s < best
    return (jnp.where(better, s, best), jnp.where(better, c * chunk + j, idx)), None

  init = (jnp.full((b,), jnp.inf, jnp.float32), jnp.zeros((b,), jnp.int32))
  (_, idx), _ = jax.lax.scan(body, init, (pts, q, jnp.arange(num_chunks, dtype=jnp.int32)))
  return idx


def _weighted_sq(e: Array, sigma: Array) -> Array:
  """``eᵀΣe / n`` per row of e (B, n)."""
  return jnp.sum(jnp.dot(e, sigma, precision=_HI) * e, axis=-1) / e.shape[-1]


@functools.partial(jax.jit, static_argnames=("chunk",))
def _encode_batch(points, w, sigma, scale, chunk: int):
  """w (B, n), sigma (S, n, n), scale (S,) → indices (S, B). Sequential over Σ (lax.map)."""
  return jax.lax.map(lambda a: _nearest(points * a[1], a[0], w, chunk), (sigma, scale))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Codebook:
  """A finite codebook ``C ⊂ Rⁿ`` with Σ-aware nearest-codeword encoding.

  A pytree (``points`` is the leaf; ``name`` and ``chunk`` are static), so it passes through
  ``jit``/``grad`` as an argument.

  Attributes:
    points: ``(K, n)`` float32 codewords; the rate is ``log2(K)/n`` bits per entry.
    name: construction label, e.g. ``"gaussian"``, ``"e8"``.
    chunk: codewords scored at once when encoding (working memory ``batch × chunk``).
  """

  points: Float[Array, "k n"]
  name: str = dataclasses.field(default="codebook", metadata=dict(static=True))
  chunk: int = dataclasses.field(default=4096, metadata=dict(static=True))

  def __post_init__(self):
    _check_points(self.points)
    if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
      raise ValueError(f"chunk={self.chunk!r} must be a positive integer")

  @property
  def n(self) -> int:
    """Dimension (input features per codeword)."""
    return self.points.shape[1]

  @property
  def num_points(self) -> int:
    """K = |C|."""
    return self.points.shape[0]

  @property
  def rate_bits(self) -> float:
    """``log2(K) / n`` bits per entry."""
    return math.log2(self.num_points) / self.n

  def rate(self, shape: tuple[int, ...] | None = None) -> Rate:
    """Bits per entry: ``log2(K)/n`` nominal; no side information (the scale τ costs
    ``log2(#scales)/(n·m)``, which vanishes with the number m of output features)."""
    del shape
    return Rate(nominal=self.rate_bits, side=0.0)

  def scaled(self, tau: float) -> "Codebook":
    """The codebook ``τ·C``."""
    return dataclasses.replace(self, points=self.points * jnp.float32(tau))

  def encode(
      self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "*s n n"], *, scale: ArrayLike = 1.0,
      max_bytes: int = DEFAULT_MAX_BYTES,
  ) -> Integer[Array, "*s *batch"]:
    """Σ-aware nearest codeword of ``scale·C`` for each vector of the last axis of ``w``.

    .. math::  \\hat k(w) = \\arg\\min_k (w - τ c_k)^\\top Σ (w - τ c_k)  \\quad(\\text{ties: lowest } k).

    Args:
      w: ``(*batch, n)`` vectors (one column of W per vector).
      sigma: Σ ``(n, n)``, or a batch ``(S, n, n)`` (vmapped: the output gains a leading S axis).
      scale: τ > 0, a scalar or one per Σ ``(S,)``.
      max_bytes: memory budget checked before tracing.

    Returns:
      int32 indices into ``points``, shape ``(*batch)`` or ``(S, *batch)``.
    """
    w = _check_w(w, self.n)
    sig = _check_sigma(sigma, self.n)
    batch_shape = w.shape[:-1]
    wf = w.reshape(-1, self.n)
    _check_chunk(self.chunk, wf.shape[0], max_bytes)
    sig3 = sig if sig.ndim == 3 else sig[None]
    tau = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (sig3.shape[0],))
    idx = _encode_batch(self.points, wf, sig3, tau, self.chunk)
    idx = idx.reshape((sig3.shape[0],) + batch_shape)
    return idx if sig.ndim == 3 else idx[0]

  def decode(self, idx: Integer[ArrayLike, "*b"], *, scale: ArrayLike = 1.0) -> Float[Array, "*b n"]:
    """Codewords ``τ·c_k`` for indices k (scale broadcast against the index batch shape + n)."""
    return jnp.take(self.points, jnp.asarray(idx), axis=0) * jnp.asarray(scale, jnp.float32)

  def quantize(self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "n n"], *, scale: float = 1.0):
    """``decode(encode(w, Σ))``: the Σ-nearest codeword of ``scale·C`` (one Σ)."""
    return self.decode(self.encode(w, sigma, scale=scale), scale=scale)

  def _reconstruct(self, sigma: Array, w: Array, tau: Array) -> Array:
    """Traced: reconstructions (B, n) for one Σ and scale τ (no checks)."""
    p = self.points * tau
    return p[_nearest(p, sigma, w, self.chunk)]


# ----------------------------------------------------------------------------- constructions
def gaussian_codebook(
    key: PRNGKeyArray, n: int, rate_bits: float, *, variance: float | None = None, chunk: int = 4096,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Codebook:
  """iid Gaussian codebook: ``2^{nR}`` codewords ``c ~ N(0, variance·I_n)``.

  Args:
    key: PRNG key.
    n: dimension (input features per codeword).
    rate_bits: R > 0 bits per entry, with n·R integral.
    variance: codeword variance per entry; default ``1 − 2^{−2R}`` (Shannon reconstruction power).
    chunk: encoding chunk (codewords).
    max_bytes: refuse codebooks whose float32 points exceed this.

  References:
    Harbuzova, Ordentlich & Polyanskiy (2026): the random code of the existence proof.
  """
  n = _check_n(n)
  rate_bits = _check_rate(rate_bits)
  k = _num_points(n, rate_bits, max_bytes)
  var = shannon_power(rate_bits) if variance is None else float(variance)
  if not var > 0:
    raise ValueError(f"variance={variance!r} must be > 0")
  pts = jax.random.normal(key, (k, n), jnp.float32) * jnp.float32(math.sqrt(var))
  return Codebook(pts, name="gaussian", chunk=chunk)


def sphere_codebook(
    key: PRNGKeyArray, n: int, rate_bits: float, *, radius: float | None = None, chunk: int = 4096,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Codebook:
  """Spherical codebook: ``2^{nR}`` codewords iid uniform on the sphere of radius ``radius``.

  Default radius ``√(n(1 − 2^{−2R}))``, where the Shannon reconstruction concentrates.
  """
  n = _check_n(n)
  rate_bits = _check_rate(rate_bits)
  k = _num_points(n, rate_bits, max_bytes)
  r = math.sqrt(n * shannon_power(rate_bits)) if radius is None else float(radius)
  if not r > 0:
    raise ValueError(f"radius={radius!r} must be > 0")
  g = jax.random.normal(key, (k, n), jnp.float32)
  pts = g / jnp.linalg.norm(g, axis=-1, keepdims=True) * jnp.float32(r)
  return Codebook(pts, name="sphere", chunk=chunk)


def _ball_points_zn(n: int, radius: float, offset: float) -> np.ndarray:
  """All ``z + offset·1`` (z ∈ Zⁿ) with norm ≤ radius, by coordinate-wise pruned enumeration."""
  r2 = radius * radius + 1e-9
  lo, hi = math.floor(-radius - offset), math.ceil(radius - offset)
  vals = np.arange(lo, hi + 1, dtype=np.float64) + offset
  vals = vals[vals * vals <= r2]
  part = np.zeros((1, 0))
  norms = np.zeros(1)
  for _ in range(n):
    cand = norms[:, None] + vals[None, :] ** 2
    i, j = np.nonzero(cand <= r2)
    part = np.concatenate([part[i], vals[j, None]], axis=1)
    norms = cand[i, j]
  return part


def _lattice_ball(lattice: Lattice, k: int) -> np.ndarray:
  """At least the ``k`` lattice points nearest the origin (complete shells), float64."""
  n = lattice.dim
  unit_ball = math.pi ** (n / 2) / math.gamma(n / 2 + 1)
  radius = (k * lattice.volume / unit_ball) ** (1.0 / n) * 1.05 + 0.5
  while True:
    if isinstance(lattice, ZnLattice):
      pts = _ball_points_zn(n, radius, 0.0)
    elif isinstance(lattice, DnLattice):
      pts = _ball_points_zn(n, radius, 0.0)
      pts = pts[np.mod(np.sum(pts, axis=1), 2) == 0]
    elif isinstance(lattice, E8Lattice):
      a = _ball_points_zn(8, radius, 0.0)
      b = _ball_points_zn(8, radius, 0.5)
      pts = np.concatenate([a[np.mod(np.sum(a, 1), 2) == 0], b[np.mod(np.sum(b - 0.5, 1), 2) == 0]])
    else:
      raise ValueError(f"lattice_codebook supports Zn, Dn and E8; got {lattice.name}")
    if len(pts) >= k:
      return pts
    radius *= 1.15


def lattice_codebook(
    key: PRNGKeyArray, lattice: Lattice, rate_bits: float, *, rotate: bool = True, power: float | None = None,
    chunk: int = 4096, max_bytes: int = DEFAULT_MAX_BYTES,
) -> Codebook:
  """The ``2^{nR}`` lattice points nearest the origin (innermost shells), scaled and rotated.

  Complete shells ``{x ∈ Λ : ‖x‖² = r²}`` are taken in order of norm; the last shell is cut
  at random (uniformly among its points). The points are scaled to a mean power of
  ``power`` per coordinate (default ``1 − 2^{−2R}``) and, if ``rotate``, multiplied by a
  Haar-random orthogonal matrix so that no coordinate axis is special.

  Args:
    key: PRNG key (shell cut and rotation).
    lattice: ``ZnLattice(n)``, ``DnLattice(n)`` or ``E8Lattice()``.
    rate_bits: R > 0 with n·R integral.
    rotate: apply a Haar-random rotation.
    power: mean ``‖c‖²/n`` after scaling.

  References:
    Conway & Sloane, *SPLAG*, Ch. 4 (shells, theta series).
  """
  if not isinstance(lattice, (ZnLattice, DnLattice, E8Lattice)):
    raise TypeError(f"lattice must be a ZnLattice, DnLattice or E8Lattice; got {type(lattice).__name__}")
  rate_bits = _check_rate(rate_bits)
  n = lattice.dim
  k = _num_points(n, rate_bits, max_bytes)
  pts = _lattice_ball(lattice, k)
  k_cut, k_rot = jax.random.split(key)
  tie = np.asarray(jax.random.uniform(k_cut, (len(pts),)))
  norms = np.round(np.sum(pts * pts, axis=1) * 4.0)  # squared norms are multiples of 1/4: exact shells
  order = np.lexsort((tie, norms))
  pts = pts[order[:k]]
  p = shannon_power(rate_bits) if power is None else float(power)
  if not p > 0:
    raise ValueError(f"power={power!r} must be > 0")
  pts = pts * math.sqrt(p / max(np.mean(np.sum(pts * pts, axis=1)) / n, 1e-30))
  out = jnp.asarray(pts, jnp.float32)
  if rotate:
    out = out @ haar_orthogonal(k_rot, n).T
  return Codebook(out, name=lattice.name, chunk=chunk)


LEECH_SHELL_SIZES: tuple[int, ...] = (1, 196560, 16773120)
"""Points of Λ24 of unimodular norm 0, 4 and 6 (SPLAG Ch. 4, Sec. 11, Table 4.13 / theta series)."""


def leech_codebook(
    key: PRNGKeyArray, *, rotate: bool = True, power: float | None = None, chunk: int = 4096,
) -> Codebook:
  """Leech-lattice shell codebook at n = 24: the origin and the 196 560 minimal vectors of Λ24.

  ``K = 196 561`` codewords, ``R = log2(K)/24 ≈ 0.7305`` bit per entry; the 196 560 minimal
  vectors are the kissing configuration of the densest known 24-dimensional packing (all on one
  sphere, pairwise angles ≥ 60°). Scaled to a mean power ``power`` per coordinate (default
  ``1 − 2^{−2R}``) and, if ``rotate``, multiplied by a Haar-random orthogonal matrix. The next
  shell (unimodular norm 6, 16 773 120 vectors) would give ``R ≈ 1.0007``; its 1.6 GB of
  float32 points and ``O(K)`` exact encoder are out of reach of a CPU sweep and are not built.

  Args:
    key: PRNG key of the rotation.
    rotate: apply a Haar-random rotation.
    power: mean ``‖c‖²/24`` after scaling.
    chunk: encoding chunk (codewords).

  References:
    Conway & Sloane, *SPLAG*, Ch. 4, Sec. 11 (Λ24, its 196 560 minimal vectors) and Ch. 1,
    Sec. 2 (kissing numbers); rdq.quantizers.leech.leech_minimal_vectors.
  """
  from rdq.quantizers.leech import leech_minimal_vectors

  pts = np.concatenate([np.zeros((1, 24)), leech_minimal_vectors(unimodular=True)])
  rate = math.log2(len(pts)) / 24
  p = shannon_power(rate) if power is None else float(power)
  if not p > 0:
    raise ValueError(f"power={power!r} must be > 0")
  pts = pts * math.sqrt(p / (np.mean(np.sum(pts * pts, axis=1)) / 24))
  out = jnp.asarray(pts, jnp.float32)
  if rotate:
    out = out @ haar_orthogonal(key, 24).T
  return Codebook(out, name="leech", chunk=chunk)


# ----------------------------------------------------------------------------- product codebook
@functools.partial(jax.jit, static_argnames=("num_blocks", "chunk", "damp"))
def _sic_batch(block_points, w, sigma, scale, num_blocks: int, chunk: int, damp: float):
  """Block SIC for each Σ in (S, n, n): indices (S, B, num_blocks)."""

  def one(args):
    s, tau = args
    return _sic(block_points * tau, s, w, num_blocks, chunk, damp)

  return jax.lax.map(one, (sigma, scale))


def _sic(points: Array, sigma: Array, w: Array, num_blocks: int, chunk: int, damp: float) -> Array:
  """Block nearest plane: Σ + δI = RᵀR (R upper); blocks from last to first, each the exact
  Σ-aware nearest codeword of a shifted target under the block metric ``R_bbᵀR_bb``."""
  n = w.shape[-1]
  d = n // num_blocks
  reg = sigma + damp * jnp.trace(sigma) / n * jnp.eye(n, dtype=sigma.dtype)
  r = jnp.linalg.cholesky(reg).T  # upper
  err = jnp.zeros_like(w)  # w − ĉ, filled from the last block backwards
  idx = []
  for b in reversed(range(num_blocks)):
    sl = slice(b * d, (b + 1) * d)
    rbb = r[sl, sl]
    # interference from later blocks in block b's rows: Σ_{b'>b} R_{bb'} (w_{b'} − ĉ_{b'})
    inter = jnp.dot(err[:, (b + 1) * d:], r[sl, (b + 1) * d:].T, precision=_HI)
    shift = jax.scipy.linalg.solve_triangular(rbb, inter.T, lower=False).T
    target = w[:, sl] + shift
    j = _nearest(points, jnp.dot(rbb.T, rbb, precision=_HI), target, chunk)
    err = err.at[:, sl].set(w[:, sl] - points[j])
    idx.append(j)
  return jnp.stack(idx[::-1], axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ProductCodebook:
  """Product codebook ``C = C_d^{n/d}``: one block codebook on each of ``num_blocks`` blocks of
  consecutive input features. Rate = the block's rate; ``2^{nR}`` points, ``2^{dR}`` stored.

  Encoding is block successive interference cancellation (Babai's nearest plane on the upper
  Cholesky factor R of ``Σ + δ·(trΣ/n)·I``, ``δ = damp``, last block first): each block is the
  exact Σ-aware nearest block codeword of its target after cancelling the later blocks' error.
  It equals the exact joint search when Σ is block-diagonal over the blocks (then R is too);
  otherwise it is the practical heuristic (as in GPTQ/GPTVQ). The distortion reported by
  ``rate_gap`` is always measured with the undamped Σ.

  Attributes:
    block: the ``d``-dimensional block codebook.
    num_blocks: number of blocks, ``n = d·num_blocks``.
    damp: relative damping δ for the Cholesky factorization (Σ may be singular).
  """

  block: Codebook
  num_blocks: int = dataclasses.field(default=2, metadata=dict(static=True))
  damp: float = dataclasses.field(default=1e-6, metadata=dict(static=True))

  def __post_init__(self):
    if not isinstance(self.block, Codebook):
      raise TypeError(f"block must be a Codebook; got {type(self.block).__name__}")
    if isinstance(self.num_blocks, bool) or not isinstance(self.num_blocks, int) or self.num_blocks < 1:
      raise ValueError(f"num_blocks={self.num_blocks!r} must be a positive integer")
    if not self.damp >= 0:
      raise ValueError(f"damp={self.damp!r} must be ≥ 0")

  @property
  def name(self) -> str:
    return f"product_{self.block.name}{self.block.n}x{self.num_blocks}"

  @property
  def n(self) -> int:
    return self.block.n * self.num_blocks

  @property
  def rate_bits(self) -> float:
    return self.block.rate_bits

  @property
  def points(self) -> Float[Array, "k n"]:
    """All ``K_d^{num_blocks}`` codewords (first block varies slowest); see ``materialize``."""
    return self.materialize().points

  def rate(self, shape: tuple[int, ...] | None = None) -> Rate:
    del shape
    return Rate(nominal=self.rate_bits, side=0.0)

  def materialize(self, max_bytes: int = DEFAULT_MAX_BYTES) -> Codebook:
    """The product as an explicit ``Codebook`` (exact joint Σ-aware search), if it fits."""
    kd, d = self.block.points.shape
    need = float(kd) ** self.num_blocks * self.n * _F32
    if need > max_bytes:
      raise ValueError(f"the product of {self.num_blocks} blocks of {kd} points has {kd}^{self.num_blocks} codewords "
                       f"({need / 2**30:.3g} GiB > max_bytes={max_bytes / 2**30:.3g} GiB); encode with block SIC "
                       f"(ProductCodebook.encode) instead")
    grids = jnp.meshgrid(*([jnp.arange(kd)] * self.num_blocks), indexing="ij")
    idx = jnp.stack([g.reshape(-1) for g in grids], axis=-1)
    pts = self.block.points[idx].reshape(-1, self.n)
    return Codebook(pts, name=self.name, chunk=self.block.chunk)

  def encode(
      self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "*s n n"], *, scale: ArrayLike = 1.0,
      max_bytes: int = DEFAULT_MAX_BYTES,
  ) -> Integer[Array, "*s *batch blocks"]:
    """Block-SIC encoding; indices ``(*batch, num_blocks)`` (or ``(S, *batch, num_blocks)``)."""
    w = _check_w(w, self.n)
    sig = _check_sigma(sigma, self.n)
    batch_shape = w.shape[:-1]
    wf = w.reshape(-1, self.n)
    _check_chunk(self.block.chunk, wf.shape[0], max_bytes)
    sig3 = sig if sig.ndim == 3 else sig[None]
    tau = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (sig3.shape[0],))
    idx = _sic_batch(self.block.points, wf, sig3, tau, self.num_blocks, self.block.chunk, self.damp)
    idx = idx.reshape((sig3.shape[0],) + batch_shape + (self.num_blocks,))
    return idx if sig.ndim == 3 else idx[0]

  def decode(self, idx: Integer[ArrayLike, "*b blocks"], *, scale: ArrayLike = 1.0) -> Float[Array, "*b n"]:
    blocks = jnp.take(self.block.points, jnp.asarray(idx), axis=0)
    return blocks.reshape(blocks.shape[:-2] + (self.n,)) * jnp.asarray(scale, jnp.float32)

  def quantize(self, w, sigma, *, scale: float = 1.0):
    return self.decode(self.encode(w, sigma, scale=scale), scale=scale)

  def _reconstruct(self, sigma: Array, w: Array, tau: Array) -> Array:
    p = self.block.points * tau
    j = _sic(p, sigma, w, self.num_blocks, self.block.chunk, self.damp)
    return p[j].reshape(w.shape)


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


def rate_gap(
    codebook: Codebook | ProductCodebook,
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
    codebook: a ``Codebook`` or ``ProductCodebook``.
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
  if not isinstance(codebook, (Codebook, ProductCodebook)):
    raise TypeError(f"codebook must be a Codebook or ProductCodebook; got {type(codebook).__name__}")
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
  chunk = codebook.chunk if isinstance(codebook, Codebook) else codebook.block.chunk
  _check_chunk(chunk, batch, max_bytes)
  s = sig.shape[0]
  k_sel, k_eval = jax.random.split(key)

  def draws(k, num):
    m = -(-num // batch) * batch
    return jax.random.normal(k, (m, n), jnp.float32), num

  if len(scales) > 1:
    w_sel, num_sel = draws(k_sel, num_select)
    tau_grid = jnp.asarray(scales, jnp.float32)
    sig_rep = jnp.repeat(sig, len(scales), axis=0)
    tau_rep = jnp.tile(tau_grid, s)
    dsel = np.asarray(_mean_distortion(codebook, sig_rep, w_sel, tau_rep, batch))[:, :num_sel]
    dsel = dsel.mean(axis=1).reshape(s, len(scales))
    tau = np.asarray(scales, np.float32)[np.argmin(dsel, axis=1)]
  else:
    tau = np.full((s,), scales[0], np.float32)
  w_ev, num = draws(k_eval, num_samples)
  vals = np.asarray(_mean_distortion(codebook, sig, w_ev, jnp.asarray(tau), batch), np.float64)[:, :num]
  mean = vals.mean(axis=1)
  se = vals.std(axis=1, ddof=1) / math.sqrt(num)
  lam = np.clip(np.linalg.eigvalsh(np.asarray(sig, np.float64)), 0.0, None).astype(np.float32)
  r = codebook.rate_bits
  wf_rate = jax.vmap(lambda l, d: _wf_dist(l, d, jnp.float32(1.0)).rate_bits)
  lam_j = jnp.asarray(lam)
  r_mid = np.asarray(wf_rate(lam_j, jnp.asarray(mean, jnp.float32)))
  r_lo = np.asarray(wf_rate(lam_j, jnp.asarray(np.maximum(mean - se, 1e-30), jnp.float32)))
  r_hi = np.asarray(wf_rate(lam_j, jnp.asarray(mean + se, jnp.float32)))
  d_lim = np.asarray(jax.vmap(lambda l: _wf_rate(l, jnp.float32(r), jnp.float32(1.0)).distortion)(lam_j))
  return GapResult(
      distortion=Estimate(mean=mean, stderr=se, n=num),
      gap_bits=r - r_mid,
      gap_stderr_bits=np.abs(r_lo - r_hi) / 2.0,
      scale=tau,
      limit_distortion=d_lim,
  )


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
    gap_fn = jax.vmap(lambda l, d: rate - _wf_dist(l, d, jnp.float32(1.0)).rate_bits)
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
