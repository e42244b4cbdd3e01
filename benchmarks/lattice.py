"""Benchmark lattice closest-point decoders: jitted JAX vs NumPy, same algorithm, same run.

For E8 and Dₙ (n = 4, 8, 16 by default) and a batch of N Gaussian vectors: median wall time
of ``jax.jit(jax.vmap(lattice.closest_point))`` (after a warm-up call that compiles it;
compile time reported separately) and of a straightforward vectorized NumPy implementation of
the same Conway–Sloane algorithm written here (round, fix the parity of Dₙ by re-rounding the
worst coordinate; E8 = the closer of the D8 and D8 + ½ candidates), their throughputs
(vectors/s) and the ratio JAX/NumPy. The two implementations are checked to agree exactly
on the benchmark input before timing. Also the Voronoi-code quantizer ``e8_nested_q16``
(encode + decode, k = 4 scales) in vectors/s, for scale.

Defaults run in well under a minute on 2 CPU cores. ``--n-vectors`` / ``--dims`` change the
sizes; on an accelerator pass larger N (e.g. ``--n-vectors 4194304``).

Usage:
  python benchmarks/lattice.py
  python benchmarks/lattice.py --n-vectors 1048576 --dims 4 8 16 32
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rdq.quantizers import DnLattice, E8Lattice, get


def np_round_half_up(x: np.ndarray) -> np.ndarray:
  f = np.floor(x)
  return f + (x - f >= 0.5)


def np_closest_dn(x: np.ndarray) -> np.ndarray:
  """Conway–Sloane Dₙ decoder in NumPy (same tie rule as rdq)."""
  f = np_round_half_up(x)
  d = x - f
  odd = np.mod(f.sum(axis=-1), 2) != 0
  k = np.argmax(np.abs(d), axis=-1)
  rows = np.nonzero(odd)[0]
  kk = k[rows]
  f[rows, kk] += np.where(d[rows, kk] >= 0, 1.0, -1.0)
  return f


def np_closest_e8(x: np.ndarray) -> np.ndarray:
  """E8 = D8 ∪ (D8 + ½): the closer of the two coset decoders (ties: D8)."""
  y0 = np_closest_dn(x)
  y1 = np_closest_dn(x - 0.5) + 0.5
  d0 = np.sum((x - y0) ** 2, axis=-1)
  d1 = np.sum((x - y1) ** 2, axis=-1)
  return np.where((d1 < d0)[:, None], y1, y0)


def timeit(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    if hasattr(out, "block_until_ready"):
      out.block_until_ready()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-vectors", type=int, default=1 << 17, help="vectors per call (N)")
  parser.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16], help="Dn dimensions")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)

  cases = [(DnLattice(n), np_closest_dn) for n in args.dims] + [(E8Lattice(), np_closest_e8)]
  print(f"device: {jax.devices()[0].device_kind}  jax {jax.__version__}  N = {args.n_vectors:,} vectors, "
        f"median of {args.repeats}")
  header = f"{'lattice':8s} {'compile s':>9s} {'jax ms':>9s} {'numpy ms':>9s} {'jax vec/s':>11s} {'numpy vec/s':>12s} {'jax/numpy':>9s}"
  print(header)
  print("-" * len(header))
  rows = []
  for lat, np_fn in cases:
    x = jax.random.normal(jax.random.key(lat.dim), (args.n_vectors, lat.dim), jnp.float32) * 3.0
    x_np = np.asarray(x)
    fn = jax.jit(jax.vmap(lat.closest_point))
    t0 = time.perf_counter()
    y = fn(x).block_until_ready()
    compile_s = time.perf_counter() - t0
    y_np = np_fn(x_np)
    if not np.array_equal(np.asarray(y), y_np):
      raise SystemExit(f"{lat.name}: JAX and NumPy decoders disagree on {int((np.asarray(y) != y_np).any(-1).sum())} vectors")
    t_jax = timeit(lambda: fn(x), args.repeats)
    t_np = timeit(lambda: np_fn(x_np), args.repeats)
    rows.append((lat.name, compile_s, t_jax, t_np))
    print(f"{lat.name:8s} {compile_s:9.2f} {1e3 * t_jax:9.2f} {1e3 * t_np:9.2f} {args.n_vectors / t_jax:11.3e} "
          f"{args.n_vectors / t_np:12.3e} {t_np / t_jax:9.2f}x")

  qz = get("e8_nested_q16")
  x = jax.random.normal(jax.random.key(0), (args.n_vectors // 32, 256), jnp.float32)
  fq = jax.jit(qz.quantize)
  fq(x).block_until_ready()
  t = timeit(lambda: fq(x), args.repeats)
  print(f"\ne8_nested_q16 quantize (encode+decode, k=4 scales): {x.shape[0] * 32 / t:.3e} E8 vectors/s "
        f"({x.size / t:.3e} entries/s) on a {x.shape} input")


if __name__ == "__main__":
  main()
