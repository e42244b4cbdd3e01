"""One registry from quantizer names (as used in Hydra configs) to quantizer objects.

Names are either exact (``"nvfp4"``) or parametric patterns (``"int4_block32"``). Modules
register their families at import; ``rdq.quantizers`` imports them all.

Examples:
  >>> from rdq.quantizers import get
  >>> get("int4_block32").rate((8, 128)).effective
  5.0
"""

from __future__ import annotations

import re
from typing import Any, Callable

__all__ = ["get", "names", "register"]

# (compiled pattern, factory taking the regex match, example names, description)
_FAMILIES: list[tuple[re.Pattern, Callable[[re.Match], Any], tuple[str, ...], str]] = []


def register(pattern: str, factory: Callable[[re.Match], Any], examples: tuple[str, ...], doc: str):
  """Register a family of names.

  Args:
    pattern: a regular expression that must match the whole name.
    factory: builds the quantizer from the ``re.Match``.
    examples: concrete names of the family (listed by ``names()``; all must resolve).
    doc: one line describing the family, shown in error messages.
  """
  _FAMILIES.append((re.compile(pattern), factory, tuple(examples), doc))


def names() -> list[str]:
  """The example names of every registered family (each one resolves with ``get``)."""
  out: list[str] = []
  for _, _, examples, _ in _FAMILIES:
    out.extend(examples)
  return out


def get(name: str):
  """Build the quantizer called ``name``.

  Raises:
    ValueError: the name matches no registered family; the message lists the known names
      and patterns.
  """
  if not isinstance(name, str):
    raise TypeError(f"quantizer name must be a str, got {type(name).__name__}")
  for pattern, factory, _, _ in _FAMILIES:
    m = pattern.fullmatch(name)
    if m is not None:
      return factory(m)
  families = "\n".join(f"  {doc}" for *_, doc in _FAMILIES)
  raise ValueError(
      f"unknown quantizer name {name!r}. Known names: {', '.join(names())}.\nFamilies:\n{families}"
  )
