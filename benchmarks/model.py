"""Time to calibrate and quantize all of MiniLM-L6 with each layer algorithm (CPU).

Measures, in one run:
  * calibration: ``rdq.models.second_moments`` over ``--n-calibration`` passages (H of all
    36 linear layers), cold (with compilation) and warm;
  * quantization of all 36 linear layers at ``--bits`` with every algorithm of
    ``rdq/experiments/real_model.py`` (RTN, GPTQ, WaterSIC, GPTVQ, E8 RTN and E8 LDLQ), cold
    (first call: compiles one program per layer shape) and warm, layers of one shape batched
    with ``vmap`` exactly as ``rdq/experiments/real_model.py`` does.
Ratios are against RTN (warm) measured in the same run.

  python benchmarks/model.py                 # defaults: 64 passages, 4 bits
  python benchmarks/model.py --n-calibration 512 --bits 3
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Single-threaded BLAS (unless set): on a shared 2-core machine multi-threaded OpenBLAS spin-waits in
# jax's LAPACK calls (Cholesky of the 1536² H: 3.6 s for 6 layers single-threaded, 18–25 s threaded).
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ.setdefault(_v, "1")


def _timed(fn):
  t0 = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-calibration", type=int, default=64)
  parser.add_argument("--bits", type=int, default=4)
  parser.add_argument("--algorithms", nargs="+", default=["rtn", "gptq", "watersic", "gptvq", "e8_rtn", "e8_ldlq"])
  args = parser.parse_args()

  import jax
  import numpy as np

  from rdq.experiments.real_model_algorithms import quantize_layers
  from rdq.experiments.real_model_data import LAYER_TYPES
  from rdq.models import from_pretrained, linear_kernels, load_splits, second_moments

  model, t_load = _timed(from_pretrained)
  sents = load_splits(args.n_calibration, 1, seed=0).calibration
  stats, t_cal_cold = _timed(lambda: second_moments(model, sents))
  _, t_cal_warm = _timed(lambda: second_moments(model, sents))
  kernels = {k: np.asarray(v) for k, v in linear_kernels(model).items()}
  groups: dict[tuple, list[str]] = {}
  for name in kernels:
    groups.setdefault(kernels[name].shape, []).append(name)

  def quantize_all(algorithm):
    for names in groups.values():
      outs = quantize_layers([kernels[k] for k in names], [stats.h[k] for k in names], algorithm, args.bits)
      jax.block_until_ready(outs[-1][0])

  rows = []
  for a in args.algorithms:
    _, cold = _timed(lambda: quantize_all(a))
    _, warm = _timed(lambda: quantize_all(a))
    rows.append((a, cold, warm))
  base = dict((a, w) for a, _, w in rows).get("rtn", rows[0][2])

  print(f"device: {jax.devices()[0].device_kind}, {os.cpu_count()} CPUs; model load {t_load:.2f} s; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
  print(f"calibration ({len(sents)} passages, {stats.num_tokens} tokens, 36 layers, "
        f"{len(LAYER_TYPES)} per block): cold {t_cal_cold:.2f} s, warm {t_cal_warm:.2f} s")
  print(f"\nquantize all 36 linear layers at {args.bits} bits")
  print(f"{'algorithm':<10} {'cold [s]':>9} {'warm [s]':>9} {'warm / RTN':>11}")
  for a, cold, warm in rows:
    print(f"{a:<10} {cold:9.2f} {warm:9.2f} {warm / base:11.2f}")


if __name__ == "__main__":
  main()
