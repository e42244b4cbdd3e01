"""The Leech lattice Λ24 and an exact (maximum-likelihood) closest-point decoder.

**Scaling.** rdq works in SPLAG's integer coordinates for Λ24 (Ch. 4, Sec. 11, Fig. 4.12),
``√8 ×`` the unimodular lattice: ``x ∈ Z²⁴`` lies in Λ24 iff for ``m ∈ {0, 1}``

.. math::
   x_i \\equiv m \\pmod 2\\ \\forall i, \\qquad
   \\{i : x_i \\equiv m + 2 \\pmod 4\\} \\in \\mathcal C_{24}, \\qquad
   \\textstyle\\sum_i x_i \\equiv 4m \\pmod 8,

with ``C24`` the extended binary Golay code. In these coordinates the minimal norm is 32
(196 560 minimal vectors of shapes ``(±2⁸ 0¹⁶)``, ``(∓3 ±1²³)``, ``(±4² 0²²)``), the volume
``8¹² = 2³⁶``, the packing radius ``√8`` and the covering radius ``4``. Divide by ``√8``
(``UNIMODULAR_SCALE``) for the unimodular Λ24: minimal norm 4, volume 1, packing radius 1,
covering radius √2 (SPLAG Ch. 4, Sec. 11; Ch. 23 for the covering radius). ``G`` is scale
invariant: 0.0657714 (SPLAG Table 2.3).

**Decoder.** With ``a = (−3, 1²³)`` and ``H = {y ∈ Z²⁴ : y mod 2 ∈ C24, Σ y ≡ 0 (mod 4)}``,

.. math::
   \\Lambda_{24} = 2H \\,\\cup\\, (2H + a), \\qquad
   2H = \\bigcup_{c \\in \\mathcal C_{24}} (2c + 4D_{24}),

the union of 8192 cosets of ``4D24`` (Golay weights are ≡ 0 mod 4, so ``Σ y ≡ 0 (mod 4)``
is the ``D24`` parity of ``(y − c)/2``; SPLAG Ch. 4, Sec. 11 and Ch. 20, Sec. 5 on decoding a
union of cosets). The distance from ``u`` to a coset ``2c + 4D24`` is, coordinatewise with
``b = c_i``: the squared error ``e_i(b)`` of rounding ``u_i`` to ``2b + 4Z``, plus — when the
rounded integers have odd sum — the least extra cost ``δ_i(b) = (4 − |r_i|)² − r_i²`` of
re-rounding one coordinate (the Conway–Sloane ``Dₙ`` rule, IEEE Trans. IT 28(2), 1982):

.. math::
   d(u, 2c + 4D_{24})^2 = \\sum_i e_i(c_i) + [\\text{odd}]\\, \\min_i \\delta_i(c_i).

All 8192 distances are evaluated and the least is kept: an exact maximum-likelihood decoder.
The sums, parities and minima are shared through **Turyn's construction** of the Golay code
(MacWilliams & Sloane, *The Theory of Error-Correcting Codes*, Ch. 18, Sec. 7.4):
``C24 = {(a + x, b + x, a + b + x) : a, b ∈ H8, x ∈ H8'}`` with two versions ``H8``, ``H8'``
of the extended Hamming code meeting in ``{0, 1}``; every 8-block is an even-weight word, so
each block needs its 128 partial costs once; gathered onto 16 × 16 grids over ``(x, a)``,
``(x, b)`` and ``(x, a ⊕ b)`` (``H8`` indexed so that word addition is XOR of indices), the
4096 codeword costs are a broadcast sum, about 10 vector operations per codeword and no
per-codeword look-up (about 10⁵ operations per vector instead of 10⁶). Not the faster hexacode decoder of Conway &
Sloane (IEEE Trans. IT 32(1), 1986) or Vardy & Be'ery (IEEE Trans. IT 39(5), 1993), which
need far fewer operations; this one is exact, fixed-shape and vectorizes.

**Tie rule** (measure zero): the first coset in the order ``(coset 2H before 2H + a, then x,
a, b)``; inside a coset the ``Dₙ`` rule of ``rdq.quantizers.lattice`` (round half up, flip the
lowest-index coordinate with the largest error). The integer twin ``_closest_int`` applies the
same rule in exact integer arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Integer

from rdq.quantizers.lattice import Lattice, _closest_dn, _closest_dn_int, _integer_row_basis, round_half_up

__all__ = [
    "LeechLattice",
    "UNIMODULAR_SCALE",
    "golay_codewords",
    "is_leech_point",
    "leech_minimal_vectors",
]

UNIMODULAR_SCALE: float = 1.0 / math.sqrt(8.0)
"""Multiply rdq's integer Λ24 coordinates by this for the unimodular Leech lattice (norm 4)."""

_A = np.array([-3] + [1] * 23, dtype=np.int64)  # glue vector of the odd coset 2H + a
_CHUNK = 128  # vectors per decoder step: the (8192, chunk) coset scores stay in cache


def _cyclic_hamming(g: tuple[int, ...]) -> np.ndarray:
  """The 16 words of the [8, 4, 4] extended cyclic Hamming code with generator polynomial g
  (coefficients of 1, x, x², x³), parity bit last."""
  words = set()
  for m in itertools.product((0, 1), repeat=4):
    w = np.zeros(7, dtype=np.int64)
    for i, mi in enumerate(m):
      if mi:
        for j, gj in enumerate(g):
          w[(i + j) % 7] ^= gj
    words.add(tuple(w) + (int(w.sum() % 2),))
  return np.array(sorted(words), dtype=np.int64)


@functools.cache
def _turyn() -> tuple[np.ndarray, np.ndarray]:
  """``(h, hp)``: two versions of the extended Hamming code (16 words each, rows) with
  ``h ∩ hp = {0, 1}``: the codes of ``1 + x + x³`` and its reciprocal ``1 + x² + x³``."""
  h = _cyclic_hamming((1, 1, 0, 1))
  hp = _cyclic_hamming((1, 0, 1, 1))
  return h, hp


def _basis_gf2(words: np.ndarray) -> np.ndarray:
  """A basis (rows) of the binary code spanned by ``words``, greedily in row order."""
  basis = np.zeros((0, words.shape[1]), dtype=np.int64)
  for w in words:
    m = np.concatenate([basis, w[None]])
    if _rank_gf2(m) > len(basis):
      basis = m
  return basis


def _span(basis: np.ndarray) -> np.ndarray:
  """All ``2^k`` words ``Σ α_j basis_j`` in the order of ``α = Σ_j α_j 2^j`` (rows)."""
  alpha = (np.arange(2 ** len(basis))[:, None] >> np.arange(len(basis))) & 1
  return (alpha @ basis) % 2


@functools.cache
def _turyn_words() -> tuple[np.ndarray, np.ndarray]:
  """``(H, H')`` as ``(16, 8)`` arrays indexed by their coordinates in fixed bases, so that
  ``H[α] + H[γ] = H[α XOR γ]`` (the decoder's XOR expansion relies on it)."""
  h, hp = _turyn()
  return _span(_basis_gf2(h[1:])), _span(_basis_gf2(hp[1:]))


def _word_index(w: np.ndarray) -> np.ndarray:
  """Index ``Σ_k w_k 2^k`` of binary words ``w`` (last axis 8)."""
  return (w @ (1 << np.arange(8))).astype(np.int32)


@functools.cache
def _turyn_tables() -> tuple[np.ndarray, np.ndarray]:
  """Static look-up indices (``_word_index``): ``a + x`` as ``[β, α]`` (blocks 1 and 2) and
  ``h + x`` as ``[β, α]`` for block 3 (``h = a + b`` is expanded by XOR in the decoder)."""
  H, Hp = _turyn_words()
  i = _word_index((H[None, :, :] + Hp[:, None, :]) % 2)  # [x, a]
  i.setflags(write=False)
  return i, i


@functools.cache
def _golay_codewords() -> np.ndarray:
  H, Hp = _turyn_words()
  x, a, b = (np.broadcast_to(v, (16, 16, 16, 8)) for v in (Hp[:, None, None, :], H[None, :, None, :], H[None, None, :, :]))
  cw = np.concatenate([(a + x) % 2, (b + x) % 2, (a + b + x) % 2], axis=-1).reshape(4096, 24)
  cw.setflags(write=False)
  return cw


def golay_codewords() -> np.ndarray:
  """The 4096 codewords of the extended binary Golay code C24 (int64 0/1 rows) in Turyn's
  form ``(a + x, b + x, a + b + x)``, ordered by ``(x, a, b)`` (the decoder's tie order).
  Weight distribution 1, 759, 2576, 759, 1 (checked by the tests)."""
  return _golay_codewords().copy()


def _golay_generator() -> np.ndarray:
  """A 12 × 24 generator (rows) of C24, by elimination over GF(2) on the codeword list."""
  rows = []
  basis = np.zeros((0, 24), dtype=np.int64)
  for c in _golay_codewords():
    m = np.concatenate([basis, c[None]]) if len(basis) else c[None]
    if _rank_gf2(m) > len(basis):
      basis = m
      rows.append(c)
    if len(rows) == 12:
      break
  return np.array(rows, dtype=np.int64)


def _rank_gf2(m: np.ndarray) -> int:
  m = m.copy() % 2
  r = 0
  for col in range(m.shape[1]):
    piv = [i for i in range(r, m.shape[0]) if m[i, col]]
    if not piv:
      continue
    m[[r, piv[0]]] = m[[piv[0], r]]
    for i in range(m.shape[0]):
      if i != r and m[i, col]:
        m[i] ^= m[r]
    r += 1
  return r


def is_leech_point(x: np.ndarray) -> np.ndarray:
  """Membership test (NumPy, exact) in rdq's integer Λ24 for the vectors of the last axis.

  Args:
    x: array with last axis 24 (any numeric dtype; non-integers are not members).

  Returns:
    Boolean array of the leading shape.
  """
  x = np.asarray(x, dtype=np.float64)
  if x.ndim == 0 or x.shape[-1] != 24:
    raise ValueError(f"is_leech_point: the last axis must have length 24; got shape {x.shape}")
  integral = np.all(x == np.round(x), axis=-1)
  xi = np.round(np.nan_to_num(x)).astype(np.int64)
  m = np.mod(xi[..., :1], 2)
  same = np.all(np.mod(xi, 2) == m, axis=-1)
  y = (xi - m * _A) // 2  # ≡ 0 mod 2 entries → Golay test on y mod 2
  gen = _golay_generator()
  in_code = np.all(np.mod(np.mod(y, 2) @ gen.T, 2) == 0, axis=-1)  # C24 is self-dual
  sums = np.mod(np.sum(xi, axis=-1) - 4 * m[..., 0], 8) == 0
  return integral & same & in_code & sums


def _lll(basis: np.ndarray, delta: float = 0.99) -> np.ndarray:
  """LLL-reduced basis (Lenstra, Lenstra & Lovász 1982) of the integer rows of ``basis``:
  integer row operations only (the lattice is unchanged); Gram–Schmidt data from a QR
  factorization in float64, exact enough for the small integers here."""
  b = np.array(basis, dtype=np.int64)
  n = len(b)

  def gs():
    r = np.linalg.qr(b.T.astype(np.float64), mode="r")
    d = np.diag(r)
    return r.T / d[None, :], d * d  # mu[i, j] = <b_i, b*_j>/|b*_j|², |b*_j|²

  k = 1
  mu, norms = gs()
  while k < n:
    for j in range(k - 1, -1, -1):
      r = int(round(mu[k, j]))
      if r:
        b[k] -= r * b[j]
        mu, norms = gs()
    if norms[k] >= (delta - mu[k, k - 1] ** 2) * norms[k - 1]:
      k += 1
    else:
      b[[k, k - 1]] = b[[k - 1, k]]
      mu, norms = gs()
      k = max(k - 1, 1)
  return b


@functools.cache
def _leech_generator() -> np.ndarray:
  """Rows: an LLL-reduced basis (24 minimal vectors, entries in [−3, 3]) of the lattice
  generated by ``2·(Golay generator)``, ``4·D24`` and ``a``."""
  d24 = np.zeros((24, 24), dtype=np.int64)
  d24[0, 0] = 2
  for i in range(1, 24):
    d24[i, i], d24[i, i - 1] = 1, -1
  gens = np.concatenate([2 * _golay_generator(), 4 * d24, _A[None]])
  out = _lll(_integer_row_basis(gens.astype(np.float64))).astype(np.float64)
  out.setflags(write=False)
  return out


@functools.cache
def _leech_minimal_vectors() -> np.ndarray:
  out = []
  # (±4², 0²²): 4·C(24, 2) = 1104.
  for i, j in itertools.combinations(range(24), 2):
    for si, sj in itertools.product((4.0, -4.0), repeat=2):
      v = np.zeros(24)
      v[i], v[j] = si, sj
      out.append(v)
  cw = _golay_codewords()
  # (±2⁸, 0¹⁶) on octads, even number of minus signs: 759 · 2⁷ = 97152.
  signs = np.array([s for s in itertools.product((2.0, -2.0), repeat=8) if sum(v < 0 for v in s) % 2 == 0])
  for c in cw[cw.sum(axis=1) == 8]:
    v = np.zeros((len(signs), 24))
    v[:, np.nonzero(c)[0]] = signs
    out.extend(v)
  # (∓3, ±1²³): −1 exactly on a codeword c, then coordinate i multiplied by −3: 4096 · 24.
  base = 1.0 - 2.0 * cw  # (4096, 24)
  odd = np.repeat(base[:, None, :], 24, axis=1)
  odd[:, np.arange(24), np.arange(24)] *= -3.0
  out = np.concatenate([np.array(out), odd.reshape(-1, 24)])
  out.setflags(write=False)
  return out


def leech_minimal_vectors(unimodular: bool = False) -> np.ndarray:
  """The 196 560 minimal vectors of Λ24 (float64 rows): norm 32 in rdq's integer
  coordinates, or norm 4 with ``unimodular=True`` (multiplied by ``UNIMODULAR_SCALE``)."""
  v = _leech_minimal_vectors()
  return v * UNIMODULAR_SCALE if unimodular else v.copy()


# ------------------------------------------------------------------------------- decoder
def _coord_costs(u: Array, den) -> tuple[Array, Array, Array]:
  """Per coordinate and bit ``b ∈ {0, 1}`` (new axis −2): squared error ``e``, parity of the
  rounded multiple of 4 and re-rounding cost ``δ`` for rounding ``u/den`` to ``2b + 4Z``.

  ``den`` is ``None`` for float input (units 1) or an int (``u`` integer, units ``1/den``)."""
  b = jnp.asarray([0, 2], u.dtype)[:, None]
  if den is None:
    t = u[..., None, :] - b
    z = round_half_up(t / 4.0)
    r = t - 4.0 * z  # in [−2, 2)
    scale = 4.0
  else:
    t = u[..., None, :] - den * b
    z = jnp.floor_divide(2 * t + 4 * den, 8 * den)  # ⌊t/(4den) + ½⌋
    r = t - 4 * den * z
    scale = 4 * den
  e = r * r
  delta = scale * scale - 2 * scale * jnp.abs(r)  # (scale − |r|)² − r²
  par = jnp.mod(z, 2).astype(jnp.int32)
  return e, par, delta


_BITS4 = np.array([[(w >> k) & 1 for k in range(4)] for w in range(16)], dtype=bool)  # (16, 4)


def _word_tables(v0: Array, v1: Array, combine, reduce) -> Array:
  """``T[..., blk, w] = reduce_k v_{w_k}[..., 8 blk + k]`` for all 256 words ``w`` of each
  8-block (``w = Σ_k w_k 2^k``), through two 4-coordinate half tables joined by ``combine``."""
  bits = jnp.asarray(_BITS4)
  v0 = v0.reshape(v0.shape[:-1] + (3, 2, 1, 4))  # [..., blk, half, -, k]
  v1 = v1.reshape(v1.shape[:-1] + (3, 2, 1, 4))
  half = reduce(jnp.where(bits, v1, v0), axis=-1)  # [..., blk, half, 16]
  return combine(half[..., 1, :, None], half[..., 0, None, :]).reshape(half.shape[:-2] + (256,))


@functools.cache
def _xor_index() -> np.ndarray:
  """``(16, 16)`` table ``α XOR γ``: the index of ``H[α] + H[γ]`` (``_turyn_words``)."""
  out = np.bitwise_xor.outer(np.arange(16), np.arange(16)).astype(np.int32)
  out.setflags(write=False)
  return out


def _coset_scores(u: Array, den) -> Array:
  """Squared distance (units ``1/den²``) from each vector of ``u`` (shape ``(N, 24)``) to each of
  the 4096 cosets ``2c + 4D24``, shape ``(4096, N)`` in ``golay_codewords()`` order.

  Codeword ``(x, a, b)`` has the 8-block words ``(a + x, b + x, (a ⊕ b) + x)`` (Turyn): each
  block table is gathered once onto its ``(x, ·)`` grid (16 × 16 per vector) and the 4096
  codewords are then a broadcast sum over ``(x, a, b)``; only block 3 needs the XOR expansion.
  Vectors are on the last axis, so every codeword-wise operation is a vector operation."""
  e, par, delta = _coord_costs(u, den)  # (N, 2, 24)
  tables = [
      _word_tables(e[..., 0, :], e[..., 1, :], jnp.add, jnp.sum),  # (N, 3, 256)
      _word_tables(par[..., 0, :], par[..., 1, :], jnp.bitwise_xor, _xor_reduce),
      _word_tables(delta[..., 0, :], delta[..., 1, :], jnp.minimum, jnp.min),
  ]
  idx = jnp.asarray(_turyn_tables()[0])  # [x, a] → word index of a + x
  grids = []
  for t in tables:
    g = jnp.moveaxis(t[:, :, idx], 0, -1)  # (3, 16 x, 16 a, N)
    grids.append((g[0][:, :, None, :], g[1][:, None, :, :], jnp.take(g[2], jnp.asarray(_xor_index()), axis=1)))
  (e1, e2, e3), (p1, p2, p3), (m1, m2, m3) = grids  # each broadcasts to (16 x, 16 a, 16 b, N)
  tot = e1 + e2 + e3
  odd = (p1 ^ p2 ^ p3) == 1
  mn = jnp.minimum(jnp.minimum(m1, m2), m3)
  return (tot + jnp.where(odd, mn, jnp.zeros_like(mn))).reshape(4096, -1)


def _xor_reduce(v: Array, axis: int) -> Array:
  return jax.lax.reduce(v, np.int32(0), jax.lax.bitwise_xor, (v.ndim + axis,) if axis < 0 else (axis,))


def _best_coset(x: Array, den) -> tuple[Array, Array]:
  """``(h, c)``: glue (0 or a) and Golay codeword of the coset ``h + 2c + 4D24`` nearest to
  ``x / den``, for ``x`` of shape ``(N, 24)``; first on ties (module docstring)."""
  a = jnp.asarray(_A, x.dtype)
  shift = a if den is None else den * a
  s = jnp.concatenate([_coset_scores(x, den), _coset_scores(x - shift, den)], axis=0)  # (8192, N)
  # First index of the minimum (first on ties) as two plain reductions over the stored scores: the
  # barrier keeps XLA from fusing (recomputing) the scores into both, which is ~10× slower on CPU.
  s = jax.lax.optimization_barrier(s)
  best = jnp.min(s, axis=0)
  j = jnp.min(jnp.where(s == best, jax.lax.broadcasted_iota(jnp.int32, s.shape, 0), s.shape[0]), axis=0)
  cw = jnp.asarray(_golay_codewords(), x.dtype)
  c = jnp.take(cw, j % 4096, axis=0)
  h = jnp.where((j >= 4096)[:, None], a, jnp.zeros_like(a))
  return h, c


def _chunked(fn, x: Array) -> Array:
  """Apply ``fn`` ((M, 24) → (M, 24)) to the vectors of ``x`` in chunks of ``_CHUNK`` (zero
  padded; a ``lax.map`` over whole chunks keeps the vectors on the minor axis inside ``fn``)."""
  flat = x.reshape(-1, 24)
  n = flat.shape[0]
  if n <= _CHUNK:
    out = fn(flat)
  else:
    chunks = -(-n // _CHUNK)
    flat = jnp.concatenate([flat, jnp.zeros((chunks * _CHUNK - n, 24), flat.dtype)])
    out = jax.lax.map(fn, flat.reshape(chunks, _CHUNK, 24)).reshape(-1, 24)[:n]
  return out.reshape(x.shape)


@jax.jit
def _leech_closest(x: Array) -> Array:
  dtype = x.dtype
  x = x.astype(jnp.promote_types(dtype, jnp.float32))  # costs in ≥ float32

  def one(v):
    h, c = _best_coset(v, None)
    return h + 2.0 * c + 4.0 * _closest_dn((v - h - 2.0 * c) / 4.0)

  y = _chunked(one, x)
  # A non-finite vector has no nearest point: NaN out, never an arbitrary lattice point.
  y = jnp.where(jnp.all(jnp.isfinite(x), axis=-1, keepdims=True), y, jnp.nan)
  return y.astype(dtype)


@functools.partial(jax.jit, static_argnums=1)
def _leech_closest_int(w: Array, den: int) -> Array:
  def one(v):
    h, c = _best_coset(v, den)
    f, _ = _closest_dn_int(v - den * (h + 2 * c), 4 * den)
    return h + 2 * c + 4 * f

  return _chunked(one, w)


@dataclasses.dataclass(frozen=True)
class LeechLattice(Lattice):
  """The Leech lattice Λ24 in SPLAG's integer coordinates (``√8 ×`` unimodular; module
  docstring): volume ``2³⁶``, minimal norm 32, 196 560 minimal vectors, packing radius ``√8``,
  covering radius 4; ``G = 0.0657714`` (SPLAG Table 2.3).

  ``closest_point`` is an exact maximum-likelihood decoder over the 8192 cosets of ``4D24``
  (module docstring), jit-able and vmappable; ``closest_point_rational`` its exact integer
  twin (``|w| ≤ 2²⁰``, ``den ≤ 2000`` keep every intermediate inside int32).
  """

  @property
  def dim(self) -> int:
    return 24

  @property
  def name(self) -> str:
    return "leech"

  def generator(self) -> np.ndarray:
    return _leech_generator().copy()

  def minimal_vectors(self) -> np.ndarray:
    return _leech_minimal_vectors().copy()

  @property
  def volume(self) -> float:
    return float(2**36)

  @property
  def packing_radius(self) -> float:
    return math.sqrt(8.0)

  @property
  def covering_radius(self) -> float:
    return 4.0

  def _closest(self, x: Float[Array, "*b 24"]) -> Float[Array, "*b 24"]:
    return _leech_closest(x)

  def _closest_int(self, w: Integer[Array, "*b 24"], den: int) -> Integer[Array, "*b 24"]:
    if den > 2000:
      raise ValueError(f"leech.closest_point_rational: den={den} must be ≤ 2000 (int32 range of the coset costs)")
    return _leech_closest_int(w, den)
