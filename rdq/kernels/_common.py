"""Shared machinery of the quantized-matmul kernels: the config table, backends, the tiled driver.

Every kernel in this package computes ``y = x · dequant(W_q)`` with ``x: (M, K)`` and the
weight ``W: (K, N)`` (``K`` = input features, the reduction dimension; ``N`` = output
features). The kernels differ only in how a weight tile is decoded (and, for W8A8, in the
accumulator type); the tiling, the schedule and the product live here.

Two memory models, one tile function:

* **TPU (Mosaic)**: grid ``(S, M/bm, N/bn, K/(S·bk))``; the last axis is ``"arbitrary"``
  and the partial sums live in a VMEM scratch accumulator that is zeroed at the first K
  step and written out at the last. Blocks follow the (8, 128) rule.
* **GPU (Triton)**: grid ``(S, M/bm, N/bn)``; each program holds a K-strip of x and W and
  loops over its K range in registers with ``lax.fori_loop``. Blocks are powers of two.

``S`` is the split-K factor: with ``S > 1`` the programs write ``S`` fp32/int32 partial
products ``(S, M, N)``, summed outside the kernel (exactly, in int32, for W8A8), and the
epilogue (row/column rescaling) is applied after the sum. Split-K is what fills a GPU at
decode sizes: at ``M = 1`` and ``K = N = 4096`` an N-only grid has ``4096/64 = 64``
programs for 132 SMs; ``S = 4`` gives 256.

**GEMV specialisation** (GPU, ``M = 1``): ``tl.dot`` needs 16 rows, so a row vector would be
padded 16×, and the weight tile would take the round trip to the MMA operand layout. For
``M = 1`` the driver instead passes ``xᵀ`` as a ``(K, 1)`` column and accumulates the
elementwise product ``xᵀ ⊙ Ŵ`` of each ``(bk, bn)`` tile in a ``(bk, bn)`` fp32 register
accumulator (one FMA per weight, no shuffles), reduced over K once at the end (a kernel may
reduce over the codes of a packed word first: ``gemv_rows``). A float ``x`` is converted to
fp32 once, outside the kernel (exact), instead of at every use.

**Config table** (``choose_blocks``; every ``None`` field of ``Config`` takes it):

=========  =================  ====  =====  ====  =======================================
backend    M                  bm    bn     bk    split S
=========  =================  ====  =====  ====  =======================================
GPU        1 (GEMV)           1     64     64    smallest power of 2 with
GPU        2–16               16    64     64    ``⌈M/bm⌉·(N/bn)·S ≥ cores`` (132 SMs on
GPU        17–64              64    64     64    H100/H200, else ``device.core_count``),
GPU        > 64               64    128    64    S ≤ (K/bk)/2, S | K/bk
TPU        any                ≤128  256    512   1 (1–2 TensorCores: the N grid fills them)
=========  =================  ====  =====  ====  =======================================

``bk`` is then the largest power of two ≤ the table value that divides K and is
compatible with the kernel's group (a K block holds whole groups, or a group whole K
blocks; W8A8 with groups on GPU: ``bk ≤ g``, because Triton does not lower value slices);
if no power of two ≥ 8 divides K, a full-K block is used (always legal on TPU). Example:
K = 11008 = 2⁸·43 gives ``bk = 256`` on TPU and 64 on GPU. Explicit ``Config`` values
override the table and must then divide K and N (``ValueError`` before tracing otherwise).

Both run on CPU with ``interpret=True`` (the HLO interpreter), which is how the tests run
them. M is padded with zero rows to a multiple of ``block_m``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

__all__ = [
    "BACKENDS",
    "Backend",
    "Blocks",
    "Config",
    "Operand",
    "choose_blocks",
    "resolve_backend",
    "resolve_blocks",
    "tiled_matmul",
]

Backend = Literal["tpu", "gpu"]
BACKENDS: tuple[str, ...] = ("tpu", "gpu")

# Minimum rows of an M block: one (8, 128) f32 tile on TPU; tl.dot needs ≥ 16 on GPU.
_MIN_BLOCK_M = {"tpu": 8, "gpu": 16}
# Streaming multiprocessors of the GPUs this project targets (H100 SXM and H200: 132).
DEFAULT_GPU_CORES = 132


@dataclasses.dataclass(frozen=True)
class Config:
  """Block sizes and backend knobs (a static jit argument).

  ``None`` fields take the config table (module docstring, ``choose_blocks``); a block
  larger than its dimension shrinks to the dimension.

  Attributes:
    block_m: rows of x per program (activation/token dimension).
    block_n: output features per program.
    block_k: input features per reduction step.
    split_k: number of K ranges reduced by separate programs (``S``), or ``None``.
    gemv: GPU ``M = 1`` GEMV form (``None``: on for ``M = 1`` on GPU).
    num_cores: cores to fill (SMs on GPU); ``None``: the device's, else 132.
    num_warps: Triton warps per program (GPU only).
    num_stages: Triton software-pipelining stages (GPU only).
  """

  block_m: int | None = None
  block_n: int | None = None
  block_k: int | None = None
  split_k: int | None = None
  gemv: bool | None = None
  num_cores: int | None = None
  num_warps: int = 4
  num_stages: int = 3

  def __post_init__(self):
    for f in ("block_m", "block_n", "block_k", "split_k", "num_cores"):
      v = getattr(self, f)
      if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
        raise ValueError(f"{f}={v!r} must be a positive integer or None")
    for f in ("num_warps", "num_stages"):
      v = getattr(self, f)
      if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"{f}={v!r} must be a positive integer")
    if self.gemv is not None and not isinstance(self.gemv, bool):
      raise ValueError(f"gemv={self.gemv!r} must be True, False or None")

  @staticmethod
  def default(backend: Backend) -> "Config":
    """Upper bounds of the table for large M: TPU (128, 256, 512); GPU (64, 128, 64)."""
    if backend == "tpu":
      return Config(block_m=128, block_n=256, block_k=512)
    if backend == "gpu":
      return Config(block_m=64, block_n=128, block_k=64)
    raise ValueError(f"backend={backend!r} must be one of {BACKENDS}")


def resolve_backend(backend: str | None, interpret) -> Backend:
  """The backend whose memory model and defaults a kernel uses.

  ``None`` picks the default JAX platform (``"tpu"`` or ``"gpu"``); on CPU that is only
  allowed with ``interpret`` (Pallas runs on CPU only through the interpreter), and then
  the TPU memory model is used.
  """
  if backend is not None:
    if backend not in BACKENDS:
      raise ValueError(f"backend={backend!r} is unsupported; expected one of {BACKENDS} or None")
    return backend
  platform = jax.default_backend()
  if platform == "tpu":
    return "tpu"
  if platform in ("gpu", "cuda", "rocm"):
    return "gpu"
  if interpret:
    return "tpu"
  raise ValueError(
      f"Pallas kernels need a TPU or GPU; the default platform is {platform!r}. "
      "Pass interpret=True to run them on CPU, or backend='tpu'/'gpu' to lower for one."
  )


@dataclasses.dataclass(frozen=True)
class Blocks:
  """Resolved schedule (internal): block sizes, padded M, split-K factor, GEMV form."""

  bm: int
  bn: int
  bk: int
  m_padded: int
  split: int = 1
  gemv: bool = False


def _round_up(a: int, b: int) -> int:
  return -(-a // b) * b


def _device_cores(backend: Backend) -> int:
  if backend == "gpu":
    try:
      dev = jax.devices()[0]
      if dev.platform in ("gpu", "cuda", "rocm") and getattr(dev, "core_count", None):
        return int(dev.core_count)
    except RuntimeError:
      pass
    return DEFAULT_GPU_CORES
  return 1


def _fits_group(bk: int, group: int | None) -> bool:
  return group is None or bk % group == 0 or group % bk == 0


def _choose_bk(k: int, upper: int, group: int | None, backend: Backend) -> int:
  """Largest power of two ≤ ``upper`` dividing K and compatible with the group; else K."""
  bk = 1 << (max(upper, 1).bit_length() - 1)
  floor = 16 if backend == "gpu" else 8
  while bk >= floor:
    if k % bk == 0 and _fits_group(bk, group):
      return bk
    bk //= 2
  return k


def choose_blocks(backend: Backend, m: int, k: int, n: int, *, num_cores: int | None = None,
                  group: int | None = None, max_bk: int | None = None) -> Config:
  """The config table (module docstring): block sizes and split-K for ``(M, K, N)``.

  Args:
    backend: ``"tpu"`` or ``"gpu"``.
    m, k, n: problem size.
    num_cores: cores to fill (default: the device's, else 132 SMs).
    group: the kernel's group along K (scales/codebooks), or ``None``.
    max_bk: an upper bound on ``bk`` imposed by the kernel (e.g. W8A8 groups on GPU).
  """
  if backend == "tpu":
    bm = min(128, _round_up(m, 8))
    bn = min(256, n)
    bk = _choose_bk(k, min(512, max_bk or 512), group, backend)
    return Config(block_m=bm, block_n=bn, block_k=bk, split_k=1, gemv=False)
  cores = num_cores or _device_cores(backend)
  gemv = m == 1
  bm = 1 if gemv else (16 if m <= 16 else 64)
  bn = min(64 if m <= 64 else 128, n)
  bk = _choose_bk(k, min(64, max_bk or 64), group, backend)
  split = _choose_split(m, k, n, bm, bn, bk, cores)
  return Config(block_m=bm, block_n=bn, block_k=bk, split_k=split, gemv=gemv)


def _choose_split(m: int, k: int, n: int, bm: int, bn: int, bk: int, cores: int) -> int:
  """Smallest power of two S with ``⌈M/bm⌉·(N/bn)·S ≥ cores``, ``S | K/bk``, ≥ 2 K steps each."""
  tiles = (_round_up(m, bm) // bm) * max(n // bn, 1)
  steps = k // bk if k % bk == 0 else 1
  split = 1
  while tiles * split < cores and steps % (2 * split) == 0 and steps // (2 * split) >= 2:
    split *= 2
  return split


def resolve_blocks(config: Config, backend: Backend, m: int, k: int, n: int, *,
                   group: int | None = None, max_bk: int | None = None) -> Blocks:
  """Fill ``None`` fields from the table, shrink blocks to the problem, check divisibility."""
  t = choose_blocks(backend, m, k, n, num_cores=config.num_cores, group=group, max_bk=max_bk)
  gemv = t.gemv if config.gemv is None else config.gemv
  if gemv and (backend != "gpu" or m != 1):
    raise ValueError(f"gemv=True needs backend='gpu' and M=1; got backend={backend!r}, M={m}")
  if gemv:
    bm = 1
  else:
    bm = config.block_m or t.block_m
    if t.gemv:  # the table's bm=1 is for the GEMV form only
      bm = _MIN_BLOCK_M[backend]
    bm = min(max(bm, _MIN_BLOCK_M[backend]), _round_up(m, _MIN_BLOCK_M[backend]))
  bn = min(config.block_n or t.block_n, n)
  bk = min(config.block_k or t.block_k, k)
  if max_bk is not None and config.block_k is None:
    bk = min(bk, max_bk)
  if n % bn:
    raise ValueError(f"block_n={bn} must divide the number of output features N={n}")
  if k % bk:
    raise ValueError(f"block_k={bk} must divide the number of input features K={k}")
  if config.split_k is not None:
    split = config.split_k
  elif backend == "tpu":
    split = 1
  else:
    split = _choose_split(m, k, n, bm, bn, bk, config.num_cores or _device_cores(backend))
  if (k // bk) % split:
    raise ValueError(f"split_k={split} must divide the number of K steps K/block_k = {k}/{bk} = {k // bk}")
  return Blocks(bm=bm, bn=bn, bk=bk, m_padded=_round_up(m, bm), split=split, gemv=gemv)


@dataclasses.dataclass(frozen=True)
class Operand:
  """How one kernel input (other than x, which the driver owns) is tiled.

  Attributes:
    kind: ``"kn"`` — weight-like ``(K / k_div, N / n_div)``, tiled ``(bk / k_div, bn / n_div)``;
      ``"gn"`` — group rows along K ``(K / group, N / n_div)``: all rows of an N block are
      resident and the tile function reads the rows of the current K step;
      ``"m"`` — per-row ``(M, 1)`` (epilogue only); ``"n"`` — per-output-feature ``(1, N)``
      (epilogue only); ``"full"`` — the whole array in every program (codebooks, tensor
      scales), passed to the tile function as its ref; ``"pkn"`` — planes ``(P, K/k_div, N)``
      tiled ``(P, bk/k_div, bn)``, passed as a function ``t ↦`` plane ``t`` of the current step.
    k_div: input features per stored row along K (e.g. ``d`` for VQ indices).
    n_div: output features per stored column (2 for two nibbles per byte).
    group: input features per stored row, for ``"gn"``.
    epilogue: whether the epilogue (rather than the tile function) reads it.
    smem: for ``"full"``: place it in TPU scalar memory (read element by element).
  """

  kind: str
  k_div: int = 1
  n_div: int = 1
  group: int = 0
  epilogue: bool = False
  smem: bool = False


def _block_spec(op: Operand, shape: tuple[int, ...], b: Blocks, backend: Backend, nk_split: int):
  tpu = backend == "tpu"
  if tpu:
    def im(f):
      return lambda s, i, j, kk: f(s, i, j, s * nk_split + kk)
  else:
    def im(f):
      return lambda s, i, j: f(s, i, j, 0)
  if op.kind == "kn":
    if tpu:
      return pl.BlockSpec((b.bk // op.k_div, b.bn // op.n_div), im(lambda s, i, j, k: (k, j)))
    return pl.BlockSpec((shape[0], b.bn // op.n_div), im(lambda s, i, j, k: (0, j)))
  if op.kind == "pkn":
    if tpu:
      return pl.BlockSpec((shape[0], b.bk // op.k_div, b.bn), im(lambda s, i, j, k: (0, k, j)))
    return pl.BlockSpec((shape[0], shape[1], b.bn), im(lambda s, i, j, k: (0, 0, j)))
  if op.kind in ("gn", "n"):
    return pl.BlockSpec((shape[0], b.bn // op.n_div), im(lambda s, i, j, k: (0, j)))
  if op.kind == "m":
    return pl.BlockSpec((b.bm, 1), im(lambda s, i, j, k: (i, 0)))
  if op.kind == "full":
    zeros = (0,) * len(shape)
    spec_kw = dict(memory_space=pltpu.SMEM) if tpu and op.smem else {}
    return pl.BlockSpec(tuple(shape), im(lambda s, i, j, k: zeros), **spec_kw)
  raise ValueError(f"unknown operand kind {op.kind!r}")


def _load(op: Operand, ref, k, b: Blocks, backend: Backend):
  """The slice of ``ref`` that global reduction step ``k`` needs (a ref for full/pkn)."""
  if op.kind == "full":
    return ref
  if op.kind == "pkn":  # a loader of plane t
    if backend == "tpu":
      return lambda t: ref[t]
    w = b.bk // op.k_div
    return lambda t: ref[t, pl.ds(k * w, w), :]
  if op.kind == "kn":
    if backend == "tpu":
      return ref[...]
    w = b.bk // op.k_div
    return ref[pl.ds(k * w, w), :]
  if op.kind == "gn":
    rows = max(b.bk // op.group, 1)
    # lax.div (truncating) rather than //: k ≥ 0, and floor division lowers through
    # `sign`, which Mosaic can only lower for a known TPU generation.
    if b.bk >= op.group:
      start = k * rows
    else:
      start = jax.lax.div(k, op.group // b.bk)
    return ref[pl.ds(start, rows), :]
  raise ValueError(f"operand kind {op.kind!r} is not loaded per K step")


@dataclasses.dataclass(frozen=True)
class Product:
  """What a tile function uses to read x and multiply (one per reduction step).

  ``x(start, size, stride)`` is the activation tile of K columns ``start, start+stride, …``
  (relative to the step): ``(bm, size)``, or ``(size, 1)`` in GEMV form. ``dot(xs, w)`` is
  ``jnp.dot`` with ``acc_dtype`` accumulation, or in GEMV form the elementwise ``xs ⊙ w``
  (``(size, bn)``), which the driver sums over K at the end.
  """

  x_ref: object
  k0: object  # first K column of this step in x_ref's coordinates
  gemv: bool
  acc_dtype: object

  def x(self, start: int = 0, size: int | None = None, stride: int = 1):
    idx = pl.ds(self.k0 + start, size, stride=stride) if stride > 1 else pl.ds(self.k0 + start, size)
    return self.x_ref[idx, :] if self.gemv else self.x_ref[:, idx]

  def dot(self, xs, w):
    if self.gemv:
      return xs.astype(self.acc_dtype) * w.astype(self.acc_dtype)
    return jnp.dot(xs, w, preferred_element_type=self.acc_dtype)


def tiled_matmul(
    tile_fn: Callable,
    epilogue_fn: Callable,
    x: jax.Array,
    operands: Sequence[Operand],
    arrays: Sequence[jax.Array],
    *,
    k: int,
    n: int,
    out_dtype,
    acc_dtype,
    blocks: Blocks,
    backend: Backend,
    config: Config,
    interpret,
    name: str,
    gemv_rows: int | None = None,
) -> jax.Array:
  """``y = epilogue(Σ_k tile_fn(k, tiles, product))`` as a Pallas call (module docstring).

  Args:
    tile_fn: ``(k, tiles, product) -> partial`` of one reduction step (``k`` global) in
      ``acc_dtype``: ``(bm, bn)``, or ``(gemv_rows, bn)`` in GEMV form; ``tiles`` are the
      per-step slices of the non-epilogue operands; ``product`` a ``Product``.
    epilogue_fn: ``(acc, epi) -> y`` final rescaling of the (summed) accumulator; ``epi``
      are the epilogue operands' blocks, or the whole arrays with split-K (broadcastable).
    x: activations ``(M, K)`` (M not yet padded).
    operands, arrays: tiling of each other input and the inputs.
    gemv_rows: rows of the GEMV partial (default ``bk``).
  """
  b = blocks
  m = b.m_padded
  nk = k // b.bk
  nk_split = nk // b.split
  tpu = backend == "tpu"
  gemv = b.gemv
  x_p = pad_rows(x, m)
  if gemv:
    x_p = x_p.T  # (K, 1)
    if jnp.issubdtype(x_p.dtype, jnp.floating) and jnp.dtype(acc_dtype) == jnp.float32:
      x_p = x_p.astype(jnp.float32)  # exact; converted once here instead of per use
    x_spec = pl.BlockSpec((k, 1), lambda s, i, j: (0, 0))
  elif tpu:
    x_spec = pl.BlockSpec((b.bm, b.bk), lambda s, i, j, kk: (i, s * nk_split + kk))
  else:
    x_spec = pl.BlockSpec((b.bm, k), lambda s, i, j: (i, 0))
  specs = [x_spec] + [_block_spec(op, a.shape, b, backend, nk_split) for op, a in zip(operands, arrays)]
  n_in = len(arrays) + 1
  split = b.split > 1
  acc_rows = (gemv_rows or b.bk) if gemv else b.bm

  def body(*refs):
    x_ref, in_refs, o_ref = refs[0], refs[1:n_in], refs[n_in]
    step_ops = [(op, r) for op, r in zip(operands, in_refs) if not op.epilogue]
    epi_refs = [r for op, r in zip(operands, in_refs) if op.epilogue]
    s = pl.program_id(0)

    def partial(kk):
      prod = Product(x_ref, 0 if tpu else kk * b.bk, gemv, acc_dtype)
      return tile_fn(kk, [_load(op, r, kk, b, backend) for op, r in step_ops], prod)

    def finish(acc):
      if gemv:
        acc = jnp.sum(acc, axis=0, keepdims=True)
      if split:
        o_ref[...] = acc.reshape(o_ref.shape).astype(o_ref.dtype)
      else:
        o_ref[...] = epilogue_fn(acc, [r[...] for r in epi_refs]).astype(o_ref.dtype)

    if tpu:
      acc_ref = refs[n_in + 1]
      kl = pl.program_id(3)

      @pl.when(kl == 0)
      def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

      acc_ref[...] += partial(s * nk_split + kl)

      @pl.when(kl == nk_split - 1)
      def _():
        finish(acc_ref[...])
    else:
      acc = jax.lax.fori_loop(
          s * nk_split, (s + 1) * nk_split, lambda kk, a: a + partial(kk),
          jnp.zeros((acc_rows, b.bn), acc_dtype),
      )
      finish(acc)

  grid = (b.split, m // b.bm, n // b.bn)
  if split:
    out_shape = jax.ShapeDtypeStruct((b.split, m, n), acc_dtype)
    out_block = (None, b.bm, b.bn)
    out_idx = lambda s, i, j, *_: (s, i, j)
  else:
    out_shape = jax.ShapeDtypeStruct((m, n), out_dtype)
    out_block = (b.bm, b.bn)
    out_idx = lambda s, i, j, *_: (i, j)
  if tpu:
    grid = grid + (nk_split,)
    scratch = [pltpu.VMEM((acc_rows, b.bn), acc_dtype)]
    params = pltpu.CompilerParams(
        dimension_semantics=("parallel", "parallel", "parallel", "arbitrary"))
  else:
    scratch = []
    params = pltriton.CompilerParams(num_warps=config.num_warps, num_stages=config.num_stages)
  y = pl.pallas_call(
      body,
      out_shape=out_shape,
      grid=grid,
      in_specs=specs,
      out_specs=pl.BlockSpec(out_block, out_idx),
      scratch_shapes=scratch,
      compiler_params=params,
      interpret=interpret,
      name=name,
  )(x_p, *arrays)
  if split:
    epi = [pad_rows(a, m) if op.kind == "m" else a
           for op, a in zip(operands, arrays) if op.epilogue]
    y = epilogue_fn(jnp.sum(y, axis=0), epi).astype(out_dtype)
  return y[: x.shape[0]]


def pad_rows(a: jax.Array, rows: int) -> jax.Array:
  """Pad the first axis of ``a`` with zeros to ``rows`` (no-op if already that long)."""
  if a.shape[0] == rows:
    return a
  return jnp.pad(a, ((0, rows - a.shape[0]),) + ((0, 0),) * (a.ndim - 1))


def check_x(x, k: int, *, name: str = "x", dtypes=(jnp.float32, jnp.bfloat16)) -> None:
  """Raise unless ``x`` is a 2-D ``(M, K)`` array of an allowed dtype (before tracing)."""
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise TypeError(f"{name} must be a jax/numpy array, got {type(x).__name__}")
  if x.ndim != 2:
    raise ValueError(f"{name} must be 2-D (M, K); got shape {tuple(x.shape)}")
  if x.shape[1] != k:
    raise ValueError(f"{name} has K={x.shape[1]} input features but the weight has K={k}")
  if x.shape[0] < 1:
    raise ValueError(f"{name} must have at least one row; got shape {tuple(x.shape)}")
  if jnp.dtype(x.dtype) not in [jnp.dtype(d) for d in dtypes]:
    raise TypeError(f"{name}.dtype={x.dtype} must be one of {[jnp.dtype(d).name for d in dtypes]}")


def check_array(a, name: str, shape: tuple[int, ...], dtypes) -> None:
  """Raise ``ValueError``/``TypeError`` unless ``a`` has ``shape`` and one of ``dtypes``."""
  if tuple(a.shape) != tuple(shape):
    raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(a.shape)}")
  if jnp.dtype(a.dtype) not in [jnp.dtype(d) for d in dtypes]:
    raise TypeError(f"{name}.dtype={a.dtype} must be one of {[jnp.dtype(d).name for d in dtypes]}")


def check_group_blocks(group: int, bk: int, name: str = "group_size") -> None:
  """A K block must hold whole groups, or a group whole K blocks."""
  if not (bk % group == 0 or group % bk == 0):
    raise ValueError(
        f"{name}={group} and block_k={bk} must divide one another (a K block holds whole "
        "groups, or a group spans whole K blocks)"
    )


def apply_group_scale(w: jax.Array, s: jax.Array, group: int) -> jax.Array:
  """``w[r, :] · s[r // group, :]`` for a ``(rows, bn)`` tile and its group rows."""
  rows, bn = w.shape
  if group >= rows:
    return w * s[0:1, :]
  return (w.reshape(rows // group, group, bn) * s[:, None, :]).reshape(rows, bn)


def apply_group(w: jax.Array, s: jax.Array, group: int, op) -> jax.Array:
  """``op(w[r, :], s[r // group, :])`` for a ``(rows, bn)`` tile and its group rows."""
  rows, bn = w.shape
  if group >= rows:
    return op(w, s[0:1, :])
  return op(w.reshape(rows // group, group, bn), s[:, None, :]).reshape(rows, bn)


def resolve_plane_blocks(config: Config, backend: Backend, m: int, k: int, n: int, *,
                         group: int | None, per: int):
  """``resolve_blocks`` for kernels whose tile is ``per`` planes of ``bk/per`` rows (words).

  On GPU with ``M > 1`` each plane is one ``tl.dot``, which needs ≥ 16 rows: when the
  table's ``bk`` is below ``16·per`` (and ``block_k`` is not given), ``bk = 16·per`` if it
  divides K. Returns ``(config, blocks)``.
  """
  blocks = resolve_blocks(config, backend, m, k, n, group=group)
  if (per > 1 and backend == "gpu" and not blocks.gemv and blocks.bk < 16 * per
      and config.block_k is None and k % (16 * per) == 0):
    config = dataclasses.replace(config, block_k=16 * per)
    blocks = resolve_blocks(config, backend, m, k, n, group=group)
  return config, blocks
