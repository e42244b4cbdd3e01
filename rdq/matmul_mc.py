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
import jax.extend.random  # noqa: F401  (threefry_2x32)
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.checks import check_key
from rdq.montecarlo import Estimate, estimate
from rdq.quantizers.base import Quantizer

__all__ = ["MatmulSetup", "matmul_distortion", "matmul_error", "matmul_sample", "standard_normal"]


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


def standard_normal(key: PRNGKeyArray, size: int) -> Float[Array, " size"]:
  """``size`` iid N(0, 1) float32 draws from a Threefry key, two per Threefry block.

  ``jax.random.normal`` (with ``jax_threefry_partitionable``, the default) spends one
  Threefry-2x32 block (20 rounds) per 32-bit word and keeps the XOR of its two output words;
  here the counters ``(i, i + size/2)`` fill both output words, the counter-mode layout of
  Salmon et al. (2011), "Parallel random numbers: as easy as 1, 2, 3", Sec. 2 — the same
  generator at half the cost. Uniform bits become normals as in ``jax.random.normal``:
  ``u`` in ``(−1, 1)`` from the top 23 bits, ``x = √2 · erf⁻¹(u)``. Drawing the normals is
  most of a Monte Carlo sample's time (``benchmarks/montecarlo.py``). Keys of another
  PRNG implementation fall back to ``jax.random.normal``.
  """
  is_typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  data = jax.random.key_data(key) if is_typed else key
  if data.shape != (2,) or (is_typed and "threefry" not in str(jax.random.key_impl(key))):
    return jax.random.normal(key, (size,), jnp.float32)
  words = size + size % 2
  bits = jax.extend.random.threefry_2x32(data, jax.lax.iota(jnp.uint32, words))[:size]
  one = jnp.uint32(0x3F800000)  # 1.0f: mantissa bits → float in [1, 2)
  unit = jax.lax.bitcast_convert_type((bits >> 9) | one, jnp.float32) - 1.0  # [0, 1)
  return _normal_from_unit(unit)


def _normal_from_unit(unit: Float[Array, "*s"]) -> Float[Array, "*s"]:
  """``√2 · erf⁻¹(u)`` with ``u = max(lo, unit·(1 − lo) + lo)``, ``lo = nextafter(−1, 0)``:
  ``jax.random.normal``'s transform of uniform ``unit`` in [0, 1), operation for operation."""
  lo = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))
  u = jnp.maximum(lo, unit * (jnp.float32(1.0) - lo) + lo)
  return jnp.float32(2.0**0.5) * jax.lax.erf_inv(u)


def matmul_sample(setup: MatmulSetup, quant_a: Quantizer, quant_b: Quantizer):
  """A ``sample_fn`` for ``rdq.montecarlo.estimate``: key -> one distortion sample.

  ``A`` and ``B`` are the first ``n·a`` and last ``n·b`` of ``n(a + b)`` iid N(0, 1) draws
  from one key (``standard_normal``); randomized quantizers get a second key split from ``key``.
  """

  def sample(key: PRNGKeyArray) -> Float[Array, ""]:
    k_data, k_q = jax.random.split(key)
    x = standard_normal(k_data, setup.n * (setup.a + setup.b))
    a_mat = x[: setup.n * setup.a].reshape(setup.n, setup.a)
    b_mat = x[setup.n * setup.a :].reshape(setup.n, setup.b)
    return matmul_error(a_mat, b_mat, quant_a, quant_b, k_q)

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
