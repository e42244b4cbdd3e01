"""Benchmark Σ-aware nearest-codeword encoding: jitted, chunked rdq vs NumPy (BLAS GEMM), same run.

For each (n, K = #codewords, B = #vectors, S = #Σ): best wall time of
``Codebook.encode(w, sigmas)`` (jitted; the first call compiles it and is timed separately) and
of two NumPy baselines written here for ``argmin_k (w − c_k)ᵀΣ(w − c_k)`` (float32, one Σ at
a time, codewords in blocks):

* ``numpy GEMM`` (the baseline of the ratio): expand the quadratic form,
  ``argmin_k cₖᵀΣcₖ − 2 (Σw)ᵀcₖ`` — one ``(B, n)×(n, K)`` BLAS product per block;
* ``numpy bcast``: broadcast the ``(B, K, n)`` differences (shown for reference; 4–5x slower).

Throughput is ``S·B·K / time`` (sample·codewords per second); the ratio is rdq over the
faster NumPy formulation. The two are also checked to pick the same codewords (fraction
reported; float32 near-ties may differ).

Usage:
  python benchmarks/universal.py            # small sizes, < 1 min on 2 CPU cores
  python benchmarks/universal.py --full     # up to 2^16 codewords × 1024 vectors × 8 Σ
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rdq import covariance as cov
from rdq.quantizers.universal import gaussian_codebook


def numpy_encode(points: np.ndarray, w: np.ndarray, sigma: np.ndarray, block: int = 1024) -> np.ndarray:
  """Brute-force Σ-aware nearest codeword by broadcasting (float32), codewords in blocks."""
  best = np.full(w.shape[0], np.inf, np.float32)
  idx = np.zeros(w.shape[0], np.int64)
  for s in range(0, points.shape[0], block):
    e = w[:, None, :] - points[None, s:s + block, :]  # (B, b, n)
    d = np.sum((e @ sigma) * e, axis=-1)  # BLAS matmul, then a reduction
    j = np.argmin(d, axis=1)
    v = d[np.arange(len(w)), j]
    better = v < best
    best = np.where(better, v, best)
    idx = np.where(better, s + j, idx)
  return idx


def numpy_encode_gemm(points: np.ndarray, w: np.ndarray, sigma: np.ndarray, block: int = 8192) -> np.ndarray:
  """Σ-aware nearest codeword by one BLAS product per block: ``argmin_k cₖᵀΣcₖ − 2 (Σw)ᵀcₖ``."""
  sw = w @ sigma  # Σ symmetric: rows are (Σ w_i)ᵀ
  best = np.full(w.shape[0], np.inf, np.float32)
  idx = np.zeros(w.shape[0], np.int64)
  for s in range(0, points.shape[0], block):
    c = points[s:s + block]
    d = np.einsum("kn,kn->k", c @ sigma, c)[None, :] - 2.0 * (sw @ c.T)  # (B, b)
    j = np.argmin(d, axis=1)
    v = d[np.arange(len(w)), j]
    better = v < best
    best = np.where(better, v, best)
    idx = np.where(better, s + j, idx)
  return idx


def _time(fn, repeats: int) -> float:
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return min(ts)  # the least disturbed run: the machine may be shared


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--full", action="store_true")
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args(argv)
  cases = [(4, 2.0, 256, 4), (8, 1.0, 1024, 4), (8, 1.5, 256, 4)]
  if args.full:
    cases += [(8, 2.0, 1024, 8), (16, 1.0, 1024, 8)]
  key = jax.random.key(0)
  print(f"device: {jax.devices()[0].device_kind}; {jax.device_count()} device(s)")
  print("ratio = rdq vs the faster NumPy baseline (numpy GEMM unless noted)")
  hdr = f"{'n':>3} {'K':>6} {'B':>5} {'S':>2} | {'compile s':>9} {'rdq s':>8} {'GEMM s':>8} {'bcast s':>8} | " \
        f"{'rdq G/s':>8} {'GEMM G/s':>9} {'ratio':>7} | {'same idx':>8}"
  print(hdr)
  print("-" * len(hdr))
  for n, rate, b, s in cases:
    cb = gaussian_codebook(key, n, rate)
    k = cb.num_points
    sig = cov.sample(cov.PowerLaw(n), key, jnp.linspace(0.0, 2.0, s))
    w = jax.random.normal(jax.random.fold_in(key, 1), (b, n))
    t0 = time.perf_counter()
    idx = cb.encode(w, sig).block_until_ready()
    t_first = time.perf_counter() - t0
    t_rdq = _time(lambda: cb.encode(w, sig).block_until_ready(), args.repeats)
    pts, wn, sn = np.asarray(cb.points), np.asarray(w), np.asarray(sig)
    refs = {}

    def run_np(fn):
      refs[fn.__name__] = np.stack([fn(pts, wn, sn[i]) for i in range(s)])

    t_gemm = _time(lambda: run_np(numpy_encode_gemm), max(1, args.repeats - 2))
    t_bc = _time(lambda: run_np(numpy_encode), max(1, args.repeats - 2))
    t_np, tag = (t_gemm, " ") if t_gemm <= t_bc else (t_bc, "b")  # b: broadcasting was faster
    work = s * b * k
    same = float(np.mean(np.asarray(idx) == refs["numpy_encode"]))
    print(f"{n:>3} {k:>6} {b:>5} {s:>2} | {max(t_first - t_rdq, 0):>9.2f} {t_rdq:>8.4f} {t_gemm:>8.3f} {t_bc:>8.3f} | "
          f"{work / t_rdq / 1e9:>8.3f} {work / t_gemm / 1e9:>9.3f} {t_np / t_rdq:>6.1f}x{tag}| {same:>8.4f}")


if __name__ == "__main__":
  main()
