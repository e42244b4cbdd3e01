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

__all__ = ["checked", "check_float_dtype", "check_key", "eager_jit", "is_concrete", "require"]


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


def _outside_trace() -> bool:
  """Whether no ``jit``/``vmap``/``grad``/``checkify`` trace is active (and jit is enabled)."""
  if jax.config.jax_disable_jit:
    return False
  try:
    from jax._src import core

    return core.trace_state_clean()
  except (ImportError, AttributeError):  # pragma: no cover - a jax without this internal
    return False


def _split_leaves(leaves: list[Any]) -> tuple[tuple[int, ...], tuple[tuple[int, Any], ...]] | None:
  """Positions of the array leaves (traced) and the static leaves, or None if a leaf is neither.

  Arrays are traced only when jit keeps their dtype (a float64 NumPy array under jax's default
  32-bit mode is not: it runs eagerly, as before). Static leaves are strings, dtypes and types
  (``dtype=jnp.float32``); a Python number, a list or any other object means "run eagerly", so
  error messages that name its type and value are unchanged.
  """
  dyn, static = [], []
  for i, leaf in enumerate(leaves):
    if isinstance(leaf, (jax.Array, np.ndarray)):
      if isinstance(leaf, np.ndarray) and (
          leaf.dtype.kind not in "biufc" or jax.dtypes.canonicalize_dtype(leaf.dtype) != leaf.dtype):
        return None
      dyn.append(i)
    elif isinstance(leaf, (str, type, np.dtype)):
      static.append((i, leaf))
    else:
      return None
  return tuple(dyn), tuple(static)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _eager_program(method: Callable, obj: Any, treedef: Any, static: tuple, dyn: tuple):
  """``method(obj, *args, **kwargs)`` as one checkified program (``eager_jit``)."""

  def call(dyn):
    fixed = dict(static)
    it = iter(dyn)
    leaves = [fixed[i] if i in fixed else next(it) for i in range(len(dyn) + len(static))]
    args, kwargs = jax.tree_util.tree_unflatten(treedef, leaves)
    return method(obj, *args, **kwargs)

  return checkify.checkify(call, errors=checkify.user_checks)(dyn)


def eager_jit(method: Callable | None = None, *, precheck: Callable | None = None) -> Callable:
  """Method decorator: an eager call runs as one compiled ``checked(jax.jit)`` program.

  Called outside any trace with array arguments, ``obj.method(*args)`` compiles (once per
  ``obj``, static arguments and argument shapes/dtypes; ``obj`` must be hashable, e.g. a
  frozen dataclass) instead of dispatching each ``jnp`` operation on its own, which is slow
  for a long program; the result is bitwise that of ``jax.jit``. Errors are unchanged: when
  tracing raises (a static check) or a ``require`` fails, the method is run again eagerly, as
  written, and raises exactly as before. Inside a ``jit``/``vmap``/``grad`` trace, under
  ``jax.disable_jit()``, or with an argument that is not an array, string or dtype (a Python
  number, a list, …), the method runs as written.

  ``precheck`` (``@eager_jit(precheck=f)``, ``f`` with the method's signature) runs on the
  concrete arguments just before compiling: it must perform checks the method itself runs
  first, in the same order and with the same messages (e.g. ``check_input`` then
  ``check_finite``), host-side. A bad input then raises at once instead of compiling the
  whole program, failing its checkify check, and rerunning the method eagerly to raise.
  """
  if method is None:
    return functools.partial(eager_jit, precheck=precheck)

  @functools.wraps(method)
  def wrapper(obj, *args, **kwargs):
    if not _outside_trace():
      return method(obj, *args, **kwargs)
    leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
    split = _split_leaves(leaves)
    if split is None:
      return method(obj, *args, **kwargs)
    dyn_pos, static = split
    try:
      hash((obj, treedef, static))
    except TypeError:
      return method(obj, *args, **kwargs)
    if precheck is not None:
      precheck(obj, *args, **kwargs)  # concrete arguments: a bad input raises before compiling
    try:
      err, out = _eager_program(method, obj, treedef, static, tuple(leaves[i] for i in dyn_pos))
    except Exception:  # noqa: BLE001  a static check failed while tracing: raise it as written
      return method(obj, *args, **kwargs)
    exc = err.get_exception()
    if exc is None:
      return out
    method(obj, *args, **kwargs)  # a value check failed: the eager run raises the same error
    raise ValueError(  # pragma: no cover - eager and compiled checks disagree
        exc.fmt_string.format(*[_show(a) for a in exc.args], **{k: _show(v) for k, v in exc.kwargs.items()}))

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
