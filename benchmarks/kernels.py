"""Benchmark the quantized-matmul Pallas kernels: compiled SASS without a GPU, device time with one.

Two measures.

``--sass`` (no GPU needed; needs ``pip install 'rdq[kernels-sass]'``, i.e. ``triton==3.9.0``):
each kernel is lowered for the GPU backend under an abstract H100 (as the lowering tests do),
the Triton IR that Pallas emits (TTIR) is captured, compiled for sm_90 with the pinned
``triton`` wheel (its ``ptxas``), disassembled with the wheel's ``nvdisasm``, and the main
loop (the largest backward branch) is counted. Printed per kernel and shape: grid size and
config, SASS instructions per loop iteration and **per weight per thread**
(``instr/iter · 32 · warps / (bk · bn)``), conversion-pipe instructions, registers per
thread, shared memory, whether the global loads of the loop are asynchronous copies
(``LDGSTS``/``cp.async``: software-pipelined), and an estimate of the fraction of the HBM
roofline on H100 / H200: ``t_mem = bytes / BW`` (weights + scales + x + y) against an
issue-bound ``t_issue`` (every SM issues one warp instruction per scheduler per cycle, 4
schedulers, 1.98 GHz, 132 SMs, programs spread evenly; ``max(t_mem, t_issue)``), and the
same for dense bf16. The counts are *indicative*: XLA pins its own Triton and runs its own
passes; this uses the wheel's.

Default (device time): on a GPU/TPU, the kernel, XLA dequantize+dot (the
``rdq.quantized_matmul`` references) and dense bf16 ``jnp.dot`` run in the same process,
each timed on the device as ``(T(n) − T(1)) / (n − 1)`` where ``T(n)`` is one jitted
``fori_loop`` of ``n`` dependent calls (dispatch cancels), reporting µs, the ratios to both
baselines and the fraction of HBM peak. On CPU the kernels run in the Pallas interpreter at
small sizes, which only proves that the harness runs.

Usage:
  python benchmarks/kernels.py --sass                     # no GPU: instruction counts
  python benchmarks/kernels.py --full                     # on a GPU/TPU: device time
  python benchmarks/kernels.py                            # CPU smoke (interpreter)
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
  sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from rdq import kernels  # noqa: E402
from rdq.kernels import Config, resolve_blocks  # noqa: E402
from rdq.kernels.e8_matmul import e8_config  # noqa: E402
from rdq.kernels.int_matmul import resolve_plane_blocks  # noqa: E402
from rdq.quantized_matmul import codebook_matmul_reference, dequant_matmul, w8a8_matmul_reference  # noqa: E402
from rdq.quantizers import IntQuantizer, get  # noqa: E402
from rdq.quantizers.nested import NestedLatticeQuantizer  # noqa: E402

TRITON_VERSION = "3.9.0"
# HBM bandwidth (datasheet, GB/s) and SM count / boost clock of the targets.
_HBM_GBPS = {"H100": 3350.0, "H200": 4800.0}
_SMS, _CLK = 132, 1.98e9
_E8 = NestedLatticeQuantizer("e8", 4, (0.18, 0.22, 0.26, 0.32))
FORMATS = ("int8_row", "int4_block32", "int4_block128", "w8a8", "mxfp4", "nvfp4",
           "vq_d2_c256", "vq_d4_c16", "e8_q4")
TARGETS = {"int8_row": 3, "int4_block32": 3, "int4_block128": 3, "w8a8": 3, "mxfp4": 4,
           "nvfp4": 4, "vq_d2_c256": 8, "vq_d4_c16": 8, "e8_q4": 12}


# ----------------------------------------------------------------------------- problems


@dataclasses.dataclass
class Problem:
  """One kernel call: the kernel, its arguments, the XLA baseline and the bytes it must move."""

  kernel: callable
  args: tuple
  baseline: callable
  base_args: tuple
  weight_bytes: int
  io_bytes: int
  group: int | None
  max_bk: int | None = None


def _problem(fmt: str, m: int, k: int, n: int, dtype, *, abstract: bool) -> Problem:
  """Packed operands of ``fmt`` (``jax.ShapeDtypeStruct`` leaves when ``abstract``)."""
  kx, kw = jax.random.split(jax.random.key(0))

  def build(x, w):
    return _build(fmt, x, w, kw)

  x_sds = jax.ShapeDtypeStruct((m, k), dtype)
  w_sds = jax.ShapeDtypeStruct((k, n), jnp.float32)
  if abstract:
    packed, base = jax.eval_shape(lambda x, w: build(x, w)[:2], x_sds, w_sds)
  else:
    x = jax.random.normal(kx, (m, k)).astype(dtype)
    w = jax.random.normal(kw, (k, n), jnp.float32)
    packed, base = build(x, w)[:2]
  kern, baseline, group, max_bk = _build(fmt, None, None, None, meta_only=True)
  io = m * k * jnp.dtype(dtype).itemsize + m * n * 2
  if fmt == "w8a8":
    io = m * k + m * 4 + m * n * 4
  return Problem(kern, packed, baseline, base, kernels.bytes_of(packed) if not abstract else
                 _abstract_bytes(packed), io, group, max_bk)


def _codes_per_word(packed) -> int:
  """Codes per stored row along K of a ``"words"`` layout (1 for every other layout)."""
  if getattr(packed, "layout", None) != "words":
    return 1
  return 32 // packed.bits if isinstance(packed, kernels.PackedInt) else 8


def _abstract_bytes(tree) -> int:
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    bits = jnp.dtype(leaf.dtype).itemsize * 8
    total += math.prod(leaf.shape) * bits // 8
  return total


def _build(fmt, x, w, key, meta_only=False):
  """``(packed kernel args, baseline args)`` or, with ``meta_only``, the callables."""
  if fmt in ("int8_row", "int4_block32", "int4_block128", "mxfp4", "nvfp4"):
    q = get(fmt)
    fp = fmt.endswith("fp4")
    if meta_only:
      base = jax.jit(lambda x, c: dequant_matmul(x, q, c))
      group = q.block_size if fp or q.granularity == "block" else None
      return (kernels.fp4_matmul if fp else kernels.int_matmul), base, group, None
    code = q.encode(w.T)
    packed = kernels.pack_fp4(code, q) if fp else kernels.pack_int(code, q, layout="words")
    return (x, packed), (x, code)
  if fmt == "w8a8":
    qx, qw = IntQuantizer(8, "row"), IntQuantizer(8, "row")
    if meta_only:
      return kernels.w8a8_matmul, jax.jit(lambda a, b: w8a8_matmul_reference(a, b, qw)), None, None
    xc, wc = qx.encode(x.astype(jnp.float32)), qw.encode(w.T)
    return (*kernels.pack_activations(xc), kernels.pack_int(wc, qw)), (xc, wc)
  if fmt.startswith("vq"):
    d, c = (2, 256) if fmt == "vq_d2_c256" else (4, 16)
    gs = 256
    if meta_only:
      return (kernels.codebook_matmul,
              jax.jit(lambda x, i, cb: codebook_matmul_reference(x, i, cb, gs)), gs, gs)
    k, n = w.shape
    idx = jax.random.randint(key, (n, k // d), 0, c)
    cb = jax.random.normal(key, (k // gs, c, d))
    return (x, kernels.pack_codebook(idx, cb, group_size=gs)), (x, idx, cb)
  if fmt == "e8_q4":
    if meta_only:
      return kernels.e8_matmul, jax.jit(lambda x, c: dequant_matmul(x, _E8, c)), 8, None
    code = _E8.encode(w.T)
    return (x, kernels.pack_e8(code, _E8)), (x, code)
  raise ValueError(f"unknown format {fmt!r}")


# ----------------------------------------------------------------------------- SASS measure


def _capture_ttir(fn, args) -> list[str]:
  """TTIR of every Pallas Triton kernel in ``jit(fn)(*args)`` lowered for an abstract H100."""
  try:
    from jax._src.pallas.triton import pallas_call_registration as reg
  except ImportError as e:  # private module: tied to the jax version
    raise RuntimeError(f"this jax ({jax.__version__}) has no Pallas Triton lowering to hook: {e}")
  from tests.kernels._util import lower

  captured = []
  orig = reg.lowering.lower_jaxpr_to_triton_module

  def hook(*a, **kw):
    r = orig(*a, **kw)
    captured.append(r.module.operation.get_asm(enable_debug_info=False))
    return r

  reg.lowering.lower_jaxpr_to_triton_module = hook
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      lower(functools.partial(fn, backend="gpu"), args, "gpu")
  finally:
    reg.lowering.lower_jaxpr_to_triton_module = orig
  return captured


@dataclasses.dataclass
class Sass:
  instr_per_iter: int
  slow_per_iter: int
  regs: int
  smem: int
  async_loads: int  # LDGSTS (cp.async) in the main loop
  sync_loads: int   # LDG in the main loop
  top_ops: str


def _compile_sass(ttir: str, num_warps: int, num_stages: int) -> Sass:
  import triton
  from triton.backends.compiler import GPUTarget

  bin_dir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "k.ttir")
    with open(path, "w") as f:
      f.write(ttir)
    k = triton.compile(path, target=GPUTarget("cuda", 90, 32),
                       options=dict(num_warps=num_warps, num_stages=num_stages))
    cubin = os.path.join(tmp, "k.cubin")
    with open(cubin, "wb") as f:
      f.write(k.asm["cubin"])
    sass = subprocess.run([os.path.join(bin_dir, "nvdisasm"), "-c", cubin], capture_output=True,
                          text=True, check=True).stdout.splitlines()
    res = subprocess.run([os.path.join(bin_dir, "cuobjdump"), "-res-usage", cubin],
                         capture_output=True, text=True).stdout
  regs = re.search(r"REG:(\d+)", res)
  labels = {}
  for i, line in enumerate(sass):
    mm = re.match(r"^\s*\.(L_x_\d+):", line)
    if mm:
      labels[mm.group(1)] = i
  best = None
  for i, line in enumerate(sass):
    mm = re.search(r"\bBRA\b[^;]*\.(L_x_\d+)", line)
    if mm and mm.group(1) in labels and labels[mm.group(1)] < i:
      span = (labels[mm.group(1)], i)
      if best is None or span[1] - span[0] > best[1] - best[0]:
        best = span
  ops = collections.Counter()
  if best is not None:
    for line in sass[best[0]:best[1] + 1]:
      mm = re.search(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(\.[A-Z0-9_.]+)?", line)
      if mm:
        ops[mm.group(1)] += 1
  slow = sum(v for op, v in ops.items() if op.startswith(("I2F", "F2I", "F2F", "I2FP", "F2FP", "MUFU")))
  return Sass(
      instr_per_iter=sum(ops.values()), slow_per_iter=slow, regs=int(regs.group(1)) if regs else -1,
      smem=int(k.metadata.shared), async_loads=ops.get("LDGSTS", 0),
      sync_loads=ops.get("LDG", 0),
      top_ops=" ".join(f"{op}:{v}" for op, v in ops.most_common(6)))


def _estimate(instr_per_iter, iters, warps, programs, bytes_moved, gbps, ctas_per_sm=1):
  """``(t_est, t_mem)`` in seconds (module docstring)."""
  per_sm = math.ceil(programs / _SMS)
  resident = warps * min(per_sm, ctas_per_sm)
  t_issue = per_sm * warps * instr_per_iter * iters / (min(4, resident) * _CLK)
  t_mem = bytes_moved / (gbps * 1e9)
  return max(t_issue, t_mem), t_mem


def run_sass(formats, ms, kns, dtype) -> None:
  try:
    import triton
  except ImportError:
    print("# --sass needs the triton wheel (pip install 'rdq[kernels-sass]', triton==%s); skipped."
          % TRITON_VERSION)
    return
  if triton.__version__ != TRITON_VERSION:
    print(f"# warning: triton {triton.__version__} installed; counts were calibrated with {TRITON_VERSION}")
  print(f"# SASS measure: Pallas (jax {jax.__version__}) -> TTIR -> triton {triton.__version__} "
        f"ptxas sm_90 -> nvdisasm; indicative (XLA pins its own Triton). x dtype {jnp.dtype(dtype).name}.")
  print("# INT and FP4 weights in the pre-permuted 'words' layout (pack_int(layout='words'), pack_fp4 default); "
        "W8A8 in int8; bk is each kernel's own choice.")
  print("# instr/w = main-loop SASS per weight per thread; est % = roofline time / max(roofline, "
        "issue-bound time) on H100 | H200 (HBM 3.35 | 4.8 TB/s, 132 SMs, 1.98 GHz).")
  hdr = (f"{'format':<14}{'M':>3}{'K':>6}{'N':>7} {'bm,bn,bk,S,gemv':<18}{'grid':>6}{'instr/it':>9}"
         f"{'instr/w':>8}{'target':>7}{'cvt/it':>7}{'regs':>5}{'smem':>7} {'loads':<12}"
         f"{'est%H100':>9}{'est%H200':>9}{'bf16 µs':>8}{'est µs':>8}  top ops")
  print(hdr)
  print("-" * len(hdr))
  for fmt in formats:
    for k, n in kns:
      for m in ms:
        p = _problem(fmt, m, k, n, dtype, abstract=True)
        cfg = e8_config(Config(), "gpu", k, n) if fmt == "e8_q4" else Config()
        per = _codes_per_word(p.args[-1])
        if per > 1:  # the words layouts: the kernels' own block choice (tl.dot per plane)
          _, b = resolve_plane_blocks(cfg, "gpu", m, k, n, group=p.group, per=per)
        else:
          b = resolve_blocks(cfg, "gpu", m, k, n, group=p.group, max_bk=p.max_bk)
        ttirs = _capture_ttir(p.kernel, p.args)
        s = _compile_sass(ttirs[0], 4, 3)
        programs = b.split * (b.m_padded // b.bm) * (n // b.bn)
        iters = k // b.bk // b.split
        per_w = s.instr_per_iter * 32 * 4 / (b.bk * b.bn)
        moved = p.weight_bytes + p.io_bytes
        ests = []
        for dev in ("H100", "H200"):
          t, t_mem = _estimate(s.instr_per_iter, iters, 4, programs, moved, _HBM_GBPS[dev])
          ests.append((100 * t_mem / t, t))
        bf16_t = (2 * k * n + p.io_bytes) / (_HBM_GBPS["H100"] * 1e9)
        loads = f"{s.async_loads}async/{s.sync_loads}sync"
        print(f"{fmt:<14}{m:>3}{k:>6}{n:>7} {f'{b.bm},{b.bn},{b.bk},{b.split},{int(b.gemv)}':<18}"
              f"{programs:>6}{s.instr_per_iter:>9}{per_w:>8.2f}{TARGETS[fmt]:>7}{s.slow_per_iter:>7}"
              f"{s.regs:>5}{s.smem:>7} {loads:<12}{ests[0][0]:>9.1f}{ests[1][0]:>9.1f}"
              f"{1e6 * bf16_t:>8.1f}{1e6 * ests[0][1]:>8.1f}  {s.top_ops}")
        sys.stdout.flush()


# ----------------------------------------------------------------------------- device time


def device_time(fn, args, n: int) -> float:
  """Seconds per call on the device: ``(T(n) − T(1)) / (n − 1)`` of a jitted dependent loop."""
  def looped(reps):
    @jax.jit
    def run(*a):
      def body(i, acc):
        # A data dependence between calls (acc·0 is not folded: NaN semantics), so that XLA
        # cannot hoist the call out of the loop.
        leaves, tree = jax.tree_util.tree_flatten(a[0])
        leaves[0] = leaves[0] + (acc * 0).astype(leaves[0].dtype)
        y = fn(jax.tree_util.tree_unflatten(tree, leaves), *a[1:])
        return acc + jnp.sum(y[:1, :1]).astype(jnp.float32)
      return jax.lax.fori_loop(0, reps, body, jnp.float32(0))
    return run

  def wall(f):
    jax.block_until_ready(f(*args))  # compile
    best = math.inf
    for _ in range(3):
      t0 = time.perf_counter()
      jax.block_until_ready(f(*args))
      best = min(best, time.perf_counter() - t0)
    return best

  t1, tn = wall(looped(1)), wall(looped(n))
  return max(tn - t1, 0.0) / (n - 1)


def run_time(formats, ms, kns, dtype, reps: int, peak_gbps: float | None) -> None:
  platform = jax.default_backend()
  interpret = platform == "cpu"
  backend = "tpu" if interpret else None
  dev = jax.devices()[0]
  peak = peak_gbps or next((v for key, v in _HBM_GBPS.items() if key in dev.device_kind), None)
  print(f"# device: {dev.device_kind} ({platform}); jax {jax.__version__}; "
        f"{'Pallas interpreter (CPU: harness check only)' if interpret else 'compiled'}; "
        f"x {jnp.dtype(dtype).name}; device time per call over {reps} dependent calls in one jit; "
        f"HBM peak {peak or 'n/a'} GB/s")
  hdr = (f"{'format':<14}{'M':>6}{'K':>7}{'N':>7}{'kernel µs':>11}{'XLA µs':>10}{'bf16 µs':>9}"
         f"{'XLA/kern':>9}{'bf16/kern':>10}{'GB/s':>9}{'%peak':>7}")
  print(hdr)
  print("-" * len(hdr))
  for fmt in formats:
    for k, n in kns:
      for m in ms:
        p = _problem(fmt, m, k, n, dtype, abstract=False)
        kern = functools.partial(p.kernel, interpret=interpret, backend=backend)
        t_k = device_time(kern, p.args, reps)
        t_b = device_time(p.baseline, p.base_args, reps)
        xb = p.args[0] if fmt != "w8a8" else p.args[0].astype(jnp.bfloat16)
        wb = jnp.zeros((k, n), jnp.bfloat16)
        t_d = device_time(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32).astype(a.dtype),
                          (xb.astype(jnp.bfloat16), wb), reps)
        moved = p.weight_bytes + p.io_bytes
        gbps = moved / t_k / 1e9 if t_k > 0 else math.inf
        frac = f"{100 * gbps / peak:7.1f}" if peak else f"{'n/a':>7}"
        r = lambda a, b: f"{a / b:.2f}" if b > 0 else "inf"  # noqa: E731
        print(f"{fmt:<14}{m:>6}{k:>7}{n:>7}{1e6 * t_k:>11.1f}{1e6 * t_b:>10.1f}{1e6 * t_d:>9.1f}"
              f"{r(t_b, t_k):>9}{r(t_d, t_k):>10}{gbps:>9.1f}{frac}")
        sys.stdout.flush()


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sass", action="store_true", help="no-GPU measure: main-loop SASS per weight")
  p.add_argument("--full", action="store_true", help="LLM decode sizes (M ∈ {1,4,16}, K=4096, N ∈ {4096, 14336})")
  p.add_argument("--m", type=int, nargs="*", default=None, help="batch sizes M")
  p.add_argument("--kn", type=str, nargs="*", default=None, help="K,N pairs, e.g. 4096,4096")
  p.add_argument("--formats", nargs="*", default=list(FORMATS), choices=FORMATS)
  p.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
  p.add_argument("--reps", type=int, default=50, help="dependent calls per timing loop")
  p.add_argument("--peak-gbps", type=float, default=None, help="HBM peak in GB/s (default: datasheet)")
  a = p.parse_args(argv)
  dtype = jnp.dtype(a.dtype)
  if a.sass or a.full:
    ms, kns = [1, 4, 16], [(4096, 4096), (4096, 14336)]
  else:
    ms, kns = [1, 16], [(512, 512)]
  ms = a.m or ms
  kns = [tuple(int(v) for v in s.split(",")) for s in a.kn] if a.kn else kns
  if a.sass:
    run_sass(a.formats, ms, kns, dtype)
  else:
    run_time(a.formats, ms, kns, dtype, a.reps if jax.default_backend() != "cpu" else min(a.reps, 10), a.peak_gbps)


if __name__ == "__main__":
  main()
