"""Benchmark lattice closest-point decoders: jitted JAX vs NumPy, same algorithm, same run.

For E8, Dₙ (n = 4, 8, 16 by default) and the Leech lattice Λ24 and a batch of N Gaussian vectors: median wall time
of ``jax.jit(jax.vmap(lattice.closest_point))`` (after a warm-up call that compiles it;
compile time reported separately) and of a straightforward vectorized NumPy implementation of
the same Conway–Sloane algorithm written here (round, fix the parity of Dₙ by re-rounding the
worst coordinate; E8 = the closer of the D8 and D8 + ½ candidates; Λ24 = the nearest of 8192 cosets
``h + 2c + 4D24`` through the Turyn-form word tables of ``rdq.quantizers.leech``), their throughputs
(vectors/s) and the ratio JAX/NumPy. The two implementations are checked to agree exactly
on the benchmark input before timing. Also the Voronoi-code quantizer ``e8_nested_q16``
(encode + decode, k = 4 scales) in vectors/s, for scale.

Defaults run in well under a minute on 2 CPU cores. ``--n-vectors`` / ``--dims`` change the
sizes; on an accelerator pass larger N (e.g. ``--n-vectors 4194304``).

``--ldlq``: instead, E8 vs Λ24 LDLQ (``rdq.layer.lattice_sic``, RHT, k = 4 codes near 2.6 bits) on a
384 × 384 layer, CPU seconds of the first call (compile + run) and of a warm call, and their ratios
(CPU time, so that a shared machine's load counts less than in wall time).

Usage:
  python benchmarks/lattice.py
  python benchmarks/lattice.py --n-vectors 1048576 --dims 4 8 16 32
  OPENBLAS_NUM_THREADS=1 python benchmarks/lattice.py --ldlq
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from rdq.quantizers import DnLattice, E8Lattice, get
from rdq.quantizers.leech import LeechLattice, golay_codewords


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


_LEECH_A = np.array([-3.0] + [1.0] * 23)


def _np_leech_tables():
  cw = golay_codewords()
  words = (cw.reshape(4096, 3, 8) @ (1 << np.arange(8))).T  # (3, 4096) block-word indices
  bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # (256, 8)
  return cw.astype(np.float64), words, bits


_NP_LEECH = None


def np_closest_leech(x: np.ndarray) -> np.ndarray:
  """The same exact Λ24 decoder as rdq (8192 cosets h + 2c + 4D24, coset distances from
  per-block word tables of the Turyn form) in vectorized NumPy, float32."""
  global _NP_LEECH
  if _NP_LEECH is None:
    _NP_LEECH = _np_leech_tables()
  cw, words, bits = _NP_LEECH
  x = x.astype(np.float32)
  scores = []
  for h in (0.0, _LEECH_A.astype(np.float32)):
    t = (x - h)[:, None, :] - np.array([[0.0], [2.0]], np.float32)  # (N, 2, 24): bit b -> 2b + 4Z
    z = np_round_half_up(t / 4)
    r = t - 4 * z
    e, par, dl = r * r, np.mod(z, 2).astype(np.int32), 16 - 8 * np.abs(r)
    score = None
    for blk in range(3):
      sl = slice(8 * blk, 8 * blk + 8)
      sel = lambda v: np.where(bits, v[:, 1, None, sl], v[:, 0, None, sl])  # (N, 256, 8)
      et, pt, mt = sel(e).sum(-1), np.bitwise_xor.reduce(sel(par), axis=-1), sel(dl).min(-1)
      w = words[blk]
      parts = (et[:, w], pt[:, w], mt[:, w])
      score = parts if score is None else (score[0] + parts[0], score[1] ^ parts[1], np.minimum(score[2], parts[2]))
    scores.append(score[0] + np.where(score[1] == 1, score[2], 0))
  j = np.argmin(np.concatenate(scores, axis=1), axis=1)
  h = np.where((j >= 4096)[:, None], _LEECH_A, 0.0)
  c = cw[j % 4096]
  return (h + 2 * c + 4 * np_closest_dn(((x - h - 2 * c) / 4).astype(np.float32))).astype(np.float32)


def timeit(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    if hasattr(out, "block_until_ready"):
      out.block_until_ready()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def ldlq_layer(n: int = 384, repeats: int = 2) -> None:
  """E8 vs Λ24 LDLQ (RHT) on one ``n × n`` layer: CPU s of the first (compiling) and a warm call."""
  from rdq.layer import LatticeSICConfig, lattice_sic_traced

  w = jax.random.normal(jax.random.key(1), (n, n))
  a = np.random.default_rng(0).standard_normal((2 * n, n))
  h = jnp.asarray(a.T @ a / (2 * n), jnp.float32)
  out = {}
  for name, bs in (("e8_nested_q5_k4_norm", 128), ("leech_nested_q5_k4_norm", 96)):
    cfg = LatticeSICConfig(name, block_size=bs, rotate=True, rotation="hadamard")
    fn = jax.jit(lambda w, h, k, cfg=cfg: lattice_sic_traced(w, h, cfg, k)[0])
    c0 = time.process_time()
    fn(w, h, jax.random.key(0)).block_until_ready()
    first = time.process_time() - c0
    warm = []
    for _ in range(repeats):
      c0 = time.process_time()
      fn(w, h, jax.random.key(0)).block_until_ready()
      warm.append(time.process_time() - c0)
    out[name] = (first, min(warm))
    print(f"{name:26s} first call {first:6.2f} s CPU, warm {min(warm):6.3f} s CPU ({n}x{n}, RHT)")
  (f8, w8), (f24, w24) = out.values()
  print(f"Λ24/E8: first call {f24 / f8:.1f}x, warm {w24 / w8:.0f}x, one compile + 3 warm layers "
        f"{(f24 + 3 * w24) / (f8 + 3 * w8):.1f}x")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-vectors", type=int, default=1 << 17, help="vectors per call (N)")
  parser.add_argument("--dims", type=int, nargs="+", default=[4, 8, 16], help="Dn dimensions")
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--leech-vectors", type=int, default=1 << 11, help="vectors per call for Λ24 (N)")
  parser.add_argument("--ldlq", action="store_true", help="E8 vs Λ24 LDLQ on a 384×384 layer (CPU s)")
  args = parser.parse_args(argv)
  if args.ldlq:
    ldlq_layer()
    return

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

  # Λ24: exact decoder over 8192 cosets, ~10⁵ operations per vector, so a smaller N.
  lat, n_l = LeechLattice(), args.leech_vectors
  x = jax.random.normal(jax.random.key(24), (n_l, 24), jnp.float32) * 4.0
  x_np = np.asarray(x)
  fn = jax.jit(lat.closest_point)
  t0 = time.perf_counter()
  y = fn(x).block_until_ready()
  compile_s = time.perf_counter() - t0
  y_np = np_closest_leech(x_np)
  if not np.array_equal(np.asarray(y), y_np):
    raise SystemExit(f"leech: JAX and NumPy decoders disagree on {int((np.asarray(y) != y_np).any(-1).sum())} vectors")
  reps = max(1, args.repeats // 2)
  t_jax = timeit(lambda: fn(x), reps)
  t_np = timeit(lambda: np_closest_leech(x_np), reps)
  print(f"{'leech':8s} {compile_s:9.2f} {1e3 * t_jax:9.2f} {1e3 * t_np:9.2f} {n_l / t_jax:11.3e} "
        f"{n_l / t_np:12.3e} {t_np / t_jax:9.2f}x   (N = {n_l:,}; baseline: np_closest_leech, same algorithm)")

  qz = get("e8_nested_q16")
  x = jax.random.normal(jax.random.key(0), (args.n_vectors // 32, 256), jnp.float32)
  fq = jax.jit(qz.quantize)
  fq(x).block_until_ready()
  t = timeit(lambda: fq(x), args.repeats)
  print(f"\ne8_nested_q16 quantize (encode+decode, k=4 scales): {x.shape[0] * 32 / t:.3e} E8 vectors/s "
        f"({x.size / t:.3e} entries/s) on a {x.shape} input")


if __name__ == "__main__":
  main()
