"""Shared pytest configuration for rdq."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Most of the suite's time is XLA compiling small programs; LLVM at level 1 instead of the default 2
# compiles them faster and runs the few compute-bound tests a little slower (whole suite on 2 cores:
# 853 s → 720 s; level 0 would make a 2^23-sample lattice test 3× slower). Set here, before any
# backend starts, so the workers, subprocesses and notebook kernels inherit it. Results are checked
# within the same compiled setting (eager vs jit, two runs), so no assertion depends on the level.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=1").strip()

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

# No per-example wall-clock deadline: the first example of a property pays for jit compilation,
# and under `pytest -n 2` the other worker competes for the cores, so a deadline is a flaky timing
# assertion, not a correctness check (benchmarks/ measures speed). Tests that need a different
# example count still set it with @settings.
settings.register_profile("rdq", deadline=None)
settings.load_profile("rdq")


@pytest.fixture
def key():
  return jax.random.key(0)
