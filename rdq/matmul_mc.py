"""Generic-matmul distortion of a pair of quantizers, estimated by Monte Carlo.

One sample draws ``A ∈ R^{n×a}`` and ``B ∈ R^{n×b}`` with iid N(0, 1) entries, quantizes
the columns of each (the quantizers act on the last axis, so ``Aᵀ`` of shape ``(a, n)`` is
quantized: block scales run along the inner dimension n), and returns

.. math::
   \\frac{\\|A^\\top B - \\hat A^\\top \\hat B\\|_F^2}{n\\,a\\,b},

whose mean is the distortion compared with ``rdq.limits.generic_matmul`` (DESIGN.md).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, UInt32

from rdq.checks import check_key
from rdq.montecarlo import Estimate, estimate
from rdq.quantizers.base import Quantizer

__all__ = [
    "NORMAL_GENERATOR", "MatmulSetup", "matmul_distortion", "matmul_error", "matmul_sample", "standard_normal",
]


@dataclasses.dataclass(frozen=True)
class MatmulSetup:
  """Shapes of one generic-matmul sample: ``AᵀB`` with ``A: (n, a)``, ``B: (n, b)``."""

  n: int
  a: int
  b: int

  def __post_init__(self):
    for f in ("n", "a", "b"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{f}={v!r} must be a positive integer")


def matmul_error(
    a_mat: Float[Array, "n a"],
    b_mat: Float[Array, "n b"],
    quant_a: Quantizer,
    quant_b: Quantizer,
    key: PRNGKeyArray | None = None,
) -> Float[Array, ""]:
  """``‖AᵀB − ÂᵀB̂‖²_F / (n a b)`` for given factors (quantized along n).

  ``key`` is split between the two quantizers (used only by randomized ones, e.g. dither).
  """
  _check_quantizer(quant_a, "quant_a")
  _check_quantizer(quant_b, "quant_b")
  for nm, m in (("A", a_mat), ("B", b_mat)):
    if not hasattr(m, "dtype") or not jnp.issubdtype(m.dtype, jnp.floating):
      raise TypeError(f"{nm} must be a real floating array; got {getattr(m, 'dtype', type(m).__name__)}")
  if key is not None:
    check_key(key)
  if a_mat.ndim != 2 or b_mat.ndim != 2 or a_mat.shape[0] != b_mat.shape[0]:
    raise ValueError(
        f"A and B must be (n, a) and (n, b) with the same inner dimension n; got {a_mat.shape} and {b_mat.shape}"
    )
  n, a = a_mat.shape
  b = b_mat.shape[1]
  ka, kb = (None, None) if key is None else jax.random.split(key)
  a_hat = quant_a.quantize(a_mat.T, key=ka)
  b_hat = quant_b.quantize(b_mat.T, key=kb)
  exact = a_mat.T @ b_mat
  approx = a_hat @ b_hat.T
  return jnp.sum((exact - approx) ** 2) / (n * a * b)


NORMAL_GENERATOR = "threefry2x32-20+box-muller-octant/2"
"""Identifies the generator behind ``standard_normal`` (and so every ``matmul_distortion``
sample): stored Monte Carlo results should record it, so results drawn with another generator are
never mixed with these. Version 1 was Threefry-2x32 + ``jax.random.normal``'s erf⁻¹ transform."""

_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32 rotation constants, Salmon et al. (2011) Table 4


def _threefry2x32(k0: UInt32[Array, ""], k1: UInt32[Array, ""], x0: UInt32[Array, " h"], x1: UInt32[Array, " h"]):
  """Threefry-2x32 with 20 rounds (Salmon et al. 2011, Sec. 4.2), unrolled in ``jnp``.

  Bit for bit ``jax.extend.random.threefry_2x32`` (tested); spelled out here because XLA:CPU
  lowers JAX's primitive as a rolled loop over whole arrays, which cannot fuse into its consumer.
  """
  ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
  x0, x1 = x0 + ks[0], x1 + ks[1]
  for i in range(5):
    for r in _ROT[i % 2]:
      x0 = x0 + x1
      x1 = x0 ^ ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r)))
    x0 = x0 + ks[(i + 1) % 3]
    x1 = x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return x0, x1


# cos φ and sin φ / φ on [0, π/4] as polynomials in φ²: least-squares fits on 4000 Chebyshev
# nodes (near-minimax), float32 coefficients; max error 5.4e-11 (cos) and 2.8e-9 (sin) in
# exact arithmetic, below float32's half-ulp of 3e-8 near 1.
_SIN = (1.0, -0.16666653752326965, 0.00833213422447443, -0.00019513563893269747)
_COS = (1.0, -0.5, 0.04166662320494652, -0.0013886739034205675, 2.438902811263688e-05)


def _horner(coeffs, x):
  acc = jnp.float32(coeffs[-1])
  for c in coeffs[-2::-1]:
    acc = acc * x + jnp.float32(c)
  return acc


def _box_muller(x0: UInt32[Array, " h"], x1: UInt32[Array, " h"]) -> tuple[Float[Array, " h"], Float[Array, " h"]]:
  """Two independent N(0, 1) arrays from two arrays of uniform 32-bit words (Box & Muller 1958).

  ``z0 = r cos θ``, ``z1 = r sin θ`` with ``r = √(−2 ln u)``: both outputs are used.
  ``u = (⌊x0 / 2⁹⌋ + ½) 2⁻²³`` lies on the midpoints of a 2²³-point grid in (0, 1) (exact in
  float32), so ``r ≤ √(48 ln 2) = 5.77`` (a tail mass of 8·10⁻⁹, against 6·10⁻⁸ beyond
  jax.random.normal's 5.42). The angle is ``θ = φ`` reflected into one of the 8 octants
  by the low 3 bits of ``x1`` — swap ``(cos, sin)``, negate each — with ``φ`` uniform on
  [0, π/4) from the top 23 bits (grid midpoints). The 8 reflections of [0, π/4) tile [0, 2π),
  so θ is uniform; ``cos φ`` and ``sin φ`` are polynomials (no range reduction, no branch).
  """
  grid = jnp.float32(2.0**-23)
  u = ((x0 >> 9).astype(jnp.float32) + jnp.float32(0.5)) * grid
  r = jnp.sqrt(jnp.float32(-2.0) * jnp.log(u))
  phi = ((x1 >> 9).astype(jnp.float32) + jnp.float32(0.5)) * (grid * jnp.float32(np.pi / 4))
  p2 = phi * phi
  s = phi * _horner(_SIN, p2)
  c = _horner(_COS, p2)
  swap = (x1 & 1) != 0
  c, s = jnp.where(swap, s, c), jnp.where(swap, c, s)

  def signed(v, bit: int):  # r·v, negated where bit `bit` of x1 is set (XOR into the sign bit)
    mask = (x1 << jnp.uint32(31 - bit)) & jnp.uint32(0x80000000)
    return jax.lax.bitcast_convert_type(jax.lax.bitcast_convert_type(r * v, jnp.uint32) ^ mask, jnp.float32)

  return signed(c, 1), signed(s, 2)


def _normal_pairs(
    data: UInt32[Array, " 2"], pairs: int, unroll: int = 1
) -> tuple[Float[Array, " pairs"], Float[Array, " pairs"]]:
  """``(z0, z1)``: ``pairs`` Box–Muller pairs; pair ``j`` comes from Threefry block ``(j, j + pairs)``.

  The two halves are drawn in a 2-step ``lax.scan``, whose stacked output XLA must write to
  memory: otherwise it fuses the (cheap-looking) integer hash into every consumer of the
  normals — the quantizer's max, its rounding, the product — and recomputes it each time
  (3× slower samples, measured). XLA:CPU still evaluates the hash three times per pair (for
  ``r`` and for each output, which are separate loops), so drawing costs about as much as the
  quantizers and products of a sample (``benchmarks/montecarlo.py``).

  ``unroll=2`` unrolls the two steps (same values). XLA:CPU spreads the fusions of a loop body
  over fewer threads: in the Monte Carlo engine (``matmul_sample``) the unrolled draw made whole
  samples 1.22–1.25× faster on 2 cores (``benchmarks/montecarlo.py``). ``standard_normal`` keeps
  the loop: with its concatenation XLA fuses the unrolled draw into the result, ≈ 8× slower.
  """
  half = -(-pairs // 2)

  def step(_, i):
    ctr = jax.lax.iota(jnp.uint32, half) + (i * half).astype(jnp.uint32)
    return None, _box_muller(*_threefry2x32(data[0], data[1], ctr, ctr + jnp.uint32(pairs)))

  _, (z0, z1) = jax.lax.scan(step, None, jnp.arange(2, dtype=jnp.uint32), unroll=unroll)
  return z0.reshape(-1)[:pairs], z1.reshape(-1)[:pairs]


def _key_data(key: PRNGKeyArray):
  """Threefry key words ``uint32[2]``, or ``None`` for keys of another PRNG implementation."""
  is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  data = jax.random.key_data(key) if is_typed else key
  if data.shape != (2,) or (is_typed and "threefry" not in str(jax.random.key_impl(key))):
    return None
  return data


def standard_normal(key: PRNGKeyArray, size: int) -> Float[Array, " size"]:
  """``size`` iid N(0, 1) float32 draws: Threefry-2x32 bits, Box–Muller transform.

  Bits: counter-mode Threefry-2x32-20 (Salmon et al. 2011, "Parallel random numbers: as easy
  as 1, 2, 3", Sec. 4.2 — JAX's default generator) with both output words of every block used,
  blocks ``(j, j + ⌈size/2⌉)``; bit for bit ``jax.extend.random.threefry_2x32(key, iota)``.
  Normals: Box & Muller (1958), "A note on the generation of random normal deviates", both
  outputs of each pair used (``_box_muller``: 23-bit uniform grids, tails to 5.77σ). The
  result is ``concat(z0, z1)[:size]``; it depends only on ``(key, size)``, identically eager,
  jitted or vmapped. Tested: moments, KS and χ² against N(0, 1), the radius and the angle of
  each pair (``tests/test_matmul_mc.py``). ``NORMAL_GENERATOR`` names this generator. Keys of
  another PRNG implementation fall back to ``jax.random.normal``.
  """
  if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size < 2**32:
    raise ValueError(f"{size=} must be an integer in [0, 2^32)")
  check_key(key)
  data = _key_data(key)
  if data is None:
    return jax.random.normal(key, (size,), jnp.float32)
  z0, z1 = _normal_pairs(data, -(-size // 2))
  return jnp.concatenate([z0, z1])[:size]


def matmul_sample(setup: MatmulSetup, quant_a: Quantizer, quant_b: Quantizer):
  """A ``sample_fn`` for ``rdq.montecarlo.estimate``: key -> one distortion sample.

  ``A`` and ``B`` are the first ``n·a`` and last ``n·b`` of ``standard_normal(k, n(a + b))``
  with ``k`` split from ``key`` (one draw for both factors); randomized quantizers get the
  other half of the split. When ``a = b``, ``A`` and ``B`` are the cosine and sine halves of
  the Box–Muller pairs, taken without the concatenation.
  """
  na, nb = setup.n * setup.a, setup.n * setup.b

  def sample(key: PRNGKeyArray) -> Float[Array, ""]:
    k_data, k_q = jax.random.split(key)
    data = _key_data(k_data)
    if data is not None and na == nb:
      a_flat, b_flat = _normal_pairs(data, na, unroll=2)
    else:
      x = standard_normal(k_data, na + nb)
      a_flat, b_flat = x[:na], x[na:]
    return matmul_error(a_flat.reshape(setup.n, setup.a), b_flat.reshape(setup.n, setup.b), quant_a, quant_b, k_q)

  return sample


def matmul_distortion(
    quant_a: Quantizer,
    quant_b: Quantizer,
    setup: MatmulSetup,
    key: PRNGKeyArray,
    num_samples: int,
    batch: int = 64,
) -> Estimate:
  """Monte Carlo estimate of ``E‖AᵀB − ÂᵀB̂‖²_F / (n a b)`` with its standard error.

  Args:
    quant_a, quant_b: quantizers for A and B (the same or different).
    setup: the shapes ``(n, a, b)``.
    key: PRNG key; same key, same result.
    num_samples: number of independent (A, B) pairs.
    batch: pairs evaluated at once.
  """
  _check_quantizer(quant_a, "quant_a")
  _check_quantizer(quant_b, "quant_b")
  if not isinstance(setup, MatmulSetup):
    raise TypeError(f"setup must be a MatmulSetup(n, a, b); got {type(setup).__name__}: {setup!r:.60}")
  check_key(key)
  # Validate shapes eagerly (block sizes must divide n) before tracing.
  quant_a.rate((setup.a, setup.n))
  quant_b.rate((setup.b, setup.n))
  return estimate(_Sample(setup, quant_a, quant_b), key, num_samples, batch)


def _check_quantizer(q, name: str) -> None:
  if isinstance(q, str):
    raise TypeError(f"{name} must be a quantizer object, got the string {q!r}; use rdq.quantizers.get({q!r})")
  if not (callable(getattr(q, "quantize", None)) and callable(getattr(q, "rate", None))):
    raise TypeError(f"{name} must be a quantizer (with quantize and rate methods); got {type(q).__name__}")


@dataclasses.dataclass(frozen=True)
class _Sample:
  """Hashable sample function, so repeated calls with equal configs reuse the jit cache."""

  setup: MatmulSetup
  quant_a: Quantizer
  quant_b: Quantizer

  def __call__(self, key):
    return matmul_sample(self.setup, self.quant_a, self.quant_b)(key)
