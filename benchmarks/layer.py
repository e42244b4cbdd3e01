"""Benchmark GPTQ and WaterSIC: jitted rdq against plain NumPy implementations, same run.

For each layer shape ``(n, m) = (in_features, out_features)`` and algorithm: median wall time
of the jitted rdq function (after a warm-up call that compiles it; compile time and the
eager argument checks of the public function — an O(n³) eigendecomposition for GPTQ, O(n²)
for WaterSIC, whose core certifies H ⪰ 0 from its own Cholesky factor — reported separately), wall time of a plain, unblocked float64 NumPy implementation of the same
recursion (written here from the papers: GPTQ in torch layout, column by column; WaterSIC
in the paper's ``Y = W L`` form, last input feature first), their ratio, the relative
difference of the achieved distortions, and peak memory:

* rdq: XLA's ``memory_analysis()`` of the compiled function (arguments + outputs + temps),
  and on GPUs the device allocator's ``peak_bytes_in_use``;
* NumPy: ``tracemalloc``'s peak (NumPy reports its buffers to tracemalloc).

Defaults are small (runs in < 1 min on 2 CPU cores). ``--full`` runs LLM-layer sizes:
384×1536, 1536×384 and 4096×4096 (the NumPy baseline at 4096² takes minutes on a CPU;
``--numpy-max-n`` skips it above a size).

``--scaling [N ...]`` instead prints the cost growth of the GPTQ, WaterSIC and GPTVQ cores vs
``n = m`` (default 256 … 4096) with the fitted exponents (``benchmarks/scaling.py``, which also
has the comparison of WaterSIC with the reference code's ``zsic``).

Usage:
  python benchmarks/layer.py
  python benchmarks/layer.py --full
  python benchmarks/layer.py --scaling 256 512 1024 2048
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np

import rdq.layer
from rdq import covariance as cov
from rdq.layer import damp_hessian, high_rate_step, inverse_cholesky_upper
from rdq.limits import ECSQ_GAP_BITS


# ----------------------------------------------------------------------------- NumPy baselines
def numpy_gptq(w: np.ndarray, h: np.ndarray, bits: int = 4, percdamp: float = 0.01) -> np.ndarray:
  """Unblocked GPTQ (Frantar et al. 2023, Alg. 1) with a symmetric per-output min–max grid."""
  wt = np.array(w, np.float64).T.copy()  # (out, in)
  n = wt.shape[1]
  hh = np.array(h, np.float64) + percdamp * np.mean(np.diag(h)) * np.eye(n)
  u = np.linalg.cholesky(np.linalg.inv(hh)).T
  maxq = 2**bits - 1
  amax = np.max(np.abs(wt), axis=1)
  amax[amax == 0] = 1.0
  scale = (2 * amax / maxq).astype(np.float16).astype(np.float64)
  zero = (maxq + 1) / 2
  q = np.zeros_like(wt)
  for i in range(n):
    col = wt[:, i]
    qi = scale * (np.clip(np.round(col / scale) + zero, 0, maxq) - zero)
    err = (col - qi) / u[i, i]
    wt[:, i:] -= np.outer(err, u[i, i:])
    q[:, i] = qi
  return q.T


def numpy_watersic(w: np.ndarray, h: np.ndarray, c: float, percdamp: float = 1e-4) -> np.ndarray:
  """WaterSIC in the paper's form: ``Y = W L``, last input feature first, step ``c/L_ii``, LMMSE gain."""
  wt = np.array(w, np.float64).T  # (out a, in n)
  n = wt.shape[1]
  hh = np.array(h, np.float64) + percdamp * np.mean(np.diag(h)) * np.eye(n)
  lo = np.linalg.cholesky(hh)
  y = wt @ lo
  alpha = c / np.diag(lo)
  what = np.zeros_like(wt)
  for j in range(n - 1, -1, -1):
    z = np.round(y[:, j] / c)
    zz = z @ z
    gamma = (z @ y[:, j]) / (c * zz) if zz > 0 else 0.0
    y -= (gamma * alpha[j]) * np.outer(z, lo[j, :])
    what[:, j] = gamma * alpha[j] * z
  return what.T


def _distortion(w, w_hat, h):
  e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.sum(e * (np.asarray(h, np.float64) @ e)) / e.size)


# ----------------------------------------------------------------------------- timing
def _median_time(fn, iters: int) -> float:
  ts = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def _xla_bytes(jitted, *args) -> int | None:
  try:
    ma = jitted.lower(*args).compile().memory_analysis()
    return int(ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes)
  except Exception:  # noqa: BLE001 - not every backend reports it
    return None


def _device_peak() -> int | None:
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get("peak_bytes_in_use")


def _numpy_run(fn):
  tracemalloc.start()
  t0 = time.perf_counter()
  out = fn()
  dt = time.perf_counter() - t0
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  return out, dt, peak


def _mib(b):
  return "-" if b is None else f"{b / 2**20:.0f}"


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--shapes", default="128x512,512x128", help="comma list of n x m (in x out)")
  ap.add_argument("--full", action="store_true", help="LLM-layer shapes 384x1536,1536x384,4096x4096")
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--numpy-max-n", type=int, default=4096, help="skip the NumPy baseline for n above this")
  ap.add_argument("--rate", type=float, default=4.0, help="WaterSIC rate (bits/entry)")
  ap.add_argument("--scaling", type=int, nargs="*", default=None, metavar="N",
                  help="cost growth of the GPTQ/WaterSIC/GPTVQ cores vs n = m (default 256 512 1024 2048 4096)")
  args = ap.parse_args(argv)
  if args.scaling is not None:
    import os
    import sys

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import scaling

    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
    scaling.scaling(args.scaling or [256, 512, 1024, 2048, 4096], args.iters)
    return
  shapes = "384x1536,1536x384,4096x4096" if args.full else args.shapes
  shapes = [tuple(int(v) for v in s.split("x")) for s in shapes.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")
  hdr = (f"{'algorithm':9s} {'n x m':>11s} {'compile s':>9s} {'checks s':>8s} {'rdq s':>8s} {'numpy s':>8s} {'numpy/rdq':>9s} "
         f"{'rel dD':>8s} {'rdq MiB':>8s} {'dev peak':>8s} {'np MiB':>7s}")
  print(hdr)
  print("-" * len(hdr))
  for n, m in shapes:
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (2 * n, n)) @ cov.PowerLaw(n)(k2, 1.0)
    h = cov.from_data(x)
    w = jax.random.normal(jax.random.key(1), (n, m)) * 0.05
    h_np, w_np = np.asarray(h), np.asarray(w)
    for alg in ("gptq", "watersic"):
      if alg == "gptq":
        algo, rate = rdq.layer.get("gptq", grid="minmax", bits=4), None
      else:
        algo, rate = rdq.layer.get("watersic", rate_bits=args.rate, rate_iters=0, rescale_iters=0), args.rate
      cfg = algo.config
      jitted = jax.jit(lambda w, h, algo=algo, rate=rate: algo(w, h, rate_bits=rate))
      inner = lambda: jitted(w, h)  # noqa: E731
      xla_args = (jitted, w, h)
      run = lambda: algo(w, h, rate_bits=rate)  # noqa: E731
      t0 = time.perf_counter()
      jax.block_until_ready(inner()[0])  # compile + one run
      t_first = time.perf_counter() - t0
      t_rdq = _median_time(lambda: inner()[0], args.iters)  # the jitted function
      t_compile = t_first - t_rdq
      t0 = time.perf_counter()
      algo.check(w, h, rate_bits=rate)  # eager argument checks (GPTQ: an O(n³) eigvalsh)
      t_check = time.perf_counter() - t0
      w_hat, rep = run()  # the public function (cached compilation): the report
      xla_b = _xla_bytes(*xla_args)
      peak = _device_peak()
      t_np, np_peak, rel = None, None, None
      if n <= args.numpy_max_n:
        if alg == "gptq":
          ref, t_np, np_peak = _numpy_run(lambda: numpy_gptq(w_np, h_np))
        else:
          # the same layer constant c as rdq (high-rate rule with L_ii = 1/U_ii, reversed order)
          hd = damp_hessian(h, cfg.percdamp)
          ud = jnp.diagonal(inverse_cholesky_upper(hd[::-1, ::-1]))
          c = float(high_rate_step(w[::-1], args.rate - cfg.side_bits(n, m) - ECSQ_GAP_BITS, 1.0 / ud**2))
          ref, t_np, np_peak = _numpy_run(lambda: numpy_watersic(w_np, h_np, c))
        d_ref = _distortion(w_np, ref, h_np)
        rel = float(rep.d_per_entry) / d_ref - 1.0
      ratio = "-" if t_np is None else f"{t_np / t_rdq:9.1f}"
      print(f"{alg:9s} {f'{n}x{m}':>11s} {t_compile:9.2f} {t_check:8.2f} {t_rdq:8.3f} {('-' if t_np is None else f'{t_np:8.2f}'):>8s} "
            f"{ratio:>9s} {('-' if rel is None else f'{rel:+8.1e}'):>8s} {_mib(xla_b):>8s} {_mib(peak):>8s} "
            f"{_mib(np_peak):>7s}")


if __name__ == "__main__":
  main()
