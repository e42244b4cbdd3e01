"""The ``>>>`` examples in rdq's docstrings run and print what they say."""

import doctest
import importlib
import pkgutil

import pytest

import rdq

# Modules whose import needs an optional extra that the test environment always has; the walk
# covers every module of the package so a new example is picked up without listing it here.
_MODULES = sorted(m.name for m in pkgutil.walk_packages(rdq.__path__, prefix="rdq."))


def _examples(name: str) -> int:
  module = importlib.import_module(name)
  return sum(len(t.examples) for t in doctest.DocTestFinder().find(module))


_WITH_EXAMPLES = [name for name in _MODULES if _examples(name)]


def test_examples_exist():
  # The docstrings of the limits, the registry and the Monte Carlo engine carry examples; if this
  # drops to zero the walk above stopped finding modules.
  assert len(_WITH_EXAMPLES) >= 4, _WITH_EXAMPLES


@pytest.mark.parametrize("name", _WITH_EXAMPLES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
  assert result.attempted > 0
  assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (see output above)"
