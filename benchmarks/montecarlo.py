"""Monte Carlo throughput: the vmapped/scanned ``rdq.montecarlo.estimate`` against a plain
Python loop over a jitted single-sample function, measured in the same run, for one INT and
one FP quantizer; plus samples/s vs simulated device count.

Run: ``python benchmarks/montecarlo.py [--n 2048] [--shape 256 16 16] [--devices 1 2 4]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def _time(fn, repeats: int = 3) -> float:
  fn()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def compare(n: int, shape: tuple[int, int, int], batch: int) -> list[tuple]:
  import jax

  from rdq import quantizers
  from rdq.matmul import MatmulSetup, matmul_distortion, matmul_sample

  setup = MatmulSetup(*shape)
  rows = []
  for name in ("int4_block32", "mxfp4"):
    q = quantizers.get(name)
    key = jax.random.key(0)
    t_vec = _time(lambda: jax.block_until_ready(matmul_distortion(q, q, setup, key, n, batch).mean))
    single = jax.jit(matmul_sample(setup, q, q))
    n_loop = max(n // 8, 64)  # the loop is slow; time fewer samples and scale

    def loop():
      acc = 0.0
      for i in range(n_loop):
        acc += float(single(jax.random.fold_in(key, i)))
      return acc

    t_loop = _time(loop, repeats=1) * n / n_loop
    rows.append((name, n / t_vec, n / t_loop, t_loop / t_vec))
  return rows


def scaling(n: int, shape, batch: int, devices: list[int]) -> list[tuple]:
  """samples/s vs device count, each in a fresh process with simulated CPU devices."""
  rows = []
  for d in devices:
    code = f"""
import os, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={d}"
import jax
from rdq import quantizers
from rdq.matmul import MatmulSetup, matmul_distortion
q = quantizers.get("int4_block32"); s = MatmulSetup(*{tuple(shape)})
f = lambda: jax.block_until_ready(matmul_distortion(q, q, s, jax.random.key(0), {n}, {batch}).mean)
f(); t0 = time.perf_counter(); f(); print(time.perf_counter() - t0, len(jax.devices()), jax.devices()[0].device_kind)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu")))
    t, ndev, kind = out.stdout.split()[:3]
    rows.append((int(ndev), kind, n / float(t)))
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=2048, help="samples per estimate")
  p.add_argument("--shape", type=int, nargs=3, default=[256, 16, 16], metavar=("N", "A", "B"))
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--devices", type=int, nargs="*", default=[1, 2, 4])
  args = p.parse_args(argv)
  import jax

  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, shape (n,a,b)={tuple(args.shape)}, n={args.n}")
  print(f"{'quantizer':14s} {'vmapped [samples/s]':>20s} {'python loop [samples/s]':>24s} {'ratio':>7s}")
  for name, v, l, r in compare(args.n, tuple(args.shape), args.batch):
    print(f"{name:14s} {v:20.0f} {l:24.0f} {r:7.1f}x")
  if args.devices:
    print("\nscaling (int4_block32; simulated CPU devices share the same cores):")
    print(f"{'devices':>8s} {'kind':>6s} {'samples/s':>10s}")
    for ndev, kind, sps in scaling(args.n, args.shape, args.batch, args.devices):
      print(f"{ndev:8d} {kind:>6s} {sps:10.0f}")


if __name__ == "__main__":
  main()
