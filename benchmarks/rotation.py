"""Benchmark the randomized Hadamard transform against the dense rotation, same run.

The operation a rotated layer adds at inference: ``X ↦ Q X`` for a batch of B activation
vectors (``X`` of shape ``(n, B)``). Baseline: the dense ``n × n`` orthogonal ``Q`` as one
jitted matmul (XLA's GEMM; ``2n²B`` flops) — the strongest implementation of the dense
rotation. Candidate: ``rdq.layer.hadamard.RandomizedHadamard.forward`` (signs, the small
``m × m`` Hadamard block, ``log2(n/m)`` butterfly stages; ``n(2m + log2(n/m))B`` flops),
jitted. Both outputs are checked to agree (the dense Q is the RHT's own matrix) before timing.
Also the one-off cost of drawing the rotation: Haar (QR of an ``n × n`` Gaussian, O(n³)) vs
n random signs.

Printed per n: median wall times, the ratio dense/RHT (> 1: the RHT is faster) and the flop
ratio. Defaults (MiniLM's 384 and 1536, SmolLM2's 576, 4096) run in about a minute on 2 CPU
cores.

Usage:
  python benchmarks/rotation.py
  python benchmarks/rotation.py --dims 384 1536 4096 8192 --batch 2048
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import jax
import jax.numpy as jnp

from rdq.covariance import haar_orthogonal
from rdq.layer.hadamard import hadamard_split, randomized_hadamard


def timeit(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # warm-up (compiles)
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--dims", type=int, nargs="+", default=[384, 576, 1536, 4096])
  parser.add_argument("--batch", type=int, default=256, help="activation vectors per call")
  parser.add_argument("--repeats", type=int, default=20)
  args = parser.parse_args()
  print(f"device: {jax.devices()[0].platform}, batch B = {args.batch}, median of {args.repeats}")
  print(f"{'n':>6} {'2^k x m':>10} {'dense ms':>9} {'RHT ms':>8} {'dense/RHT':>10} {'flops ratio':>11}"
        f" {'Haar draw ms':>13} {'RHT draw ms':>12}")
  dense_apply = jax.jit(lambda q, x: q @ x)
  rht_apply = jax.jit(lambda rot, x: rot.forward(x))
  for n in args.dims:
    p2, m, _ = hadamard_split(n)
    key = jax.random.key(n)
    rot = randomized_hadamard(key, n)
    q = rot.matrix()
    x = jax.random.normal(jax.random.key(1), (n, args.batch), jnp.float32)
    err = float(jnp.max(jnp.abs(dense_apply(q, x) - rht_apply(rot, x))))
    if err > 1e-3:
      raise AssertionError(f"n={n}: dense and RHT products differ by {err}")
    t_dense = timeit(lambda: dense_apply(q, x), args.repeats)  # noqa: B023
    t_rht = timeit(lambda: rht_apply(rot, x), args.repeats)  # noqa: B023
    draw_haar = jax.jit(haar_orthogonal, static_argnums=1)
    draw_rht = jax.jit(randomized_hadamard, static_argnums=1)
    t_haar_draw = timeit(lambda: draw_haar(key, n), max(3, args.repeats // 4))  # noqa: B023
    t_rht_draw = timeit(lambda: draw_rht(key, n), max(3, args.repeats // 4))  # noqa: B023
    flops_ratio = (2 * n * n) / (n * (2 * m + math.log2(p2)))
    print(f"{n:>6} {f'{p2}x{m}':>10} {1e3 * t_dense:>9.3f} {1e3 * t_rht:>8.3f} {t_dense / t_rht:>10.2f}"
          f" {flops_ratio:>11.1f} {1e3 * t_haar_draw:>13.2f} {1e3 * t_rht_draw:>12.3f}")


if __name__ == "__main__":
  main()
