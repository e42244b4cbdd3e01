"""A llama-architecture causal decoder in flax nnx: SmolLM2-135M from its GGUF file, and perplexity.

Forward pass for a window of token ids ``t_1 … t_s`` (Touvron et al., "LLaMA", arXiv
2302.13971, Sec. 2.2):

.. math::
   h^{(0)} = E[t], \\qquad
   a = h + \\mathrm{Attn}(\\mathrm{RMS}(h))\\,W_o, \\qquad
   h' = a + \\big(\\mathrm{SiLU}(u W_g) \\odot u W_u\\big) W_d,\\; u = \\mathrm{RMS}(a),

with ``RMS(x) = x / sqrt(mean(x²) + ε) · g`` (Zhang & Sennrich 2019), SwiGLU (Shazeer 2020,
eq. 5), and logits ``RMS(h^{(L)}) Eᵀ`` (tied embeddings). Attention is causal and
grouped-query (Ainslie et al., "GQA", arXiv 2305.13245): query head ``j`` reads key/value head
``j // (H / H_kv)``; scores ``q·k / √d_h``.

RoPE (Su et al., "RoFormer", arXiv 2104.09864, eq. 34) rotates **adjacent pairs**
``(x_{2i}, x_{2i+1})`` of each query and key head by ``p · θ^{-2i/d_h}`` at position ``p``
(0-based). This is ggml's ``GGML_ROPE_TYPE_NORM``, the convention of llama tensors in GGUF
files, whose query/key rows llama.cpp's converter permuted from Hugging Face's rotate-half
layout (see ``rdq.models.gguf``). ``rope(..., interleaved=False)`` is the rotate-half variant;
with GGUF weights it still gives finite logits, only a much worse perplexity (tested).

Linear layers ``layer{i}.{q,k,v,o,gate,up,down}`` compute ``y = x W`` (no bias) with ``W: (n,
m) = (in_features, out_features)``; ``hidden_states(..., capture=True)`` returns each one's
input, so ``rdq.models.capture`` serves this model and MiniLM through one interface.

Perplexity (``perplexity``): the text is cut into non-overlapping windows of ``L`` tokens;
in each window token ``t_{p+1}`` is predicted from ``t_1 … t_p`` (``L − 1`` predictions per
window, no context carried across windows). ``PPL = exp(mean NLL)`` in nats per token over
all predictions; its standard error comes from the per-window mean NLLs (windows are the
independent units): ``se(mean NLL) = std_w / √W`` and ``se(PPL) ≈ PPL · se(mean NLL)``
(delta method).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from rdq.models.gguf import LlamaConfig, build_tokenizer, load_gguf, missing_bytes

__all__ = ["Llama", "Perplexity", "from_gguf", "load_tokenizer", "perplexity", "rope", "text_windows", "token_nll", "windows"]

_LINEARS = ("q", "k", "v", "o", "gate", "up", "down")


class Linear(nnx.Module):
  """``y = x W`` with ``W: (n, m) = (in_features, out_features)`` and no bias."""

  def __init__(self, n: int, m: int, *, rngs: nnx.Rngs):
    self.kernel = nnx.Param(0.02 * jax.random.normal(rngs.params(), (n, m), jnp.float32))

  def __call__(self, x: Float[Array, "*b n"]) -> Float[Array, "*b m"]:
    return x @ self.kernel[...]


def rms_norm(x: Float[Array, "*b d"], g: Float[Array, " d"], eps: float) -> Float[Array, "*b d"]:
  """``x / sqrt(mean(x²) + ε) · g`` over the last axis."""
  return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps) * g


def rope(x: Float[Array, "b s h e"], theta: float, interleaved: bool = True) -> Float[Array, "b s h e"]:
  """Rotary position embedding at positions ``0 … s−1``.

  ``interleaved=True`` (GGUF llama, ggml ``NORM``): pairs ``(x_{2i}, x_{2i+1})``.
  ``interleaved=False`` (Hugging Face rotate-half, GPT-NeoX): pairs ``(x_i, x_{i+e/2})``.
  Pair ``i`` turns by ``p · θ^{-2i/e}``.
  """
  s, e = x.shape[1], x.shape[-1]
  freq = theta ** (-jnp.arange(0, e, 2, dtype=jnp.float32) / e)  # (e/2,)
  ang = jnp.arange(s, dtype=jnp.float32)[:, None] * freq[None, :]  # (s, e/2)
  cos, sin = jnp.cos(ang)[None, :, None, :], jnp.sin(ang)[None, :, None, :]
  if interleaved:
    x0, x1 = x[..., 0::2], x[..., 1::2]
    return jnp.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1).reshape(x.shape)
  x0, x1 = x[..., : e // 2], x[..., e // 2 :]
  return jnp.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)


class Block(nnx.Module):
  """One pre-norm decoder block: grouped-query causal attention, then SwiGLU."""

  def __init__(self, config: LlamaConfig, *, rngs: nnx.Rngs, interleaved: bool = True):
    d, f, kv = config.hidden_size, config.intermediate_size, config.num_kv_heads * config.head_dim
    self.q = Linear(d, d, rngs=rngs)
    self.k = Linear(d, kv, rngs=rngs)
    self.v = Linear(d, kv, rngs=rngs)
    self.o = Linear(d, d, rngs=rngs)
    self.gate = Linear(d, f, rngs=rngs)
    self.up = Linear(d, f, rngs=rngs)
    self.down = Linear(f, d, rngs=rngs)
    self.attn_norm = nnx.Param(jnp.ones((d,), jnp.float32))
    self.ffn_norm = nnx.Param(jnp.ones((d,), jnp.float32))
    self.config = config
    self.interleaved = interleaved

  # The block in four pieces, one per quantization stage of ``rdq.models.sequential`` (each
  # piece's output is the next linear group's input): ``__call__`` is their composition.
  def attention_input(self, h: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
    """``x = RMS(h)``: the input of q, k and v."""
    return rms_norm(h, self.attn_norm[...], self.config.rms_eps)

  def attention(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
    """Causal grouped-query attention of ``x`` before ``W_o`` (the input of o)."""
    c = self.config
    b, s, d = x.shape
    nh, nkv, e = c.num_heads, c.num_kv_heads, c.head_dim
    q = rope(self.q(x).reshape(b, s, nh, e), c.rope_theta, self.interleaved)
    k = rope(self.k(x).reshape(b, s, nkv, e), c.rope_theta, self.interleaved)
    v = self.v(x).reshape(b, s, nkv, e)
    q = q.reshape(b, s, nkv, nh // nkv, e)  # query head j = kv head j // group, member j % group
    scores = jnp.einsum("bqkge,bpke->bkgqp", q, k) / jnp.sqrt(jnp.float32(e))
    causal = jnp.tril(jnp.ones((s, s), bool))
    scores = jnp.where(causal, scores, jnp.finfo(jnp.float32).min)
    return jnp.einsum("bkgqp,bpke->bqkge", jax.nn.softmax(scores, axis=-1), v).reshape(b, s, d)

  def ffn_input(self, h: Float[Array, "b s d"], ctx: Float[Array, "b s d"]) -> tuple[Float[Array, "b s d"], Float[Array, "b s d"]]:
    """``(a, u)``: the residual after attention ``a = h + ctx W_o`` and ``u = RMS(a)``, the input of gate and up."""
    a = h + self.o(ctx)
    return a, rms_norm(a, self.ffn_norm[...], self.config.rms_eps)

  def ffn_hidden(self, u: Float[Array, "b s d"]) -> Float[Array, "b s f"]:
    """``SiLU(u W_g) ⊙ u W_u``: the input of down."""
    return jax.nn.silu(self.gate(u)) * self.up(u)

  def ffn_output(self, a: Float[Array, "b s d"], g: Float[Array, "b s f"]) -> Float[Array, "b s d"]:
    """The block's output ``a + g W_d``."""
    return a + self.down(g)

  def __call__(self, h: Float[Array, "b s d"], taps: dict | None) -> Float[Array, "b s d"]:
    x = self.attention_input(h)
    ctx = self.attention(x)
    a, u = self.ffn_input(h, ctx)
    g = self.ffn_hidden(u)
    if taps is not None:
      taps.update(q=x, k=x, v=x, o=ctx, gate=u, up=u, down=g)
    return self.ffn_output(a, g)


class Llama(nnx.Module):
  """Llama-architecture decoder with tied embeddings (blocks ``layer0 …``).

  Build with random weights (``Llama(config, rngs=nnx.Rngs(0))``) or load SmolLM2-135M with
  ``from_gguf()``. ``SHARED_INPUTS``: layers that read another layer's input (one ``H``).
  """

  SHARED_INPUTS = {"k": "q", "v": "q", "up": "gate"}

  def __init__(self, config: LlamaConfig = LlamaConfig(), *, rngs: nnx.Rngs, interleaved_rope: bool = True):
    self.config = config
    self.embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (config.vocab_size, config.hidden_size), jnp.float32))
    self.norm = nnx.Param(jnp.ones((config.hidden_size,), jnp.float32))
    for i in range(config.num_layers):
      setattr(self, f"layer{i}", Block(config, rngs=rngs, interleaved=interleaved_rope))

  def hidden_states(
      self, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"] | None = None, capture: bool = False
  ) -> tuple[Float[Array, "b s d"], dict[str, Float[Array, "b s _"]]]:
    """Final hidden states (before the last RMSNorm) and, if ``capture``, every linear layer's input.

    ``attention_mask`` is accepted for interface parity with MiniLM and must mark a prefix
    of each window (right padding): attention is causal, so real tokens never see padding.
    """
    h = self.embed[...][input_ids]
    captured: dict[str, Array] = {}
    for i in range(self.config.num_layers):
      taps = {} if capture else None
      h = getattr(self, f"layer{i}")(h, taps)
      if capture:
        captured.update({f"layer{i}.{k}": v for k, v in taps.items()})
    return h, captured

  def logits(self, h: Float[Array, "*b d"]) -> Float[Array, "*b V"]:
    """Tied head: ``RMS(h) Eᵀ``."""
    return rms_norm(h, self.norm[...], self.config.rms_eps) @ self.embed[...].T

  def __call__(self, input_ids: Int[Array, "b s"]) -> Float[Array, "b s V"]:
    return self.logits(self.hidden_states(input_ids)[0])


@functools.lru_cache(maxsize=1)
def _packaged():
  """The packaged SmolLM2-135M, read, checked and dequantized once per process."""
  return load_gguf()


def from_gguf(path=None, *, interleaved_rope: bool = True) -> Llama:
  """SmolLM2-135M (or the llama GGUF at ``path``) as an nnx ``Llama`` with dequantized float32 weights.

  ``interleaved_rope=False`` builds the same weights with the rotate-half RoPE (the wrong
  convention for GGUF tensors; for tests). The packaged file is read once per process.
  """
  weights = _packaged() if path is None else load_gguf(path)
  return _from_weights(weights.config, weights.params, interleaved_rope)


def _from_weights(config: LlamaConfig, params: dict[str, Any], interleaved_rope: bool = True) -> Llama:
  model = nnx.eval_shape(lambda: Llama(config, rngs=nnx.Rngs(0), interleaved_rope=interleaved_rope))
  state = nnx.state(model)
  pure = jax.tree.map(jnp.asarray, params)
  nnx.replace_by_pure_dict(state, pure)
  nnx.update(model, state)
  return model


def load_tokenizer(path=None):
  """The byte-level BPE tokenizer of SmolLM2-135M (or of the GGUF at ``path``)."""
  weights = _packaged() if path is None else load_gguf(path)
  return build_tokenizer(weights.tokenizer)


def windows(ids: Int[np.ndarray, " T"], length: int, vocab_size: int, context_length: int) -> Int[np.ndarray, "w length"]:
  """Cut a token stream into ``⌊T/L⌋`` non-overlapping windows of ``L`` tokens (the tail is dropped).

  Raises:
    ValueError: ``length`` < 2 or above ``context_length``; fewer than ``length`` tokens
      (e.g. empty text); token ids outside ``[0, vocab_size)``.
  """
  ids = np.asarray(ids)
  if not (isinstance(length, (int, np.integer)) and 2 <= length):
    raise ValueError(f"window length={length!r} must be an integer ≥ 2")
  if length > context_length:
    raise ValueError(f"window length={length} exceeds the model's context_length={context_length}")
  if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
    raise ValueError(f"token ids must be a 1-D integer array; got shape {ids.shape}, dtype {ids.dtype}")
  if ids.size < length:
    raise ValueError(f"the text has {ids.size} tokens, fewer than one window of {length} (empty text?)")
  bad = (ids < 0) | (ids >= vocab_size)
  if bad.any():
    raise ValueError(f"token id {int(ids[np.argmax(bad)])} is outside [0, {vocab_size}) ({int(bad.sum())} such ids)")
  w = ids.size // length
  return ids[: w * length].reshape(w, length).astype(np.int32)


@functools.partial(jax.jit, static_argnums=0)
def _nll(graphdef, state, ids):
  model = nnx.merge(graphdef, state)
  h, _ = model.hidden_states(ids)

  def one(args):
    hw, tw = args
    logits = model.logits(hw[:-1])
    lse = jax.nn.logsumexp(logits, axis=-1)
    return lse - jnp.take_along_axis(logits, tw[1:, None], axis=-1)[:, 0]

  return jax.lax.map(one, (h, ids))


def token_nll(model: Llama, ids: Int[np.ndarray, "w L"], batch_size: int = 8) -> Float[np.ndarray, "w L-1"]:
  """Negative log-likelihood (nats) of tokens ``2 … L`` of every window given the preceding ones.

  Batches of ``batch_size`` windows go through one jitted function (the last batch is padded
  with copies of the first window, so every batch has one shape and compiles once).
  """
  ids = np.asarray(ids, np.int32)
  c = model.config
  if ids.ndim != 2 or ids.shape[1] < 2:
    raise ValueError(f"ids must be (windows, L ≥ 2); got shape {ids.shape}")
  if ids.shape[1] > c.context_length:
    raise ValueError(f"window length {ids.shape[1]} exceeds the model's context_length={c.context_length}")
  if ids.size and (ids.min() < 0 or ids.max() >= c.vocab_size):
    raise ValueError(f"token ids must lie in [0, {c.vocab_size}); got range [{ids.min()}, {ids.max()}]")
  graphdef, state = nnx.split(model)
  out = []
  for start in range(0, ids.shape[0], batch_size):
    part = ids[start : start + batch_size]
    pad = batch_size - part.shape[0]
    if pad:
      part = np.concatenate([part, np.repeat(ids[:1], pad, axis=0)])
    out.append(np.asarray(_nll(graphdef, state, jnp.asarray(part)))[: batch_size - pad])
  return np.concatenate(out).astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Perplexity:
  """``exp(mean NLL)`` over windows, with standard errors over windows.

  Attributes:
    ppl: perplexity.
    ppl_stderr: ``ppl · nll_stderr`` (delta method).
    nll: mean NLL in nats per predicted token.
    nll_stderr: standard error of the mean over the per-window mean NLLs.
    num_windows, window_length, num_predictions: what was averaged.
  """

  ppl: float
  ppl_stderr: float
  nll: float
  nll_stderr: float
  num_windows: int
  window_length: int
  num_predictions: int

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def perplexity(model: Llama, ids: Int[np.ndarray, "w L"], batch_size: int = 8) -> Perplexity:
  """Perplexity of ``model`` on windows ``ids`` (see the module docstring)."""
  nll = token_nll(model, ids, batch_size)
  per_window = nll.mean(axis=1)
  w = per_window.size
  mean = float(nll.mean())
  se = float(per_window.std(ddof=1) / np.sqrt(w)) if w > 1 else float("nan")
  ppl = float(np.exp(mean))
  return Perplexity(ppl, ppl * se, mean, se, w, int(ids.shape[1]), int(nll.size))


def text_windows(tokenizer, texts, length: int, config: LlamaConfig) -> Int[np.ndarray, "w length"]:
  """Tokenize each text, concatenate the token streams in order and cut non-overlapping windows of ``length``.

  Raises:
    ValueError: no text or only empty texts, or the errors of ``windows``.
  """
  texts = [texts] if isinstance(texts, str) else list(texts)
  if not texts or not any(texts):
    raise ValueError("texts is empty: need at least one non-empty text to cut windows from")
  missing = missing_bytes(tokenizer)
  if missing:
    for t in texts:
      bad = missing.intersection(t.encode("utf-8"))
      if bad:
        raise ValueError(
            f"the text contains bytes {sorted(hex(b) for b in bad)} that have no token in the vocabulary "
            "(they would be dropped silently); remove or replace those characters"
        )
  ids = np.concatenate([np.asarray(e.ids, np.int64) for e in tokenizer.encode_batch(texts)])
  return windows(ids, length, config.vocab_size, config.context_length)
