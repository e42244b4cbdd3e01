"""One mechanism for argument checks, eagerly and under ``jit``.

Every public rdq function validates its arguments with ``require``:

* **Eagerly** (concrete values): a failed check raises ``ValueError`` at once; the message
  names the argument, the bad value and what was expected.
* **Under ``jit``** (traced values): the check is a ``jax.experimental.checkify``
  ``debug_check``. Plain ``jax.jit(f)`` skips it (no cost, no host sync); run the same
  function through ``checked`` — ``rdq.checks.checked(jax.jit(f))(x)`` — and the failed
  check raises ``checkify.JaxRuntimeError`` (a ``ValueError``) with the same message.

Checks on static properties (shapes, dtypes, configs) raise ``ValueError``/``TypeError``
while tracing, so they fire under plain ``jit`` too.

References:
  JAX documentation, "The checkify transformation" (``jax.experimental.checkify``).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

__all__ = ["checked", "check_float_dtype", "check_key", "is_concrete", "require"]


def is_concrete(*xs: Any) -> bool:
  """Whether none of ``xs`` is a tracer (so its value can be inspected on the host)."""
  return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(xs))


def require(pred: Any, msg: str, *fmt_args: Any) -> None:
  """Check ``pred`` (a bool or boolean array, all entries must hold).

  ``msg`` is a ``str.format`` template filled with ``fmt_args`` (scalars or arrays), e.g.
  ``require(x > 0, "rate must be > 0; got min {}", jnp.min(x))``. Eagerly a failure raises
  ``ValueError(msg)``; traced, it is ``checkify.debug_check`` (see module docstring).
  """
  if is_concrete(pred, fmt_args):
    if not bool(np.all(np.asarray(pred))):
      vals = [_show(a) for a in fmt_args]
      raise ValueError(msg.format(*vals))
    return
  checkify.debug_check(jnp.all(jnp.asarray(pred)), msg, *fmt_args)


def _show(a: Any) -> Any:
  if isinstance(a, (jax.Array, np.ndarray, np.generic)):
    arr = np.asarray(a)
    return arr.item() if arr.size == 1 else arr
  return a


def checked(fn: Callable) -> Callable:
  """``fn`` with its ``require`` checks raising under ``jit``.

  ``checked(jax.jit(f))(x)`` (or ``checked(f)`` on a function that calls jitted code)
  functionalizes the checks with ``checkify.checkify`` and raises the first failure as
  ``checkify.JaxRuntimeError`` (a ``ValueError``) after the call.
  """
  checkified = checkify.checkify(fn, errors=checkify.user_checks)

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    err, out = checkified(*args, **kwargs)
    err.throw()
    return out

  return wrapper


def check_float_dtype(x: Any, name: str = "x") -> None:
  """Raise ``TypeError`` unless ``x`` has a real floating dtype (static, also under jit)."""
  dt = jnp.result_type(x) if not hasattr(x, "dtype") else x.dtype
  if not jnp.issubdtype(dt, jnp.floating):
    raise TypeError(f"{name} must have a real floating dtype (float32, bfloat16, ...); got {dt}")


def check_key(key: Any, name: str = "key") -> None:
  """Raise ``TypeError`` unless ``key`` is a PRNG key (``jax.random.key`` or a raw uint32[2])."""
  dt = getattr(key, "dtype", None)
  if dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key):
    if key.shape != ():
      raise TypeError(f"{name} must be a single PRNG key; got a batch of shape {key.shape}")
    return
  if dt == jnp.uint32 and getattr(key, "shape", None) == (2,):
    return
  shown = type(key).__name__ if dt is None else f"{type(key).__name__} of dtype {dt}, shape {key.shape}"
  raise TypeError(f"{name} must be a PRNG key from jax.random.key(seed); got {shown}: {key!r:.60}")
