"""rdq/experiments/weight_only.py: the batched point computation equals one-item evaluation."""

import jax
import jax.numpy as jnp
import numpy as np

from rdq.experiments import weight_only as wo


def test_chunked_pads_and_drops():
  calls = []

  def fn(x):
    calls.append(len(x))
    return x * 2, x + 1

  got = wo._chunked(fn, 4, np.arange(6))
  assert calls == [4, 4]  # every call has exactly `batch` items: one program
  np.testing.assert_array_equal(got[0], 2 * np.arange(6))
  np.testing.assert_array_equal(got[1], np.arange(6) + 1)


def test_gap_point_equals_per_item_stats():
  """A gap point (draws × params × rates, in padded batches) = ``_stats`` on each item with the
  documented keys: draw i → ``k_Σ, k_W = split(fold_in(key(seed), i))``, one Σ per parameter from k_Σ."""
  point = dict(part="gap", family={"name": "power_law"}, params=[0.0, 2.0], rates=[2.0, 4.0], algorithm="rtn",
               n=8, m=16, draws=3, batch=5, percdamp=1e-4, seed=3)
  res = wo._compute(point)
  fam = wo._family(point["family"], 8)
  stats = jax.jit(lambda w, h, rate: wo._stats("rtn", w, h, rate, 1e-4))  # one item, not vmapped
  vals = np.zeros((3, 2, 2, len(wo.STATS)))
  for i in range(3):
    k_s, k_w = jax.random.split(jax.random.fold_in(jax.random.key(3), i))
    w = jax.random.normal(k_w, (8, 16), jnp.float32)
    for p, param in enumerate(point["params"]):
      h = jax.jit(fam)(k_s, jnp.float32(param))
      for r, rate in enumerate(point["rates"]):
        vals[i, p, r] = np.asarray(stats(w, h, jnp.float32(rate)))
  np.testing.assert_allclose(res["mean"], vals.mean(0), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(res["stderr"], vals.std(0, ddof=1) / np.sqrt(3), rtol=1e-4, atol=1e-7)
  assert res["n"] == 3 and np.shape(res["eigs_draw0"]) == (2, 8)
  # the stored spectrum is Σ(param) of draw 0
  k_s0 = jax.random.split(jax.random.fold_in(jax.random.key(3), 0))[0]
  np.testing.assert_allclose(res["eigs_draw0"][1], np.linalg.eigvalsh(np.asarray(jax.jit(fam)(k_s0, jnp.float32(2.0)), np.float64)),
                             rtol=1e-4, atol=1e-6)
