"""Lattices and their closest-point (nearest lattice point) maps: Zⁿ, Dₙ, Dₙ*, E8 and BW16.

A lattice ``Λ = {z B : z ∈ Zⁿ}`` is given by a generator matrix ``B`` whose **rows** are a
basis. Each lattice here is a frozen dataclass with

* ``generator`` (``(n, n)`` NumPy array, rows = basis), ``volume = |det B|``, ``dim``;
* ``packing_radius`` (half the minimal distance) and ``covering_radius`` where known;
* ``minimal_vectors()``, the shortest non-zero lattice vectors;
* ``closest_point(x)``: the nearest lattice point to each vector of the last axis, a pure
  jnp function (jit-able; it broadcasts over any leading axes, so ``vmap`` is not needed but
  works);
* ``coordinates(p)`` / ``from_coordinates(z)``: integer coordinates in the basis.

Closest-point algorithms (Conway & Sloane 1982, "Fast quantizing and decoding algorithms for
lattice quantizers and codes", IEEE Trans. IT 28(2), Sec. II–III; SPLAG Ch. 20, Sec. 2–3):

.. math::
   Q_{Z^n}(x) = f(x) = (\\lfloor x_i \\rceil)_i, \\qquad
   Q_{D_n}(x) = \\begin{cases} f(x) & \\sum_i f(x_i) \\text{ even} \\\\
                                g(x) & \\text{otherwise} \\end{cases},

where ``g`` rounds the coordinate with the largest rounding error ``|x_k − f(x_k)|`` the
other way. ``D_n* = Zⁿ ∪ (Zⁿ + ½·1)`` and ``E8 = D8 ∪ (D8 + ½·1)`` are unions of two cosets
``C ∪ (C + h)``: ``Q(x)`` is the closer of ``Q_C(x)`` and ``Q_C(x − h) + h``.

**Tie rule** (points equidistant from two lattice points, a set of measure zero):

* scalar rounding is *round half up*, ``⌊x⌉ = ⌊x + ½⌋`` computed exactly as
  ``floor(x) + (x − floor(x) ≥ ½)``, so ``Q(x + v) = Q(x) + v`` holds exactly for integer
  translations even on ties (round-half-even would break it; ``Q(−x) = −Q(x)`` then fails
  only on ties);
* ``Dₙ``: on ties for the largest rounding error the first (lowest-index) coordinate is
  flipped; a flipped coordinate with zero rounding error moves up;
* two-coset lattices (``Dₙ*``, ``E8``): on equal distance the first coset (``Zⁿ`` resp.
  ``D8``) wins.

Consequently ``closest_point`` is exactly translation-equivariant under lattice vectors of the
first coset (e.g. ``D8 ⊂ E8``, ``2E8``) everywhere, and under all lattice vectors off ties.

References:
  J. H. Conway and N. J. A. Sloane, "Fast quantizing and decoding algorithms for lattice
  quantizers and codes", IEEE Trans. Inf. Theory 28(2):227–232, 1982 (algorithms for Zⁿ, Dₙ,
  Dₙ*, E8). J. H. Conway and N. J. A. Sloane, *Sphere Packings, Lattices and Groups* (SPLAG),
  3rd ed., Ch. 4 (definitions, minimal vectors, packing and covering radii) and Table 2.3
  (normalized second moments, see ``rdq.limits.lattice_constants``). The Leech lattice Λ24 is
  in ``rdq.quantizers.leech`` (``lattice_from_name("leech")``).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import itertools
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from rdq.montecarlo import Estimate, estimate

__all__ = [
    "BW16Lattice",
    "DnDualLattice",
    "DnLattice",
    "E8Lattice",
    "Lattice",
    "ZnLattice",
    "lattice_from_name",
    "normalized_second_moment",
    "round_half_up",
]


def round_half_up(x: Float[Array, "*b"]) -> Float[Array, "*b"]:
  """Nearest integer with ties rounded up, ``⌊x + ½⌋``, computed exactly.

  ``floor(x + 0.5)`` is wrong in floating point (``0.49999997 + 0.5`` rounds to ``1.0`` in
  float32); ``x − floor(x)`` is exact, so the comparison below is too.
  """
  f = jnp.floor(x)
  return f + (x - f >= 0.5).astype(x.dtype)


def _closest_zn(x: Array) -> Array:
  return round_half_up(x)


def _closest_dn(x: Array) -> Array:
  """Conway–Sloane Dₙ decoder: round, and fix the parity by re-rounding the worst coordinate."""
  f = round_half_up(x)
  d = x - f  # in [-1/2, 1/2)
  odd = jnp.mod(jnp.sum(f, axis=-1, keepdims=True), 2.0) != 0
  k = jnp.argmax(jnp.abs(d), axis=-1)  # first index on ties
  onehot = (jnp.arange(x.shape[-1]) == k[..., None]).astype(x.dtype)
  step = jnp.where(d >= 0, 1.0, -1.0).astype(x.dtype)
  return f + jnp.where(odd, onehot * step, 0.0).astype(x.dtype)


def _closest_zn_int(w: Array, den: int) -> tuple[Array, Array]:
  """``Q_{Zⁿ}(w / den)`` for integer ``w`` in exact integer arithmetic, with the residual
  ``w − den·f`` (units of 1/den). ``⌊w/den + ½⌋ = ⌊(2w + den) / (2 den)⌋``."""
  f = jnp.floor_divide(2 * w + den, 2 * den)
  return f, w - den * f


def _closest_dn_int(w: Array, den: int) -> tuple[Array, Array]:
  """``Q_{Dₙ}(w / den)`` exactly (same algorithm and tie rule as ``_closest_dn``)."""
  f, r = _closest_zn_int(w, den)
  odd = jnp.mod(jnp.sum(f, axis=-1, keepdims=True), 2) != 0
  k = jnp.argmax(jnp.abs(r), axis=-1)
  onehot = jnp.arange(w.shape[-1]) == k[..., None]
  step = jnp.where(r >= 0, 1, -1).astype(w.dtype)
  f = f + jnp.where(odd & onehot, step, 0).astype(w.dtype)
  return f, w - den * f


def _two_coset_int(w: Array, den: int, base) -> Array:
  """``2·Q(w / den)`` for ``C ∪ (C + ½·1)`` (``den`` even), exactly; ties go to ``C``."""
  f0, r0 = base(w, den)
  f1, r1 = base(w - den // 2, den)  # residual of f1 + ½ is (w − den/2) − den·f1
  d0 = jnp.sum(r0 * r0, axis=-1, keepdims=True)
  d1 = jnp.sum(r1 * r1, axis=-1, keepdims=True)
  return jnp.where(d1 < d0, 2 * f1 + 1, 2 * f0)


def _closer(x: Array, y0: Array, y1: Array) -> Array:
  """Per vector, ``y0`` unless ``y1`` is strictly closer to ``x``."""
  d0 = jnp.sum((x - y0) ** 2, axis=-1, keepdims=True)
  d1 = jnp.sum((x - y1) ** 2, axis=-1, keepdims=True)
  return jnp.where(d1 < d0, y1, y0)


def _sum_halves(a: Array) -> Array:
  """Sum over axis −2 (length a power of two) by adding halves: ``(a[:8] + a[8:])`` and so on,
  the order of XLA's CPU row reduction of ``jnp.sum(·, axis=-1)`` over 16 floats."""
  while a.shape[-2] > 1:
    h = a.shape[-2] // 2
    a = a[..., :h, :] + a[..., h:, :]
  return a[..., 0, :]


def _check_last_axis(x: Array, dim: int, what: str) -> None:
  if x.ndim == 0 or x.shape[-1] != dim:
    raise ValueError(f"{what}: the last axis of x must have the lattice dimension {dim}; got shape {x.shape}")


@dataclasses.dataclass(frozen=True)
class Lattice(abc.ABC):
  """Common interface of rdq lattices (see module docstring)."""

  @property
  @abc.abstractmethod
  def dim(self) -> int:
    """Dimension n."""

  @property
  @abc.abstractmethod
  def name(self) -> str:
    """Short name, e.g. ``"e8"``, ``"d4"``, ``"d5star"``, ``"z"``."""

  @abc.abstractmethod
  def generator(self) -> np.ndarray:
    """``(n, n)`` float64 generator matrix; its rows are a basis of the lattice."""

  @abc.abstractmethod
  def minimal_vectors(self) -> np.ndarray:
    """``(K, n)`` float64 array of all shortest non-zero lattice vectors (the kissing set)."""

  @abc.abstractmethod
  def _closest(self, x: Array) -> Array:
    """Closest point on the last axis, no argument checks."""

  @abc.abstractmethod
  def _closest_int(self, w: Array, den: int) -> Array:
    """``denominator · Q(w / den)`` (integers) for integer ``w``, exact; no checks."""

  @property
  def volume(self) -> float:
    """Volume of a Voronoi cell, ``|det B|``."""
    return float(abs(np.linalg.det(self.generator())))

  @property
  def packing_radius(self) -> float:
    """Half the minimal distance between lattice points."""
    return float(np.linalg.norm(self.minimal_vectors()[0])) / 2.0

  @property
  def covering_radius(self) -> float | None:
    """Largest distance from a point of space to the lattice, where known (else ``None``)."""
    return None

  @property
  def denominator(self) -> int:
    """Smallest integer ``m`` with ``m·Λ ⊂ Zⁿ`` (1 for Zⁿ, Dₙ; 2 for Dₙ*, E8)."""
    return 1

  def closest_point(self, x: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
    """The nearest lattice point to each vector of the last axis (tie rule: module docstring).

    Args:
      x: points, last axis of length ``dim``; any leading axes; float dtype (kept).

    Returns:
      Lattice points of the same shape and dtype.

    References:
      Conway & Sloane, IEEE Trans. IT 28(2), 1982, Sec. II–III.
    """
    x = jnp.asarray(x)
    _check_last_axis(x, self.dim, f"{self.name}.closest_point")
    if not jnp.issubdtype(x.dtype, jnp.floating):
      x = x.astype(jnp.float32)
    return self._closest(x)

  def closest_point_rational(self, w: Integer[Array, "*batch n"], den: int, dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """``Q_Λ(w / den)`` for integer ``w`` and a positive integer ``den``, in exact integer
    arithmetic (same algorithm and tie rule as ``closest_point``).

    Used for the coarse-lattice reduction of Voronoi codes, where ``w / den`` often lies
    exactly on a cell boundary: the float quotient would make the tie decision depend on
    how the compiler rounds a division (``x / 14`` vs ``x · (1/14)``), this does not.

    Args:
      w: int32 array, last axis of length ``dim``; ``|w|`` well below 2^30 / den.
      den: positive integer; even for the two-coset lattices (``Dₙ*``, ``E8``).
      dtype: float dtype of the returned lattice points.
    """
    w = jnp.asarray(w)
    _check_last_axis(w, self.dim, f"{self.name}.closest_point_rational")
    if not jnp.issubdtype(w.dtype, jnp.integer):
      raise TypeError(f"w must be an integer array; got dtype {w.dtype}")
    if isinstance(den, bool) or not isinstance(den, int) or den < 1:
      raise ValueError(f"den={den!r} must be a positive integer")
    if self.denominator == 2 and den % 2:
      raise ValueError(f"{self.name} needs an even den; got den={den}")
    return self._closest_int(w.astype(jnp.int32), den).astype(dtype) / self.denominator

  def coordinates(self, p: Float[Array, "*batch n"]) -> Integer[Array, "*batch n"]:
    """Integer coordinates ``z`` (int32) with ``p = z B`` for lattice points ``p``."""
    p = jnp.asarray(p)
    _check_last_axis(p, self.dim, f"{self.name}.coordinates")
    inv = jnp.asarray(np.linalg.inv(self.generator()), p.dtype if jnp.issubdtype(p.dtype, jnp.floating) else jnp.float32)
    return jnp.round(p @ inv).astype(jnp.int32)

  def from_coordinates(self, z: Integer[Array, "*batch n"], dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """Lattice points ``z B`` from integer coordinates."""
    z = jnp.asarray(z)
    _check_last_axis(z, self.dim, f"{self.name}.from_coordinates")
    return z.astype(dtype) @ jnp.asarray(self.generator(), dtype)

  def sample_cell(self, key: PRNGKeyArray, shape: tuple[int, ...] = ()) -> Float[Array, "*shape n"]:
    """Points uniform on the Voronoi cell of the origin: ``u − Q(u)`` with ``u = r B``,
    ``r ~ U[0, 1)ⁿ`` (``u`` is uniform on a fundamental parallelepiped)."""
    r = jax.random.uniform(key, tuple(shape) + (self.dim,), jnp.float32)
    u = r @ jnp.asarray(self.generator(), jnp.float32)
    return u - self._closest(u)


@dataclasses.dataclass(frozen=True)
class ZnLattice(Lattice):
  """The integer lattice ``Zⁿ`` (scalar rounding per coordinate). Volume 1, G = 1/12.

  Attributes:
    n: dimension, ≥ 1.
  """

  n: int = 1

  def __post_init__(self):
    if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
      raise ValueError(f"Zn lattice dimension n={self.n!r} must be a positive integer")

  @property
  def dim(self) -> int:
    return self.n

  @property
  def name(self) -> str:
    return "z" if self.n == 1 else f"z{self.n}"

  def generator(self) -> np.ndarray:
    return np.eye(self.n)

  def minimal_vectors(self) -> np.ndarray:
    e = np.eye(self.n)
    return np.concatenate([e, -e])

  @property
  def covering_radius(self) -> float:
    return math.sqrt(self.n) / 2.0

  def _closest(self, x):
    return _closest_zn(x)

  def _closest_int(self, w, den):
    return _closest_zn_int(w, den)[0]


def _dn_generator(n: int) -> np.ndarray:
  """Rows ``2e₁, e₂ − e₁, …, eₙ − eₙ₋₁`` (det 2): a basis of Dₙ."""
  b = np.zeros((n, n))
  b[0, 0] = 2.0
  for i in range(1, n):
    b[i, i] = 1.0
    b[i, i - 1] = -1.0
  return b


@dataclasses.dataclass(frozen=True)
class DnLattice(Lattice):
  """The checkerboard lattice ``Dₙ = {z ∈ Zⁿ : Σ zᵢ even}``, n ≥ 2.

  Volume 2, minimal vectors ``±eᵢ ± eⱼ`` (2n(n−1) of them), packing radius ``1/√2``,
  covering radius ``max(1, √n / 2)`` (SPLAG Ch. 4, Sec. 7). ``D₃`` is the fcc lattice,
  ``D₄`` the best known 4-dimensional quantizer.

  Attributes:
    n: dimension, ≥ 2.
  """

  n: int = 4

  def __post_init__(self):
    if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
      raise ValueError(f"Dn lattice dimension n={self.n!r} must be an integer ≥ 2")

  @property
  def dim(self) -> int:
    return self.n

  @property
  def name(self) -> str:
    return f"d{self.n}"

  def generator(self) -> np.ndarray:
    return _dn_generator(self.n)

  def minimal_vectors(self) -> np.ndarray:
    out = []
    for i, j in itertools.combinations(range(self.n), 2):
      for si, sj in itertools.product((1.0, -1.0), repeat=2):
        v = np.zeros(self.n)
        v[i], v[j] = si, sj
        out.append(v)
    return np.array(out)

  @property
  def covering_radius(self) -> float:
    return max(1.0, math.sqrt(self.n) / 2.0)

  def _closest(self, x):
    return _closest_dn(x)

  def _closest_int(self, w, den):
    return _closest_dn_int(w, den)[0]


@dataclasses.dataclass(frozen=True)
class DnDualLattice(Lattice):
  """The dual ``Dₙ* = Zⁿ ∪ (Zⁿ + ½·1)``, n ≥ 2 (``D₃*`` is bcc, ``D₄*`` is similar to D₄).

  Volume ½. Minimal vectors: ``(±½)ⁿ`` for n < 4, those and ``±eᵢ`` for n = 4, ``±eᵢ`` for
  n > 4 (SPLAG Ch. 4, Sec. 7). Covering radius given for n = 3 (``√5/4``) and n = 4
  (``1/√2``) only.

  Attributes:
    n: dimension, ≥ 2.
  """

  n: int = 5

  def __post_init__(self):
    if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 2:
      raise ValueError(f"Dn* lattice dimension n={self.n!r} must be an integer ≥ 2")

  @property
  def dim(self) -> int:
    return self.n

  @property
  def name(self) -> str:
    return f"d{self.n}star"

  @property
  def denominator(self) -> int:
    return 2

  def generator(self) -> np.ndarray:
    b = np.eye(self.n)
    b[-1] = 0.5
    return b

  def minimal_vectors(self) -> np.ndarray:
    halves = np.array(list(itertools.product((0.5, -0.5), repeat=self.n)))
    e = np.eye(self.n)
    units = np.concatenate([e, -e])
    if self.n < 4:
      return halves
    if self.n == 4:
      return np.concatenate([units, halves])
    return units

  @property
  def covering_radius(self) -> float | None:
    return {3: math.sqrt(5.0) / 4.0, 4: 1.0 / math.sqrt(2.0)}.get(self.n)

  def _closest(self, x):
    y0 = _closest_zn(x)
    y1 = _closest_zn(x - 0.5) + 0.5
    return _closer(x, y0, y1)

  def _closest_int(self, w, den):
    return _two_coset_int(w, den, _closest_zn_int)


@dataclasses.dataclass(frozen=True)
class E8Lattice(Lattice):
  """The Gosset lattice ``E8 = D8 ∪ (D8 + ½·1)``.

  Unimodular (volume 1), 240 minimal vectors of norm 2 (112 of the form ``±eᵢ ± eⱼ`` and
  128 of the form ``(±½)⁸`` with an even number of minus signs), packing radius ``1/√2``,
  covering radius 1 (SPLAG Ch. 4, Sec. 8). Generator rows: ``2e₁, e₂ − e₁, …, e₇ − e₆,
  ½·1`` (the basis used by NestQuant, Savkin et al. 2025).
  """

  @property
  def dim(self) -> int:
    return 8

  @property
  def name(self) -> str:
    return "e8"

  @property
  def denominator(self) -> int:
    return 2

  def generator(self) -> np.ndarray:
    b = _dn_generator(8)
    b[7] = 0.5
    return b

  def minimal_vectors(self) -> np.ndarray:
    d8 = DnLattice(8).minimal_vectors()
    halves = np.array([s for s in itertools.product((0.5, -0.5), repeat=8) if sum(v < 0 for v in s) % 2 == 0])
    return np.concatenate([d8, halves])

  @property
  def covering_radius(self) -> float:
    return 1.0

  def _closest(self, x):
    y0 = _closest_dn(x)
    y1 = _closest_dn(x - 0.5) + 0.5
    return _closer(x, y0, y1)

  def _closest_int(self, w, den):
    return _two_coset_int(w, den, _closest_dn_int)


@functools.cache
def _rm14_codewords() -> np.ndarray:
  """The 32 codewords of the first-order Reed–Muller code RM(1, 4) (length 16, weights
  0, 8, 16): evaluations of the affine functions ``a₀ + a·v`` over ``v ∈ F₂⁴``."""
  v = np.array(list(itertools.product((0, 1), repeat=4)))  # (16, 4)
  words = []
  for a0 in (0, 1):
    for a in itertools.product((0, 1), repeat=4):
      words.append((a0 + v @ np.array(a)) % 2)
  out = np.array(words, dtype=np.float64)
  out.setflags(write=False)  # cached: shared by every caller
  return out


def _integer_row_basis(gens: np.ndarray) -> np.ndarray:
  """A basis (rows) of the integer lattice spanned by the integer rows of ``gens``
  (Hermite-style elimination with Python integers; full rank assumed)."""
  rows = [[int(round(v)) for v in r] for r in gens]
  n = len(rows[0])
  basis = []
  for col in range(n):
    while True:
      nz = [r for r in rows if r[col] != 0]
      if len(nz) <= 1:
        break
      pivot = min(nz, key=lambda r: abs(r[col]))
      rows = [r if (r is pivot or r[col] == 0) else [a - (r[col] // pivot[col]) * b for a, b in zip(r, pivot)]
              for r in rows]
    nz = [r for r in rows if r[col] != 0]
    if not nz:
      raise ValueError("generators do not span a full-rank lattice")
    basis.append(nz[0])
    rows = [r for r in rows if r is not nz[0] and any(r)]
  return np.array(basis, dtype=np.float64)


@functools.cache
def _bw16_generator() -> np.ndarray:
  gens = np.concatenate([_rm14_codewords()[1:], 2.0 * _dn_generator(16)])
  out = _integer_row_basis(gens)
  out.setflags(write=False)
  return out


@functools.cache
def _bw16_minimal_vectors() -> np.ndarray:
  out = [2.0 * DnLattice(16).minimal_vectors()]
  for c in _rm14_codewords():
    if c.sum() != 8:
      continue
    supp = np.nonzero(c)[0]
    for signs in itertools.product((1.0, -1.0), repeat=8):
      if sum(s < 0 for s in signs) % 2:
        continue
      v = np.zeros(16)
      v[supp] = signs
      out.append(v[None])
  out = np.concatenate(out)
  out.setflags(write=False)
  return out


@dataclasses.dataclass(frozen=True)
class BW16Lattice(Lattice):
  """The Barnes–Wall lattice ``Λ16 = RM(1,4) + 2D₁₆`` (Construction D from Reed–Muller codes).

  The union of the 32 cosets ``c + 2D₁₆``, ``c ∈ RM(1, 4)`` (``RM(3,4) + 2Z¹⁶ = D₁₆`` is the
  even-weight part). With this scaling: volume ``2¹⁷/32 = 2¹²``, minimal norm 8, 4320 minimal
  vectors (480 of the form ``2(±eᵢ ± eⱼ)``, 3840 of the form ``±1`` on the support of a
  weight-8 codeword with an even number of minus signs), packing radius √2. Published
  ``G = 0.068299`` (SPLAG Table 2.3).

  Closest point: decode ``(x − c)/2`` to D₁₆ for all 32 codewords (Conway–Sloane Dₙ decoder)
  and keep the closest ``c + 2 Q_{D16}((x − c)/2)``; ties go to the first codeword in
  ``_rm14_codewords`` order. Cost: 32 D₁₆ decodes (the coset decoder of SPLAG Ch. 20, Sec. 5,
  not the faster Reed–Muller trellis decoders), sharing the per-coordinate roundings (two per
  coordinate, one per codeword bit).
  """

  @property
  def dim(self) -> int:
    return 16

  @property
  def name(self) -> str:
    return "bw16"

  def generator(self) -> np.ndarray:
    return _bw16_generator().copy()

  def minimal_vectors(self) -> np.ndarray:
    return _bw16_minimal_vectors().copy()

  def _closest(self, x):
    if x.dtype != jnp.float32:  # the direct form (below: the same decisions, faster, float32 only)
      cw = jnp.asarray(_rm14_codewords(), x.dtype)  # (32, 16)
      y = cw + 2.0 * _closest_dn((x[..., None, :] - cw) / 2.0)  # (..., 32, 16)
      d = jnp.sum((x[..., None, :] - y) ** 2, axis=-1)
      j = jnp.argmin(d, axis=-1)  # first on ties
      return jnp.take_along_axis(y, j[..., None, None], axis=-2)[..., 0, :]
    # Same arithmetic as decoding every coset c + 2D₁₆ on its own (``_closest_dn`` of (x − c)/2,
    # the squared distance summed over the 16 coordinates in halves, the order XLA's float32
    # row reduction uses), so the decisions and points are bitwise those of that direct form. Every
    # per-coordinate quantity depends only on the codeword bit c_i ∈ {0, 1}: it is computed for
    # both bits once and selected per codeword, with the codeword axis minor so that the
    # reductions over the coordinates are elementwise (vectorized) operations.
    cw = jnp.asarray(_rm14_codewords().T != 0)  # (16, 32)
    bit = jnp.asarray([0.0, 1.0], x.dtype)
    xs = x[..., :, None]
    t = (xs - bit) / 2.0  # (..., 16, 2): the coset 2Z + bit, scaled
    f = round_half_up(t)
    r = t - f
    step = jnp.where(r >= 0, 1.0, -1.0).astype(x.dtype)
    y0 = bit + 2.0 * f  # nearest point of 2Z + bit
    y1 = bit + 2.0 * (f + step)  # the same coordinate rounded the other way
    sel = lambda a: jnp.where(cw, a[..., 1:2], a[..., 0:1])  # (..., 16, 32)
    fsel, asel = sel(f), sel(jnp.abs(r))
    odd = jnp.mod(_sum_halves(fsel), 2.0) != 0  # (..., 32): Σ f odd, not in D₁₆
    # First coordinate of largest |r| per codeword (jnp.argmax's rule; NaN counts as largest).
    best, k = asel[..., 0, :], jnp.zeros(asel.shape[:-2] + (32,), jnp.int32)
    for i in range(1, 16):
      a = asel[..., i, :]
      upd = (a > best) | (jnp.isnan(a) & ~jnp.isnan(best))
      best, k = jnp.where(upd, a, best), jnp.where(upd, i, k)
    flip = odd[..., None, :] & (k[..., None, :] == jnp.arange(16)[:, None])  # (..., 16, 32)
    d = _sum_halves(jnp.where(flip, sel((xs - y1) ** 2), sel((xs - y0) ** 2)))  # (..., 32)
    j = jnp.argmin(d, axis=-1)  # first on ties
    c = jnp.take(cw.T, j, axis=0)  # (..., 16) bits of the chosen codeword
    fl = jnp.take_along_axis(odd, j[..., None], axis=-1) & (jnp.arange(16) == jnp.take_along_axis(k, j[..., None], axis=-1))
    return jnp.where(fl, jnp.where(c, y1[..., 1], y1[..., 0]), jnp.where(c, y0[..., 1], y0[..., 0]))

  def _closest_int(self, w, den):
    cw = jnp.asarray(_rm14_codewords(), jnp.int32)
    f, r = _closest_dn_int(w[..., None, :] - den * cw, 2 * den)  # Q_{2D16}: residual in 1/(2den)
    d = jnp.sum(r * r, axis=-1)
    j = jnp.argmin(d, axis=-1)
    y = cw + 2 * f
    return jnp.take_along_axis(y, j[..., None, None], axis=-2)[..., 0, :]


_NAME_RE = re.compile(r"(?P<z>z(?P<zn>\d*))|d(?P<dn>\d+)(?P<star>star)?|(?P<e8>e8)|(?P<bw16>bw16)|(?P<leech>leech)")


def lattice_from_name(name: str) -> Lattice:
  """Build a lattice from its short name: ``z``/``z<n>``, ``d<n>``, ``d<n>star``, ``e8``, ``bw16``,
  ``leech`` (``rdq.quantizers.leech.LeechLattice``).

  Raises:
    ValueError: unknown name.
  """
  if not isinstance(name, str):
    raise TypeError(f"lattice name must be a str, got {type(name).__name__}")
  m = _NAME_RE.fullmatch(name)
  if m is None:
    raise ValueError(f"unknown lattice name {name!r}; expected z, z<n>, d<n>, d<n>star, e8, bw16 or leech")
  if m["z"]:
    return ZnLattice(int(m["zn"]) if m["zn"] else 1)
  if m["e8"]:
    return E8Lattice()
  if m["bw16"]:
    return BW16Lattice()
  if m["leech"]:
    from rdq.quantizers.leech import LeechLattice  # leech.py builds on this module

    return LeechLattice()
  n = int(m["dn"])
  return DnDualLattice(n) if m["star"] else DnLattice(n)


@dataclasses.dataclass(frozen=True)
class _NsmSample:
  """One Monte Carlo sample of ``‖x − Q(x)‖² / (n V^{2/n})`` with x uniform modulo Λ."""

  lattice: Lattice

  def __call__(self, key: PRNGKeyArray) -> Float[Array, ""]:
    lat = self.lattice
    r = jax.random.uniform(key, (lat.dim,), jnp.float32)
    x = r @ jnp.asarray(lat.generator(), jnp.float32)
    e = x - lat._closest(x)
    return jnp.sum(e * e) / (lat.dim * lat.volume ** (2.0 / lat.dim))


def normalized_second_moment(
    lattice: Lattice, key: PRNGKeyArray, num_samples: int = 1 << 16, batch: int = 8192
) -> Estimate:
  """Monte Carlo estimate of the normalized second moment ``G(Λ)`` with its standard error.

  .. math::
     G(\\Lambda) = \\frac{1}{n}\\, \\frac{\\mathbb{E}\\|U\\|^2}{V^{2/n}}, \\qquad
     U \\sim \\mathrm{Unif}(\\mathcal V(\\Lambda)),\\ V = \\mathrm{vol}\\,\\mathcal V(\\Lambda),

  estimated as the mean of ``‖x − Q_Λ(x)‖² / (n V^{2/n})`` over ``x = r B``, ``r ~ U[0,1)ⁿ``
  (``x mod Λ`` is uniform on the cell). ``G`` is dimensionless and scale invariant; a lattice
  quantizer of cell volume V has MSE per dimension ``G V^{2/n}`` on uniform input.

  Args:
    lattice: the lattice.
    key: PRNG key.
    num_samples: number of uniform points, ≥ 2.
    batch: points per vmapped batch.

  Returns:
    ``Estimate`` (``.ci(level)`` for a confidence interval); an estimate, not a bound.

  References:
    SPLAG Ch. 2, Sec. 3 (definition of G) and Table 2.3 (published values).
  """
  if not isinstance(lattice, Lattice):
    raise TypeError(f"lattice must be an rdq Lattice, got {type(lattice).__name__}")
  return estimate(_NsmSample(lattice), key, num_samples, batch)
