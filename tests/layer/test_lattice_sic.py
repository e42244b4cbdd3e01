"""Nested-lattice SIC (NestQuant-style LDLQ): RTN equivalences, a NumPy oracle, rotation, QA-LDLQ, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.covariance import haar_orthogonal
from rdq.layer import LatticeSICConfig, RTNConfig, lattice_sic, lattice_sic_traced, rtn
from rdq.layer._sic import damp_hessian, inverse_cholesky_upper
from rdq.layer.lattice_sic import noisy_input_distortion
from rdq.quantizers import get


def _layer(key, n=64, m=24, outlier=None):
  """Weights with unequal column scales and a correlated (AR(1)-like, rescaled) H."""
  k_w, k_x = jax.random.split(key)
  w = jax.random.normal(k_w, (n, m)) * jnp.linspace(0.5, 2.0, m)
  if outlier is not None:
    w = w.at[3, 5].set(outlier)
  x = jax.random.normal(k_x, (4 * n, n))
  x = x + 0.9 * jnp.roll(x, 1, axis=1)  # neighbouring features correlate
  h = (x.T @ x) / (4 * n) * jnp.linspace(0.2, 3.0, n)[:, None] ** 0.5 * jnp.linspace(0.2, 3.0, n)[None, :] ** 0.5
  return w, 0.5 * (h + h.T)


def _dist(w, w_hat, h):
  e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.sum(e * (np.asarray(h, np.float64) @ e)) / e.size)


@pytest.mark.parametrize("name", ["e8_nested_q4_norm", "e8_nested_q6_norm", "d4_nested_q8_norm", "e8_nested_q16"])
def test_no_feedback_is_rtn_bit_for_bit(name):
  w, h = _layer(jax.random.key(0))
  w_hat, rep = lattice_sic(w, h, LatticeSICConfig(name, feedback=False))
  w_rtn, rep_rtn = rtn(w, h, RTNConfig(name))
  np.testing.assert_array_equal(w_hat, w_rtn)
  assert float(rep.rate_nominal_bits) == float(rep_rtn.rate_nominal_bits)
  np.testing.assert_array_equal(rep.codes, rep_rtn.codes)


def test_diagonal_h_has_no_feedback():
  w, h = _layer(jax.random.key(1))
  hd = jnp.diag(jnp.diagonal(h))
  w_hat, _ = lattice_sic(w, hd, LatticeSICConfig("e8_nested_q8_norm"))
  np.testing.assert_array_equal(w_hat, rtn(w, hd, RTNConfig("e8_nested_q8_norm"))[0])


def _ldlq_reference(w, h, name, percdamp=0.01):
  """Unblocked NumPy block recursion (float64): U_PPᵀ E_P = W_P − Q_P, W_{>P} −= U_{P,>P}ᵀ E_P."""
  quant = get(name)
  plain = get(name.replace("_norm", ""))
  d = quant.dim
  w = np.array(w, np.float64)
  n, m = w.shape
  s = np.asarray(quant._scale(jnp.asarray(w.T, jnp.float32)), np.float64)  # (m, 1), stored format
  u = np.asarray(inverse_cholesky_upper(damp_hessian(jnp.asarray(h, jnp.float64), percdamp)), np.float64)
  q = np.zeros_like(w)
  for i in range(0, n, d):
    rows = w[i : i + d]
    y = jnp.asarray((rows.T / s), jnp.float32)
    q[i : i + d] = (np.asarray(plain.quantize(y), np.float64) * s).T
    e = np.linalg.solve(u[i : i + d, i : i + d].T, rows - q[i : i + d])
    w[i + d :] -= u[i : i + d, i + d :].T @ e
  return q


def test_matches_unblocked_numpy_recursion():
  w, h = _layer(jax.random.key(2), n=64, m=16)
  jax.config.update("jax_enable_x64", True)
  try:
    ref = _ldlq_reference(w, h, "e8_nested_q8_norm")
  finally:
    jax.config.update("jax_enable_x64", False)
  got, rep = lattice_sic(w, h, LatticeSICConfig("e8_nested_q8_norm", block_size=16))
  # float32 blocked vs float64 unblocked: the same lattice decisions except at rare near-ties
  same = np.mean(np.isclose(np.asarray(got), ref, rtol=1e-4, atol=1e-5))
  assert same > 0.98, same
  np.testing.assert_allclose(float(rep.d_per_entry), _dist(w, ref, h), rtol=0.02)
  np.testing.assert_allclose(float(rep.d_per_entry), _dist(w, got, h), rtol=1e-4)


@pytest.mark.parametrize("q", [16, 32])
def test_feedback_gain_matches_the_block_ldl_closed_form(q):
  """High rate: the lattice error is white with one variance per entry, so D_SIC/D_RTN equals
  (1/n) Σ_P tr((U_PPᵀU_PP)^{-1}) / mean diag H (block-LDL diagonal over the plain diagonal)."""
  w, h = _layer(jax.random.key(3), n=64, m=96)
  name = f"e8_nested_q{q}_norm"
  _, sic_rep = lattice_sic(w, h, LatticeSICConfig(name))
  _, rtn_rep = rtn(w, h, RTNConfig(name))
  assert float(sic_rep.rate_nominal_bits) == float(rtn_rep.rate_nominal_bits)
  u = np.asarray(inverse_cholesky_upper(damp_hessian(h, 0.01)), np.float64)
  blocks = [u[i : i + 8, i : i + 8] for i in range(0, 64, 8)]
  predicted = sum(np.trace(np.linalg.inv(b.T @ b)) for b in blocks) / 64 / float(np.mean(np.diagonal(h)))
  ratio = float(sic_rep.d_per_entry) / float(rtn_rep.d_per_entry)
  assert predicted < 0.95  # the test H has real feedback gain
  assert abs(ratio / predicted - 1) < 0.04, (ratio, predicted)


def test_rotation_is_rtn_in_the_rotated_basis():
  w, h = _layer(jax.random.key(4))
  key = jax.random.key(7)
  w_hat, rep = lattice_sic(w, h, LatticeSICConfig("e8_nested_q8_norm", feedback=False, rotate=True), key)
  rot = haar_orthogonal(key, w.shape[0])
  w_rot = jnp.matmul(rot.T, w, precision="highest")
  expect = jnp.matmul(rot, rtn(w_rot, jnp.eye(w.shape[0]), RTNConfig("e8_nested_q8_norm"))[0], precision="highest")
  np.testing.assert_allclose(w_hat, expect, rtol=0, atol=1e-5)
  np.testing.assert_allclose(float(rep.d_per_entry), _dist(w, w_hat, h), rtol=1e-4)  # scored in the original basis


def test_rotation_spreads_an_outlier():
  """One weight 150× the RMS overloads every β of its 8-block; a rotation spreads it."""
  w, h = _layer(jax.random.key(5), outlier=150.0)
  cfg = LatticeSICConfig("e8_nested_q8_norm")
  _, plain = lattice_sic(w, h, cfg)
  _, rotated = lattice_sic(w, h, LatticeSICConfig("e8_nested_q8_norm", rotate=True), jax.random.key(0))
  assert float(rotated.d_per_entry) < 0.2 * float(plain.d_per_entry)


def test_deterministic_and_vmappable():
  w1, h1 = _layer(jax.random.key(6))
  w2, h2 = _layer(jax.random.key(7))
  cfg = LatticeSICConfig("e8_nested_q6_norm", rotate=True)
  keys = jax.random.split(jax.random.key(0), 2)
  a, _ = lattice_sic(w1, h1, cfg, keys[0])
  b, _ = lattice_sic(w1, h1, cfg, keys[0])
  np.testing.assert_array_equal(a, b)
  batched, rep = jax.vmap(lambda w, h, k: lattice_sic_traced(w, h, cfg, k))(jnp.stack([w1, w2]), jnp.stack([h1, h2]), keys)
  np.testing.assert_allclose(batched[0], a, rtol=0, atol=1e-6)
  np.testing.assert_allclose(batched[1], lattice_sic(w2, h2, cfg, keys[1])[0], rtol=0, atol=1e-6)
  assert rep.d_per_entry.shape == (2,)


def test_bad_input():
  w, h = _layer(jax.random.key(8))
  with pytest.raises(ValueError, match="nested-lattice"):
    LatticeSICConfig("int4_row")
  with pytest.raises(ValueError, match="unknown|Unknown"):
    LatticeSICConfig("e9_nested_q4")
  with pytest.raises(ValueError, match="dither"):
    LatticeSICConfig("e8_nested_q4_dither")
  with pytest.raises(ValueError, match="block_size"):
    LatticeSICConfig("e8_nested_q4", block_size=12)
  with pytest.raises(ValueError, match="key"):
    lattice_sic(w, h, LatticeSICConfig(rotate=True))
  with pytest.raises(ValueError, match="lattice dimension"):
    lattice_sic(w[:60], h[:60, :60], LatticeSICConfig())
  with pytest.raises(ValueError, match="finite"):
    lattice_sic(w.at[0, 0].set(jnp.nan), h, LatticeSICConfig())
  with pytest.raises(ValueError, match="H"):
    lattice_sic(w, h[:10, :10], LatticeSICConfig())


def _qa_pair(w, h, act_noise):
  """NumPy float64 (W_ε, H_ε) of QA-LDLQ: H_ε = H + ε²I, W_ε = W − ε² H_ε^{-1} W."""
  w, h = np.asarray(w, np.float64), np.asarray(h, np.float64)
  eps2 = act_noise * np.mean(np.diagonal(h))
  h_eps = h + eps2 * np.eye(h.shape[0])
  return w - eps2 * np.linalg.solve(h_eps, w), h_eps, eps2


def test_qa_ldlq_is_ldlq_on_the_shrunk_target():
  w, h = _layer(jax.random.key(9))
  w_eps, h_eps, _ = _qa_pair(w, h, 0.05)
  got, _ = lattice_sic(w, h, LatticeSICConfig("e8_nested_q8_norm", act_noise=0.05))
  ref, _ = lattice_sic(jnp.asarray(w_eps, jnp.float32), jnp.asarray(h_eps, jnp.float32), LatticeSICConfig("e8_nested_q8_norm"))
  assert np.mean(np.isclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-5)) > 0.98
  plain, _ = lattice_sic(w, h, LatticeSICConfig("e8_nested_q8_norm"))
  assert np.mean(np.isclose(np.asarray(got), np.asarray(plain), rtol=1e-4, atol=1e-5)) < 0.5


def test_qa_ldlq_matches_the_reference_code_form():
  """NestQuant's reference code (eitanporat/nestquant, parallel/quant_utils.py::quantsim with
  eps, w_quant.py, err.py): X ← X(I − ε²(H+ε²I)⁻¹), H ← H + ε²I on the (out, in) weights,
  ε² = x_var/155 with x_var the mean squared activation entry and H = FᵀF/N. rdq's
  act_noise = 1/155 on (W = Xᵀ, H) is LDLQ on exactly that pair."""
  n, m, tokens = 32, 24, 512
  f = np.asarray(jax.random.normal(jax.random.key(20), (tokens, n)), np.float64) * np.linspace(0.3, 2.0, n)
  h = f.T @ f / tokens
  x_ref = np.asarray(jax.random.normal(jax.random.key(21), (m, n)), np.float64)  # (out, in)
  eps2 = float(np.mean(f**2)) / 155.0
  x_shift = x_ref @ (np.eye(n) - eps2 * np.linalg.inv(h + eps2 * np.eye(n)))
  h_shift = h + eps2 * np.eye(n)
  w = jnp.asarray(x_ref.T, jnp.float32)
  got, _ = lattice_sic(w, jnp.asarray(h, jnp.float32), LatticeSICConfig("e8_nested_q8_norm", act_noise=1 / 155))
  ref, _ = lattice_sic(jnp.asarray(x_shift.T, jnp.float32), jnp.asarray(h_shift, jnp.float32), LatticeSICConfig("e8_nested_q8_norm"))
  assert np.mean(np.isclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-5)) > 0.98
  plain, _ = lattice_sic(w, jnp.asarray(h, jnp.float32), LatticeSICConfig("e8_nested_q8_norm"))
  assert np.mean(np.isclose(np.asarray(got), np.asarray(plain), rtol=1e-4, atol=1e-5)) < 0.5


def test_noisy_input_distortion_completes_the_square():
  """D_ε(Ŵ) = tr((W_ε−Ŵ)ᵀH_ε(W_ε−Ŵ)) + ε² tr(WᵀH H_ε^{-1} W) for any Ŵ (per entry)."""
  w, h = _layer(jax.random.key(10), n=32, m=8)
  w_hat = w + 0.3 * jax.random.normal(jax.random.key(11), w.shape)
  w_eps, h_eps, eps2 = _qa_pair(w, h, 0.1)
  e = w_eps - np.asarray(w_hat, np.float64)
  w64, h64 = np.asarray(w, np.float64), np.asarray(h, np.float64)
  expect = (np.sum(e * (h_eps @ e)) + eps2 * np.sum(w64 * (h64 @ np.linalg.solve(h_eps, w64)))) / w.size
  np.testing.assert_allclose(float(noisy_input_distortion(w, w_hat, h, 0.1)), expect, rtol=1e-5)


@pytest.mark.parametrize("act_noise", [1 / 155, 0.05])
def test_qa_ldlq_lowers_the_noisy_input_error(act_noise):
  """NestQuant's claim for QA-LDLQ: with quantized (noisy) activations it beats LDLQ, which
  minimizes the clean error. At high rate (q = 16) QA-LDLQ is within 10% of its closed-form
  floor ε² tr(WᵀH H_ε^{-1} W) + LDLQ's error under H_ε, and LDLQ pays ε²‖W‖² instead."""
  w, h = _layer(jax.random.key(12), n=64, m=96)
  _, h_eps, eps2 = _qa_pair(w, h, act_noise)
  name = "e8_nested_q16_norm"
  qa, _ = lattice_sic(w, h, LatticeSICConfig(name, act_noise=act_noise))
  plain, _ = lattice_sic(w, h, LatticeSICConfig(name))
  d_qa = float(noisy_input_distortion(w, qa, h, act_noise))
  d_plain = float(noisy_input_distortion(w, plain, h, act_noise))
  w64, h64 = np.asarray(w, np.float64), np.asarray(h, np.float64)
  floor = eps2 * np.sum(w64 * (h64 @ np.linalg.solve(h_eps, w64))) / w.size
  assert d_qa < d_plain
  gain_floor = eps2 * float(np.sum(w64**2)) / w.size - floor  # what shrinking saves at infinite rate
  assert d_plain - d_qa > 0.5 * gain_floor, (d_plain, d_qa, gain_floor)


def test_qa_bad_input():
  for bad in (-0.1, float("nan"), float("inf"), True, "0.1"):
    with pytest.raises(ValueError, match="act_noise"):
      LatticeSICConfig(act_noise=bad)


def test_leech_blocks_of_24_features():
  """Λ24 in lattice SIC: 24-blocks of input features. With a diagonal H (no feedback) it is rtn
  with the Leech code bit for bit; on a correlated H the SIC feedback lowers the error at the
  same rate."""
  w, h = _layer(jax.random.key(13), n=48, m=6)
  name = "leech_nested_q8_norm"
  cfg = LatticeSICConfig(name, block_size=48)
  hd = jnp.diag(jnp.diagonal(h))
  np.testing.assert_array_equal(lattice_sic(w, hd, cfg)[0], rtn(w, hd, RTNConfig(name))[0])
  _, rep = lattice_sic(w, h, cfg)
  _, rep_rtn = rtn(w, h, RTNConfig(name))
  assert float(rep.rate_nominal_bits) == float(rep_rtn.rate_nominal_bits)
  assert float(rep.d_per_entry) < float(rep_rtn.d_per_entry)  # U ≠ I: the feedback acts
  with pytest.raises(ValueError, match="block_size"):
    LatticeSICConfig(name)  # the default 128 is not a multiple of 24
