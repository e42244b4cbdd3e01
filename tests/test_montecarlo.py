"""Tests for rdq.montecarlo."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.montecarlo import Estimate, estimate


def _square(k):
  return jax.random.normal(k) ** 2


def _moments(k):
  x = jax.random.normal(k)
  return jnp.stack([x, x**2, x**4])


def test_known_mean_within_ci():
  est = estimate(_square, jax.random.key(0), 20_000, 1000)
  lo, hi = est.ci(0.999)
  assert lo <= 1.0 <= hi
  # stderr of the mean of chi²_1 is sqrt(2/n)
  np.testing.assert_allclose(float(est.stderr), np.sqrt(2 / 20_000), rtol=0.05)


def test_vector_statistics():
  est = estimate(_moments, jax.random.key(1), 50_000, 5000)
  assert est.mean.shape == (3,)
  assert bool(jnp.all(est.contains(jnp.array([0.0, 1.0, 3.0]), 0.999)))


def test_matches_direct_computation_with_ragged_last_batch():
  n, batch = 1001, 64  # last batch is masked
  est = estimate(_square, jax.random.key(2), n, batch)
  xs = np.array([float(_square(jax.random.fold_in(jax.random.key(2), i))) for i in range(n)])
  np.testing.assert_allclose(float(est.mean), xs.mean(), rtol=1e-5)
  np.testing.assert_allclose(float(est.stderr), xs.std(ddof=1) / np.sqrt(n), rtol=1e-4)


def test_deterministic_and_batch_independent():
  a = estimate(_square, jax.random.key(3), 4096, 256)
  b = estimate(_square, jax.random.key(3), 4096, 256)
  assert np.array_equal(np.asarray(a.mean), np.asarray(b.mean))
  assert np.array_equal(np.asarray(a.stderr), np.asarray(b.stderr))
  c = estimate(_square, jax.random.key(3), 4096, 1000)
  np.testing.assert_allclose(float(a.mean), float(c.mean), rtol=1e-5)
  d = estimate(_square, jax.random.key(4), 4096, 256)
  assert float(a.mean) != float(d.mean)


def test_estimate_is_a_pytree_and_ci_levels():
  est = estimate(_square, jax.random.key(5), 1000, 100)
  leaves = jax.tree_util.tree_leaves(est)
  assert len(leaves) == 2 and est.n == 1000
  lo90, hi90 = est.ci(0.90)
  lo99, hi99 = est.ci(0.99)
  assert lo99 < lo90 < hi90 < hi99


@pytest.mark.parametrize("n,batch", [(1, 10), (0, 10), (10, 0), (2.5, 1)])
def test_bad_sizes(n, batch):
  with pytest.raises(ValueError):
    estimate(_square, jax.random.key(0), n, batch)


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5])
def test_bad_ci_level(level):
  est = Estimate(jnp.float32(0.0), jnp.float32(1.0), 10)
  with pytest.raises(ValueError):
    est.ci(level)


@dataclasses.dataclass(frozen=True)
class _Scaled:
  c: float

  def __call__(self, k):
    return self.c * jax.random.normal(k)


def test_hashable_sample_fn_reuses_compilation():
  from rdq import montecarlo

  estimate(_Scaled(2.0), jax.random.key(0), 64, 32)
  size = montecarlo._estimate._cache_size()
  estimate(_Scaled(2.0), jax.random.key(1), 64, 32)
  assert montecarlo._estimate._cache_size() == size


_SHARD_SCRIPT = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax, numpy as np
from rdq import quantizers
from rdq.matmul_mc import MatmulSetup, matmul_sample
from rdq.montecarlo import estimate
assert len(jax.devices()) == 4
q = quantizers.get("mxfp4")
sample = matmul_sample(MatmulSetup(64, 4, 4), q, q)
square = lambda k: jax.random.normal(k, (3,)) ** 2
for ndev in (1, 3, 4):
  devs = tuple(jax.devices()[:ndev])
  e = estimate(sample, jax.random.key(0), 203, 16, devices=devs)
  f = estimate(square, jax.random.key(1), 1001, 10, devices=devs)
  print(np.asarray(e.mean).tobytes().hex(), np.asarray(e.stderr).tobytes().hex(), np.asarray(f.mean).tobytes().hex())
"""


def test_identical_result_whatever_the_device_count():
  # One process with 4 simulated devices; the estimate over the first 1, 3 and 4 of them
  # (3 does not divide the chunk count) must be bitwise identical.
  import subprocess
  import sys

  proc = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], capture_output=True, text=True, timeout=300,
                        env={**__import__("os").environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0, proc.stderr[-2000:]
  outs = proc.stdout.strip().splitlines()
  assert len(outs) == 3 and outs[0] and outs[0] == outs[1] == outs[2]
