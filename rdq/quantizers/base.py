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

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

__all__ = ["Quantizer", "Rate", "check_finite", "check_last_axis_divisible"]


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


def check_finite(x: Array, what: str = "x") -> Array:
  """Raise ``ValueError`` if a concrete ``x`` has NaN/Inf entries.

  ``encode`` calls this, so encoding non-finite data fails loudly when called eagerly.
  Under an outer ``jit`` the input is a tracer and cannot be inspected; it is returned
  unchanged (NaN then propagates into the code). ``quantize`` never checks: it is a pure
  map that propagates NaN.
  """
  if isinstance(x, jax.core.Tracer):
    return x
  if not bool(jnp.all(jnp.isfinite(x))):
    bad = int(jnp.sum(~jnp.isfinite(x)))
    raise ValueError(f"{what} has {bad} non-finite (NaN/Inf) entries; encode needs finite input")
  return x


def replace(q: Any, **changes) -> Any:
  """``dataclasses.replace`` for quantizer configs."""
  return dataclasses.replace(q, **changes)
