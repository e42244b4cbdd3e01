"""Vector quantization (VQ) with per-group codebooks fitted by weighted k-means (EM).

A group of ``group_size`` consecutive values along the last axis is cut into ``group_size/d``
vectors of dimension ``d``; the group has its own codebook ``C ∈ R^{k×d}`` of
``k = 2^{d·b}`` centroids (``b`` index bits per value). A vector is coded by the index of its
nearest centroid in a diagonal-weighted norm,

.. math::
   a(x) = \\arg\\min_{c}\\ \\sum_{t=1}^{d} w_t\\,(x_t - C_{c,t})^2 ,

and the codebook minimizes the weighted distortion of its group,

.. math::
   J(C, a) = \\sum_{v} \\sum_{t=1}^{d} w_{v,t}\\,(x_{v,t} - C_{a_v,t})^2 ,

by Lloyd/EM iterations: the E-step ``a_v ← a(x_v)`` and the M-step
``C_{c,t} ← Σ_{v: a_v=c} w_{v,t} x_{v,t} / Σ_{v: a_v=c} w_{v,t}`` each minimize ``J`` over one
argument with the other fixed, so ``J`` never increases (an empty cluster keeps its
centroid). Seeding is k-means++ (Arthur & Vassilvitskii, 2007) in the weighted norm:
the first centroid is drawn uniformly, each next one with probability proportional to the
weighted squared distance to the nearest centroid drawn so far — deterministic given a key.
The alternative ``mahalanobis_init`` (the GPTVQ reference code's initialization) sorts the
vectors by their Mahalanobis distance to the mean and takes k of them at evenly spaced ranks:
no key, no sequential draws.

In GPTVQ the weights are the per-input-feature importances of the GPTQ error metric
(``rdq.layer.gptvq``); here (the stand-alone quantizer) they are 1.

Storage: codebook entries in fp16 (16 bits), fp32 (32 bits), or symmetric INT8 with one
fp16 scale per codebook (``quantize_codebook_int8``). Bits per value:

.. math::
   R = b + \\frac{k\\,d\\,b_c}{\\ell} + \\frac{b_s}{\\ell},

with ``ℓ = group_size`` values per codebook, ``b_c`` bits per codebook entry and
``b_s = 16`` scale bits for INT8 codebooks (0 otherwise).

Distances are computed in the direct form ``Σ_t w_t (x_t − C_t)²`` (or ``‖T_v(x_v − C_c)‖²``),
not by a matmul expansion: exact ties aside, the nearest centroid is then the same on every
backend (a TF32/bf16 matmul could reorder near-equal distances). The nearest-centroid search
(``assign``) is a loop over the centroids that keeps the running minimum and its index for
all vectors (first index on exact ties, as ``argmin``): one fused elementwise pass per 16
centroids, instead of an ``(N, k)`` distance matrix and a variadic ``argmin`` reduction (both
slow on CPU: ~10× at N = 32768, k = 256).

References:
  M. van Baalen et al., "GPTVQ: The Blessing of Dimensionality for LLM Quantization",
  arXiv 2402.15319 (2024), Sec. 3 (codebooks of dimension d per group, data-aware EM
  initialization, INT8 codebooks) and the bits-per-value accounting of its experiments
  (Sec. 4). D. Arthur & S. Vassilvitskii, "k-means++: the advantages of careful
  seeding", SODA 2007, Sec. 2.2. S. Lloyd, "Least squares quantization in PCM", IEEE
  Trans. IT 28(2), 1982.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rdq.checks import is_concrete, require
from rdq.quantizers.base import (
  Rate,
  check_finite,
  check_input,
  check_last_axis_divisible,
  check_rate_shape,
  eager_jit,
  precheck_encode,
)

__all__ = [
    "CODEBOOK_FORMATS",
    "KMeansResult",
    "VQCode",
    "VQQuantizer",
    "assign",
    "kmeanspp_init",
    "mahalanobis_init",
    "quantize_codebook_int8",
    "round_codebook",
    "weighted_kmeans",
    "weighted_objective",
    "weighted_sq_dist",
]

# Bits per stored codebook entry.
CODEBOOK_FORMATS = {"fp32": 32, "fp16": 16, "int8": 8}
INT8_SCALE_BITS = 16  # one fp16 scale per INT8 codebook


def _hi_einsum(spec, a, b):
  return jnp.einsum(spec, a, b, precision=jax.lax.Precision.HIGHEST)


def weighted_sq_dist(
    x: Float[Array, "N d"],
    codebook: Float[Array, "k d"],
    weights: Float[Array, "N d"] | None = None,
    transforms: Float[Array, "N d d"] | None = None,
) -> Float[Array, "N k"]:
  """Weighted squared distance of every vector v to every centroid c (an ``(N, k)`` matrix).

  Diagonal: ``Σ_t w_{v,t} (x_{v,t} − C_{c,t})²`` (direct form). Full: with per-vector
  transforms ``T_v``, ``‖T_v (x_v − C_c)‖²`` (the metric ``M_v = T_vᵀ T_v``).
  """
  diff = x[:, None, :] - codebook[None, :, :]
  if transforms is not None:
    diff = _hi_einsum("vij,vkj->vki", transforms, diff)
    return jnp.sum(diff * diff, axis=-1)
  sq = diff * diff
  if weights is not None:
    sq = sq * weights[:, None, :]
  return jnp.sum(sq, axis=-1)


_UNROLL = 16  # centroids per fused pass of the nearest-centroid loop


def _dist_fn(x, weights, transforms):
  """``c ↦ (N,)`` squared distances to centroid ``c`` in the direct form, elementwise (fusible).

  ``weights`` is ``(N, d)`` or ``(d,)``; ``transforms`` is ``(N, d, d)`` or one shared ``(d, d)``.
  """
  d = x.shape[-1]
  xs = [x[..., j] for j in range(d)]
  if transforms is not None:
    ts = [[transforms[..., i, j] for j in range(d)] for i in range(d)]
  elif weights is not None:
    ws = [weights[..., j] for j in range(d)]

  def dist(c):
    dl = [xs[j] - c[j] for j in range(d)]
    if transforms is not None:
      s = None
      for i in range(d):
        ti = ts[i][0] * dl[0]
        for j in range(1, d):
          ti = ti + ts[i][j] * dl[j]
        s = ti * ti if s is None else s + ti * ti
      return s
    s = None
    for j in range(d):
      t = dl[j] * dl[j]
      if weights is not None:
        t = t * ws[j]
      s = t if s is None else s + t
    return s

  return dist


def _nearest(x, codebook, weights=None, transforms=None):
  """First index of the nearest centroid, by a loop over the centroids (no ``(N, k)`` matrix).

  Centroids are visited in index order, ``_UNROLL`` per fused pass, keeping the running
  minimum with a strict ``<``: the first index among exact ties, as ``jnp.argmin``.
  """
  k = codebook.shape[0]
  u = math.gcd(k, _UNROLL)
  dist = _dist_fn(x, weights, transforms)
  shape = x.shape[:-1]

  def body(it, carry):
    best, idx = carry
    blk = lax.dynamic_slice_in_dim(codebook, it * u, u, 0)
    for c in range(u):
      s = dist(blk[c])
      better = s < best
      best = jnp.where(better, s, best)
      idx = jnp.where(better, it * u + c, idx)
    return best, idx

  init = (jnp.full(shape, jnp.inf, x.dtype), jnp.zeros(shape, jnp.int32))
  return lax.fori_loop(0, k // u, body, init)[1]


def assign(
    x: Float[Array, "N d"],
    codebook: Float[Array, "k d"],
    weights: Float[Array, "N d"] | None = None,
    transforms: Float[Array, "N d d"] | None = None,
) -> Int[Array, " N"]:
  """Index of the nearest centroid in the weighted norm (first index on exact ties).

  The argmin of ``weighted_sq_dist`` row by row, computed by a loop over the centroids
  (module docstring); the same distances in the same direct form.
  """
  f32 = (lambda a: None if a is None else a.astype(jnp.float32))
  return _nearest(f32(x), f32(codebook), f32(weights), f32(transforms))


def weighted_objective(
    x: Float[Array, "N d"],
    codebook: Float[Array, "k d"],
    idx: Int[Array, " N"],
    weights: Float[Array, "N d"] | None = None,
    transforms: Float[Array, "N d d"] | None = None,
) -> Float[Array, ""]:
  """``J(C, a) = Σ_v Σ_t w_{v,t} (x_{v,t} − C_{a_v,t})²`` (or ``Σ_v ‖T_v(x_v − C_{a_v})‖²``)."""
  diff = x - codebook[idx]
  if transforms is not None:
    td = _hi_einsum("vij,vj->vi", transforms, diff)
    return jnp.sum(td * td)
  sq = diff * diff
  if weights is not None:
    sq = sq * weights
  return jnp.sum(sq)


def kmeanspp_init(
    key: PRNGKeyArray,
    x: Float[Array, "N d"],
    k: int,
    weights: Float[Array, "N d"] | None = None,
    transforms: Float[Array, "N d d"] | None = None,
) -> Float[Array, "k d"]:
  """k-means++ seeding in the weighted norm (Arthur & Vassilvitskii 2007, Sec. 2.2).

  The first centroid is a uniformly drawn vector; centroid ``c`` is then drawn with
  probability ``D(x)² / Σ D²`` where ``D(x)²`` is the weighted squared distance of ``x`` to
  the nearest centroid drawn so far. If every ``D² = 0`` (all vectors already coincide with
  a centroid) the draw is uniform. Deterministic given ``key``.
  """
  n = x.shape[0]
  keys = jax.random.split(key, k)
  first = jax.random.randint(keys[0], (), 0, n)
  cb = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(x[first])
  dist = _dist_fn(x, weights, transforms)
  d2 = dist(x[first])

  def body(c, carry):
    cb, d2 = carry
    # inverse-CDF draw: one uniform per centroid instead of n Gumbels (categorical)
    cdf = jnp.cumsum(d2)
    total = cdf[-1]
    k_u, k_uniform = jax.random.split(keys[c])
    u = jax.random.uniform(k_u, (), d2.dtype) * total
    weighted = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), n - 1)
    pick = jnp.where(total > 0, weighted, jax.random.randint(k_uniform, (), 0, n))
    new = x[pick]
    cb = cb.at[c].set(new)
    d2 = jnp.minimum(d2, dist(new))
    return cb, d2

  cb, _ = lax.fori_loop(1, k, body, (cb, d2))
  return cb


def mahalanobis_init(x: Float[Array, "N d"], k: int) -> Float[Array, "k d"]:
  """k data vectors at evenly spaced ranks of their Mahalanobis distance to the mean.

  With ``μ`` the mean and ``Σ = Σ_v (x_v − μ)(x_v − μ)ᵀ`` the scatter matrix of the
  vectors, ``δ_v = (x_v − μ)ᵀ Σ⁺ (x_v − μ)`` (``Σ⁺``: pseudo-inverse, so degenerate data is
  fine); the vectors sorted by ``δ`` (stably) give the centroids at ranks
  ``round(i·(N−1)/(k−1))``, ``i = 0..k−1``. This is the initialization of the GPTVQ
  reference code (``mahalanobis_init``, used by every script of the paper's experiments):
  deterministic, no key, ``O(N log N)``; the EM iterations then fit the codebook.

  References:
    van Baalen et al., "GPTVQ", arXiv 2402.15319, Sec. 3 (data-aware EM initialization);
    Qualcomm-AI-research/gptvq, ``vq_quant.py`` (the method, re-derived here).
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r} must be a positive integer")
  n = x.shape[0]
  if k > n:
    raise ValueError(f"codebook size k={k} exceeds the number of vectors N={n}")
  x = x.astype(jnp.float32)
  xc = x - jnp.mean(x, axis=0)
  lam = jnp.linalg.pinv(_hi_einsum("vi,vj->ij", xc, xc), hermitian=True)
  delta = jnp.sum(_hi_einsum("vi,ij->vj", xc, lam) * xc, axis=-1)
  order = jnp.argsort(delta, stable=True)
  ranks = np.round(np.linspace(0, n - 1, k)).astype(np.int32)
  return x[order[ranks]]


class KMeansResult(NamedTuple):
  """Output of ``weighted_kmeans``.

  Attributes:
    codebook: ``(k, d)`` centroids after the last M-step.
    idx: ``(N,)`` nearest-centroid assignment to ``codebook``.
    objective: ``(iters + 1,)`` ``J`` after the seeding's assignment and after each E-step
      (non-increasing up to float32 summation error).
  """

  codebook: Float[Array, "k d"]
  idx: Int[Array, " N"]
  objective: Float[Array, " iters_plus_1"]


def weighted_kmeans(
    key: PRNGKeyArray,
    x: Float[Array, "N d"],
    k: int,
    weights: Float[Array, "N d"] | None = None,
    *,
    transforms: Float[Array, "N d d"] | None = None,
    iters: int = 25,
    init: Float[Array, "k d"] | None = None,
) -> KMeansResult:
  """Weighted Lloyd/EM k-means with k-means++ seeding (module docstring).

  With ``transforms`` the metric is ``‖T_v(x_v − C_c)‖²`` and the M-step is the
  matrix-weighted mean ``C_c = (Σ_{v∈c} M_v)^{-1} Σ_{v∈c} M_v x_v``, ``M_v = T_vᵀT_v`` (the
  exact minimizer, so ``J`` still never increases); ``weights`` is the diagonal case.

  Args:
    key: PRNG key of the seeding (unused when ``init`` is given).
    x: ``(N, d)`` vectors.
    k: number of centroids, ``1 ≤ k ≤ N``.
    weights: ``(N, d)`` positive per-coordinate weights ``w_{v,t}``; ``None`` = 1.
    transforms: ``(N, d, d)`` invertible per-vector transforms ``T_v`` (instead of weights).
    iters: EM iterations (each an M-step followed by an E-step).
    init: optional initial codebook ``(k, d)`` instead of k-means++.

  Returns:
    ``KMeansResult(codebook, idx, objective)``.

  References:
    GPTVQ (arXiv 2402.15319), Sec. 3 (EM codebook initialization weighted by the Hessian);
    Lloyd (1982).
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r} must be a positive integer")
  if not isinstance(iters, int) or iters < 0:
    raise ValueError(f"iters={iters!r} must be an integer ≥ 0")
  if x.ndim != 2:
    raise ValueError(f"x must be (N, d); got shape {tuple(x.shape)}")
  if k > x.shape[0]:
    raise ValueError(f"codebook size k={k} exceeds the number of vectors N={x.shape[0]}")
  if weights is not None and transforms is not None:
    raise ValueError("give weights (diagonal metric) or transforms (full metric), not both")
  x = x.astype(jnp.float32)
  if transforms is not None:
    t = transforms.astype(jnp.float32)
    w = None
    mats = _hi_einsum("vji,vjk->vik", t, t)  # M_v = T_vᵀ T_v
    mx = _hi_einsum("vij,vj->vi", mats, x)
  else:
    t = None
    w = jnp.ones_like(x) if weights is None else jnp.broadcast_to(weights.astype(jnp.float32), x.shape)
  w_e = None if weights is None else w  # the E-step's weights (None: unweighted, no multiply)
  cb = kmeanspp_init(key, x, k, w_e, t) if init is None else init.astype(jnp.float32)
  idx = _nearest(x, cb, w_e, t)
  obj0 = weighted_objective(x, cb, idx, w, t)

  def step(carry, _):
    cb, idx = carry
    if t is not None:
      a = jax.ops.segment_sum(mats, idx, num_segments=k)  # (k, d, d)
      b = jax.ops.segment_sum(mx, idx, num_segments=k)
      used = jnp.trace(a, axis1=1, axis2=2) > 0
      eye = jnp.eye(x.shape[1], dtype=jnp.float32)
      sol = jnp.linalg.solve(jnp.where(used[:, None, None], a, eye), b[..., None])[..., 0]
      cb = jnp.where(used[:, None], sol, cb)
    else:
      sums = jax.ops.segment_sum(w * x, idx, num_segments=k)
      wsum = jax.ops.segment_sum(w, idx, num_segments=k)
      cb = jnp.where(wsum > 0, sums / jnp.where(wsum > 0, wsum, 1.0), cb)
    idx = _nearest(x, cb, w_e, t)
    return (cb, idx), weighted_objective(x, cb, idx, w, t)

  (cb, idx), objs = lax.scan(step, (cb, idx), None, length=iters)
  return KMeansResult(cb, idx, jnp.concatenate([obj0[None], objs]))


def _fp16(x: Array) -> Array:
  return x.astype(jnp.float16).astype(jnp.float32)


def quantize_codebook_int8(codebook: Float[Array, "*b k d"]) -> tuple[Float[Array, "*b k d"], Float[Array, "*b"]]:
  """Symmetric INT8 codebook entries with one fp16 scale per codebook.

  ``s = fp16(max|C| / 127)``, ``Ĉ = s · clip(round(C/s), −127, 127)``. Because fp16 rounding
  moves ``s`` by at most a relative ``2^{-11}``, ``max|C|/s ≤ 127.07`` and every entry moves by
  at most ``s/2``: ``|Ĉ − C| ≤ s/2`` (the bound ``rdq.layer.gptvq`` states for its INT8 step).

  Returns:
    ``(Ĉ, s)``: dequantized codebooks (float32) and the scales ``(*b,)``. A zero codebook
    keeps scale 0 and stays zero.

  References:
    GPTVQ (arXiv 2402.15319), Sec. 3 ("codebook quantization" to 8 bits).
  """
  c = codebook.astype(jnp.float32)
  amax = jnp.max(jnp.abs(c), axis=(-2, -1))
  s = _fp16(amax * jnp.float32(1.0 / 127.0))
  s_safe = jnp.where(s > 0, s, 1.0)[..., None, None]
  z = jnp.clip(jnp.round(c / s_safe), -127, 127)
  return z * s[..., None, None], s


def round_codebook(codebook: Array, fmt: str) -> Array:
  """Round codebook entries to their storage format (``CODEBOOK_FORMATS``), as float32."""
  if fmt == "fp32":
    return codebook.astype(jnp.float32)
  if fmt == "fp16":
    return _fp16(codebook)
  if fmt == "int8":
    return quantize_codebook_int8(codebook)[0]
  raise ValueError(f"codebook format {fmt!r} must be one of {tuple(CODEBOOK_FORMATS)}")


@functools.partial(jax.jit, static_argnums=0)
def _encode_jit(q: "VQQuantizer", x, key):
  return q._encode_traced(x, key)


class VQCode(NamedTuple):
  """Compact code of a ``VQQuantizer``.

  Attributes:
    indices: ``(*batch, n/d)`` int32 centroid indices (vectors of ``d`` consecutive values).
    codebooks: ``(*batch, n/group_size, k, d)`` float32 values of the stored codebooks
      (already rounded to fp16 or INT8·scale).
    scales: ``(*batch, n/group_size)`` fp16 scales of INT8 codebooks; ``None`` otherwise.
  """

  indices: Int[Array, "*batch nd"]
  codebooks: Float[Array, "*batch g k d"]
  scales: Array | None


@dataclasses.dataclass(frozen=True)
class VQQuantizer:
  """Per-group d-dimensional VQ along the last axis (module docstring).

  Attributes:
    dim: vector dimension d (1, 2, 4 or 8).
    bits: index bits per value b; ``d·b`` must be an integer and ``k = 2^{d·b} ≤ 2^16``.
    group_size: values per codebook ℓ (a multiple of d with ``ℓ/d ≥ k`` vectors).
    iters: EM iterations after k-means++ seeding.
    codebook_format: ``"fp16"``, ``"fp32"`` or ``"int8"`` (fp16 scale per codebook).

  ``quantize(x, key)`` fits the codebooks to ``x`` itself (the codebooks are side
  information, counted by ``rate``). ``key=None`` uses ``jax.random.key(0)``; group ``j``
  along the last axis is seeded with ``fold_in(key, j)`` (rows share seeds, so ``vmap``
  over leading axes gives the same result).
  """

  dim: int = 2
  bits: float = 2
  group_size: int = 256
  iters: int = 25
  codebook_format: str = "fp16"

  def __post_init__(self):
    if self.dim not in (1, 2, 4, 8):
      raise ValueError(f"dim={self.dim!r} must be 1, 2, 4 or 8")
    if not isinstance(self.bits, (int, float)) or self.bits <= 0:
      raise ValueError(f"bits={self.bits!r} must be > 0")
    index_bits = self.bits * self.dim
    if abs(index_bits - round(index_bits)) > 1e-9 or round(index_bits) > 16:
      raise ValueError(f"dim·bits = {self.dim}·{self.bits} must be an integer ≤ 16 (k = 2^(dim·bits) centroids)")
    if not isinstance(self.group_size, int) or self.group_size < 1 or self.group_size % self.dim:
      raise ValueError(f"dim={self.dim} must divide group_size={self.group_size!r} (a positive integer)")
    if self.k > self.group_size // self.dim:
      raise ValueError(
          f"codebook size k=2^(dim·bits)={self.k} exceeds the {self.group_size // self.dim} vectors of a group "
          f"(group_size={self.group_size}, dim={self.dim})"
      )
    if not isinstance(self.iters, int) or self.iters < 0:
      raise ValueError(f"iters={self.iters!r} must be an integer ≥ 0")
    if self.codebook_format not in CODEBOOK_FORMATS:
      raise ValueError(f"codebook_format={self.codebook_format!r} must be one of {tuple(CODEBOOK_FORMATS)}")

  @property
  def k(self) -> int:
    """Centroids per codebook, ``2^{d·b}``."""
    return 2 ** int(round(self.bits * self.dim))

  def _fit_one(self, key, x):
    """One group ``(group_size,)`` → (stored codebook (k, d), scale, indices)."""
    v = x.reshape(-1, self.dim)
    res = weighted_kmeans(key, v, self.k, iters=self.iters)
    if self.codebook_format == "int8":
      cb, s = quantize_codebook_int8(res.codebook)
    else:
      cb, s = round_codebook(res.codebook, self.codebook_format), jnp.float32(0.0)
    return cb, s, assign(v, cb)

  def _encode_checks(self, x, key=None):
    """``_encode``'s checks; on concrete ``x`` in NumPy (also ``eager_jit``'s host pre-check)."""
    check_input(x, key=key)
    check_last_axis_divisible(x.shape, self.group_size, "group_size")
    if self.codebook_format != "fp32":
      # fp16 codebooks (and int8 codebooks' fp16 scales) cannot hold centroids of groups whose
      # largest magnitude is outside fp16's normal range: refuse instead of flushing/saturating.
      xp = np if is_concrete(x) else jnp
      xf = np.asarray(x, np.float32) if xp is np else x.astype(jnp.float32)
      xg = xp.abs(xf).reshape((-1, x.shape[-1] // self.group_size, self.group_size))
      amax = xp.max(xg, axis=-1)
      lo, hi = float(jnp.finfo(jnp.float16).smallest_normal), float(jnp.finfo(jnp.float16).max)
      if self.codebook_format == "int8":
        lo, hi = lo * 127.0, hi
      ok = (amax == 0) | xp.isnan(amax) | ((amax >= lo) & (amax <= hi))
      pos = xp.where(amax > 0, amax, xp.float32(xp.inf))
      require(ok, f"x: group maxima range over [{{}}, {{}}], outside [{lo:.3g}, {hi:.6g}] where the "
              f"{self.codebook_format} codebook keeps its precision (it would flush or saturate); "
              "rescale x or use codebook_format='fp32'", xp.min(pos), xp.max(xp.where(xp.isnan(amax), xp.float32(0.0), amax)))

  def _encode(self, x, key):
    self._encode_checks(x, key)
    key = jax.random.key(0) if key is None else key
    return _encode_jit(self, x, key)

  def _encode_traced(self, x, key):
    n = x.shape[-1]
    ng = n // self.group_size
    xg = x.astype(jnp.float32).reshape((-1, ng, self.group_size))
    keys = jax.vmap(lambda j: jax.random.fold_in(key, j))(jnp.arange(ng))
    fit = jax.vmap(jax.vmap(self._fit_one), in_axes=(None, 0))
    cb, s, idx = fit(keys, xg)
    batch = x.shape[:-1]
    return VQCode(
        indices=idx.reshape(batch + (n // self.dim,)),
        codebooks=cb.reshape(batch + (ng, self.k, self.dim)),
        scales=s.reshape(batch + (ng,)).astype(jnp.float16) if self.codebook_format == "int8" else None,
    )

  @eager_jit(precheck=lambda self, x, key=None: self._encode_checks(x, key))
  def quantize(
      self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None
  ) -> Float[Array, "*batch n"]:
    """Fit the group codebooks to ``x`` and replace each vector by its nearest centroid."""
    return self.decode(self._encode(x, key), dtype=x.dtype)

  @eager_jit(precheck=lambda self, x, key=None: (precheck_encode(self, x, key), self._encode_checks(x, key)))
  def encode(self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None) -> VQCode:
    """Indices and stored codebooks. Raises ``ValueError`` on NaN/Inf input."""
    check_input(x, key=key)
    check_finite(x)
    return self._encode(x, key)

  @eager_jit
  def decode(self, code: VQCode, dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """``x̂[…, v·d + t] = C_{g(v)}[idx[…, v], t]`` with ``g(v) = ⌊v·d/group_size⌋``."""
    if not isinstance(code, VQCode):
      raise TypeError(f"code must be a VQCode (from VQQuantizer.encode); got {type(code).__name__}")
    idx = code.indices
    cb = code.codebooks
    nv = idx.shape[-1]
    per_group = self.group_size // self.dim
    if idx.ndim < 1 or (nv * self.dim) % self.group_size or cb.shape[-3:] != ((nv * self.dim) // self.group_size, self.k, self.dim):
      raise ValueError(
          f"code.codebooks has shape {tuple(cb.shape)} but {self.name} needs (..., {(nv * self.dim) // max(self.group_size, 1)}, "
          f"{self.k}, {self.dim}) for indices of shape {tuple(idx.shape)} (was the code made by another VQ config?)"
      )
    grp = jnp.arange(nv) // per_group
    batch = idx.shape[:-1]
    cbf = cb.reshape((-1,) + cb.shape[-3:])
    idf = idx.reshape((-1, nv))
    vecs = jax.vmap(lambda c, i: c[grp, i])(cbf, idf)  # (B, nv, d)
    return vecs.reshape(batch + (nv * self.dim,)).astype(dtype)

  def rate(self, shape: tuple[int, ...]) -> Rate:
    """Bits per value: ``b`` nominal; side ``(k·d·b_c + b_s)/group_size`` (module docstring)."""
    shape = check_rate_shape(shape)
    check_last_axis_divisible(shape, self.group_size, "group_size")
    b_c = CODEBOOK_FORMATS[self.codebook_format]
    scale = INT8_SCALE_BITS if self.codebook_format == "int8" else 0
    return Rate(nominal=math.log2(self.k) / self.dim, side=(self.k * self.dim * b_c + scale) / self.group_size)

  @property
  def name(self) -> str:
    fmt = "" if self.codebook_format == "fp16" else f"_{self.codebook_format}"
    b = int(self.bits) if float(self.bits).is_integer() else self.bits
    return f"vq{self.dim}_b{b}_g{self.group_size}{fmt}"
