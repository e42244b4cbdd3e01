"""An independent NumPy forward pass of a llama GGUF model, for the faithfulness fixture.

Written separately from ``rdq.models.llama`` and in the other convention: the query/key rows
are first permuted back from GGUF's interleaved-pair layout to Hugging Face's rotate-half
layout (the inverse of llama.cpp's ``convert_hf_to_gguf.py`` ``permute``), then RoPE rotates
``(x_i, x_{i+e/2})``; attention repeats each key/value head ``H/H_kv`` times (HF ``repeat_kv``).
Everything runs in float64.

Regenerate the fixture (``tests/models/data/llama_reference.npz``) with
``python -m tests.models.llama_reference``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).parent / "data" / "llama_reference.npz"


def unpermute(w_out_in: np.ndarray, heads: int) -> np.ndarray:
  """GGUF interleaved rows → HF rotate-half rows: ``(heads, e/2, 2, n) → (heads, 2, e/2, n)``."""
  out, n = w_out_in.shape
  e = out // heads
  return w_out_in.reshape(heads, e // 2, 2, n).swapaxes(1, 2).reshape(out, n)


def forward(params: dict, config, ids: np.ndarray) -> np.ndarray:
  """Logits ``(s, V)`` of one window ``ids`` (float64)."""
  c = config
  f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
  s = len(ids)
  nh, nkv = c.num_heads, c.num_kv_heads
  e = c.hidden_size // nh
  inv = c.rope_theta ** (-np.arange(0, e, 2) / e)
  ang = np.outer(np.arange(s), inv)
  cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=1)
  sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=1)

  def rot(x):  # (heads, s, e), rotate-half
    half = np.concatenate([-x[..., e // 2 :], x[..., : e // 2]], axis=-1)
    return x * cos + half * sin

  def norm(x, g):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + c.rms_eps) * f64(g)

  emb = f64(params["embed"])
  x = emb[ids]
  mask = np.triu(np.full((s, s), -np.inf), 1)
  for i in range(c.num_layers):
    p = params[f"layer{i}"]
    wq = unpermute(f64(p["q"]["kernel"]).T, nh)  # (out, in), HF layout
    wk = unpermute(f64(p["k"]["kernel"]).T, nkv)
    wv = f64(p["v"]["kernel"]).T
    hn = norm(x, p["attn_norm"])
    q = (hn @ wq.T).reshape(s, nh, e).transpose(1, 0, 2)
    k = (hn @ wk.T).reshape(s, nkv, e).transpose(1, 0, 2)
    v = (hn @ wv.T).reshape(s, nkv, e).transpose(1, 0, 2)
    q, k = rot(q), rot(k)
    k = np.repeat(k, nh // nkv, axis=0)
    v = np.repeat(v, nh // nkv, axis=0)
    sc = q @ k.transpose(0, 2, 1) / np.sqrt(e) + mask
    sc = np.exp(sc - sc.max(-1, keepdims=True))
    sc /= sc.sum(-1, keepdims=True)
    att = (sc @ v).transpose(1, 0, 2).reshape(s, nh * e)
    x = x + att @ f64(p["o"]["kernel"])
    hn = norm(x, p["ffn_norm"])
    gt = hn @ f64(p["gate"]["kernel"])
    x = x + (gt / (1 + np.exp(-gt)) * (hn @ f64(p["up"]["kernel"]))) @ f64(p["down"]["kernel"])
  return norm(x, params["norm"]) @ emb.T


def nll(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
  lg = logits[:-1]
  m = lg.max(-1, keepdims=True)
  lse = (m + np.log(np.exp(lg - m).sum(-1, keepdims=True)))[:, 0]
  return lse - lg[np.arange(len(ids) - 1), ids[1:]]


def main():
  from rdq.models.gguf import build_tokenizer, load_gguf
  from rdq.models.text import play_text

  w = load_gguf()
  tok = build_tokenizer(w.tokenizer)
  text = play_text("hamlet")[20000:24000]
  ids = np.asarray(tok.encode(text).ids, np.int32)[: 2 * 96].reshape(2, 96)
  nlls, last = [], []
  for row in ids:
    lg = forward(w.params, w.config, row)
    nlls.append(nll(lg, row))
    last.append(lg[-1])
  np.savez_compressed(FIXTURE, ids=ids, nll=np.stack(nlls), last_logits=np.stack(last).astype(np.float32))
  print(f"wrote {FIXTURE}: ppl {np.exp(np.mean(nlls)):.4f}")


if __name__ == "__main__":
  main()
