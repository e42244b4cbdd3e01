"""Normalized second moments ``G(Λ)`` of lattices: published values, closed forms, sphere bound.

``G(Λ) = E‖U‖² / (n V^{2/n})`` for U uniform on the Voronoi cell (volume V) of an
n-dimensional lattice Λ. A lattice quantizer has MSE per dimension ``G V^{2/n}`` at high
resolution, so at a given rate its loss against the Shannon bound is

.. math::
   \\Delta R = \\tfrac12 \\log_2(2\\pi e\\, G) \\ \\text{bits per dimension},

0.2546 bit for ``Zⁿ`` (G = 1/12), 0.1458 bit for E8, 0 only as n → ∞ (``G → 1/(2πe)``).

The sphere bound: no n-dimensional quantizer (lattice or not) beats the G of an n-ball,

.. math::
   G(S_n) = \\frac{\\Gamma(n/2 + 1)^{2/n}}{(n + 2)\\,\\pi} \\ \\searrow\\ \\frac{1}{2\\pi e},

a lower bound on G of every quantizer in dimension n (Zador; SPLAG Ch. 2, Sec. 3
gives ``G(S_n)`` and its limit).

References:
  J. H. Conway and N. J. A. Sloane, *Sphere Packings, Lattices and Groups* (SPLAG), 3rd ed.,
  Ch. 2, Sec. 3 and **Table 2.3** ("best quantizers known", G per dimension); Conway &
  Sloane, "Voronoi regions of lattices, second moments of polytopes, and quantization",
  IEEE Trans. IT 28(2):211–226, 1982 (the second moments of Aₙ, Dₙ, Dₙ*, E8 derived there).
"""

from __future__ import annotations

import math

__all__ = [
    "G_SPHERE_LIMIT",
    "PUBLISHED_G",
    "g_dn",
    "g_sphere",
    "rate_gap_bits",
]

G_SPHERE_LIMIT: float = 1.0 / (2.0 * math.pi * math.e)
"""``1/(2πe) ≈ 0.0585498``: the limit of the sphere bound ``G(S_n)`` as n → ∞."""

# SPLAG Table 2.3 (digits as printed there); keys are rdq lattice names
# (``rdq.quantizers.lattice_from_name``), with the book's names in the comments.
PUBLISHED_G: dict[str, float] = {
    "z": 1.0 / 12.0,  # Z: 0.0833333 (exact 1/12)
    "a2": 0.0801875,  # A2, hexagonal: 5 / (36 √3)
    "d3star": 0.0785433,  # A3* = D3* (bcc): 19 / (192 · 2^{1/3})
    "d3": 0.0787451,  # A3 = D3 (fcc), quoted in SPLAG Ch. 21 / Conway–Sloane 1982
    "d4": 0.0766032,  # D4: 13 / (120 √2)
    "d5star": 0.0755905,  # D5*
    "e6star": 0.0742437,  # E6*
    "e7star": 0.0731165,  # E7*
    "e8": 929.0 / 12960.0,  # E8: 0.0716821 (exact 929/12960)
    "k12": 0.0700985,  # Coxeter–Todd K12
    "bw16": 0.068299,  # Barnes–Wall Λ16 (was mistyped 0.0682783 here; MC: 0.0682965 ± 0.0000028)
    "leech": 0.0657714,  # Leech Λ24
}
"""Published ``G`` (SPLAG Table 2.3). ``z``, ``d3``, ``d3star``, ``d4``, ``d5star``, ``e8``,
``bw16`` and ``leech`` have a closest-point decoder in rdq (each checked by Monte Carlo in the
tests); the others are listed for plots. The exact G of Λ16 was computed later by Pook-Kolb,
Agrell & Allen, "The Voronoi region of the Barnes–Wall lattice Λ16", IEEE JSAIT 2023."""


def g_dn(n: int) -> float:
  """Closed form ``G(Dₙ) = (1/12 + 1/(2n(n+1))) · 2^{-2/n}`` for n ≥ 2.

  Derivation (the Conway–Sloane Dₙ decoder read as a statement about errors): for x uniform
  modulo Dₙ the rounding errors ``eᵢ = xᵢ − f(xᵢ)`` are iid U(−½, ½). With probability ½ the
  rounded point has odd parity and the coordinate with the largest ``|eᵢ| = m`` moves to
  error ``1 − m``, adding ``E[(1 − m)² − m²] = 1 − 2E[m] = 1/(n+1)``. Hence
  ``E‖e‖² = n/12 + 1/(2(n+1))``; divide by ``n · vol(Dₙ)^{2/n} = n · 2^{2/n}``.

  Agrees with SPLAG Table 2.3 for D3 (0.0787451) and D4 (0.0766032); for n = 2 it gives 1/12
  (D2 is a rotated, scaled Z²).

  Args:
    n: dimension, integer ≥ 2.

  References:
    Conway & Sloane, IEEE Trans. IT 28(2), 1982 (second moment of Dₙ); SPLAG Table 2.3.
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 2:
    raise ValueError(f"Dn needs an integer dimension n ≥ 2; got n={n!r}")
  return (1.0 / 12.0 + 1.0 / (2.0 * n * (n + 1))) * 2.0 ** (-2.0 / n)


def g_sphere(n: int) -> float:
  """``G(S_n) = Γ(n/2 + 1)^{2/n} / ((n + 2) π)``: normalized second moment of an n-ball,
  a lower bound on G of any n-dimensional quantizer (1/12 at n = 1, → 1/(2πe)).

  Args:
    n: dimension, integer ≥ 1.

  References:
    SPLAG Ch. 2, Sec. 3 (sphere bound on G and its limit 1/(2πe)).
  """
  if isinstance(n, bool) or not isinstance(n, int) or n < 1:
    raise ValueError(f"sphere bound needs an integer dimension n ≥ 1; got n={n!r}")
  return math.exp(2.0 / n * math.lgamma(n / 2.0 + 1.0)) / ((n + 2) * math.pi)


def rate_gap_bits(g: float) -> float:
  """``½ log2(2πe G)``: high-rate loss, bits per dimension, of a quantizer with second
  moment G against the Gaussian/Shannon bound (0.2546 for G = 1/12).

  Args:
    g: normalized second moment, > 0.
  """
  if not (isinstance(g, (int, float)) and math.isfinite(g) and g > 0):
    raise ValueError(f"g={g!r} must be a positive finite float")
  return 0.5 * math.log2(2.0 * math.pi * math.e * g)
