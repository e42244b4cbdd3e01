"""Sequential and parallel H capture for the llama decoder, checked against one-shot capture.

A tiny random llama (2 blocks) stands in for SmolLM2: the machinery is model-size agnostic.
"""

import numpy as np
import pytest

from rdq.models import llama as L
from rdq.models.capture import linear_kernels, replace_linears, second_moments_of_batches, shared_inputs
from rdq.models.sequential import STAGES, quantize_model

from .test_llama import TINY, tiny_params


@pytest.fixture(scope="module")
def setup():
  model = L._from_weights(TINY, tiny_params(5))
  rng = np.random.default_rng(6)
  cal = rng.integers(0, TINY.vocab_size, size=(4, 7)).astype(np.int32)
  held = rng.integers(0, TINY.vocab_size, size=(2, 7)).astype(np.int32)
  return model, cal, held


def _moments(model, ids):
  return second_moments_of_batches(model, [(ids, np.ones_like(ids))]).h


def test_shared_inputs_and_kernels(setup):
  model, cal, _ = setup
  assert shared_inputs(model) == {"k": "q", "v": "q", "up": "gate"}
  h = _moments(model, cal)
  assert h["layer1.k"] is h["layer1.q"] and h["layer0.up"] is h["layer0.gate"]
  assert len(h) == 14 and h["layer0.down"].shape == (TINY.intermediate_size,) * 2
  k = linear_kernels(model)
  assert k["layer1.k"].shape == (24, 12) and k["layer0.down"].shape == (20, 24)


def test_parallel_h_is_the_reference_h(setup):
  model, cal, held = setup
  seen = {}

  def ident(batch):
    seen.update({n: (batch.h[n], batch.h_heldout[n]) for n in batch.names})
    assert batch.num_tokens == cal.size
    return dict(batch.w)

  out = quantize_model(model, cal, held, ident, sequential=False, chunk=2)
  ref, ref_held = _moments(model, cal), _moments(model, held)
  for n, (h, hh) in seen.items():
    np.testing.assert_allclose(h, ref[n], rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(hh, ref_held[n], rtol=2e-5, atol=1e-6)
  for n, w in linear_kernels(out).items():
    np.testing.assert_array_equal(np.asarray(w), np.asarray(linear_kernels(model)[n]))


def test_sequential_h_sees_the_quantized_prefix(setup):
  """Each stage's H equals one-shot capture on the model with every earlier layer already replaced."""
  model, cal, held = setup
  rng = np.random.default_rng(7)
  seen, order = {}, []

  def perturb(batch):
    order.append(batch.names)
    seen.update({n: batch.h[n] for n in batch.names})
    return {n: w + 0.1 * rng.normal(size=w.shape).astype(np.float32) for n, w in batch.w.items()}

  out = quantize_model(model, cal, held, perturb, sequential=True, chunk=4)
  assert order == [tuple(f"layer{i}.{x}" for x in st) for i in range(2) for st in STAGES]
  new = linear_kernels(out)
  names = [n for st in order for n in st]
  for j, stage in enumerate(order):
    done = {n: new[n] for st in order[:j] for n in st}
    h = _moments(replace_linears(model, done) if done else model, cal)
    for n in stage:
      np.testing.assert_allclose(seen[n], h[n], rtol=1e-4, atol=1e-6)
  # and it differs from the reference H once something upstream changed
  assert not np.allclose(seen["layer1.down"], _moments(model, cal)["layer1.down"], rtol=1e-3)
  assert names == list(model.config.linear_shapes())


def test_bad_quantizer_output(setup):
  model, cal, held = setup
  with pytest.raises(ValueError, match="expected"):
    quantize_model(model, cal, held, lambda b: {}, chunk=2)
