"""The β-index code lengths of ``rdq.experiments.nested_gap`` (entropy-coded side information)."""

import math

import numpy as np

from rdq.experiments.nested_gap import _entropy, huffman_lengths


def test_huffman_lengths_dyadic_and_kraft():
  # Dyadic probabilities: Huffman lengths are exactly −log2 p and the mean length is the entropy.
  p = np.array([0.5, 0.25, 0.125, 0.0625, 0.0625])
  np.testing.assert_array_equal(huffman_lengths(p), -np.log2(p))
  assert math.isclose(float(p @ huffman_lengths(p)), _entropy(p))
  # Any distribution: a complete prefix code (Kraft sum 1), mean length in [H, H + 1).
  rng = np.random.default_rng(0)
  for k in (2, 3, 8, 16):
    q = rng.dirichlet(np.ones(k))
    lens = huffman_lengths(q)
    assert math.isclose(float(np.sum(2.0 ** -lens)), 1.0)
    assert _entropy(q) <= float(q @ lens) < _entropy(q) + 1
  # Unused symbols get no code; a single used symbol costs one bit.
  np.testing.assert_array_equal(huffman_lengths([0.0, 1.0, 0.0]), [0, 1, 0])
