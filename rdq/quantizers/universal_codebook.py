"""Universal codebooks (``rdq.quantizers.universal``): the ``Codebook`` type, its Σ-aware
nearest-codeword encoder and the constructions (iid Gaussian, sphere, lattice balls, Leech shells);
``StreamCodebook`` for codebooks generated chunk by chunk, never stored.

The setting, the rate gap and the references are in ``rdq.quantizers.universal``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Integer, PRNGKeyArray

from rdq.covariance import check_covariance, haar_orthogonal
from rdq.quantizers.base import Rate
from rdq.quantizers.lattice import DnLattice, E8Lattice, Lattice, ZnLattice

__all__ = ["Codebook", "DEFAULT_MAX_BYTES", "LEECH_SHELL_SIZES", "StreamCodebook", "gaussian_codebook", "lattice_codebook", "leech_codebook", "shannon_power", "sphere_codebook"]

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


def _num_points(n: int, rate_bits: float, max_bytes: float) -> int:
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


def _chunked(points: Array, sigma: Array, chunk: int) -> tuple[Array, Array]:
  """Codebook in chunks for ``_nearest``/``_nearest_scales``: points (C, chunk, n) and their
  ``cᵀΣc`` (C, chunk), padded with zero points of score ``+inf`` (never chosen)."""
  k, n = points.shape
  chunk = min(chunk, k)
  if k > _GROUP:
    chunk = -(-chunk // _GROUP) * _GROUP
  num_chunks = -(-k // chunk)
  pad = num_chunks * chunk - k
  q = jnp.sum(jnp.dot(points, sigma, precision=_HI) * points, axis=-1)
  pts = jnp.concatenate([points, jnp.zeros((pad, n), points.dtype)]).reshape(num_chunks, chunk, n)
  q = jnp.concatenate([q, jnp.full((pad,), jnp.inf, q.dtype)]).reshape(num_chunks, chunk)
  return pts, q


def _running_min(score, fetch, xs, chunk: int, shape: tuple[int, ...]) -> Array:
  """Streaming argmin over the chunks of a codebook: ``fetch(x) → (points, cᵀΣc, chunk number)``
  for each x of ``xs`` (a ``lax.scan``), ``score(points, q) → (index in chunk, minimum)`` of
  ``shape``; a running minimum and its global index (ties: lowest index)."""

  def body(carry, x):
    best, idx = carry
    p, qq, c = fetch(x)
    j, s = score(p, qq)
    better = s < best
    return (jnp.where(better, s, best), jnp.where(better, c * chunk + j, idx)), None

  init = (jnp.full(shape, jnp.inf, jnp.float32), jnp.zeros(shape, jnp.int32))
  (_, idx), _ = jax.lax.scan(body, init, xs)
  return idx


def _nearest(points: Array, sigma: Array, w: Array, chunk: int) -> Array:
  """Index of ``argmin_c (w−c)ᵀΣ(w−c)`` for each row of ``w`` (B, n), codebook in chunks."""
  pts, q = _chunked(points, sigma, chunk)
  u = jnp.dot(w, sigma, precision=_HI)  # Σ symmetric: rows are (Σw)ᵀ
  xs = (pts, q, jnp.arange(pts.shape[0], dtype=jnp.int32))
  return _running_min(lambda p, qq: _chunk_argmin(u, p, qq), lambda x: x, xs, pts.shape[1], (w.shape[0],))


def _chunk_argmin_scales(u: Array, p: Array, qq: Array, taus: Array) -> tuple[Array, Array]:
  """``_chunk_argmin`` for the codebooks ``τ_j·C`` at once: scores ``τ_j² q_k − 2τ_j uᵀp_k`` share
  the product ``uᵀp_k``. Returns indices and minima, shape (J, B)."""
  b = u.shape[0]
  c, n = p.shape
  t = taus[:, None, None]
  dots = jnp.dot(u, p.T, precision=_HI)
  scores = t * t * qq[None, None, :] - 2.0 * t * dots[None]
  if c % _GROUP or c == _GROUP:
    j = jnp.argmin(scores, axis=-1)
    return j, jnp.take_along_axis(scores, j[..., None], axis=-1)[..., 0]
  g = c // _GROUP
  j1 = jnp.argmin(jnp.min(scores.reshape(len(taus), b, g, _GROUP), axis=-1), axis=-1)  # (J, B)
  ps = p.reshape(g, _GROUP, n)[j1]  # (J, B, GROUP, n)
  qs = qq.reshape(g, _GROUP)[j1]
  sub = t * t * qs - 2.0 * t * jnp.einsum("bn,jbgn->jbg", u, ps, precision=_HI)
  j2 = jnp.argmin(sub, axis=-1)
  return j1 * _GROUP + j2, jnp.take_along_axis(sub, j2[..., None], axis=-1)[..., 0]


def _nearest_scales(points: Array, sigma: Array, w: Array, taus: Array, chunk: int) -> Array:
  """``_nearest`` for each codebook ``τ_j·points`` (J scales), indices (J, B): one pass over the
  codebook (``uᵀc`` and ``cᵀΣc`` computed once). Same minimiser as ``_nearest`` on the scaled points
  up to float rounding of the scores (ties within ~1e-7 relative may resolve differently)."""
  pts, q = _chunked(points, sigma, chunk)
  u = jnp.dot(w, sigma, precision=_HI)
  xs = (pts, q, jnp.arange(pts.shape[0], dtype=jnp.int32))
  return _running_min(lambda p, qq: _chunk_argmin_scales(u, p, qq, taus), lambda x: x, xs, pts.shape[1],
                      (taus.shape[0], w.shape[0]))


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
    wf, sig3, tau, shape = _encode_args(self, w, sigma, scale, max_bytes)
    return _encode_result(_encode_batch(self.points, wf, sig3, tau, self.chunk), sigma, shape)

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

  def _points_at(self, idx: Array) -> Array:
    """Traced: codewords of the given indices (``rate_gap``)."""
    return self.points[idx]

  def _nearest_scales(self, sigma: Array, w: Array, taus: Array) -> Array:
    """Traced: ``_nearest_scales`` on this codebook, indices (J, B) (``rate_gap``)."""
    return _nearest_scales(self.points, sigma, w, taus, self.chunk)


def _encode_args(cb, w, sigma, scale, max_bytes: int) -> tuple[Array, Array, Array, tuple[int, ...]]:
  """Checked ``encode`` arguments: w as (B, n), Σ as (S, n, n), τ as (S,), and w's batch shape."""
  w = _check_w(w, cb.n)
  sig = _check_sigma(sigma, cb.n)
  wf = w.reshape(-1, cb.n)
  _check_chunk(cb.chunk, wf.shape[0], max_bytes)
  sig3 = sig if sig.ndim == 3 else sig[None]
  tau = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (sig3.shape[0],))
  return wf, sig3, tau, w.shape[:-1]


def _encode_result(idx: Array, sigma, shape: tuple[int, ...]) -> Array:
  """Indices (S, B) of ``_encode_args``' arguments back to ``(S, *batch)``, or ``(*batch)`` for one Σ."""
  idx = idx.reshape((idx.shape[0],) + shape)
  return idx if np.ndim(sigma) == 3 else idx[0]


# ----------------------------------------------------------------------------- constructions
@functools.partial(jax.jit, static_argnums=(1, 2))
def _flat_draws(key: PRNGKeyArray, size: int, kind: str) -> Array:
  return (jax.random.normal if kind == "normal" else jax.random.uniform)(key, (size,), jnp.float32)


def _draws(key: PRNGKeyArray, shape: tuple[int, ...], kind: str) -> np.ndarray:
  """``jax.random.<kind>(key, shape, float32)`` (normal or uniform) as NumPy, bitwise, from one
  program per power-of-two size.

  ``jax.random.normal`` compiles once per shape (~0.4 s on CPU). With the partitionable Threefry
  (``jax_threefry_partitionable``, the default) the value at flat index i depends only on the key
  and i, so the first ``prod(shape)`` draws of a longer vector are the same numbers (tested)."""
  if not jax.config.jax_threefry_partitionable:
    return np.asarray((jax.random.normal if kind == "normal" else jax.random.uniform)(key, shape, jnp.float32))
  m = math.prod(shape)
  size = 1 << max(10, (m - 1).bit_length())
  return np.asarray(_flat_draws(key, size, kind))[:m].reshape(shape)


def _normal(key: PRNGKeyArray, shape: tuple[int, ...]) -> np.ndarray:
  """``jax.random.normal(key, shape, jnp.float32)`` as NumPy (``_draws``)."""
  return _draws(key, shape, "normal")


def gaussian_codebook(
    key: PRNGKeyArray, n: int, rate_bits: float, *, variance: float | None = None, chunk: int = 4096,
    max_bytes: int = DEFAULT_MAX_BYTES, stream: bool = False,
) -> Codebook | StreamCodebook:
  """iid Gaussian codebook: ``2^{nR}`` codewords ``c ~ N(0, variance·I_n)``.

  Args:
    key: PRNG key.
    n: dimension (input features per codeword).
    rate_bits: R > 0 bits per entry, with n·R integral.
    variance: codeword variance per entry; default ``1 − 2^{−2R}`` (Shannon reconstruction power).
    chunk: encoding chunk (codewords).
    max_bytes: refuse codebooks whose float32 points exceed this (not with ``stream``).
    stream: return a ``StreamCodebook``: codeword k is ``N(0, I)`` drawn from ``fold_in(key, k)``
      when needed, never stored (another realization of the same random code).

  References:
    Harbuzova, Ordentlich & Polyanskiy (2026): the random code of the existence proof.
  """
  n = _check_n(n)
  rate_bits = _check_rate(rate_bits)
  k = _num_points(n, rate_bits, math.inf if stream else max_bytes)
  var = shannon_power(rate_bits) if variance is None else float(variance)
  if not var > 0:
    raise ValueError(f"variance={variance!r} must be > 0")
  if stream:
    return StreamCodebook(jnp.eye(n, dtype=jnp.float32) * jnp.float32(math.sqrt(var)), jax.random.key_data(key),
                          generator=_gaussian_rows, num_points=k, name="gaussian", chunk=chunk)
  pts = jnp.asarray(_normal(key, (k, n))) * jnp.float32(math.sqrt(var))
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
  g = jnp.asarray(_normal(key, (k, n)))
  pts = g / jnp.linalg.norm(g, axis=-1, keepdims=True) * jnp.float32(r)
  return Codebook(pts, name="sphere", chunk=chunk)


class _Ball(NamedTuple):
  """Points ``z + offset·1`` (z ∈ Zⁿ) of a ball, in lexicographic order of z, stored as a tree
  (one parent index and one coordinate per level) so that 10⁶–10⁷ points cost a few bytes each."""

  norms: np.ndarray  # (N,) float64 squared norms (exact: integer or quarter-integer)
  parity: np.ndarray  # (N,) int64 Σz mod 2
  parents: list  # per level: (N_level,) int32 index into the previous level
  coords: list  # per level: (N_level,) int8 index into vals
  vals: np.ndarray  # coordinate values

  def points(self, idx: np.ndarray) -> np.ndarray:
    """The points of the given indices (float64 rows)."""
    idx = np.asarray(idx, np.int64)
    out = np.empty((len(idx), len(self.parents)))
    for level in reversed(range(len(self.parents))):
      out[:, level] = self.vals[self.coords[level][idx]]
      idx = self.parents[level][idx]
    return out


def _ball_zn(n: int, radius: float, offset: float) -> _Ball:
  """All ``z + offset·1`` (z ∈ Zⁿ) with norm ≤ radius, by coordinate-wise pruned enumeration."""
  r2 = radius * radius + 1e-9
  lo, hi = math.floor(-radius - offset), math.ceil(radius - offset)
  ints = np.arange(lo, hi + 1, dtype=np.int64)
  vals = ints + offset
  keep = vals * vals <= r2
  ints, vals = ints[keep], vals[keep]
  norms, parity = np.zeros(1), np.zeros(1, np.int64)
  parents, coords = [], []
  for _ in range(n):
    cand = norms[:, None] + vals[None, :] ** 2
    i, j = np.nonzero(cand <= r2)
    parents.append(i.astype(np.int32))
    coords.append(j.astype(np.int8))
    norms = cand[i, j]
    parity = (parity[i] + ints[j]) % 2
  return _Ball(norms, parity, parents, coords, vals)


class _Shells(NamedTuple):
  """Lattice points of a ball in a fixed enumeration order: exact squared norms ×4 and a map from
  indices to points."""

  norms4: np.ndarray
  points: Callable[[np.ndarray], np.ndarray]


def _lattice_ball(lattice: Lattice, k: int) -> _Shells:
  """At least the ``k`` lattice points nearest the origin (complete shells), enumerated in the
  lexicographic order of their coordinates (E8: the integer coset first, then the half-integer)."""
  n = lattice.dim
  unit_ball = math.pi ** (n / 2) / math.gamma(n / 2 + 1)
  radius = (k * lattice.volume / unit_ball) ** (1.0 / n) * 1.05 + 0.5
  while True:
    if isinstance(lattice, ZnLattice):
      parts = [(_ball_zn(n, radius, 0.0), None)]
    elif isinstance(lattice, DnLattice):
      parts = [(_ball_zn(n, radius, 0.0), 0)]
    elif isinstance(lattice, E8Lattice):
      # integer points with even sum; half-integer points z + ½ with Σz + 4 even (Σ(x − ½) even)
      parts = [(_ball_zn(8, radius, 0.0), 0), (_ball_zn(8, radius, 0.5), 0)]
    else:
      raise ValueError(f"lattice_codebook supports Zn, Dn and E8; got {lattice.name}")
    sel = [np.arange(len(b.norms)) if par is None else np.nonzero(b.parity == par)[0] for b, par in parts]
    if sum(len(i) for i in sel) >= k:
      break
    radius *= 1.15
  norms4 = np.round(np.concatenate([b.norms[i] for (b, _), i in zip(parts, sel)]) * 4.0)
  bounds = np.cumsum([0] + [len(i) for i in sel])

  def points(idx: np.ndarray) -> np.ndarray:
    idx = np.asarray(idx, np.int64)
    out = np.empty((len(idx), n))
    for (b, _), i, lo, hi in zip(parts, sel, bounds[:-1], bounds[1:]):
      m = (idx >= lo) & (idx < hi)
      out[m] = b.points(i[idx[m] - lo])
    return out

  return _Shells(norms4, points)


def _innermost(norms4: np.ndarray, tie: np.ndarray, k: int) -> np.ndarray:
  """``np.lexsort((tie, norms4))[:k]`` without sorting every point: all points of a norm below the
  k-th smallest, then the cut shell by ``tie`` (a stable sort of the candidates in index order)."""
  cut = np.partition(norms4, k - 1)[k - 1]
  cand = np.nonzero(norms4 <= cut)[0]
  return cand[np.lexsort((tie[cand], norms4[cand]))][:k]


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
  shells = _lattice_ball(lattice, k)  # squared norms are multiples of 1/4: exact shells
  k_cut, k_rot = jax.random.split(key)
  tie = _draws(k_cut, (len(shells.norms4),), "uniform")
  pts = shells.points(_innermost(shells.norms4, tie, k))
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
    key: PRNGKeyArray, *, shells: int = 1, rotate: bool = True, power: float | None = None, chunk: int = 4096,
) -> Codebook | StreamCodebook:
  """Leech-lattice shell codebook at n = 24: the origin and the innermost ``shells`` shells of Λ24.

  ``shells=1``: the 196 560 minimal vectors (unimodular norm 4), ``K = 196 561`` codewords,
  ``R = log2(K)/24 ≈ 0.7327`` bit per entry; the kissing configuration of the densest known
  24-dimensional packing (all on one sphere, pairwise angles ≥ 60°), stored as a ``Codebook``.
  ``shells=2``: also the 16 773 120 vectors of norm 6, ``K = 16 969 681``, ``R ≈ 1.0007``; their
  1.6 GB of float32 points are never stored: a ``StreamCodebook`` generates them by index
  (``rdq.quantizers.leech_shells.leech_ball_int``) chunk by chunk inside the exact encoder.
  Both are scaled to a mean power ``power`` per coordinate over the K codewords (default
  ``1 − 2^{−2R}``) and, if ``rotate``, multiplied by a Haar-random orthogonal matrix.

  Args:
    key: PRNG key of the rotation.
    shells: 1 or 2.
    rotate: apply a Haar-random rotation.
    power: mean ``‖c‖²/24`` after scaling.
    chunk: encoding chunk (codewords; ``shells=2``: a multiple of 64).

  References:
    Conway & Sloane, *SPLAG*, Ch. 4, Sec. 11 (Λ24, its shells, theta series) and Ch. 1,
    Sec. 2 (kissing numbers); rdq.quantizers.leech.leech_minimal_vectors.
  """
  from rdq.quantizers.leech import UNIMODULAR_SCALE, leech_minimal_vectors

  if shells not in (1, 2) or isinstance(shells, bool):
    raise ValueError(f"shells={shells!r} must be 1 (196 560 minimal vectors) or 2 (and the 16 773 120 of norm 6)")
  k = sum(LEECH_SHELL_SIZES[: shells + 1])
  rate = math.log2(k) / 24
  p = shannon_power(rate) if power is None else float(power)
  if not p > 0:
    raise ValueError(f"power={power!r} must be > 0")
  rot = haar_orthogonal(key, 24) if rotate else jnp.eye(24, dtype=jnp.float32)
  if shells == 2:
    mean_norm = (4 * LEECH_SHELL_SIZES[1] + 6 * LEECH_SHELL_SIZES[2]) / k  # unimodular, exact
    a = math.sqrt(p / (mean_norm / 24)) * UNIMODULAR_SCALE  # integer coordinates → power p
    return StreamCodebook(jnp.asarray(rot, jnp.float32).T * jnp.float32(a), jnp.zeros((2,), jnp.uint32),
                          generator=_leech_rows, num_points=k, name="leech2", chunk=chunk)
  pts = np.concatenate([np.zeros((1, 24)), leech_minimal_vectors(unimodular=True)])
  pts = pts * math.sqrt(p / (np.mean(np.sum(pts * pts, axis=1)) / 24))
  out = jnp.asarray(pts, jnp.float32)
  if rotate:
    out = out @ rot.T
  return Codebook(out, name="leech", chunk=chunk)


# ----------------------------------------------------------------------------- streamed codebooks
def _leech_rows(k: Array, key: Array, d: int) -> Array:
  """Generator of ``leech_codebook(shells=2)``: Λ24 points of norm ≤ 6 (integer coordinates)."""
  from rdq.quantizers.leech_shells import leech_ball_int

  del key, d
  return leech_ball_int(k).astype(jnp.float32)


def _gaussian_rows(k: Array, key: Array, d: int) -> Array:
  """Generator of ``gaussian_codebook(stream=True)``: row k is ``N(0, I_d)`` from ``fold_in(key, k)``."""
  key = jax.random.wrap_key_data(key)
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (d,), jnp.float32))(k)


def _stream_chunks(cb: "StreamCodebook", sigma: Array):
  """``(fetch, xs)`` for ``_running_min`` over a ``StreamCodebook``: chunk c's points are generated
  and scored ``cᵀΣc`` in the scan (indices past K are scored ``+inf``: never chosen)."""

  def fetch(c):
    k = c * cb.chunk + jnp.arange(cb.chunk, dtype=jnp.int32)
    p = cb._points_at(k)
    q = jnp.sum(jnp.dot(p, sigma, precision=_HI) * p, axis=-1)
    return p, jnp.where(k < cb.num_points, q, jnp.inf), c

  return fetch, jnp.arange(-(-cb.num_points // cb.chunk), dtype=jnp.int32)


@jax.jit
def _encode_stream(cb: "StreamCodebook", w, sigma, scale):
  """w (B, n), sigma (S, n, n), scale (S,) → indices (S, B). Sequential over Σ (lax.map)."""
  return jax.lax.map(lambda a: cb._nearest_scales(a[0], w, a[1][None])[0], (sigma, scale))


@jax.jit
def _points_stream(cb: "StreamCodebook", idx):
  """Codewords (b, n) of int32 indices (b,), one compiled program (``decode``)."""
  return cb._points_at(idx)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class StreamCodebook:
  """A codebook too large to store: codeword k is ``g(k) @ transform`` for a jit-able generator g.

  The Σ-aware encoder is the exact one of ``Codebook`` (the same chunk scores and running
  minimum, ``_running_min``); each chunk of codewords is generated inside the scan, so memory is
  ``chunk × n`` points and ``batch × chunk`` scores whatever K. Constructions:
  ``leech_codebook(shells=2)``, ``gaussian_codebook(stream=True)``.

  Attributes:
    transform: ``(d, n)`` map from generator rows to codewords (scale and rotation).
    key: raw PRNG key data passed to the generator.
    generator: static ``g(k (b,) int32, key, d) → (b, d) float32``.
    num_points: K; the rate is ``log2(K)/n`` bits per entry.
    name: construction label.
    chunk: codewords generated and scored at once (a multiple of 64 above 64).
  """

  transform: Float[Array, "d n"]
  key: Array
  generator: Callable = dataclasses.field(metadata=dict(static=True), default=_leech_rows)
  num_points: int = dataclasses.field(default=2, metadata=dict(static=True))
  name: str = dataclasses.field(default="stream", metadata=dict(static=True))
  chunk: int = dataclasses.field(default=4096, metadata=dict(static=True))

  def __post_init__(self):
    if isinstance(self.num_points, bool) or not isinstance(self.num_points, int) or self.num_points < 2:
      raise ValueError(f"num_points={self.num_points!r} must be an integer ≥ 2")
    if (isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1
        or (self.chunk > _GROUP and self.chunk % _GROUP)):
      raise ValueError(f"chunk={self.chunk!r} must be a positive integer, a multiple of {_GROUP} above {_GROUP}")

  @property
  def n(self) -> int:
    """Dimension (input features per codeword)."""
    return self.transform.shape[1]

  @property
  def rate_bits(self) -> float:
    """``log2(K) / n`` bits per entry."""
    return math.log2(self.num_points) / self.n

  def rate(self, shape: tuple[int, ...] | None = None) -> Rate:
    """As ``Codebook.rate``: ``log2(K)/n`` nominal, no side information."""
    del shape
    return Rate(nominal=self.rate_bits, side=0.0)

  def encode(
      self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "*s n n"], *, scale: ArrayLike = 1.0,
      max_bytes: int = DEFAULT_MAX_BYTES,
  ) -> Integer[Array, "*s *batch"]:
    """``Codebook.encode``: the exact Σ-aware nearest codeword of ``scale·C`` (ties: lowest k)."""
    wf, sig3, tau, shape = _encode_args(self, w, sigma, scale, max_bytes)
    return _encode_result(_encode_stream(self, wf, sig3, tau), sigma, shape)

  def decode(self, idx: Integer[ArrayLike, "*b"], *, scale: ArrayLike = 1.0) -> Float[Array, "*b n"]:
    """Codewords ``τ·c_k`` for indices k."""
    idx = jnp.asarray(idx, jnp.int32)
    return _points_stream(self, idx.reshape(-1)).reshape(idx.shape + (self.n,)) * jnp.asarray(scale, jnp.float32)

  def quantize(self, w: Float[ArrayLike, "*batch n"], sigma: Float[ArrayLike, "n n"], *, scale: float = 1.0):
    """``decode(encode(w, Σ))`` (one Σ)."""
    return self.decode(self.encode(w, sigma, scale=scale), scale=scale)

  def _points_at(self, idx: Array) -> Array:
    """Traced: codewords (b, n) of int32 indices (b,)."""
    rows = self.generator(idx, self.key, self.transform.shape[0])
    return jnp.dot(rows, self.transform, precision=_HI)

  def _nearest_scales(self, sigma: Array, w: Array, taus: Array) -> Array:
    """Traced: indices (J, B) of the Σ-nearest codeword of each ``τ_j·C``, one generated pass."""
    u = jnp.dot(w, sigma, precision=_HI)
    fetch, xs = _stream_chunks(self, sigma)
    return _running_min(lambda p, qq: _chunk_argmin_scales(u, p, qq, taus), fetch, xs, self.chunk,
                        (taus.shape[0], w.shape[0]))

  def _reconstruct(self, sigma: Array, w: Array, tau: Array) -> Array:
    """Traced: reconstructions (B, n) for one Σ and scale τ."""
    taus = jnp.reshape(tau, (1,))
    return self._points_at(self._nearest_scales(sigma, w, taus)[0]) * tau
