"""Benchmark GPTVQ (d = 2): jitted rdq against a plain NumPy implementation of the same steps, same run.

Steps timed (both implementations): damped H → U = chol(H_d⁻¹)ᵀ, per-vector metrics
``T_P = U_PP^{-T}``; for every group of input features, k-means++ seeding and weighted EM of
each tile's codebook (full metric) on the current weights; the SIC pass quantizing 2 input
features at a time with error feedback (NumPy: unblocked, rdq: lazy blocks of 128); the
least-squares codebook update with assignments fixed. Post-processing beyond the LS update
(SVD, fine-tuning, INT8) is off. Budget 2.125 bits per value: 2 index bits and the most tiles
whose fp16 codebooks cost ≤ 0.125 bit (``rdq.layer.gptvq_for_budget``).

Reported per layer shape ``(n, m) = (in_features, out_features)``: rdq compile+first-run
time, median run time after warm-up, NumPy wall time, their ratio, the distortion of each
(they differ by the random seeding only: NumPy draws its own k-means++ seeds), and peak memory
(rdq: XLA ``memory_analysis()`` of the compiled function — arguments + outputs + temps;
NumPy: ``tracemalloc`` peak).

Defaults are small (< 1 min on 2 CPU cores). LLM-layer sizes: ``--shapes 1536x384 4096x4096``
(the NumPy baseline at 4096² takes minutes on a CPU; ``--numpy-max-n`` skips it above a size).

Usage:
  python benchmarks/gptvq.py
  python benchmarks/gptvq.py --shapes 1536x384 4096x4096
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import tracemalloc

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy/jax load BLAS
  os.environ.setdefault(_v, "1")  # single-threaded BLAS for both sides (benchmarks/scaling.py says why)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402

import rdq.layer  # noqa: E402
from rdq import covariance as cov  # noqa: E402
from rdq.layer import GPTVQConfig, layer_distortion  # noqa: E402


# ----------------------------------------------------------------------------- NumPy baseline
def _np_dist(x, c, t):
  tx = np.einsum("vij,vj->vi", t, x)
  tc = np.einsum("vij,kj->vki", t, c)
  return ((tx[:, None, :] - tc) ** 2).sum(-1)


def _np_kmeans(rng, x, t, k, iters):
  n = x.shape[0]
  cb = np.zeros((k, x.shape[1]), x.dtype)
  cb[0] = x[rng.integers(n)]
  d2 = _np_dist(x, cb[:1], t)[:, 0]
  for c in range(1, k):
    p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
    cb[c] = x[rng.choice(n, p=p)]
    d2 = np.minimum(d2, _np_dist(x, cb[c : c + 1], t)[:, 0])
  mats = np.einsum("vji,vjk->vik", t, t)
  mx = np.einsum("vij,vj->vi", mats, x)
  idx = _np_dist(x, cb, t).argmin(1)
  for _ in range(iters):
    a = np.zeros((k,) + mats.shape[1:], x.dtype)
    b = np.zeros((k, x.shape[1]), x.dtype)
    np.add.at(a, idx, mats)
    np.add.at(b, idx, mx)
    used = np.trace(a, axis1=1, axis2=2) > 0
    cb[used] = np.linalg.solve(a[used], b[used][..., None])[..., 0]
    idx = _np_dist(x, cb, t).argmin(1)
  return cb


def _segsum_rows(x, idx, p):
  """``out[c] = Σ_{i: idx_i = c} x[i]`` (rows), by sorting and ``np.add.reduceat``."""
  order = np.argsort(idx, kind="stable")
  uniq, starts = np.unique(idx[order], return_index=True)
  out = np.zeros((p,) + x.shape[1:], x.dtype)
  out[uniq] = np.add.reduceat(x[order], starts, axis=0)
  return out


def numpy_gptvq(w: np.ndarray, h: np.ndarray, cfg: GPTVQConfig, seed: int = 0) -> np.ndarray:
  """Unblocked GPTVQ (full metric, d = cfg.dim), then the least-squares codebook update."""
  n, m = w.shape
  d, g, r, k = cfg.dim, cfg.group_size, cfg.group_outputs, cfg.k
  nb = m // r
  hd = h + cfg.percdamp * np.mean(np.diag(h)) * np.eye(n, dtype=h.dtype)
  u = np.linalg.cholesky(np.linalg.inv(hd)).T
  tpp = np.stack([scipy.linalg.solve_triangular(u[i : i + d, i : i + d], np.eye(d), trans="T") for i in range(0, n, d)])
  rng = np.random.default_rng(seed)
  wc = w.astype(np.float64).copy()
  q = np.zeros_like(wc)
  codes = np.zeros((n // d, m), np.int64)
  cbs = np.zeros((n // g, nb, k, d))
  for i in range(0, n, d):
    if i % g == 0:
      rows = wc[i : i + g]
      t_g = np.repeat(tpp[i // d : (i + g) // d], r, axis=0)  # vector order (position, output)
      for b in range(nb):
        x = rows[:, b * r : (b + 1) * r].reshape(g // d, d, r).transpose(0, 2, 1).reshape(-1, d)
        cbs[i // g, b] = _np_kmeans(rng, x, t_g, k, cfg.em_iters).astype(np.float16)
    t = tpp[i // d]
    v = wc[i : i + d].T.reshape(nb, r, d)
    diff = np.einsum("brkj,ij->brki", v[:, :, None, :] - cbs[i // g][:, None], t)
    idx = (diff**2).sum(-1).argmin(-1)  # (nb, r)
    codes[i // d] = idx.reshape(m)
    qv = np.take_along_axis(cbs[i // g], idx[..., None], axis=1)
    q[i : i + d] = qv.reshape(m, d).T
    e = scipy.linalg.solve_triangular(u[i : i + d, i : i + d], wc[i : i + d] - q[i : i + d], trans="T")
    wc[i:] -= u[i : i + d, i:].T @ e
  # least-squares codebook update (per output block; p = groups·k·d unknowns)
  p = (n // g) * k * d
  feat = np.arange(n)
  for b in range(nb):
    a = np.zeros((p, p))
    rhs = np.zeros(p)
    hw = h @ w[:, b * r : (b + 1) * r]
    for j in range(b * r, (b + 1) * r):
      idx = ((feat // g) * k + codes[feat // d, j]) * d + feat % d
      a += _segsum_rows(_segsum_rows(h, idx, p).T, idx, p)
      rhs += _segsum_rows(hw[:, j - b * r], idx, p)
    theta0 = cbs[:, b].reshape(-1)
    eps = 1e-6 * np.mean(np.diag(a)) + 1e-30
    theta = np.linalg.solve(a + eps * np.eye(p), rhs + eps * theta0)
    cbs[:, b] = theta.reshape(n // g, k, d)
  gi = (np.arange(n // d) * d) // g
  bj = np.arange(m) // r
  return cbs[gi[:, None], bj[None, :], codes].transpose(0, 2, 1).reshape(n, m)


# ----------------------------------------------------------------------------- harness
def _problem(n, m, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  h = cov.make_family("power_law", n)(k1, 1.0)
  w = jax.random.normal(k2, (n, m), jnp.float32)
  return w, h


def _mem_mib(compiled) -> float:
  ma = compiled.memory_analysis()
  if ma is None:
    return float("nan")
  total = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
  return total / 2**20


def bench(n: int, m: int, repeats: int, run_numpy: bool, em_iters: int) -> dict:
  algo = rdq.layer.get("gptvq", dim=2, em_iters=em_iters, update=True)
  cfg = rdq.layer.gptvq_for_budget(algo.config, n, m, 2.125)  # 2 index bits + fp16 codebooks ≤ 0.125
  g, r = cfg.group_size, cfg.group_outputs
  w, h = _problem(n, m)
  key = jax.random.key(0)
  t0 = time.perf_counter()
  compiled = jax.jit(lambda w, h, key: algo(w, h, key=key, rate_bits=2.125)).lower(w, h, key).compile()
  w_hat, _ = compiled(w, h, key)
  jax.block_until_ready(w_hat)
  t_first = time.perf_counter() - t0
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(w, h, key)[0])
    times.append(time.perf_counter() - t0)
  d_rdq = float(layer_distortion(w, w_hat, h))
  row = dict(shape=f"{n}x{m}", tile=f"{g}x{r}", first_s=t_first, rdq_s=statistics.median(times), rdq_mib=_mem_mib(compiled),
             d_rdq=d_rdq, numpy_s=float("nan"), numpy_mib=float("nan"), d_numpy=float("nan"))
  if run_numpy:
    wn, hn = np.asarray(w, np.float64), np.asarray(h, np.float64)
    tracemalloc.start()
    t0 = time.perf_counter()
    q = numpy_gptvq(wn, hn, cfg)
    row["numpy_s"] = time.perf_counter() - t0
    row["numpy_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    e = wn - q
    row["d_numpy"] = float(np.sum(e * (hn @ e)) / e.size)
  return row


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", nargs="+", default=["256x64", "512x128"], help="n x m layer shapes")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--em-iters", type=int, default=10)
  parser.add_argument("--numpy-max-n", type=int, default=10**9, help="skip the NumPy baseline above this n·m")
  args = parser.parse_args(argv)
  print(f"GPTVQ d=2, b=2 (k=16), fp16 codebooks + LS update; jax {jax.__version__} on {jax.devices()[0].device_kind}")
  hdr = (f"{'shape':>10} {'tile':>8} {'rdq 1st [s]':>11} {'rdq [s]':>8} {'numpy [s]':>9} {'numpy/rdq':>9} "
         f"{'rdq MiB':>8} {'numpy MiB':>9} {'D rdq':>9} {'D numpy':>9}")
  print(hdr)
  for s in args.shapes:
    n, m = (int(x) for x in s.lower().split("x"))
    row = bench(n, m, args.repeats, n * m <= args.numpy_max_n, args.em_iters)
    print(f"{row['shape']:>10} {row['tile']:>8} {row['first_s']:11.2f} {row['rdq_s']:8.3f} {row['numpy_s']:9.2f} "
          f"{row['numpy_s'] / row['rdq_s']:9.1f} {row['rdq_mib']:8.1f} {row['numpy_mib']:9.1f} "
          f"{row['d_rdq']:9.4g} {row['d_numpy']:9.4g}", flush=True)


if __name__ == "__main__":
  main()
