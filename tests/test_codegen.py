"""The suite's XLA:CPU emitters compute what users' default emitters compute.

The suite compiles with XLA:CPU's legacy emitters because they compile faster
(tests/xla_settings.py); users run XLA's default (MLIR fusion) emitters. Each program below is
compiled both ways, with the emitter named explicitly, on the same inputs: every registered
quantizer family gives the same bits, every layer algorithm the same Ŵ bit for bit and the same
report up to float32 rounding (its distortions and rates are float32 sums, which the two emitters
may add in different orders). The settings themselves: only flags this XLA knows are added.
"""

import jax
import numpy as np
import pytest

from rdq import layer as LA
from rdq import quantizers as Q
from tests import xla_settings

legacy_only = pytest.mark.skipif(not xla_settings.legacy_emitters(), reason="the suite runs XLA's default emitters here")

DEFAULT = {xla_settings.EMITTER_OPTION: True}
LEGACY = {xla_settings.EMITTER_OPTION: False}
KEY = jax.random.key(0)
X = jax.random.normal(jax.random.key(1), (8, 768)) * 3  # 768: a multiple of every block, group and lattice dimension


def _both(f, *args):
  return (jax.jit(f, compiler_options=DEFAULT)(*args), jax.jit(f, compiler_options=LEGACY)(*args))


def _bits(a):
  a = np.atleast_1d(np.asarray(a))
  return a.view(np.uint8) if a.dtype.itemsize == 1 else a.view(f"u{a.dtype.itemsize}")


@legacy_only
@pytest.mark.parametrize("name", Q.names() + ["d4_nested_q4", "bw16_nested_q4", "leech_nested_q4"])
def test_quantizer_same_bits_under_both_emitters(name):
  q = Q.get(name)
  default, legacy = _both(lambda x: q.quantize(x, key=KEY), X)
  np.testing.assert_array_equal(_bits(default), _bits(legacy))


@legacy_only
@pytest.mark.parametrize("name", LA.names())
def test_layer_algorithm_same_w_hat_under_both_emitters(name):
  w = jax.random.normal(KEY, (64, 32))
  xx = jax.random.normal(jax.random.key(1), (256, 64))
  h = xx.T @ xx / 256
  (w_default, rep_default), (w_legacy, rep_legacy) = _both(lambda w, h: LA.get(name)(w, h, key=KEY, rate_bits=3.0), w, h)
  np.testing.assert_array_equal(_bits(w_default), _bits(w_legacy))
  assert jax.tree.structure(rep_default) == jax.tree.structure(rep_legacy)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(rep_default)[0], jax.tree.leaves(rep_legacy)):
    # a reordered float32 sum of n terms: far inside the (n - 1)·eps worst case (observed ≤ 7.2e-7)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, equal_nan=True, err_msg=jax.tree_util.keystr(path))


def test_settings_add_only_what_this_xla_knows(monkeypatch):
  """``configure`` keeps flags the caller set, and adds the emitter flag only if the probe accepts it."""
  for accepted in (True, False):
    monkeypatch.setattr(xla_settings, "_xla_accepts", lambda flag, accepted=accepted: accepted)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    xla_settings.configure(env)
    flags = env["XLA_FLAGS"].split()
    assert flags[:2] == ["--xla_force_host_platform_device_count=2", xla_settings.LEVEL_1]
    assert (xla_settings.LEGACY_EMITTERS in flags) is accepted
  env = {"XLA_FLAGS": "--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true"}
  xla_settings.configure(env)
  assert env["XLA_FLAGS"] == "--xla_backend_optimization_level=2 --xla_cpu_use_fusion_emitters=true"


def test_probe_tells_known_from_unknown_flags():
  assert xla_settings._xla_accepts(xla_settings.LEVEL_1)
  assert not xla_settings._xla_accepts("--xla_no_such_flag_in_any_release=true")
