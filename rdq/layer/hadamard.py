"""Randomized Hadamard transform (RHT): a fast orthogonal rotation for incoherence processing.

For ``n = 2^k · m`` the rotation is

.. math::
   Q = \\big(F_{2^k} \\otimes B_m\\big)\\,\\mathrm{diag}(s), \\qquad
   F_{2^k} = 2^{-k/2} H_{2^k}, \\quad s \\in \\{\\pm 1\\}^n \\text{ uniform},

with ``H_{2^k}`` the Sylvester–Hadamard matrix, applied by the fast Walsh–Hadamard transform
(k butterfly stages, ``O(n log n)``), and ``B_m`` an ``m × m`` orthogonal block:

* ``m = 1`` (n a power of two): nothing;
* ``m = o·2^j`` the order of a Paley Hadamard matrix (``o`` the odd part of n, smallest ``j ≥ 2``
  with a construction): ``B = H_m/√m``, built exactly — Paley I for ``m = p + 1``, ``p ≡ 3
  (mod 4)`` prime; Paley II for ``m = 2(p + 1)``, ``p ≡ 1 (mod 4)`` prime (MacWilliams–Sloane,
  *The Theory of Error-Correcting Codes*, Ch. 2 §3, Thm. 8 and Lemma 7; Paley 1933).
  MiniLM's ``384 = 2^5·12`` and ``1536 = 2^7·12`` use ``H_12`` (p = 11), SmolLM2's
  ``576 = 2^4·36`` uses ``H_36`` (Paley II, p = 17);
* otherwise a Haar-random orthogonal ``o × o`` block (``rdq.covariance.haar_orthogonal``).

``Q x`` costs ``n(k + m)`` operations instead of ``n²`` for a dense rotation, and ``Q`` is
stored as n signs (and ``m²`` block entries) instead of ``n²`` floats. QuIP# (Tseng et al.
2024, Sec. 3, "randomized Hadamard transform") and NestQuant (Savkin et al. 2025, Sec. 5)
rotate with this transform for the same reason; QuIP (Chee et al. 2023, Sec. 4) shows that a
random orthogonal ``Q`` makes W and H incoherent with high probability, which the RHT
preserves with ``O(log n)`` losses (QuIP#, Lemma 3.1).

Layout: the transform acts on axis 0 (the input-feature axis of ``W ∈ R^{n×m}``), so the
rotated layer is ``W' = QW``, ``H' = QHQᵀ``, and ``Ŵ = QᵀŴ'`` (``rdq.layer.lattice_sic``).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.covariance import haar_orthogonal

__all__ = ["RandomizedHadamard", "fwht", "hadamard_matrix", "hadamard_split", "randomized_hadamard"]

HIGHEST = jax.lax.Precision.HIGHEST


def _is_prime(p: int) -> bool:
  return p >= 2 and all(p % d for d in range(2, math.isqrt(p) + 1))


def _jacobsthal(p: int) -> np.ndarray:
  """``Q_ij = χ(j − i)`` with χ the quadratic character mod the prime p (χ(0) = 0)."""
  squares = {(x * x) % p for x in range(1, p)}
  chi = np.array([0] + [1 if a in squares else -1 for a in range(1, p)], np.int64)
  idx = (np.arange(p)[None, :] - np.arange(p)[:, None]) % p
  return chi[idx]


def _paley(order: int) -> np.ndarray | None:
  """A Paley Hadamard matrix of this order, or None if neither construction applies."""
  p = order - 1
  if order % 4 == 0 and p % 4 == 3 and _is_prime(p):  # Paley I: H = I + S, S skew conference matrix
    q = _jacobsthal(p)
    s = np.zeros((order, order), np.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = q
    return np.eye(order, dtype=np.int64) + s
  if order % 4 == 0 and order % 2 == 0:
    p = order // 2 - 1
    if p % 4 == 1 and _is_prime(p):  # Paley II: C ⊗ [[1,−1],[−1,−1]] + I ⊗ [[1,1],[1,−1]]
      q = _jacobsthal(p)
      c = np.zeros((p + 1, p + 1), np.int64)
      c[0, 1:] = 1
      c[1:, 0] = 1
      c[1:, 1:] = q
      return np.kron(c, np.array([[1, -1], [-1, -1]])) + np.kron(np.eye(p + 1, dtype=np.int64), np.array([[1, 1], [1, -1]]))
  return None


@functools.lru_cache(maxsize=None)
def _hadamard_cached(order: int) -> np.ndarray | None:
  if order == 1:
    return np.ones((1, 1), np.int64)
  if order == 2:
    return np.array([[1, 1], [1, -1]], np.int64)
  if order % 2 == 0 and order & (order - 1) == 0:  # Sylvester
    h = _hadamard_cached(order // 2)
    return np.block([[h, h], [h, -h]])
  h = _paley(order)
  if h is not None and not np.array_equal(h @ h.T, order * np.eye(order, dtype=np.int64)):
    raise AssertionError(f"Paley construction of order {order} is not Hadamard")  # pragma: no cover
  return h


def hadamard_matrix(order: int) -> np.ndarray:
  """An exact ``order × order`` Hadamard matrix (entries ±1, ``H Hᵀ = order·I``), int64.

  Sylvester for powers of two, Paley I (``order − 1 ≡ 3 mod 4`` prime) or Paley II
  (``order/2 − 1 ≡ 1 mod 4`` prime) otherwise.

  Raises:
    ValueError: no construction of this order is implemented.
  """
  if not isinstance(order, (int, np.integer)) or order < 1:
    raise ValueError(f"order={order!r} must be a positive integer")
  h = _hadamard_cached(int(order))
  if h is None:
    raise ValueError(f"order={order}: no Sylvester or Paley Hadamard matrix of this order is implemented")
  return h.copy()


def hadamard_split(n: int) -> tuple[int, int, bool]:
  """``(2^k, m, exact)`` with ``n = 2^k·m``: the FWHT length, the dense block order, and whether
  the block is an exact Hadamard matrix (else a random orthogonal block of the odd part).

  Raises:
    ValueError: n is not a positive integer.
  """
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n={n!r} must be a positive integer")
  k = (n & -n).bit_length() - 1
  odd = n >> k
  if odd == 1:
    return n, 1, True
  for j in range(2, k + 1):
    if _hadamard_cached(odd << j) is not None:
      return 1 << (k - j), odd << j, True
  return 1 << k, odd, False


@jax.jit  # one program per shape, not one dispatch and compilation per butterfly primitive
def fwht(x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
  """Unnormalized fast Walsh–Hadamard transform along axis 0: ``H_n x`` (Sylvester order).

  ``log2 n`` butterfly stages ``(a, b) → (a + b, a − b)`` on reshaped views; ``O(n log n)``.

  Raises:
    ValueError: ``n`` is not a power of two.
  """
  n = x.shape[0]
  if n < 1 or n & (n - 1):
    raise ValueError(f"fwht needs a power-of-two length on axis 0; got n={n}")
  rest = x.shape[1:]
  h = 1
  while h < n:
    y = x.reshape((n // (2 * h), 2, h) + rest)
    a, b = y[:, 0], y[:, 1]
    x = jnp.stack([a + b, a - b], axis=1).reshape((n,) + rest)
    h *= 2
  return x


class RandomizedHadamard(NamedTuple):
  """The rotation ``Q = (F_{2^k} ⊗ B) diag(s)`` (module docstring); a pytree, vmappable.

  The signs act **first**: the rotated Hessian ``Q H Qᵀ = (F⊗B) S H S (F⊗B)ᵀ`` depends on
  them. (Applied last, ``S (F⊗B) H (F⊗B)ᵀ S`` has the LDL diagonal of the fixed
  ``(F⊗B) H (F⊗B)ᵀ`` whatever the signs: no randomization at all for LDLQ.)

  Attributes:
    signs: ``(n,)`` random ±1 (float32).
    block: ``(m, m)`` orthogonal block ``B`` (``(1, 1)`` ones for n a power of two).
  """

  signs: Float[Array, " n"]
  block: Float[Array, "m m"]

  def forward(self, x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
    """``Q x`` along axis 0."""
    return _apply(self.signs, self.block, x, transpose=False)

  def inverse(self, x: Float[Array, "n ..."]) -> Float[Array, "n ..."]:
    """``Qᵀ x = Q^{-1} x`` along axis 0."""
    return _apply(self.signs, self.block, x, transpose=True)

  def rotate_hessian(self, h: Float[Array, "n n"]) -> Float[Array, "n n"]:
    """``Q H Qᵀ`` (symmetrized): the Hessian of the rotated weights ``Q W``."""
    g = self.forward(self.forward(h).T)
    return 0.5 * (g + g.T)

  def matrix(self) -> Float[Array, "n n"]:
    """The dense ``Q`` (for tests and small n)."""
    return self.forward(jnp.eye(self.signs.shape[0], dtype=jnp.float32))


@functools.partial(jax.jit, static_argnames="transpose")
def _apply(signs, block, x, transpose: bool):
  # One compiled program per shape: called eagerly (forward, inverse, rotate_hessian, matrix),
  # the log2 n butterfly stages would otherwise dispatch and compile each primitive on its own.
  n = signs.shape[0]
  if x.shape[0] != n:
    raise ValueError(f"x has {x.shape[0]} rows on axis 0; the rotation has n={n}")
  p2, m = n // block.shape[0], block.shape[0]
  rest = x.shape[1:]
  x = x.astype(jnp.float32)
  if transpose:  # Qᵀ = diag(s) (F ⊗ Bᵀ)
    b = block.T
  else:
    x = x * signs.reshape((n,) + (1,) * len(rest))
    b = block
  y = x.reshape((p2, m) + rest)
  if m > 1:
    y = jnp.einsum("jl,al...->aj...", b, y, precision=HIGHEST)
  y = fwht(y) * (1.0 / math.sqrt(p2))
  y = y.reshape((n,) + rest)
  if transpose:
    y = y * signs.reshape((n,) + (1,) * len(rest))
  return y


def randomized_hadamard(key: PRNGKeyArray, n: int) -> RandomizedHadamard:
  """Draw the randomized Hadamard rotation of size n (jit-able; n static).

  Args:
    key: PRNG key (signs; and the block when n's odd part has no Paley construction).
    n: dimension, any positive integer (module docstring for the factorization).

  Returns:
    ``RandomizedHadamard(signs, block)``.
  """
  _, m, exact = hadamard_split(n)
  k_s, k_b = jax.random.split(key)
  signs = jnp.where(jax.random.bernoulli(k_s, 0.5, (n,)), 1.0, -1.0).astype(jnp.float32)
  if exact:
    block = jnp.asarray(hadamard_matrix(m) / math.sqrt(m), jnp.float32)
  else:
    block = haar_orthogonal(k_b, m)
  return RandomizedHadamard(signs, block)
