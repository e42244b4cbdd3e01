"""Quantize every linear layer of a llama decoder, sequentially or in parallel, with two input statistics.

Sequential (GPTQ's and WaterSIC's setting; Frantar et al., "GPTQ", ICLR 2023, Sec. 4,
"the inputs of each layer are those of the partially quantized model"): the calibration
windows are run through the blocks one at a time. In block ``i`` the linear layers are
quantized in four stages, ``(q, k, v)``, ``(o)``, ``(gate, up)``, ``(down)`` (GPTQ's
"true-sequential" order); each stage's ``H = E[x xᵀ]`` is measured on the block's input as
produced by the **already quantized** blocks ``0 … i−1`` and earlier stages of block ``i``.
The quantized block then produces the next block's input.

Parallel: every ``H`` comes from the reference (unquantized) model, all layers independent.

Both carry a second, held-out set of windows through the same (partially quantized) model,
so each layer also gets a held-out ``H`` on which its distortion ``tr(ΔWᵀ H ΔW)`` can be
measured out of sample.

The block is run in pieces, one per stage (``Block.attention_input``, ``attention``,
``ffn_input``, ``ffn_hidden``, then ``ffn_output``); each piece is one jitted function of
``(block parameters, activations)`` returning its output and its input moment, and its output
is kept for the later pieces, so each block is computed once per stream (not once per stage).
All blocks share one structure, so each piece compiles once per chunk shape, not once per layer.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdq.models.capture import replace_linears, shared_inputs
from rdq.models.llama import Llama

__all__ = ["STAGES", "LayerBatch", "quantize_model"]

STAGES = (("q", "k", "v"), ("o",), ("gate", "up"), ("down",))


@dataclasses.dataclass(frozen=True)
class LayerBatch:
  """Layers handed to the quantizer together (one stage of one block, or all layers in parallel mode).

  Attributes:
    names: layer names, e.g. ``("layer3.q", "layer3.k", "layer3.v")``.
    w: name → reference kernel ``(n, m)`` (float32).
    h: name → calibration ``H`` (float64 ``(n, n)``; layers sharing an input share the array).
    h_heldout: name → held-out ``H`` measured the same way on the held-out windows.
    num_tokens: calibration tokens behind ``h``.
  """

  names: tuple[str, ...]
  w: Mapping[str, np.ndarray]
  h: Mapping[str, np.ndarray]
  h_heldout: Mapping[str, np.ndarray]
  num_tokens: int


def _gram(x: jax.Array) -> jax.Array:
  x2 = x.reshape(-1, x.shape[-1])
  return jnp.einsum("ti,tj->ij", x2, x2, precision=jax.lax.Precision.HIGHEST)


# One jitted piece of the block per stage (``Block.attention_input`` … ``Block.ffn_hidden``): each
# reads what the block's earlier pieces left in a chunk's activations and adds its own output, so
# a block is computed once per stream, whatever the stages (no piece is recomputed for a later stage).
@functools.partial(jax.jit, static_argnums=0)
def _attention_input(graphdef, state, h):
  x = nnx.merge(graphdef, state).attention_input(h)
  return {"x": x}, _gram(x)


@functools.partial(jax.jit, static_argnums=0)
def _attention(graphdef, state, x):
  ctx = nnx.merge(graphdef, state).attention(x)
  return {"ctx": ctx}, _gram(ctx)


@functools.partial(jax.jit, static_argnums=0)
def _ffn_input(graphdef, state, h, ctx):
  a, u = nnx.merge(graphdef, state).ffn_input(h, ctx)
  return {"a": a, "u": u}, _gram(u)


@functools.partial(jax.jit, static_argnums=0)
def _ffn_hidden(graphdef, state, u):
  g = nnx.merge(graphdef, state).ffn_hidden(u)
  return {"g": g}, _gram(g)


@functools.partial(jax.jit, static_argnums=0)
def _ffn_output(graphdef, state, a, g):
  return nnx.merge(graphdef, state).ffn_output(a, g)


# input-owning linear → (piece, the activations it reads, those no later piece reads); in block order
_PIECES = {
    "q": (_attention_input, ("h",), ()),
    "o": (_attention, ("x",), ("x",)),
    "gate": (_ffn_input, ("h", "ctx"), ("h", "ctx")),
    "down": (_ffn_hidden, ("u",), ("u",)),
}


class _Stream:
  """Activations of a set of windows at the current block, in fixed-size chunks.

  Per chunk: the block input ``h`` and the outputs of the block pieces run so far (``x``,
  ``ctx``, ``a``, ``u``, ``g``).
  """

  def __init__(self, model: Llama, ids: np.ndarray, chunk: int):
    if ids.ndim != 2 or ids.shape[0] < 1:
      raise ValueError(f"windows must be a non-empty (w, L) array; got shape {ids.shape}")
    self.chunk = chunk
    self.tokens = int(ids.size)
    emb = model.embed[...]
    self.parts = [{"h": emb[jnp.asarray(ids[s : s + chunk])]} for s in range(0, ids.shape[0], chunk)]

  def moments(self, block, keep: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``H`` of the inputs ``keep`` (input-owning linears, in block order) of ``block``, averaged
    over tokens (float64, symmetrized). Runs the block pieces producing those inputs."""
    graphdef, state = nnx.split(block)
    sums: dict[str, np.ndarray] = {}
    for part in self.parts:
      for k in keep:
        piece, reads, done = _PIECES[k]
        out, m = piece(graphdef, state, *(part[r] for r in reads))
        for r in done:  # at most two per chunk (a and g: 0.7 GB for the full config's 81 920 tokens)
          del part[r]
        part.update(out)
        sums[k] = sums.get(k, 0.0) + np.asarray(m, np.float64)
    return {k: 0.5 * (v + v.T) / self.tokens for k, v in sums.items()}

  def advance(self, block) -> None:
    """Move the chunks to the next block's input: ``block``'s output from the pieces already run."""
    graphdef, state = nnx.split(block)
    self.parts = [{"h": _ffn_output(graphdef, state, p["a"], p["g"])} for p in self.parts]


def _h_by_name(block_idx: int, moments: Mapping[str, np.ndarray], shared: Mapping[str, str], lins) -> dict:
  return {f"layer{block_idx}.{lin}": moments[shared.get(lin, lin)] for lin in lins}


def quantize_model(
    model: Llama,
    calibration: np.ndarray,
    heldout: np.ndarray,
    quantize: Callable[[LayerBatch], Mapping[str, np.ndarray]],
    *,
    sequential: bool = True,
    chunk: int = 8,
) -> Llama:
  """A copy of ``model`` with every linear kernel replaced by ``quantize``'s output.

  Args:
    model: the reference decoder (unchanged).
    calibration: ``(w, L)`` token windows for the calibration ``H``.
    heldout: ``(w', L')`` token windows for the held-out ``H``.
    quantize: called once per stage of each block (sequential) or once per block with all
      seven layers (parallel); returns name → ``Ŵ`` for every name of its ``LayerBatch``.
    sequential: the sequential scheme of the module docstring; False: all ``H`` from the
      reference model.
    chunk: windows per jitted block call.

  Raises:
    ValueError: bad window arrays, or ``quantize`` returning the wrong layers.
  """
  if not (isinstance(chunk, int) and chunk >= 1):
    raise ValueError(f"{chunk=} must be a positive integer")
  shared = shared_inputs(model)
  cal, held = _Stream(model, np.asarray(calibration), chunk), _Stream(model, np.asarray(heldout), chunk)
  ref = {name: np.asarray(k) for name, k in _kernels(model).items()}
  new: dict[str, np.ndarray] = {}
  for i in range(model.config.num_layers):
    ref_block = getattr(model, f"layer{i}")
    stages = STAGES if sequential else (tuple(lin for st in STAGES for lin in st),)
    block = ref_block
    for lins in stages:
      owners = {shared.get(lin, lin) for lin in lins}
      keep = tuple(k for k in _PIECES if k in owners)
      mc, mh = cal.moments(block, keep), held.moments(block, keep)
      names = tuple(f"layer{i}.{lin}" for lin in lins)
      batch = LayerBatch(
          names=names, w={n: ref[n] for n in names}, h=_h_by_name(i, mc, shared, lins),
          h_heldout=_h_by_name(i, mh, shared, lins), num_tokens=cal.tokens,
      )
      got = dict(quantize(batch))
      if set(got) != set(names):
        raise ValueError(f"quantize returned layers {sorted(got)}; expected {sorted(names)}")
      new.update(got)
      if sequential:
        block = _with_kernels(block, {n.split(".")[1]: got[n] for n in names})
    # the next block's input: from the quantized block (sequential) or the reference (parallel)
    cal.advance(block)
    held.advance(block)
  return replace_linears(model, new)


def _with_kernels(block, kernels: Mapping[str, np.ndarray]):
  """A copy of one block with some linear kernels replaced (no checks: ``replace_linears`` checks at the end)."""
  graphdef, state = nnx.split(block)
  pure = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
  for lin, w in kernels.items():
    pure[lin]["kernel"] = jnp.asarray(w, jnp.float32)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)


def _kernels(model):
  from rdq.models.capture import linear_kernels

  return linear_kernels(model)
