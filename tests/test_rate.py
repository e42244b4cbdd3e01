"""Rate accounting: plug-in entropy, Gaussian code length, and real ANS bytes (constriction)."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from rdq.rate import GAUSSIAN_MODEL_BITS, ans_coded_bits, empirical_entropy_bits, fixed_length_bits, gaussian_code_bits


def test_entropy_known_values():
  x = jnp.array([[0, 1] * 4, list(range(4)) * 2, [5] * 8])
  np.testing.assert_allclose(empirical_entropy_bits(x), [1.0, 2.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(empirical_entropy_bits(x.T, axis=0), [1.0, 2.0, 0.0], atol=1e-6)
  np.testing.assert_allclose(fixed_length_bits(x), [1, 2, 0])


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-5, 5), min_size=24, max_size=24), st.integers(-100, 100))  # one shape: one compile
def test_entropy_matches_numpy_and_is_label_invariant(xs, shift):
  x = np.array(xs)
  _, counts = np.unique(x, return_counts=True)
  p = counts / counts.sum()
  ref = -np.sum(p * np.log2(p))
  h = float(empirical_entropy_bits(jnp.asarray(x)))
  assert h == pytest.approx(ref, abs=1e-5)
  assert float(empirical_entropy_bits(jnp.asarray(x[::-1] * 3 + shift))) == pytest.approx(ref, abs=1e-5)
  assert h <= np.log2(len(counts)) + 1e-5


def test_entropy_histogram_and_sort_paths_agree():
  # Narrow integer rows take the histogram; int32 spans ≥ 2^31 (their offsets wrap), real symbols
  # and rows spanning ≥ N values take the sort. Every path gives numpy's plug-in entropy.
  z = np.random.default_rng(0).integers(-3, 4, size=(5, 64))
  ref = [-np.sum(p * np.log2(p)) for p in (np.unique(r, return_counts=True)[1] / 64 for r in z)]
  for x in (z.astype(np.int32), z.astype(np.int8), (z + 3).astype(np.uint8), (z * 2**29).astype(np.int32),
            z.astype(np.float32) * 0.5, z.astype(np.int32) * 100):
    np.testing.assert_allclose(jax.jit(empirical_entropy_bits)(jnp.asarray(x)), ref, atol=1e-5, err_msg=str(x.dtype))


def _codes(seed, sd, shape=(6, 3000)):
  return np.round(np.random.default_rng(seed).normal(size=shape) * sd).astype(np.int32)


@pytest.mark.parametrize("sd", [0.5, 4.0, 40.0])
def test_ans_payload_matches_entropy(sd):
  z = _codes(0, sd)
  coded = ans_coded_bits(z, "empirical")
  ideal = float(jnp.sum(empirical_entropy_bits(z))) * z.shape[1]
  # ANS: within a few 32-bit words per stream of the ideal length (plus finite precision)
  assert ideal <= coded.payload_bits <= ideal * 1.002 + 64
  assert coded.model_bits == 0 and coded.num_symbols == z.size


@pytest.mark.parametrize("sd", [1.0, 10.0])
def test_ans_gaussian_matches_gaussian_code_bits(sd):
  z = _codes(1, sd)
  coded = ans_coded_bits(z, "gaussian")
  pred = float(jnp.mean(gaussian_code_bits(z))) + GAUSSIAN_MODEL_BITS / z.shape[1]
  assert coded.bits_per_symbol == pytest.approx(pred, rel=3e-3, abs=0.01)
  # cross-entropy ≥ plug-in entropy
  assert float(jnp.mean(gaussian_code_bits(z))) >= float(jnp.mean(empirical_entropy_bits(z)))


def test_entropy_jits_and_vmaps():
  z = jnp.asarray(_codes(2, 3.0, (4, 100)))
  out = jax.jit(jax.vmap(empirical_entropy_bits))(z[None].repeat(2, 0))
  np.testing.assert_allclose(out[0], empirical_entropy_bits(z), rtol=1e-6)


def test_bad_input():
  with pytest.raises(ValueError, match="2-D"):
    ans_coded_bits(np.zeros(5, np.int32))
  with pytest.raises(TypeError, match="integers"):
    ans_coded_bits(np.zeros((2, 5)))
  with pytest.raises(ValueError, match="model"):
    ans_coded_bits(np.zeros((2, 5), np.int32), "laplace")


def test_empty_axis_and_complex_codes_raise():
  from rdq.rate import empirical_entropy_bits, fixed_length_bits, gaussian_code_bits

  for fn in (empirical_entropy_bits, fixed_length_bits, gaussian_code_bits):
    with pytest.raises(ValueError, match=r"zero-length axis"):
      fn(jnp.zeros((3, 0), jnp.int32))
    with pytest.raises(TypeError, match="complex"):
      fn(jnp.zeros((3, 4), jnp.complex64))
