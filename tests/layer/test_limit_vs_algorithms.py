"""The waterfilling limit never exceeds any algorithm's distortion at its actual rate."""

import jax
import numpy as np

from rdq import covariance as cov
from rdq.layer import GPTQConfig, MinMaxGrid, RTNConfig, UniformGrid, WaterSICConfig, gptq, rtn, watersic
from rdq.limits import waterfill


def test_limit_below_every_algorithm():
  h = cov.BlockDiagonal(64, 4)(jax.random.key(0), 0.9)
  w = jax.random.normal(jax.random.key(1), (64, 512))
  lam = np.linalg.eigvalsh(np.asarray(h, np.float64)).clip(0)
  runs = [
      rtn(w, h, RTNConfig("int4_block32")),
      rtn(w, h, RTNConfig("nvfp4")),
      gptq(w, h, GPTQConfig(MinMaxGrid(3))),
      gptq(w, h, GPTQConfig(UniformGrid(4.0))),
      # rate_iters=3 as in test_watersic (same static config: the compiled function is reused)
      watersic(w, h, WaterSICConfig(2.0, rate_iters=3)),
      watersic(w, h, WaterSICConfig(5.0, rate_iters=3)),
  ]
  for _, rep in runs:
    # rate_coded_bits is achievable (model and side bits counted), so the converse applies.
    limit = float(waterfill(lam, rep.rate_coded_bits).distortion)
    assert limit < float(rep.d_per_entry), (float(rep.rate_coded_bits), limit, float(rep.d_per_entry))
    assert float(rep.rate_entropy_bits) <= float(rep.rate_coded_bits) + 1e-3
