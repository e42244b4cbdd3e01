"""Shared pytest configuration for rdq."""

import os

from tests import xla_settings

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling small programs: LLVM at level 1 and XLA:CPU's legacy
# fusion emitter compile them faster (tests/xla_settings.py says what each costs and what checks
# that they compute what XLA's defaults compute). Set here, before any backend starts, so the
# workers, subprocesses and notebook kernels inherit them (the kernels only when pytest is given
# `tests`, as `make test` does: this file is not loaded for `pytest notebooks` alone).
xla_settings.configure()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# No per-example wall-clock deadline: the first example of a property pays for jit compilation,
# and under `pytest -n 2` the other worker competes for the cores, so a deadline is a flaky timing
# assertion, not a correctness check (benchmarks/ measures speed). Tests that need a different
# example count still set it with @settings.
settings.register_profile("rdq", deadline=None)
settings.load_profile("rdq")


def pytest_terminal_summary(terminalreporter):
  """The XLA flags the suite compiled with (tests/xla_settings.py): a run's timing says its setting."""
  terminalreporter.write_line(f"XLA_FLAGS: {os.environ.get('XLA_FLAGS', '')}")


@pytest.fixture
def key():
  return jax.random.key(0)
