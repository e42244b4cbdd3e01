"""Shared machinery of the quantized-matmul kernels: block sizes, backends, the tiled driver.

Every kernel in this package computes ``y = x · dequant(W_q)`` with ``x: (M, K)`` and the
weight ``W: (K, N)`` (``K`` = input features, the reduction dimension; ``N`` = output
features). The kernels differ only in how a ``(block_k, block_n)`` weight tile is decoded
(and, for W8A8, in the accumulator type); the tiling is shared and lives here.

Two memory models, one tile function:

* **TPU (Mosaic)**: grid ``(M/bm, N/bn, K/bk)``; the K axis is ``"arbitrary"`` and the
  partial sums live in a VMEM scratch accumulator that is zeroed at ``k = 0`` and written
  out (through the epilogue) at the last ``k``. Blocks follow the (8, 128) rule.
* **GPU (Triton)**: grid ``(M/bm, N/bn)``; each program holds a K-strip of x and W and
  loops over K in registers with ``lax.fori_loop`` (Triton has no scratch accumulator and
  grid programs run concurrently). Blocks are powers of two ≥ 16 for ``tl.dot``.

Both run on CPU with ``interpret=True`` (the HLO interpreter), which is how the tests run
them. M is padded with zero rows to a multiple of ``block_m`` (the kernels are meant for
any batch, from decode ``M = 1`` up); K and N are fixed by the packed weight and must be
divisible by the block sizes, otherwise a ``ValueError`` is raised before tracing.
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
    "Config",
    "Operand",
    "resolve_backend",
    "resolve_blocks",
    "tiled_matmul",
]

Backend = Literal["tpu", "gpu"]
BACKENDS: tuple[str, ...] = ("tpu", "gpu")

# Minimum rows of an M block: one (8, 128) f32 tile on TPU; tl.dot needs ≥ 16 on GPU.
_MIN_BLOCK_M = {"tpu": 8, "gpu": 16}


@dataclasses.dataclass(frozen=True)
class Config:
  """Block sizes and backend knobs (a static jit argument).

  ``None`` block sizes take the backend default (``Config.default(backend)``); a block
  larger than its dimension shrinks to the dimension (a full-dimension block is always
  legal on TPU). ``block_m`` additionally shrinks to ``M`` rounded up to the backend's
  minimum (8 on TPU, 16 on GPU), so decode (``M = 1``) pads to one small block.

  Attributes:
    block_m: rows of x per program (activation/token dimension).
    block_n: output features per program.
    block_k: input features per reduction step.
    num_warps: Triton warps per program (GPU only).
    num_stages: Triton software-pipelining stages (GPU only).
  """

  block_m: int | None = None
  block_n: int | None = None
  block_k: int | None = None
  num_warps: int = 4
  num_stages: int = 3

  def __post_init__(self):
    for f in ("block_m", "block_n", "block_k"):
      v = getattr(self, f)
      if v is not None and (not isinstance(v, int) or v < 1):
        raise ValueError(f"{f}={v!r} must be a positive integer or None")
    for f in ("num_warps", "num_stages"):
      v = getattr(self, f)
      if not isinstance(v, int) or v < 1:
        raise ValueError(f"{f}={v!r} must be a positive integer")

  @staticmethod
  def default(backend: Backend) -> "Config":
    """Per-backend defaults: TPU (128, 256, 512); GPU (64, 128, 64), 4 warps, 3 stages."""
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
  """Resolved block sizes and the padded M (internal)."""

  bm: int
  bn: int
  bk: int
  m_padded: int


def _round_up(a: int, b: int) -> int:
  return -(-a // b) * b


def resolve_blocks(config: Config, backend: Backend, m: int, k: int, n: int) -> Blocks:
  """Apply defaults, shrink blocks to the problem, and check divisibility of K and N."""
  d = Config.default(backend)
  bm = config.block_m or d.block_m
  bn = min(config.block_n or d.block_n, n)
  bk = min(config.block_k or d.block_k, k)
  bm = min(bm, _round_up(m, _MIN_BLOCK_M[backend]))
  if n % bn:
    raise ValueError(f"block_n={bn} must divide the number of output features N={n}")
  if k % bk:
    raise ValueError(f"block_k={bk} must divide the number of input features K={k}")
  return Blocks(bm=bm, bn=bn, bk=bk, m_padded=_round_up(m, bm))


@dataclasses.dataclass(frozen=True)
class Operand:
  """How one kernel input is tiled.

  Attributes:
    kind: ``"mk"`` — activation-like ``(M, K / k_div)``, tiled ``(bm, bk / k_div)``;
      ``"kn"`` — weight-like ``(K / k_div, N / n_div)``, tiled ``(bk / k_div, bn / n_div)``;
      ``"gn"`` — group rows along K ``(K / group, N / n_div)``: all rows of an N block are
      resident and the tile function reads the rows of the current K step;
      ``"m"`` — per-row ``(M, 1)`` (epilogue only); ``"n"`` — per-output-feature ``(1, N)``
      (epilogue only); ``"full"`` — the whole array in every program (codebooks, tensor
      scales); ``"full_rows"`` — an activation-like ``(bm, K)`` strip; for these two the
      tile function receives the ref and indexes it.
    k_div: input features per stored row/column along K (e.g. ``d`` for VQ indices).
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


def _block_spec(op: Operand, shape: tuple[int, ...], b: Blocks, backend: Backend) -> pl.BlockSpec:
  tpu = backend == "tpu"
  if op.kind == "mk":
    if tpu:
      return pl.BlockSpec((b.bm, b.bk // op.k_div), lambda i, j, k: (i, k))
    return pl.BlockSpec((b.bm, shape[1]), lambda i, j: (i, 0))
  if op.kind == "full_rows":
    return pl.BlockSpec((b.bm, shape[1]), (lambda i, j, k: (i, 0)) if tpu else (lambda i, j: (i, 0)))
  if op.kind == "kn":
    if tpu:
      return pl.BlockSpec((b.bk // op.k_div, b.bn // op.n_div), lambda i, j, k: (k, j))
    return pl.BlockSpec((shape[0], b.bn // op.n_div), lambda i, j: (0, j))
  if op.kind in ("gn", "n"):
    blk = (shape[0], b.bn // op.n_div)
    return pl.BlockSpec(blk, (lambda i, j, k: (0, j)) if tpu else (lambda i, j: (0, j)))
  if op.kind == "m":
    return pl.BlockSpec((b.bm, 1), (lambda i, j, k: (i, 0)) if tpu else (lambda i, j: (i, 0)))
  if op.kind == "full":
    zeros = (0,) * len(shape)
    index_map = (lambda i, j, k: zeros) if tpu else (lambda i, j: zeros)
    if tpu and op.smem:
      return pl.BlockSpec(tuple(shape), index_map, memory_space=pltpu.SMEM)
    return pl.BlockSpec(tuple(shape), index_map)
  raise ValueError(f"unknown operand kind {op.kind!r}")


def _load(op: Operand, ref, k, b: Blocks, backend: Backend):
  """The slice of ``ref`` that reduction step ``k`` needs."""
  if op.kind in ("full", "full_rows"):
    return ref
  if op.kind == "mk":
    if backend == "tpu":
      return ref[...]
    w = b.bk // op.k_div
    return ref[:, pl.ds(k * w, w)]
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


def tiled_matmul(
    tile_fn: Callable,
    epilogue_fn: Callable,
    operands: Sequence[Operand],
    arrays: Sequence[jax.Array],
    *,
    m: int,
    k: int,
    n: int,
    out_dtype,
    acc_dtype,
    blocks: Blocks,
    backend: Backend,
    config: Config,
    interpret,
    name: str,
) -> jax.Array:
  """Run ``y = epilogue(Σ_k tile_fn(k, tiles))`` as a Pallas call (see module docstring).

  Args:
    tile_fn: ``(k, tiles) -> (bm, bn)`` partial product of one reduction step in
      ``acc_dtype``; ``tiles`` are the per-step slices of the non-epilogue operands.
    epilogue_fn: ``(acc, epi_tiles) -> (bm, bn)`` final rescaling of the accumulator.
    operands, arrays: tiling of each input and the inputs (``M`` already padded).
    m, k, n: problem size (``m`` is the padded M).
  """
  b = blocks
  nk = k // b.bk
  tpu = backend == "tpu"
  specs = [_block_spec(op, a.shape, b, backend) for op, a in zip(operands, arrays)]
  n_in = len(arrays)

  def body(*refs):
    in_refs, o_ref = refs[:n_in], refs[n_in]
    step_ops = [(op, r) for op, r in zip(operands, in_refs) if not op.epilogue]
    epi_refs = [r for op, r in zip(operands, in_refs) if op.epilogue]

    def partial(kk):
      return tile_fn(kk, [_load(op, r, kk, b, backend) for op, r in step_ops])

    def finish(acc):
      o_ref[...] = epilogue_fn(acc, [r[...] for r in epi_refs]).astype(o_ref.dtype)

    if tpu:
      acc_ref = refs[n_in + 1]
      kk = pl.program_id(2)

      @pl.when(kk == 0)
      def _():
        acc_ref[...] = jnp.zeros_like(acc_ref)

      acc_ref[...] += partial(kk)

      @pl.when(kk == nk - 1)
      def _():
        finish(acc_ref[...])
    else:
      acc = jax.lax.fori_loop(
          0, nk, lambda kk, a: a + partial(kk), jnp.zeros((b.bm, b.bn), acc_dtype)
      )
      finish(acc)

  if tpu:
    grid = (m // b.bm, n // b.bn, nk)
    out_spec = pl.BlockSpec((b.bm, b.bn), lambda i, j, kk: (i, j))
    scratch = [pltpu.VMEM((b.bm, b.bn), acc_dtype)]
    params = pltpu.CompilerParams(dimension_semantics=("parallel", "parallel", "arbitrary"))
  else:
    grid = (m // b.bm, n // b.bn)
    out_spec = pl.BlockSpec((b.bm, b.bn), lambda i, j: (i, j))
    scratch = []
    params = pltriton.CompilerParams(num_warps=config.num_warps, num_stages=config.num_stages)
  return pl.pallas_call(
      body,
      out_shape=jax.ShapeDtypeStruct((m, n), out_dtype),
      grid=grid,
      in_specs=specs,
      out_specs=out_spec,
      scratch_shapes=scratch,
      compiler_params=params,
      interpret=interpret,
      name=name,
  )(*arrays)


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

