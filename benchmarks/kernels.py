"""Benchmark the quantized-matmul Pallas kernels against XLA's dequantize-then-dot.

For each format, M and (K, N): median wall time of the kernel and of the XLA baseline
(``rdq.quantized_matmul`` references: decode with rdq, then ``jnp.dot``) measured in the
same run, their ratio, the kernel's achieved bandwidth (bytes of W_q + scales + x + y per
second; sub-byte codes counted at their packed size) and its fraction of the device's
peak, and TFLOP/s (2·M·K·N / time) for large M.

On CPU the kernels run in the Pallas interpreter at small sizes only, to prove the harness
works; the numbers say nothing about GPU/TPU performance. ``--full`` uses the issue's
sizes (M ∈ {1, 16, 128, 2048}, (K, N) ∈ {(4096, 4096), (4096, 14336)}) for a real device.

Usage:
  python benchmarks/kernels.py                  # CPU smoke sizes, interpret mode
  python benchmarks/kernels.py --full --peak-gbps 3000   # on a GPU/TPU
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time

# This script is named kernels.py: drop its own folder from sys.path so that
# `import kernels` finds the package, not this file.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import kernels  # noqa: E402
from rdq.quantized_matmul import codebook_matmul_reference, dequant_matmul, w8a8_matmul_reference  # noqa: E402
from rdq.quantizers import IntQuantizer, get  # noqa: E402

# Measured device-to-device copy bandwidth (GB/s) of the lent machines (research notes).
_PEAK_GBPS = {"H100": 3000.0, "H200": 4300.0}


@dataclasses.dataclass
class Case:
  kernel: callable
  baseline: callable
  args_k: tuple
  args_b: tuple
  bytes_moved: int


def _time(fn, args, iters: int) -> float:
  out = fn(*args)
  jax.block_until_ready(out)
  ts = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    ts.append(time.perf_counter() - t0)
  return statistics.median(ts)


def _case(fmt: str, m: int, k: int, n: int, dtype, interpret, backend) -> Case:
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (m, k)).astype(dtype)
  w = jax.random.normal(kw, (k, n), jnp.float32)
  opts = dict(interpret=interpret, backend=backend)
  y_bytes = m * n * jnp.dtype(dtype).itemsize
  if fmt in ("int8_row", "int4_block32", "int4_block128", "mxfp4", "nvfp4"):
    q = get(fmt)
    code = q.encode(w.T)
    if fmt.startswith("int"):
      packed, kern = kernels.pack_int(code, q), kernels.int_matmul
    else:
      packed, kern = kernels.pack_fp4(code, q), kernels.fp4_matmul
    base = jax.jit(functools.partial(dequant_matmul, quantizer=q))
    return Case(jax.jit(functools.partial(kern, **opts)), lambda x, c: base(x, code=c),
                (x, packed), (x, code), kernels.bytes_of(packed) + x.size * x.dtype.itemsize + y_bytes)
  if fmt == "w8a8":
    qx, qw = IntQuantizer(8, "row"), IntQuantizer(8, "row")
    xc, wc = qx.encode(x.astype(jnp.float32)), qw.encode(w.T)
    xq, sx = kernels.pack_activations(xc)
    packed = kernels.pack_int(wc, qw)
    base = jax.jit(lambda a, b: w8a8_matmul_reference(a, b, qw))
    return Case(jax.jit(functools.partial(kernels.w8a8_matmul, **opts)), base, (xq, sx, packed),
                (xc, wc), kernels.bytes_of(packed) + xq.size + sx.size * 4 + m * n * 4)
  if fmt == "vq_d2_c256":
    d, c = 2, 256
    idx = jax.random.randint(kw, (n, k // d), 0, c)
    cb = jax.random.normal(kx, (k // 256, c, d))
    packed = kernels.pack_codebook(idx, cb, group_size=256)
    base = jax.jit(functools.partial(codebook_matmul_reference, group_size=256))
    return Case(jax.jit(functools.partial(kernels.codebook_matmul, **opts)), base, (x, packed),
                (x, idx, cb), kernels.bytes_of(packed) + x.size * x.dtype.itemsize + y_bytes)
  raise ValueError(f"unknown format {fmt!r}")


FORMATS = ("int8_row", "int4_block32", "int4_block128", "w8a8", "mxfp4", "nvfp4", "vq_d2_c256")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--full", action="store_true", help="the issue's sizes (for a GPU/TPU)")
  p.add_argument("--m", type=int, nargs="*", default=None, help="batch sizes M")
  p.add_argument("--kn", type=str, nargs="*", default=None, help="K,N pairs, e.g. 512,512")
  p.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--iters", type=int, default=3)
  p.add_argument("--peak-gbps", type=float, default=None,
                 help="device peak bandwidth in GB/s (default: measured copy bandwidth of H100/H200)")
  a = p.parse_args(argv)
  platform = jax.default_backend()
  interpret = platform == "cpu"
  backend = None if not interpret else "tpu"
  if a.full:
    ms, kns = [1, 16, 128, 2048], [(4096, 4096), (4096, 14336)]
  else:
    ms, kns = [1, 16], [(512, 512), (512, 1792)]
  ms = a.m or ms
  kns = [tuple(int(v) for v in s.split(",")) for s in a.kn] if a.kn else kns
  dev = jax.devices()[0]
  peak = a.peak_gbps
  if peak is None:
    peak = next((v for key, v in _PEAK_GBPS.items() if key in dev.device_kind), None)
  print(f"# device: {dev.device_kind} ({platform}); jax {jax.__version__}; "
        f"mode: {'Pallas interpreter (CPU: harness check only)' if interpret else 'compiled'}; "
        f"x dtype {a.dtype}; peak {peak or 'n/a'} GB/s")
  hdr = f"{'format':<14}{'M':>6}{'K':>7}{'N':>7}{'kernel ms':>11}{'XLA ms':>10}{'XLA/kern':>10}{'GB/s':>9}{'%peak':>7}{'TFLOP/s':>9}"
  print(hdr)
  print("-" * len(hdr))
  dtype = jnp.dtype(a.dtype)
  for fmt in a.formats:
    for k, n in kns:
      for m in ms:
        c = _case(fmt, m, k, n, dtype, interpret, backend)
        t_k = _time(c.kernel, c.args_k, a.iters)
        t_b = _time(c.baseline, c.args_b, a.iters)
        gbps = c.bytes_moved / t_k / 1e9
        frac = f"{100 * gbps / peak:6.1f}" if peak else f"{'n/a':>6}"
        tflops = f"{2 * m * k * n / t_k / 1e12:9.3f}" if m >= 128 else f"{'-':>9}"
        print(f"{fmt:<14}{m:>6}{k:>7}{n:>7}{1e3 * t_k:>11.3f}{1e3 * t_b:>10.3f}{t_b / t_k:>10.3f}"
              f"{gbps:>9.3f}{frac:>7}{tflops}")
        sys.stdout.flush()


if __name__ == "__main__":
  main()
