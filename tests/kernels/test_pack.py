"""Packing layouts: nibble round trips, byte counts, and pack_* against rdq decode."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

from rdq.checks import checked
from rdq.kernels import bytes_of, pack_fp4, pack_int, pack_int_zero_point
from rdq.kernels.pack import (
  decode_e2m1,
  decode_e4m3,
  decode_e8m0,
  pack_nibbles,
  pack_words,
  unpack_nibbles,
  unpack_words,
  word_constants,
  words_to_planes,
)
from rdq.quantizers import IntQuantizer, get

# Each example has a new shape: jitted, pack and unpack compile as one program each per shape
# instead of one per jnp operation (the functions are traced as they are inside kernels).
_pack_nibbles_jit = jax.jit(pack_nibbles)
_unpack_nibbles_jit = jax.jit(unpack_nibbles, static_argnames="signed")
_pack_words_jit = jax.jit(pack_words, static_argnames=("bits", "signed"))
_unpack_words_jit = jax.jit(unpack_words, static_argnames=("bits", "signed"))


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 9), half_n=st.integers(1, 9), signed=st.booleans(), seed=st.integers(0, 2**16))
def test_nibble_round_trip(k, half_n, signed, seed):
  lo, hi = (-8, 8) if signed else (0, 16)
  v = np.random.default_rng(seed).integers(lo, hi, size=(k, 2 * half_n))
  packed = _pack_nibbles_jit(jnp.asarray(v))
  assert packed.dtype == jnp.uint8 and packed.shape == (k, half_n)
  np.testing.assert_array_equal(np.asarray(_unpack_nibbles_jit(packed, signed=signed)), v)


@jax.jit  # the reference decode as one program per layout, not one per jnp operation
def _decode_int(p):
  if p.layout == "words":
    q = unpack_words(p.codes, bits=p.bits, signed=p.signed)
  else:
    q = unpack_nibbles(p.codes, signed=p.signed) if p.layout == "nibbles" else p.codes.astype(jnp.int32)
  s = jnp.repeat(p.scales.astype(jnp.float32), p.group_size, axis=0)
  return q * s


def test_pack_int_decodes_to_rdq(key):
  w = jax.random.normal(key, (128, 64))
  for q, layout in [(IntQuantizer(4, "block", 32), "nibbles"), (IntQuantizer(4, "block", 32), "int4"),
                    (IntQuantizer(8, "row"), "int8"), (IntQuantizer(3, "block", 64), "nibbles"),
                    (IntQuantizer(4, "block", 32), "words"), (IntQuantizer(8, "row"), "words"),
                    (IntQuantizer(3, "block", 64), "auto")]:
    code = q.encode(w.T)
    p = pack_int(code, q, layout=layout)
    assert p.shape == (128, 64)
    np.testing.assert_array_equal(np.asarray(_decode_int(p)), np.asarray(q.decode(code).T))


@jax.jit  # the reference decode as one program per layout, not one per jnp operation
def _decode_fp4(p):
  if p.layout == "words":
    v = unpack_words(p.codes, bits=4, signed=False)
  else:
    v = unpack_nibbles(p.codes, signed=False)
  dec = decode_e8m0 if p.scale_format == "e8m0" else decode_e4m3
  s = jnp.repeat(dec(p.scales), p.block_size, axis=0)
  return decode_e2m1(v) * s * p.tensor_scale[0, 0]


def test_pack_fp4_decodes_to_rdq(key):
  w = 5.0 * jax.random.normal(key, (64, 32))
  for name in ("mxfp4", "nvfp4"):
    q = get(name)
    code = q.encode(w.T)
    for layout in ("nibbles", "words"):
      p = pack_fp4(code, q, layout=layout)
      assert p.shape == (64, 32)
      np.testing.assert_array_equal(np.asarray(_decode_fp4(p)), np.asarray(q.decode(code).T))


def test_bytes_of_counts_packed_storage(key):
  k, n = 256, 128
  w = jax.random.normal(key, (k, n))
  q = IntQuantizer(4, "block", 32)
  nib = pack_int(q.encode(w.T), q)
  assert bytes_of(nib) == k * n // 2 + (k // 32) * n * 4
  i4 = pack_int(q.encode(w.T), q, layout="int4")
  assert bytes_of(i4) == k * n // 2 + (k // 32) * n * 4  # int4 counted at 4 bits, not nbytes
  mx = pack_fp4(get("mxfp4").encode(w.T), get("mxfp4"))
  assert bytes_of(mx) == k * n // 2 + (k // 32) * n + 4


def test_magic_number_conversions_are_exact():
  # The in-kernel int→float by exponent bits, on every nibble pair and every int8 code.
  from rdq.kernels.pack import int8_to_float, nibbles_to_float
  b = jnp.arange(256, dtype=jnp.int32).astype(jnp.uint8).reshape(16, 16)
  for signed in (True, False):
    np.testing.assert_array_equal(np.asarray(nibbles_to_float(b, signed=signed)),
                                  np.asarray(unpack_nibbles(b, signed=signed)).astype(np.float32))
  c = jnp.arange(-128, 128, dtype=jnp.int32).astype(jnp.int8)
  np.testing.assert_array_equal(np.asarray(int8_to_float(c)), np.arange(-128, 128, dtype=np.float32))


@settings(max_examples=4, deadline=None)
@given(k8=st.integers(1, 4), n=st.integers(1, 6), bits=st.sampled_from([4, 8]), signed=st.booleans(),
       seed=st.integers(0, 2**16))
def test_word_round_trip(k8, n, bits, signed, seed):
  per = 32 // bits
  lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
  v = np.random.default_rng(seed).integers(lo, hi, size=(k8 * per, n))
  words = _pack_words_jit(jnp.asarray(v), bits=bits, signed=signed)  # one program per example's shape
  assert words.dtype == jnp.uint32 and words.shape == (k8, n)
  np.testing.assert_array_equal(np.asarray(_unpack_words_jit(words, bits=bits, signed=signed)), v)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("consts", [False, True])
def test_word_planes_are_exact_on_every_code(bits, signed, consts):
  # The in-kernel exponent-bit decode of each plane, bit-exact on every code at every position.
  per = 32 // bits
  lo = -(2 ** (bits - 1)) if signed else 0
  v = (np.arange(2**bits * per).reshape(2**bits, per) % 2**bits + lo).reshape(-1, 1)
  v = np.concatenate([v, np.roll(v, 3)], axis=1)  # (2^b · P, 2): every code in every plane
  words = pack_words(jnp.asarray(v), bits=bits, signed=signed)
  planes = words_to_planes(words, bits=bits, signed=signed, consts=word_constants(bits) if consts else None)
  got = np.stack([np.asarray(p) for p in planes], axis=1).reshape(v.shape)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, v.astype(np.float32))


def test_pack_int_auto_layout(key):
  q = IntQuantizer(4, "block", 8)
  assert pack_int(q.encode(jnp.ones((4, 64))), q).layout == "words"
  assert pack_int(q.encode(jnp.ones((4, 72))), q).layout == "words"
  q2 = IntQuantizer(4, "row")
  assert pack_int(q2.encode(jnp.ones((4, 12))), q2).layout == "nibbles"  # K not a multiple of 8
  with pytest.raises(ValueError, match="K=12 must be a multiple of 8"):
    pack_int(q2.encode(jnp.ones((4, 12))), q2, layout="words")


class TestCorruptCodes:
  """Issue 17: corrupt codes raise, naming the argument, the value and the expected range."""

  def test_pack_int_rejects_an_8bit_code_as_4bit(self):
    q8, q4 = IntQuantizer(8, "block", 32), IntQuantizer(4, "block", 32)
    code = q8.encode(jax.random.normal(jax.random.key(0), (4, 64)))
    with pytest.raises(ValueError, match=r"code.codes holds -?\d+ .*4-bit codes .* in \[-8, 7\]"):
      pack_int(code, q4)

  def test_pack_int_rejects_scales_of_another_granularity(self):
    q4 = IntQuantizer(4, "block", 32)
    code = IntQuantizer(4, "row").encode(jnp.ones((4, 64)))
    with pytest.raises(ValueError, match=r"code.scales has shape \(4, 1\); a block quantizer"):
      pack_int(code, q4)

  def test_zero_point_codes_and_zeros_in_range(self):
    codes = jnp.full((4, 64), 3, jnp.int32).at[1, 2].set(20)
    scales, zeros = jnp.ones((4, 2)), jnp.zeros((4, 2), jnp.int32)
    with pytest.raises(ValueError, match=r"codes holds 20 .*unsigned 4-bit codes in \[0, 15\]"):
      pack_int_zero_point(codes, scales, zeros, bits=4, group_size=32)
    with pytest.raises(ValueError, match=r"zeros holds -1 .*4-bit zero points in \[0, 15\]"):
      pack_int_zero_point(codes.at[1, 2].set(0), scales, zeros.at[0, 0].set(-1), bits=4, group_size=32)
    with pytest.raises(ValueError, match=r"codes holds 256 .*unsigned 8-bit codes in \[0, 255\]"):
      pack_int_zero_point(codes.at[0, 0].set(256), scales, zeros, bits=8, group_size=32)

  def test_checked_under_jit(self):
    codes = jnp.full((4, 64), 3, jnp.int32).at[1, 2].set(20)
    # rdq.checks.require: checkify under checked(jax.jit(...)), as every rdq check.
    f = checked(jax.jit(lambda c: pack_int_zero_point(c, jnp.ones((4, 2)), jnp.zeros((4, 2), jnp.int32),
                                                      bits=4, group_size=32).codes))
    with pytest.raises(ValueError, match=r"codes holds 20 "):
      jax.block_until_ready(f(codes))
    assert f(codes.at[1, 2].set(15)).shape == (64, 2)  # valid codes pass under jit
