"""Functional access to a model's linear layers: read, replace, and capture their inputs.

One interface for both real models, MiniLM-L6 (``rdq.models.bert.MiniLM``) and the llama
decoder SmolLM2-135M (``rdq.models.llama.Llama``). A model serves it when

* ``model.config.linear_shapes()`` maps every linear layer name ``"{block}.{linear}"`` to its
  kernel shape ``(n, m)``, and ``getattr(getattr(model, block), linear).kernel`` is that kernel;
* ``model.hidden_states(input_ids, attention_mask, capture=True)`` returns
  ``(h, {name: input of that layer, (b, s, n)})``;
* ``type(model).SHARED_INPUTS`` maps a linear to the linear whose input it shares (MiniLM:
  key and value read the query's input; llama: k, v read q's and up reads gate's).

MiniLM layers are ``layer{i}.{query,key,value,attn_out,ffn_in,ffn_out}`` (``y = x W + b``),
llama layers ``layer{i}.{q,k,v,o,gate,up,down}`` (``y = x W``); always ``W: (n, m) =
(in_features, out_features)``. For a weight-only
quantizer the output error on input ``x`` is ``(W − Ŵ)ᵀ x``, so its mean square over the
calibration tokens is

.. math::
   \\mathbb{E}\\|(W-\\hat W)^\\top x\\|^2 = \\mathrm{tr}\\big((W-\\hat W)^\\top H (W-\\hat W)\\big),
   \\qquad H = \\mathbb{E}[x x^\\top] = \\frac1T \\sum_{t=1}^{T} x_t x_t^\\top,

with the (uncentred) second moment ``H`` taken over the ``T`` non-padding tokens. The bias is
not quantized, so it cancels. ``second_moments`` estimates every layer's ``H``; layers that
share an input (query, key and value read the same hidden state) share one ``H``.

References:
  E. Frantar et al., "GPTQ", ICLR 2023 (arXiv 2210.17323), Sec. 3, eq. (1): the layer-wise
  objective ``‖WX − ŴX‖²`` whose Hessian is ``2XXᵀ`` (here normalized per token).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from rdq.models.bert import MiniLM, tokenize
from rdq.models.minilm import load_tokenizer

__all__ = [
    "CalibrationStats", "capture_inputs", "linear_kernels", "replace_linears", "second_moments",
    "second_moments_of_batches", "shared_inputs",
]

# MiniLM: layers whose input is another layer's input (so they share H).
_SHARED_INPUT = {"key": "query", "value": "query"}


def shared_inputs(model) -> dict[str, str]:
  """Linear name → the linear whose input it reads (``type(model).SHARED_INPUTS``; MiniLM's by default)."""
  return dict(getattr(type(model), "SHARED_INPUTS", _SHARED_INPUT))


def linear_kernels(model) -> dict[str, Float[Array, "n m"]]:
  """Every linear layer's kernel ``W: (in_features, out_features)``, in forward order."""
  out = {}
  for name in model.config.linear_shapes():
    block, lin = name.split(".")
    out[name] = getattr(getattr(model, block), lin).kernel[...]
  return out


def replace_linears(model, kernels: Mapping[str, Float[Array, "n m"]]) -> MiniLM:
  """A new model whose named linear kernels are replaced; ``model`` itself is unchanged.

  Functional: splits ``model`` into ``(graphdef, state)``, builds a new parameter tree with
  the given kernels and merges it. Biases, LayerNorms and embeddings stay as they are.

  Args:
    model: the source model.
    kernels: layer name → new kernel ``(n, m)`` with the same shape as the old one, e.g. the
      dequantized ``Ŵ`` of a layer algorithm.

  Raises:
    ValueError: an unknown layer name, a shape mismatch, or non-finite entries (naming the
      layer).
    TypeError: a kernel that is not a floating-point array.
  """
  shapes = model.config.linear_shapes()
  checked = {}
  for name, w in kernels.items():
    if name not in shapes:
      raise ValueError(f"unknown linear layer {name!r}; expected one of {list(shapes)[:6]}… ({len(shapes)} layers)")
    w = jnp.asarray(w)
    if not jnp.issubdtype(w.dtype, jnp.floating):
      raise TypeError(f"kernel for {name!r} has dtype {w.dtype}; expected a floating-point array")
    if tuple(w.shape) != shapes[name]:
      raise ValueError(f"kernel for {name!r} has shape {tuple(w.shape)}; expected (n, m) = {shapes[name]}")
    if not isinstance(w, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(w))):
      raise ValueError(f"kernel for {name!r} has non-finite (NaN/Inf) entries")
    checked[name] = w.astype(jnp.float32)
  graphdef, state = nnx.split(model)
  pure = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
  for name, w in checked.items():
    block, lin = name.split(".")
    pure[block][lin]["kernel"] = w
  new_state = nnx.split(model)[1]
  nnx.replace_by_pure_dict(new_state, pure)
  return nnx.merge(graphdef, new_state)


@functools.partial(jax.jit, static_argnums=0)
def _capture(graphdef, state, ids, mask):
  _, captured = nnx.merge(graphdef, state).hidden_states(ids, mask, capture=True)
  return captured


def capture_inputs(
    model: MiniLM, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"]
) -> dict[str, Float[np.ndarray, "tokens n"]]:
  """Every linear layer's input activations at the non-padding tokens.

  Args:
    model: the encoder.
    input_ids: token ids, ``(batch, seq)``.
    attention_mask: 1 at real tokens, 0 at padding.

  Returns:
    layer name → float32 array ``(T, n)`` with one row per real token (row-major over
    batch, then position), ``T = attention_mask.sum()``.
  """
  ids, mask = np.asarray(input_ids), np.asarray(attention_mask)
  if ids.shape != mask.shape or ids.ndim != 2:
    raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes")
  graphdef, state = nnx.split(model)
  captured = _capture(graphdef, state, jnp.asarray(ids), jnp.asarray(mask))
  keep = mask.astype(bool)
  return {k: np.asarray(v)[keep] for k, v in captured.items()}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _moments(graphdef, state, ids, mask, skip: tuple[str, ...]):
  _, captured = nnx.merge(graphdef, state).hidden_states(ids, mask, capture=True)
  w = mask.astype(jnp.float32)
  out = {}
  for name, x in captured.items():
    if name.split(".")[1] in skip:
      continue
    x = x.reshape(-1, x.shape[-1])
    xw = x * w.reshape(-1, 1)
    out[name] = jnp.einsum("ti,tj->ij", xw, x, precision=jax.lax.Precision.HIGHEST)
  return out


@dataclasses.dataclass(frozen=True)
class CalibrationStats:
  """Second moments of every linear layer's input.

  Attributes:
    h: layer name → ``H = E[x xᵀ]`` as float64 ``(n, n)``, averaged over real tokens.
    num_tokens: number of (non-padding) tokens ``T`` averaged over.
    num_sentences: number of calibration passages.
  """

  h: Mapping[str, np.ndarray]
  num_tokens: int
  num_sentences: int


def second_moments_of_batches(model, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> CalibrationStats:
  """``H = (1/T) Σ_t x_t x_tᵀ`` of every linear layer's input over the real tokens of ``batches``.

  Per-batch sums are computed in float32 under ``jit`` (one compilation per batch shape) and
  accumulated in float64; the result is symmetrized.

  Args:
    model: any model serving the interface of this module (MiniLM or llama).
    batches: ``(input_ids, attention_mask)`` pairs of shape ``(b, s)``; the mask is 1 at real
      tokens (for the causal llama, a prefix of each row).

  Returns:
    ``CalibrationStats`` with one ``H`` per linear layer (layers sharing an input share one
    array; do not modify it in place); ``num_sentences`` counts the rows.

  Raises:
    ValueError: no batch, mismatched shapes, or no real token.
  """
  shared = shared_inputs(model)
  skip = tuple(sorted(shared))
  graphdef, state = nnx.split(model)
  sums: dict[str, np.ndarray] = {}
  tokens = rows = 0
  for ids, mask in batches:
    ids, mask = np.asarray(ids), np.asarray(mask)
    if ids.shape != mask.shape or ids.ndim != 2:
      raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be equal 2-D shapes")
    part = _moments(graphdef, state, jnp.asarray(ids), jnp.asarray(mask), skip)
    for k, v in part.items():
      sums[k] = sums.get(k, 0.0) + np.asarray(v, np.float64)
    tokens += int(mask.sum())
    rows += ids.shape[0]
  if rows == 0:
    raise ValueError("batches is empty: need at least one (input_ids, attention_mask) batch")
  if tokens == 0:
    raise ValueError("the attention masks mark no real token")
  own = {k: 0.5 * (v + v.T) / tokens for k, v in sums.items()}
  h = {}
  for name in model.config.linear_shapes():
    block, lin = name.split(".")
    h[name] = own[f"{block}.{shared.get(lin, lin)}"]  # shared inputs: the same array
  return CalibrationStats(h=h, num_tokens=tokens, num_sentences=rows)


def second_moments(
    model: MiniLM, sentences: Sequence[str], tokenizer=None, batch_size: int = 64
) -> CalibrationStats:
  """MiniLM: ``H = (1/T) Σ_t x_t x_tᵀ`` of every linear layer's input over the calibration tokens.

  Passages are sorted by length and padded per batch (``second_moments_of_batches``).

  Args:
    model: the encoder.
    sentences: calibration passages.
    tokenizer: defaults to the model's tokenizer.
    batch_size: passages per forward pass.

  Returns:
    ``CalibrationStats`` with one ``H`` per linear layer (query, key and value share one
    array; do not modify it in place).
  """
  if not (isinstance(batch_size, int) and batch_size >= 1):
    raise ValueError(f"{batch_size=} must be a positive integer")
  sentences = list(sentences)
  if not sentences:
    raise ValueError("sentences must be non-empty")
  if tokenizer is None:
    tokenizer = load_tokenizer(max_seq_length=model.config.max_seq_length)
  lengths = [len(e.ids) for e in tokenizer.encode_batch(sentences)]
  order = np.argsort(lengths, kind="stable")
  batches = (
      tokenize(tokenizer, [sentences[i] for i in order[start : start + batch_size]])
      for start in range(0, len(sentences), batch_size)
  )
  return second_moments_of_batches(model, batches)
