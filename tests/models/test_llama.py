"""SmolLM2-135M in flax: faithfulness to an independent NumPy forward, RoPE convention, bad input.

The real model is loaded once per module (about 6 s); windows are short.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdq.models import llama as L
from rdq.models.gguf import LlamaConfig
from rdq.models.text import play_text

from .llama_reference import FIXTURE, forward, unpermute
from .llama_reference import nll as ref_nll


@pytest.fixture(scope="module")
def model():
  return L.from_gguf()


@pytest.fixture(scope="module")
def tok():
  return L.load_tokenizer()


@pytest.fixture(scope="module")
def fixture():
  return dict(np.load(FIXTURE))


def test_config_from_metadata(model):
  c = model.config
  assert (c.vocab_size, c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.intermediate_size) == (
      49152, 576, 30, 9, 3, 1536)
  assert c.rope_theta == 100000.0 and c.context_length == 8192
  assert abs(c.rms_eps - 1e-5) < 1e-10
  assert len(c.linear_shapes()) == 210


def _logits(model, ids):
  from flax import nnx

  graphdef, state = nnx.split(model)
  return np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, jnp.asarray(ids)), np.float64)


@pytest.fixture(scope="module")
def logits(model, fixture):
  return _logits(model, fixture["ids"])


def test_faithful_to_numpy_reference(logits, fixture):
  """rdq's logits vs the float64 NumPy forward (rotate-half on un-permuted weights)."""
  ids = fixture["ids"]
  nll = np.stack([ref_nll(lg, row) for lg, row in zip(logits, ids)])
  ppl, ref = np.exp(nll.mean()), np.exp(fixture["nll"].mean())
  assert abs(ppl / ref - 1) < 5e-3, (ppl, ref)
  last = logits[:, -1]
  for a, b in zip(last, fixture["last_logits"]):
    cos = float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos >= 0.999, cos
  # measured: |Δ NLL| ≤ 3e-5 nats per token, so the tolerance above is loose by 100×
  assert np.max(np.abs(nll - fixture["nll"])) < 1e-3


def test_wrong_rope_convention_is_finite_but_much_worse(model, fixture):
  """Rotate-half RoPE on GGUF's interleaved q/k rows: finite logits, perplexity ≫ the right one."""
  wrong = L._from_weights(model.config, L._packaged().params, interleaved_rope=False)
  ids = fixture["ids"]
  bad = np.stack([ref_nll(lg, row) for lg, row in zip(_logits(wrong, ids), ids)])
  good = fixture["nll"]
  assert np.all(np.isfinite(bad))
  assert np.exp(bad.mean()) > 1.5 * np.exp(good.mean()), (np.exp(bad.mean()), np.exp(good.mean()))


def test_rope_interleaved_equals_rotate_half_on_permuted_rows():
  """llama.cpp's permute turns rotate-half (HF) weights into interleaved (GGUF) ones: same scores."""
  rng = np.random.default_rng(0)
  heads, e, n, s = 3, 8, 12, 5
  w_hf = rng.normal(size=(heads * e, n))  # (out, in), HF layout
  perm = w_hf.reshape(heads, 2, e // 2, n).swapaxes(1, 2).reshape(heads * e, n)  # convert_hf_to_gguf permute
  np.testing.assert_array_equal(unpermute(perm, heads), w_hf)
  x = rng.normal(size=(1, s, n)).astype(np.float32)
  q_hf = L.rope(jnp.asarray((x @ w_hf.T).reshape(1, s, heads, e), jnp.float32), 10000.0, interleaved=False)
  q_gg = L.rope(jnp.asarray((x @ perm.T).reshape(1, s, heads, e), jnp.float32), 10000.0, interleaved=True)
  # the same vectors up to the fixed permutation of coordinates within each head: equal dot products
  g_hf = np.einsum("bshe,bthe->hst", q_hf, q_hf)
  g_gg = np.einsum("bshe,bthe->hst", q_gg, q_gg)
  np.testing.assert_allclose(g_gg, g_hf, rtol=1e-4, atol=1e-4)
  q_back = np.asarray(q_gg).reshape(s, heads * e) @ np.eye(heads * e)
  np.testing.assert_allclose(unpermute(q_back.T, heads).T, np.asarray(q_hf).reshape(s, heads * e), atol=1e-4)


TINY = LlamaConfig(vocab_size=40, hidden_size=24, num_layers=2, num_heads=6, num_kv_heads=3,
                   intermediate_size=20, rope_theta=500.0, rms_eps=1e-5, context_length=16)


def tiny_params(seed=2):
  from flax import nnx

  rng = np.random.default_rng(seed)
  state = nnx.state(nnx.eval_shape(lambda: L.Llama(TINY, rngs=nnx.Rngs(0))))
  pure = nnx.to_pure_dict(state) if hasattr(nnx, "to_pure_dict") else state.to_pure_dict()
  return jax.tree.map(lambda a: np.asarray(rng.normal(size=a.shape) * 0.3 + (1.0 if a.ndim == 1 else 0.0), np.float32), pure)


@pytest.fixture(scope="module")
def tiny():
  ids = np.random.default_rng(3).integers(0, TINY.vocab_size, size=(3, 9)).astype(np.int32)
  return L._from_weights(TINY, tiny_params()), ids


def test_tiny_model_matches_reference(tiny):
  """The same comparison on a random tiny model with GQA (3 kv heads, 6 query heads)."""
  c = TINY
  m, ids = tiny
  pure = tiny_params()
  got = np.asarray(m(jnp.asarray(ids)))
  for row, g in zip(ids, got):
    np.testing.assert_allclose(g, forward(pure, c, row), rtol=2e-4, atol=2e-4)
  np.testing.assert_allclose(L.token_nll(m, ids, batch_size=2), np.stack([ref_nll(forward(pure, c, r), r) for r in ids]),
                             rtol=1e-4, atol=1e-4)


def test_linear_kernels_are_on_the_q4_1_grid(model):
  """Every 32-group (along the input axis) of a dequantized kernel is d·q + m with q ∈ {0..15}."""
  for name in ("layer0.q", "layer7.k", "layer29.down"):
    b, lin = name.split(".")
    w = np.asarray(getattr(getattr(model, b), lin).kernel[...], np.float64)
    g = w.reshape(w.shape[0] // 32, 32, w.shape[1])
    lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
    step = (hi - lo) / 15
    q = (g - lo) / np.where(step > 0, step, 1)
    assert np.max(np.abs(q - np.round(q))) < 2e-2
    assert np.round(q).min() >= 0 and np.round(q).max() <= 15


_MISSING = frozenset({0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)})


@settings(max_examples=40, deadline=None)
@given(st.text(st.characters(max_codepoint=0x3FFFF, exclude_categories=("Cs",)).filter(lambda c: not _MISSING.intersection(c.encode())), max_size=200))
def test_tokenizer_round_trip_any_text(tok, text):
  """Exact for every text whose UTF-8 bytes all have a token (all but 6 control characters below U+40000)."""
  assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_unencodable_bytes_are_an_error(model, tok):
  from rdq.models.gguf import missing_bytes

  assert missing_bytes(tok) == _MISSING
  assert tok.decode(tok.encode("a\U00040000b").ids) != "a\U00040000b"  # the byte-level BPE drops it
  with pytest.raises(ValueError, match="0xf1"):
    L.text_windows(tok, "To be, or not to be \U00040000" * 20, 8, model.config)


def test_tokenizer_round_trip_play_and_known_tokens(tok):
  text = play_text("macbeth")[:5000]
  ids = tok.encode(text).ids
  assert tok.decode(ids, skip_special_tokens=False) == text
  assert len(ids) < len(text) / 3  # BPE merges: English play text is ~4 chars per token
  assert tok.encode(" the").ids == [260]  # 'Ġthe' (merge 'Ġt he' ranks 9th)
  assert tok.encode("2024").tokens == ["2", "0", "2", "4"]  # smollm pre-tokenizer: single digits


def test_perplexity_standard_error(tiny):
  m, ids = tiny
  nll = L.token_nll(m, ids, batch_size=4)
  p = L.perplexity(m, ids, batch_size=4)
  assert p.num_windows == 3 and p.num_predictions == 3 * 8 and p.window_length == 9
  assert p.nll == pytest.approx(nll.mean()) and p.ppl == pytest.approx(np.exp(nll.mean()))
  assert p.nll_stderr == pytest.approx(nll.mean(axis=1).std(ddof=1) / np.sqrt(3))
  assert p.ppl_stderr == pytest.approx(p.ppl * p.nll_stderr)


def test_bad_windows_and_ids(model, tok):
  c = model.config
  with pytest.raises(ValueError, match="context_length"):
    L.windows(np.arange(10), c.context_length + 1, c.vocab_size, c.context_length)
  with pytest.raises(ValueError, match="empty"):
    L.text_windows(tok, "", 8, c)
  with pytest.raises(ValueError, match="fewer than one window"):
    L.text_windows(tok, "To be", 64, c)
  with pytest.raises(ValueError, match="outside"):
    L.windows(np.array([1, 2, c.vocab_size, 3]), 2, c.vocab_size, c.context_length)
  with pytest.raises(ValueError, match=r"\[0, 49152\)"):
    L.token_nll(model, np.array([[1, -1, 3]]))
  with pytest.raises(ValueError, match="length"):
    L.windows(np.arange(10), 1, c.vocab_size, c.context_length)
