"""absmax INT quantizer."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rdq.quantizers import IntQuantizer, get


def _numpy_int(x, bits, block):
  """Plain NumPy absmax INT with fp32 scales, blocks along the last axis."""
  qmax = 2 ** (bits - 1) - 1
  xg = x.reshape(x.shape[:-1] + (-1, block)).astype(np.float32)
  s = (np.abs(xg).max(-1, keepdims=True) * np.float32(1.0 / qmax)).astype(np.float32)
  z = np.clip(np.round(xg / np.where(s > 0, s, 1)), -qmax, qmax)
  return z.reshape(x.shape), (z * s).reshape(x.shape)


@pytest.mark.parametrize("bits,block", [(8, 32), (4, 32), (4, 128), (3, 64), (2, 64)])
def test_matches_numpy_reference(bits, block):
  x = np.asarray(jax.random.normal(jax.random.key(bits), (6, 256)))
  q = IntQuantizer(bits, "block", block)
  code = q.encode(x)
  z_ref, xh_ref = _numpy_int(x, bits, block)
  np.testing.assert_array_equal(np.asarray(code.codes.astype(jnp.int32)), z_ref)
  np.testing.assert_array_equal(np.asarray(q.quantize(jnp.asarray(x))), xh_ref)
  assert code.codes.dtype == (jnp.int4 if bits <= 4 else jnp.int8)


def test_block_max_exact_and_error_bound():
  x = jax.random.normal(jax.random.key(0), (4, 128))
  q = get("int4_block32")
  xh = q.quantize(x)
  xg, xhg = np.asarray(x).reshape(4, 4, 32), np.asarray(xh).reshape(4, 4, 32)
  amax = np.abs(xg).max(-1)
  idx = np.abs(xg).argmax(-1)
  # the block maximum lands on the top level q_max·s = amax up to the rounding of fl(1/q_max)
  np.testing.assert_allclose(np.take_along_axis(xhg, idx[..., None], -1)[..., 0], np.take_along_axis(xg, idx[..., None], -1)[..., 0], rtol=2.5e-7, atol=0)
  step = amax / 7
  assert np.all(np.abs(xg - xhg) <= step[..., None] / 2 * (1 + 1e-6))


def test_e8m0_scale_is_power_of_two_and_never_clips():
  x = jax.random.normal(jax.random.key(1), (8, 64)) * 10
  q = get("int4_block32_e8m0")
  code = q.encode(x)
  s = np.asarray(code.scales.astype(jnp.float32))
  np.testing.assert_array_equal(np.exp2(np.round(np.log2(s))), s)
  amax = np.abs(np.asarray(x)).reshape(8, 2, 32).max(-1)
  assert np.all(amax <= 7 * s) and np.all(amax > 3.5 * s)


def test_bf16_scales_and_tensor_granularity():
  x = jax.random.normal(jax.random.key(2), (3, 40))
  code = get("int8_bf16").encode(x)
  assert code.scales.dtype == jnp.bfloat16 and code.scales.shape == ()
  code = get("int8_row_fp16").encode(x)
  assert code.scales.dtype == jnp.float16 and code.scales.shape == (3, 1)
  assert bool(jnp.all(jnp.abs(code.codes.astype(jnp.int32)) <= 127))


@settings(max_examples=10, deadline=None)
@given(bits=st.integers(2, 8), rows=st.integers(1, 5), nblocks=st.integers(1, 4), block=st.sampled_from([8, 16, 32]),
       scale=st.sampled_from(["fp32", "bf16", "fp16", "e8m0"]), seed=st.integers(0, 2**16))
def test_roundtrip_property(bits, rows, nblocks, block, scale, seed):
  x = jax.random.normal(jax.random.key(seed), (rows, nblocks * block)) * 3
  q = IntQuantizer(bits, "block", block, scale)
  code = q.encode(x)
  xh = q.quantize(x)
  np.testing.assert_array_equal(q.decode(code), xh)
  assert np.all(np.abs(np.asarray(code.codes.astype(jnp.int32))) <= q.q_max)
  s = np.repeat(np.asarray(code.scales.astype(jnp.float32)), block, axis=-1)
  # within the grid's range the error is at most half a step
  inside = np.abs(np.asarray(x)) <= q.q_max * s
  assert np.all(np.abs(np.asarray(x - xh))[inside] <= s[inside] / 2 * (1 + 1e-6))


def test_rate_accounting():
  assert get("int4_block32").rate((16, 256)) == (4.0, 1.0)
  assert get("int4_block32_e8m0").rate((16, 256)).effective == 4.25
  assert get("int8_row").rate((16, 256)).effective == 8 + 32 / 256
  assert get("int8").rate((16, 256)).effective == 8 + 32 / (16 * 256)


def test_zero_block_and_nan():
  x = jnp.zeros((2, 32)).at[1].set(1.0)
  np.testing.assert_array_equal(get("int4_block32").quantize(x), x)
  bad = x.at[0, 0].set(jnp.nan)
  with pytest.raises(ValueError, match="non-finite"):
    get("int4_block32").encode(bad)
  assert bool(jnp.isnan(get("int4_block32").quantize(bad)[0, 0]))


@pytest.mark.parametrize("kwargs,match", [
    (dict(bits=1), "bits"), (dict(bits=9), "bits"), (dict(bits=4, granularity="block"), "block_size"),
    (dict(bits=4, granularity="row", block_size=32), "block_size"), (dict(bits=4, scale_format="fp8"), "scale_format"),
])
def test_bad_configs(kwargs, match):
  with pytest.raises(ValueError, match=match):
    IntQuantizer(**kwargs)


def test_block_must_divide():
  with pytest.raises(ValueError, match="block_size=32 must divide"):
    get("int4_block32").quantize(jnp.ones((2, 48)))
  with pytest.raises(ValueError, match="must divide"):
    get("int4_block32").rate((2, 48))


def test_exact_ties_round_half_to_even_eager_and_jit():
  # Regression (issue 14): x/s = k + ½ exactly must round to even. XLA turned x/s into
  # x·fl(1/s), so 6.5 became 7 for some scales. Build exact ties for many scales s.
  q = IntQuantizer(8, "row")
  rng = np.random.default_rng(0)
  amax = rng.uniform(0.5, 2.0, 256).astype(np.float32)
  s = np.asarray(q.scale_from_amax(jnp.asarray(amax)[:, None]))[:, 0].astype(np.float64)
  k = np.arange(-60, 60) + 0.5
  x = (k[None, :] * s[:, None]).astype(np.float32)
  exact = x.astype(np.float64) == k[None, :] * s[:, None]  # ties representable in float32
  x = np.concatenate([x, amax[:, None]], axis=1)  # keep amax, hence s, fixed
  want = np.round(k)  # numpy rounds half to even
  for fn in (q.quantize, jax.jit(q.quantize)):
    z = np.asarray(fn(jnp.asarray(x)))[:, :-1] / s[:, None]
    assert exact.sum() > 1000
    np.testing.assert_array_equal(np.round(z)[exact], np.broadcast_to(want, exact.shape)[exact])


def test_bad_inputs_raise_clear_errors():
  q = IntQuantizer(4, "block", 32)
  with pytest.raises(TypeError, match="x must have a real floating dtype.*int32"):
    q.quantize(jnp.ones((2, 32), jnp.int32))
  with pytest.raises(TypeError, match="complex64"):
    q.quantize(jnp.ones((2, 32), jnp.complex64))
  with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 32\)\)"):
    q.quantize(jnp.ones((0, 32)))
  with pytest.raises(ValueError, match="code.scales has shape"):
    IntQuantizer(4, "block", 16).decode(q.encode(jnp.ones((2, 32))))
  with pytest.raises(ValueError, match="positive integers"):
    q.rate((4, 0))
  with pytest.raises(ValueError, match="positive integers"):
    q.rate((4, 32.5))
  with pytest.raises(TypeError, match="key must be a PRNG key"):
    q.quantize(jnp.ones((2, 32)), key=0)


@pytest.mark.parametrize("fmt", ["fp16", "bf16"])
def test_half_precision_scale_out_of_range_raises(fmt):
  # fp16 scales used to saturate (all-NaN x̂ above ~5e5) or flush (x̂ = 0 at 1e-8) silently.
  q = IntQuantizer(4, "row", scale_format=fmt)
  x = jax.random.normal(jax.random.key(0), (4, 64))
  # bf16 has float32's exponent range: only float32-subnormal-sized scales are out of range.
  small = 1e-8 if fmt == "fp16" else 1.5e-38
  for c in (1e6, small) if fmt == "fp16" else (small,):
    with pytest.raises(ValueError, match=f"outside the {fmt} scale format's normal range"):
      q.quantize(x * jnp.float32(c))
  from rdq.checks import checked

  with pytest.raises(ValueError, match="outside the"):
    checked(jax.jit(q.quantize))(x * jnp.float32(small))
