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
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.montecarlo import Estimate, estimate
from rdq.quantizers.base import Quantizer

__all__ = ["MatmulSetup", "matmul_distortion", "matmul_error", "matmul_sample"]


@dataclasses.dataclass(frozen=True)
class MatmulSetup:
  """Shapes of one generic-matmul sample: ``AᵀB`` with ``A: (n, a)``, ``B: (n, b)``."""

  n: int
  a: int
  b: int

  def __post_init__(self):
    for f in ("n", "a", "b"):
      v = getattr(self, f)
      if not isinstance(v, int) or v < 1:
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


def matmul_sample(setup: MatmulSetup, quant_a: Quantizer, quant_b: Quantizer):
  """A ``sample_fn`` for ``rdq.montecarlo.estimate``: key -> one distortion sample."""

  def sample(key: PRNGKeyArray) -> Float[Array, ""]:
    k_a, k_b, k_q = jax.random.split(key, 3)
    a_mat = jax.random.normal(k_a, (setup.n, setup.a), jnp.float32)
    b_mat = jax.random.normal(k_b, (setup.n, setup.b), jnp.float32)
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
  # Validate shapes eagerly (block sizes must divide n) before tracing.
  quant_a.rate((setup.a, setup.n))
  quant_b.rate((setup.b, setup.n))
  return estimate(_Sample(setup, quant_a, quant_b), key, num_samples, batch)


@dataclasses.dataclass(frozen=True)
class _Sample:
  """Hashable sample function, so repeated calls with equal configs reuse the jit cache."""

  setup: MatmulSetup
  quant_a: Quantizer
  quant_b: Quantizer

  def __call__(self, key):
    return matmul_sample(self.setup, self.quant_a, self.quant_b)(key)
