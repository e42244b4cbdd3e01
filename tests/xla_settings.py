"""The XLA settings the test suite compiles with, and how a test asks for XLA's defaults.

Most of the suite's time is XLA:CPU compiling small programs. Two settings make that faster:

- ``--xla_backend_optimization_level=1`` (LLVM at level 1 instead of the default): compiles
  faster, runs the few compute-bound tests a little slower (level 0 would make them up to 3×
  slower).
- ``--xla_cpu_use_fusion_emitters=false``: XLA's legacy elemental emitter for loop fusions instead
  of the MLIR fusion emitters; it compiles the suite's programs about 40 % faster. XLA releases
  that no longer have the flag (jax 0.12's) abort on an unknown ``XLA_FLAGS`` entry, so it is set
  only after a subprocess probe accepts it.

``tests/test_codegen.py`` checks that the legacy emitter computes what users' default computes:
every registered quantizer bit for bit, every layer algorithm's Ŵ bit for bit (their reports to
float32 rounding). The one difference found is in XLA itself: the legacy emitter rounds
float32 → float4_e2m1fn twice (through a wider float; −1.2502034 becomes −1.0, not −1.5), so a
test that uses XLA's own conversion as its reference compiles it with :func:`default_codegen`.
(It also turns small negatives into NaN when casting to the ``fnuz`` float8 formats, which rdq
does not use.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import MutableMapping

LEVEL_1 = "--xla_backend_optimization_level=1"
EMITTER_OPTION = "xla_cpu_use_fusion_emitters"  # the same debug option as a per-jit compiler option
LEGACY_EMITTERS = f"--{EMITTER_OPTION}=false"
_PROBED = "RDQ_TEST_XLA_EMITTER_PROBED"  # set once decided, so workers and subprocesses inherit it


def _xla_accepts(flag: str) -> bool:
  """Whether this jaxlib's XLA knows ``flag`` (it aborts the process on one it does not)."""
  env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
  probe = "import jax.numpy as jnp; jnp.zeros(2).block_until_ready()"
  try:
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=300).returncode == 0
  except subprocess.TimeoutExpired:  # a stalled probe: keep XLA's default emitters
    return False


def configure(environ: MutableMapping[str, str] = os.environ) -> None:
  """Add the suite's XLA flags to ``environ["XLA_FLAGS"]``; call before any JAX backend starts.

  Flags already named in ``XLA_FLAGS`` are left as the caller set them.
  """
  flags = environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in flags:
    flags = f"{flags} {LEVEL_1}"
  if EMITTER_OPTION not in flags and _PROBED not in environ:
    if _xla_accepts(LEGACY_EMITTERS):
      flags = f"{flags} {LEGACY_EMITTERS}"
    environ[_PROBED] = "1"
  environ["XLA_FLAGS"] = flags.strip()


def legacy_emitters() -> bool:
  """Whether this process compiles with XLA:CPU's legacy emitters (see the module docstring)."""
  return LEGACY_EMITTERS in os.environ.get("XLA_FLAGS", "")


def default_codegen() -> dict:
  """``jax.jit`` keyword arguments that compile with XLA:CPU's default (fusion) emitters."""
  return {"compiler_options": {EMITTER_OPTION: True}} if legacy_emitters() else {}
