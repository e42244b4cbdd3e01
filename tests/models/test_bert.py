"""Flax MiniLM: reproduces independent reference embeddings; pooling, padding, jit."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rdq.models.bert import MiniLM, embed, embed_sentences, tokenize

from .conftest import TINY

DATA = Path(__file__).parent / "data"


def test_matches_reference_embeddings(minilm, tokenizer):
  """Reference: sentence-transformers (torch) via scripts/make_reference_embeddings.py."""
  meta = json.loads((DATA / "reference_sentences.json").read_text())
  ref = np.load(DATA / "reference_embeddings.npy", allow_pickle=False)
  assert ref.shape == (len(meta["sentences"]), 384) and ref.dtype == np.float32
  # The fixture covers a passage longer than the tokenizer.json default of 128 tokens.
  assert [len(e.ids) for e in tokenizer.encode_batch(meta["sentences"])] == meta["num_tokens"]
  assert max(meta["num_tokens"]) > 128
  got = embed_sentences(minilm, meta["sentences"], tokenizer, batch_size=4)
  cos = np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
  assert np.all(cos >= 0.9999), cos
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_padding_does_not_change_embeddings(minilm, tokenizer):
  sents = ["Quantize the weights.", "A much longer sentence that forces the short one to be padded further."]
  alone = np.asarray(embed(minilm, *tokenize(tokenizer, sents[:1], pad_to_multiple=1)))
  both = np.asarray(embed(minilm, *tokenize(tokenizer, sents, pad_to_multiple=64)))
  np.testing.assert_allclose(both[0], alone[0], atol=2e-6)


def test_tiny_model_jit_pool_and_mask(tiny_ids):
  model = MiniLM(TINY, rngs=nnx.Rngs(0))
  ids, mask = tiny_ids
  e = np.asarray(embed(model, ids, mask))
  assert e.shape == (3, TINY.hidden_size)
  np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
  # Mean pooling over real tokens only: the hidden states at padding are ignored.
  h, _ = model.hidden_states(jnp.asarray(ids), jnp.asarray(mask))
  p = (np.asarray(h) * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  np.testing.assert_allclose(e, p / np.linalg.norm(p, axis=1, keepdims=True), atol=1e-5)
  # Changing the ids at padded positions changes nothing.
  ids2 = ids.copy()
  ids2[mask == 0] = 7
  np.testing.assert_allclose(np.asarray(embed(model, ids2, mask)), e, atol=1e-6)


def test_tokenize_pads_to_bucket_and_validates(tokenizer):
  ids, mask = tokenize(tokenizer, ["hello world", "a"], pad_to_multiple=16)
  assert ids.shape == (2, 16) and ids.dtype == np.int32
  assert mask.sum(1).tolist() == [4, 3]  # [CLS] hello world [SEP]; [CLS] a [SEP]
  assert ids[0, 0] == 101 and ids[0, 3] == 102 and ids[0, 4] == 0
  with pytest.raises(ValueError, match="non-empty sequence"):
    tokenize(tokenizer, "just a string")
  with pytest.raises(ValueError, match="pad_to_multiple=0"):
    tokenize(tokenizer, ["x"], pad_to_multiple=0)
