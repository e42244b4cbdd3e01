"""What every rdq quantizer provides, and shared argument checks.

A quantizer is a frozen (hashable) dataclass, so it can be a static argument of ``jax.jit``.
It quantizes along the **last axis** of its input: block scales, lattice blocks and
codebook vectors all run along that axis. In a matmul ``AᵀB`` with ``A: (n, a)`` the
last axis is the inner (reduction) dimension ``n``: quantize ``A.T``.

Protocol (duck-typed; see ``Quantizer``):

* ``quantize(x, key=None) -> x_hat`` — pure, same shape and dtype as ``x``.
* ``encode(x) -> code`` and ``decode(code) -> x_hat`` where a compact code exists, with
  ``decode(encode(x)) == quantize(x)`` exactly.
* ``rate(shape) -> Rate`` — bits per entry, nominal and including side information.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Protocol, runtime_checkable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.checks import check_key, eager_jit, is_concrete, require

__all__ = [
    "Quantizer", "Rate", "check_finite", "check_input", "check_last_axis_divisible", "check_rate_shape", "eager_jit",
    "precheck_encode",
]


class Rate(NamedTuple):
  """Bits per entry of a quantizer's code.

  Attributes:
    nominal: bits per entry of the element codes alone (e.g. 4 for INT4).
    side: bits per entry spent on side information (scales, scale indices, codebooks).
  """

  nominal: float
  side: float

  @property
  def effective(self) -> float:
    """Bits per entry including side information: ``nominal + side``."""
    return self.nominal + self.side


@runtime_checkable
class Quantizer(Protocol):
  """Structural type of an rdq quantizer (see module docstring)."""

  def quantize(
      self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None
  ) -> Float[Array, "*batch n"]:
    ...

  def rate(self, shape: tuple[int, ...]) -> Rate:
    ...


def check_last_axis_divisible(shape: tuple[int, ...], block: int, name: str = "block_size"):
  """Raise ``ValueError`` unless ``block`` divides the last axis of ``shape``."""
  if len(shape) == 0:
    raise ValueError("quantizers need at least a 1-D input; got a scalar")
  n = shape[-1]
  if n % block != 0:
    raise ValueError(f"{name}={block} must divide the last axis (reduction dimension) n={n}")


def check_input(x: Array, name: str = "x", key=None) -> Array:
  """Static checks every ``quantize``/``encode`` runs (they also fire under ``jit``).

  ``x`` must be an array with a real floating dtype (float32, bfloat16, float16, ...), at
  least 1-D and non-empty; ``key``, if given, must be a PRNG key. Raises ``TypeError`` /
  ``ValueError`` naming the argument, the bad value and what was expected.
  """
  if not hasattr(x, "dtype") or not hasattr(x, "shape"):
    raise TypeError(f"{name} must be a jax or numpy array; got {type(x).__name__}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{name} must have a real floating dtype (float32, bfloat16, float16); got {x.dtype}"
        + (" (cast integers with x.astype(jnp.float32))" if jnp.issubdtype(x.dtype, jnp.integer) else "")
    )
  if x.ndim == 0:
    raise ValueError(f"quantizers need at least a 1-D input; got a scalar {name} (shape ())")
  if x.size == 0:
    raise ValueError(f"{name} is empty (shape {x.shape}); quantizers need at least one entry")
  if key is not None:
    check_key(key, "key")
  return x


def check_rate_shape(shape) -> tuple[int, ...]:
  """Validate the ``shape`` argument of ``rate``: a non-empty tuple of positive integers."""
  try:
    dims = tuple(shape)
  except TypeError:
    raise TypeError(f"shape must be a tuple of positive integers; got {shape!r}") from None
  if len(dims) == 0:
    raise ValueError("rate needs the shape of a ≥1-D input; got shape ()")
  for d in dims:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
      raise ValueError(f"shape must be a tuple of positive integers; got {shape!r} (bad dimension {d!r})")
  return tuple(int(d) for d in dims)


def check_finite(x: Array, what: str = "x") -> Array:
  """Require ``x`` to have no NaN/Inf entries (``encode`` needs finite input).

  Eagerly this raises ``ValueError``; under ``jit`` it is a checkify check (raises through
  ``rdq.checks.checked``). ``quantize`` never checks: it is a pure map that propagates NaN.
  """
  if is_concrete(x):
    fin = np.isfinite(np.asarray(x, np.float32))
    if not fin.all():
      raise ValueError(f"{what} has {int((~fin).sum())} non-finite (NaN/Inf) entries; encode needs finite input")
    return x
  bad = jnp.sum(~jnp.isfinite(x))  # one reduction: the count is both the test and the message
  require(bad == 0, what + " has {} non-finite (NaN/Inf) entries; encode needs finite input", bad)
  return x


def replace(q: Any, **changes) -> Any:
  """``dataclasses.replace`` for quantizer configs."""
  return dataclasses.replace(q, **changes)


def precheck_encode(obj: Any, x: Array, key=None) -> None:
  """``eager_jit``'s host pre-check for ``encode``: ``check_input`` then ``check_finite``, the
  checks ``encode`` runs first, so a NaN input raises before the program compiles."""
  del obj
  check_input(x, key=key)
  check_finite(x)
