"""Monte Carlo throughput of ``rdq.matmul_mc.matmul_distortion`` against the limit of the same work.

One sample draws ``A: (n, a)`` and ``B: (n, b)`` with iid N(0, 1) entries, quantizes both and
forms ``‖AᵀB − ÂᵀB̂‖²``. Measured in the same run, on the same shapes and chunk size:

* ``engine``: ``matmul_distortion`` (per-sample keys ``fold_in(key, i)``, vmapped chunks,
  ``lax.scan``, Chan et al. merge of the chunk statistics, standard error);
* ``fused, no draws``: the roofline of the arithmetic — one jitted ``jnp`` program that
  quantizes pre-drawn ``A, B`` and forms both products chunk by chunk (the faster of two
  products + subtraction and one product of the concatenations ``[A, Â]ᵀ[B, −B̂]``),
  nothing else: a fused jnp computation of the two products and the quantizers;
* ``fused, with draws``: the same plus drawing the normals with the engine's generator
  (``rdq.matmul_mc.standard_normal``: Threefry-2x32-20 bits, Box–Muller, one key per chunk) —
  the limit of the work a sample really is;
* ``draws only``: drawing the normals (engine's generator, and ``jax.random.normal``, whose
  Threefry runs as a rolled loop on XLA:CPU and whose erf⁻¹ costs twice Box–Muller).

Ratios are ``engine / limit`` in samples/s; GFLOP/s counts the two products
(``4·n·a·b`` flops per sample). Timings are the best of ``--repeats`` interleaved rounds
(the machine is shared; the minimum is the least disturbed); ``cpu s/s`` divides by the
process CPU time instead, which other processes on the machine disturb less. The device
table runs the engine in fresh processes with ``--xla_force_host_platform_device_count``:
simulated CPU devices are threads on the same cores, so the wall-clock rate can rise with
the device count only up to the number of idle cores, and the CPU time per sample shows the
cost of sharding itself.

Run: ``python benchmarks/montecarlo.py [--n 4096] [--shape 256 16 16] [--batch 128] [--devices 1 2]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def _best(fns: dict, repeats: int) -> tuple[dict, dict]:
  """Best wall and process-CPU time of each zero-argument function over ``repeats`` interleaved rounds."""
  for f in fns.values():
    f()  # compile / warm up
  best = {k: float("inf") for k in fns}
  cpu = dict(best)
  for _ in range(repeats):
    for k, f in fns.items():
      t0, c0 = time.perf_counter(), time.process_time()
      f()
      best[k] = min(best[k], time.perf_counter() - t0)
      cpu[k] = min(cpu[k], time.process_time() - c0)
  return best, cpu


def compare(name: str, n: int, shape: tuple[int, int, int], batch: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  from jax import lax

  from rdq import quantizers
  from rdq.matmul_mc import MatmulSetup, matmul_distortion, standard_normal

  nn, a, b = shape
  setup = MatmulSetup(*shape)
  q = quantizers.get(name)
  chunks = -(-n // batch)
  key = jax.random.key(0)

  def err_two_products(x):  # x: (batch, n·(a+b)) normals → sum of squared errors of the chunk
    am = x[:, : nn * a].reshape(-1, nn, a)
    bm = x[:, nn * a :].reshape(-1, nn, b)
    ah = q.quantize(jnp.swapaxes(am, 1, 2))
    bh = q.quantize(jnp.swapaxes(bm, 1, 2))
    d = jnp.einsum("kna,knb->kab", am, bm) - jnp.einsum("kan,kbn->kab", ah, bh)
    return jnp.sum(d * d)

  def err_one_product(x):  # [A, Â]ᵀ[B, −B̂] = AᵀB − ÂᵀB̂ in one product of inner size 2n
    am = x[:, : nn * a].reshape(-1, nn, a)
    bm = x[:, nn * a :].reshape(-1, nn, b)
    ah = jnp.swapaxes(q.quantize(jnp.swapaxes(am, 1, 2)), 1, 2)
    bh = jnp.swapaxes(q.quantize(jnp.swapaxes(bm, 1, 2)), 1, 2)
    d = jnp.einsum("kna,knb->kab", jnp.concatenate([am, ah], 1), jnp.concatenate([bm, -bh], 1))
    return jnp.sum(d * d)

  xs = jax.random.normal(jax.random.key(1), (chunks, batch, nn * (a + b)), jnp.float32)
  no_draws = {f: jax.jit(lambda xs, f=f: lax.map(f, xs).sum()) for f in (err_two_products, err_one_product)}

  def draw(c):
    return standard_normal(jax.random.fold_in(key, c), batch * nn * (a + b)).reshape(batch, -1)

  with_draws = jax.jit(lambda: lax.map(lambda c: err_two_products(draw(c)), jnp.arange(chunks)).sum())
  draws = jax.jit(lambda: lax.map(lambda c: draw(c).sum(), jnp.arange(chunks)).sum())
  draws_jax = jax.jit(lambda: lax.map(
      lambda c: jax.random.normal(jax.random.fold_in(key, c), (batch, nn * (a + b))).sum(), jnp.arange(chunks)).sum())
  fns = {
      "engine": lambda: jax.block_until_ready(matmul_distortion(q, q, setup, key, n, batch).mean),
      "fused, no draws (2 products)": lambda: jax.block_until_ready(no_draws[err_two_products](xs)),
      "fused, no draws (1 product)": lambda: jax.block_until_ready(no_draws[err_one_product](xs)),
      "fused, with draws": lambda: jax.block_until_ready(with_draws()),
      "draws only (rdq)": lambda: jax.block_until_ready(draws()),
      "draws only (jax.random.normal)": lambda: jax.block_until_ready(draws_jax()),
  }
  t, c = _best(fns, repeats)
  samples = chunks * batch  # the fused programs do whole chunks; the engine masks the tail
  rate = {k: (n if k == "engine" else samples) / v for k, v in t.items()}
  cpu_rate = {k: (n if k == "engine" else samples) / max(v, 1e-9) for k, v in c.items()}
  limit = max(rate["fused, no draws (2 products)"], rate["fused, no draws (1 product)"])
  cpu_limit = max(cpu_rate["fused, no draws (2 products)"], cpu_rate["fused, no draws (1 product)"])
  return dict(name=name, rate=rate, cpu_rate=cpu_rate, limit_no_draws=limit, cpu_limit_no_draws=cpu_limit,
              flops_per_sample=4 * nn * a * b)


def devices(n: int, shape, batch: int, counts: list[int]) -> list[tuple]:
  """Engine samples/s vs device count, each in a fresh process with simulated CPU devices."""
  rows = []
  for d in counts:
    code = f"""
import os, time
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count={d}"
import jax
from rdq import quantizers
from rdq.matmul_mc import MatmulSetup, matmul_distortion
q = quantizers.get("int4_block32"); s = MatmulSetup(*{tuple(shape)})
f = lambda: jax.block_until_ready(matmul_distortion(q, q, s, jax.random.key(0), {n}, {batch}).mean)
f(); best = cpu = 1e9
for _ in range(5):
  t0, c0 = time.perf_counter(), time.process_time(); f()
  best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
print(best, cpu, len(jax.devices()), jax.devices()[0].device_kind)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu")))
    t, c, ndev, kind = out.stdout.split()[:4]
    rows.append((int(ndev), kind, n / float(t), n / float(c)))
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=4096, help="samples per estimate")
  p.add_argument("--shape", type=int, nargs=3, default=[256, 16, 16], metavar=("N", "A", "B"))
  p.add_argument("--batch", type=int, default=128, help="samples per chunk (engine and fused limits alike)")
  p.add_argument("--quantizers", nargs="*", default=["int4_block32", "mxfp4"])
  p.add_argument("--repeats", type=int, default=7)
  p.add_argument("--devices", type=int, nargs="*", default=[1, 2])
  args = p.parse_args(argv)
  import jax

  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind} x{len(jax.devices())}, {os.cpu_count()} cpus, "
        f"(n,a,b)={tuple(args.shape)}, {args.n} samples, chunks of {args.batch}, best of {args.repeats}")
  for name in args.quantizers:
    r = compare(name, args.n, tuple(args.shape), args.batch, args.repeats)
    rate, lim, fl = r["rate"], r["limit_no_draws"], r["flops_per_sample"]
    cpu, cpu_lim = r["cpu_rate"], r["cpu_limit_no_draws"]
    print(f"\n{name}: {'samples/s':>10s} {'GFLOP/s':>8s} {'engine/this':>12s} {'cpu s/s':>9s} {'engine/this':>12s}")
    for k, v in rate.items():
      print(f"  {k:32s} {v:10.0f} {v * fl / 1e9:8.2f} {rate['engine'] / v:11.2f}x {cpu[k]:9.0f} "
            f"{cpu['engine'] / cpu[k]:11.2f}x")
    print(f"  -> engine at {100 * rate['engine'] / lim:.0f}% of the fused no-draw limit "
          f"(baseline: fused jnp quantizers + products; {100 * cpu['engine'] / cpu_lim:.0f}% in CPU time), "
          f"{100 * rate['engine'] / rate['fused, with draws']:.0f}% of the fused limit with draws; drawing the "
          f"normals alone runs at {rate['draws only (rdq)'] / lim:.2f}x the no-draw limit's samples/s")
  if args.devices:
    print("\nengine vs simulated CPU device count (int4_block32; the devices share the same cores):")
    print(f"{'devices':>8s} {'kind':>6s} {'samples/s':>10s} {'cpu s/s':>9s}")
    for ndev, kind, sps, cps in devices(args.n, args.shape, args.batch, args.devices):
      print(f"{ndev:8d} {kind:>6s} {sps:10.0f} {cps:9.0f}")


if __name__ == "__main__":
  main()
