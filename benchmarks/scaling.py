"""WaterSIC against a re-implementation of the reference ``zsic``, and cost growth of the layer algorithms.

1. Reference comparison (default shapes 384×1536 and 1536×384, ``(n, m) = (in, out)``): wall
   time of the jitted WaterSIC core ``watersic_traced`` (warm; its first call, i.e. compilation,
   reported separately), of the public ``rdq.layer.watersic`` (core + the eager O(nm + n²) input
   checks; positive semidefiniteness is certified by the core's own Cholesky factor) and
   of ``zsic_reference``, a NumPy re-implementation of the reference code's algorithm
   (egorlifar/watersic, ``compress_zsic_with_binary_search`` + ``compress_w2q``) written
   here from its description, on identical inputs and the same 4-bit target:

   * ``L = chol(H + 1e-4·mean(diag H)·I)``, ``Y = W L`` (torch layout ``W: (out, in)``),
     ``c(R) = 2^{−R} exp(mean_i ½ ln(12 s_i L_ii²))``, steps ``α_i = c/L_ii``;
   * the SIC loop, input features last → first, one at a time: ``z = round(Y_j/c)``,
     ``γ_j = ⟨z, Y_j⟩/(c‖z‖²)``, ``Y −= γ_j α_j · z L[j, :]`` (rank-1 update, float64;
     restricted here to the columns ``≤ j`` where ``L[j, :]`` is non-zero — half the flops
     of the reference's full-row update, so the baseline is the stronger of the two);
   * the rate search: entropy of all codes pooled into one histogram, estimated on a random
     10 % of the output features in float32; ``r0`` = target entropy (rate − 16/in − 16/out),
     ``r1 = r0 − (H0 − target)``, then secant steps, at most 6 evaluations, stop within
     0.005 bit, keep the best; then one full float64 run at that rate;
   * rescalers off on both sides (the reference's default runs up to 1000 alternating
     least-squares rounds: more work, so this comparison favours the reference).

   The reference code itself (torch, egorlifar/watersic @ f837398) is timed on identical inputs by
   ``benchmarks/reference.py`` (with GPTQ and GPTVQ against theirs); this NumPy re-implementation
   stays for machines without that environment (``benchmarks/reference_env.sh``).

   The ratios are reference / rdq (wall time; "CPU ratio": process CPU time, reference / core,
   which a loaded machine distorts less). The two reach different rate *measures* (the reference's
   pooled entropy, rdq's mean per-feature entropy), both within their tolerance of 4 bits;
   the distortions ``tr((W−Ŵ)ᵀH(W−Ŵ))/(n m)`` are printed side by side.

2. Scaling (``--sizes``): warm wall time of the jitted cores (``*_traced``, no eager checks) of
   GPTQ (4-bit min–max grid), WaterSIC (4 bits) and GPTVQ (default config) vs ``n = m``, with the exponent ``p`` of ``t ∝ n^p`` fitted by least
   squares on log–log over the sizes ≥ 512 (smaller sizes are dominated by fixed costs).
   Expected from the algorithms: GPTQ and WaterSIC ``O(n²m + n³)`` → 3 at n = m.

Timings are the best of ``--repeats`` calls after a warm-up call (the machine may be shared).
BLAS runs single-threaded (``OPENBLAS_NUM_THREADS=1`` etc., unless set in the environment),
for both sides: on a shared 2-core machine multi-threaded OpenBLAS spin-waits (a float64
Cholesky of 1536² took 2.5 s instead of 0.35 s), which slows the reference's NumPy far more
than rdq's XLA code, so single-threaded BLAS is the stronger baseline. XLA's own threads are
left as they are.

Usage:
  python benchmarks/scaling.py                         # reference comparison + scaling to 1024
  python benchmarks/scaling.py --sizes 256 512 1024 2048 4096
  python benchmarks/scaling.py --no-scaling            # reference comparison only
  python benchmarks/scaling.py --no-reference --algos gptq watersic --sizes 512 1024 2048
"""

from __future__ import annotations

import argparse
import os
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy/jax load BLAS
  os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402


# ----------------------------------------------------------------------------- reference zsic
def _pooled_entropy_bits(z: np.ndarray) -> float:
  _, counts = np.unique(z, return_counts=True)
  p = counts / z.size
  return float(-np.sum(p * np.log2(p)))


def _zsic_loop(y: np.ndarray, lower: np.ndarray, c: float, dtype) -> tuple[np.ndarray, np.ndarray]:
  """SIC in the paper's form: codes ``Z`` and per-feature gains, features last → first."""
  y = np.array(y, dtype)
  lw = np.asarray(lower, dtype)
  a, n = y.shape
  z = np.zeros((a, n), np.int64)
  gam = np.zeros(n, dtype)
  for j in range(n - 1, -1, -1):
    zj = np.round(y[:, j] / c)
    zz = float(zj @ zj)
    g = float(zj @ y[:, j]) / (c * zz) if zz > 0 else 0.0
    alpha = c / lw[j, j]
    y[:, : j + 1] -= (g * alpha) * np.outer(zj, lw[j, : j + 1])
    z[:, j] = zj.astype(np.int64)
    gam[j] = g
  return z, gam


def zsic_reference(w_out_in: np.ndarray, sigma: np.ndarray, rate_bits: float, percdamp: float = 1e-4,
                   row_fraction: float = 0.1, max_evals: int = 6, tol: float = 0.005, seed: int = 0):
  """Re-implementation of the reference WaterSIC (no rescalers); returns ``(Ŵ, pooled entropy)``."""
  w = np.asarray(w_out_in, np.float64)
  a, n = w.shape
  h = np.asarray(sigma, np.float64)
  h = h + percdamp * np.mean(np.diag(h)) * np.eye(n)
  lower = np.linalg.cholesky(h)
  y = w @ lower
  diag = np.diag(lower)
  log_c0 = 0.5 * np.mean(np.log(12.0 * np.mean(w * w, axis=0) * diag**2))
  step = lambda r: float(np.exp(log_c0) * 2.0 ** (-r))  # noqa: E731
  target = rate_bits - 16.0 / n - 16.0 / a
  rows = np.random.default_rng(seed).choice(a, max(1, int(round(row_fraction * a))), replace=False)
  y_sub = y[rows].astype(np.float32)

  def gap(r):
    z, _ = _zsic_loop(y_sub, lower, step(r), np.float32)
    return _pooled_entropy_bits(z) - target

  r_prev, f_prev = target, gap(target)
  best_r, best_f = r_prev, f_prev
  r_cur = float(np.clip(r_prev - f_prev, -10, 10))
  for _ in range(max_evals - 1):
    if abs(best_f) < tol:
      break
    f_cur = gap(r_cur)
    if abs(f_cur) < abs(best_f):
      best_r, best_f = r_cur, f_cur
    slope = (f_cur - f_prev) / (r_cur - r_prev) if r_cur != r_prev and abs(f_cur - f_prev) > 1e-9 else 1.0
    r_prev, f_prev, r_cur = r_cur, f_cur, float(np.clip(r_cur - f_cur / slope, -10, 10))
  c = step(best_r)
  z, gam = _zsic_loop(y, lower, c, np.float64)
  w_hat = z * (gam * c / diag)[None, :]
  return w_hat, _pooled_entropy_bits(z)


# ----------------------------------------------------------------------------- harness
_CPU: dict[str, float] = {}  # best CPU time (all threads) of the last ``_best`` call


def _best(fn, repeats: int) -> tuple[float, float]:
  """(first call, best of ``repeats`` later calls) wall times; the best CPU time in ``_CPU``."""
  t0 = time.perf_counter()
  fn()
  first = time.perf_counter() - t0
  best = cpu = float("inf")
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    best, cpu = min(best, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
  _CPU["last"] = cpu
  return first, best


def _layer(n: int, m: int, seed: int = 0):
  import jax

  from rdq import covariance as cov

  w = jax.random.normal(jax.random.key(seed), (n, m))
  h = cov.PowerLaw(n)(jax.random.key(seed + 1), 1.0)
  return w, h


def _distortion(w, w_hat, h) -> float:
  e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.sum(e * (np.asarray(h, np.float64) @ e)) / e.size)


def reference(shapes, repeats: int) -> None:
  import jax

  from rdq.layer import WaterSICConfig, watersic, watersic_traced

  print("WaterSIC: rdq vs zsic_reference (NumPy float64 re-implementation of the reference code), same inputs")
  print("  core = jax.jit(watersic_traced), the algorithm; public = rdq.layer.watersic, core + eager input checks; "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}")
  print(f"{'n x m':>11s} | {'compile s':>9s} {'core s':>7s} {'public s':>8s} {'ref s':>7s} | {'ref/core':>8s} "
        f"{'ref/public':>10s} | {'rdq rate':>8s} {'ref rate':>8s} | {'rdq D':>9s} {'ref D':>9s} | {'CPU ratio':>9s}")
  for n, m in shapes:
    w, h = _layer(n, m)
    cfg = WaterSICConfig(rate_bits=4.0)
    out = {}

    core = jax.jit(lambda w, h: watersic_traced(w, h, cfg))

    def run_core():
      out["rdq"] = jax.block_until_ready(core(w, h))

    first, t_core = _best(run_core, repeats)
    c_core = _CPU["last"]
    _, t_pub = _best(lambda: jax.block_until_ready(watersic(w, h, cfg)), max(1, repeats - 2))
    wn, hn = np.asarray(w, np.float64), np.asarray(h, np.float64)

    def run_ref():
      out["ref"] = zsic_reference(wn.T, hn, 4.0)

    _, t_ref = _best(run_ref, max(1, repeats - 2))
    c_ref = _CPU["last"]
    q, rep = out["rdq"]
    w_ref, h_ref = out["ref"]
    print(f"{n:>5d}x{m:<5d} | {first - t_core:>9.2f} {t_core:>7.3f} {t_pub:>8.2f} {t_ref:>7.2f} | "
          f"{t_ref / t_core:>7.1f}x {t_ref / t_pub:>9.1f}x | "
          f"{float(rep.rate_entropy_bits):>8.3f} {h_ref + 16 / n + 16 / m:>8.3f} | "
          f"{_distortion(wn, q, hn):>9.3e} {_distortion(wn, w_ref.T, hn):>9.3e} | {c_ref / c_core:>7.1f}x")


def scaling(sizes, repeats: int, names=("gptq", "watersic", "gptvq")) -> None:
  import jax

  from rdq.layer import GPTQConfig, GPTVQConfig, MinMaxGrid, WaterSICConfig, gptq_traced, gptvq_traced, watersic_traced

  key = jax.random.key(0)
  algos = {  # the jitted cores (no eager input checks): the algorithms' own cost
      "gptq": jax.jit(lambda w, h: gptq_traced(w, h, GPTQConfig(MinMaxGrid(4)))),
      "watersic": jax.jit(lambda w, h: watersic_traced(w, h, WaterSICConfig(rate_bits=4.0))),
      "gptvq": jax.jit(lambda w, h: gptvq_traced(w, h, GPTVQConfig(), key)),
  }
  algos = {k: f for k, f in algos.items() if k in names}
  times = {k: [] for k in algos}
  print("\nwarm wall time [s] of the jitted cores vs n = m (first call minus warm = compilation, in parentheses)")
  print(f"{'n':>6s} " + " ".join(f"{k:>20s}" for k in algos))
  for n in sizes:
    w, h = _layer(n, n)
    row = []
    for k, f in algos.items():
      first, best = _best(lambda: jax.block_until_ready(f(w, h)), repeats)
      times[k].append(best)
      row.append(f"{best:9.3f} ({first - best:7.1f})")
    print(f"{n:>6d} " + " ".join(f"{c:>20s}" for c in row))
  big = [i for i, n in enumerate(sizes) if n >= 512]
  if len(big) >= 2:
    x = np.log([sizes[i] for i in big])
    fits = {k: np.polyfit(x, np.log([t[i] for i in big]), 1)[0] for k, t in times.items()}
    print("fitted exponent p of t ∝ n^p (n ≥ 512): " + ", ".join(f"{k} {p:.2f}" for k, p in fits.items())
          + "   (expected 3 for GPTQ and WaterSIC: O(n²m + n³) at n = m)")
  if len(sizes) >= 2:  # the slope per step: it rises towards the leading term's exponent as BLAS-sized work dominates
    print("local exponent log(t_i/t_i-1)/log(n_i/n_i-1): " + "; ".join(
        f"{k} " + " ".join(f"{np.log(t[i] / t[i - 1]) / np.log(sizes[i] / sizes[i - 1]):.2f}" for i in range(1, len(sizes)))
        for k, t in times.items()))


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--shapes", nargs="*", default=["384x1536", "1536x384"], help="reference comparison shapes n x m")
  ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512, 1024], help="n = m for the scaling table")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--algos", nargs="*", default=["gptq", "watersic", "gptvq"], help="cores in the scaling table")
  ap.add_argument("--no-reference", action="store_true")
  ap.add_argument("--no-scaling", action="store_true")
  args = ap.parse_args(argv)
  import jax

  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}")
  if not args.no_reference:
    reference([tuple(int(v) for v in s.split("x")) for s in args.shapes], args.repeats)
  if not args.no_scaling:
    scaling(args.sizes, args.repeats, args.algos)


if __name__ == "__main__":
  main()
