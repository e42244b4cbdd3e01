"""GPTVQ: d = 1 on GPTQ's grid is GPTQ; each post-processing step moves the distortion as stated; bits per value; bad input."""

import jax
import numpy as np
import pytest

from rdq import covariance as cov
from rdq.layer import GPTQConfig, GPTVQConfig, MinMaxGrid, gptq, gptvq, gptvq_bits, layer_distortion, vq_decode
from rdq.quantized_matmul import codebook_decode


def _problem(n, m, seed=0, rho=0.9):
  k1, k2 = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(k1, (4 * n, n)) @ cov.AR1(n)(k1, rho)  # correlated activations
  h = cov.from_data(x)
  w = jax.random.normal(k2, (n, m)) * 0.1
  return w, h


@pytest.mark.parametrize("bits,group,block", [(3, 32, 64), (2, 64, 32)], ids=["group_in_block", "group_spans_blocks"])
def test_d1_uniform_grid_is_gptq_exactly(bits, group, block):
  """d = 1, codebook = GPTQ's symmetric min–max grid fitted on the current rows, no update."""
  w, h = _problem(128, 48, seed=bits)
  w_g, r_g = gptq(w, h, GPTQConfig(MinMaxGrid(bits, True, group), block_size=block))
  cfg = GPTVQConfig(dim=1, bits=bits, group_size=group, group_outputs=1, block_size=block, init="minmax",
                    codebook_format="fp32", update=False)
  w_v, r_v = gptvq(w, h, cfg)
  np.testing.assert_array_equal(np.asarray(w_v), np.asarray(w_g))
  np.testing.assert_array_equal(np.asarray(r_v.codes), np.asarray(r_g.codes))  # level index = GPTQ's code
  assert float(r_v.d_per_entry) == float(r_g.d_per_entry)


BASE = GPTVQConfig(dim=2, bits=2, group_size=64, group_outputs=8, block_size=32, em_iters=10, update=False)


@pytest.fixture(scope="module")
def layer():
  return _problem(128, 64, seed=7)


def _run(layer, **changes):
  w, h = layer
  return gptvq(w, h, GPTVQConfig(**{**BASE.__dict__, **changes}), jax.random.key(0))


def test_stages_move_distortion_as_stated(layer):
  w, h = layer
  w_hat, rep = _run(layer, update=True, svd_rank=6, finetune_steps=40, int8=True)
  d = np.asarray(rep.extras["stage_d_per_entry"], np.float64)
  bound = np.asarray(rep.extras["stage_d_bound"], np.float64)
  assert d[1] < 0.99 * d[0]  # least-squares update lowers it
  assert d[1] < d[2] <= bound[2]  # SVD raises it, by at most the Eckart–Young bound
  assert d[3] < 0.99 * d[2]  # fine-tuning the SVD factors recovers part of it
  assert d[4] <= bound[4]  # INT8 factors: within the triangle bound
  assert np.isnan(bound[[0, 1, 3]]).all()
  # the report is the decoded code
  np.testing.assert_array_equal(np.asarray(w_hat), np.asarray(vq_decode(rep.extras["vector_codes"], rep.extras["codebooks"], 64, 8)))
  assert float(layer_distortion(w, w_hat, h)) == pytest.approx(float(rep.d_per_entry), rel=1e-6)


def test_lstsq_update_is_the_optimum_and_int8_bound(layer):
  _, rep_ls = _run(layer, update=True, finetune_steps=30, int8=True)
  d = np.asarray(rep_ls.extras["stage_d_per_entry"], np.float64)
  assert d[1] < d[0]
  # LS is the minimizer for fixed assignments: Adam cannot go (meaningfully) below it
  assert d[1] * (1 - 1e-3) <= d[3] <= d[1]
  # INT8 codebooks (no SVD): each entry moves by ≤ s/2, so D rises by at most the stated bound
  assert d[3] < d[4] <= float(rep_ls.extras["stage_d_bound"][4])


def test_finetune_alone_lowers_distortion(layer):
  _, rep = _run(layer, finetune_steps=40)
  d = np.asarray(rep.extras["stage_d_per_entry"], np.float64)
  assert d[3] < 0.99 * d[0]


def test_full_rank_svd_changes_nothing(layer):
  _, a = _run(layer, update=True)
  _, b = _run(layer, update=True, svd_rank=16)  # 16 codebooks: rank 16 is exact
  assert float(b.extras["stage_d_per_entry"][2]) == pytest.approx(float(a.extras["stage_d_per_entry"][1]), rel=1e-4)


def test_bits_per_value_by_hand():
  # d=2, b=2, k=16; ℓ = 256·16 = 4096; fp16: 2 + 16·2·16/4096 = 2.125 (van Baalen et al., Sec. 4)
  a = GPTVQConfig(dim=2, bits=2, group_size=256, group_outputs=16)
  assert gptvq_bits(a, 256, 512) == (2.0, 0.125, 0.0, 2.125)
  # d=1, b=3, k=8; 32 codebooks; SVD rank 4: 32·4 + 4·8 = 160 INT8 entries = 1280 bits,
  # (32 + 4) fp16 scales = 576 bits, over 256·64 = 16384 values
  b = GPTVQConfig(dim=1, bits=3, group_size=128, group_outputs=4, svd_rank=4, int8=True)
  assert gptvq_bits(b, 256, 64) == (3.0, 0.078125, 0.03515625, 3.11328125)
  assert gptvq_bits(b, 256, 64, "sic").total == 3.25  # 32·8 fp16 entries = 4096 bits
  assert gptvq_bits(b, 256, 64, "finetune").total == 3.15625  # 160 fp16 entries
  w, h = _problem(256, 64, seed=1)
  _, rep = gptvq(w, h, b, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(rep.extras["stage_rate_bits"]), np.float32([3.25, 3.25, 3.15625, 3.15625, 3.11328125]))
  assert (float(rep.extras["rate_index_bits"]), float(rep.extras["rate_codebook_bits"]), float(rep.extras["rate_scale_bits"])) == (3.0, 0.078125, 0.03515625)
  assert float(rep.rate_bits) == pytest.approx(3.11328125)


def test_shared_codebook_layout_matches_rdq_codebook_decode():
  """group_outputs = m: one codebook per input group, the layout of rdq.quantized_matmul (and rdq/kernels/)."""
  w, h = _problem(64, 16, seed=2)
  w_hat, rep = gptvq(w, h, GPTVQConfig(dim=4, bits=1, group_size=32, group_outputs=16, block_size=32), jax.random.key(1))
  cb = rep.extras["codebooks"][:, 0]  # (G, k, d)
  np.testing.assert_array_equal(np.asarray(codebook_decode(rep.extras["vector_codes"].T, cb, 32)), np.asarray(w_hat).T)


def test_deterministic_given_key(layer):
  # the config of test_full_rank_svd_changes_nothing's first run: the same compiled program
  a = _run(layer, update=True)[0]
  b = _run(layer, update=True)[0]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_input():
  w, h = _problem(64, 16)
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="group_size=48 must divide"):
    gptvq(w, h, GPTVQConfig(dim=2, bits=2, group_size=48, group_outputs=4, block_size=16), key)
  with pytest.raises(ValueError, match="group_outputs=3 must divide"):
    gptvq(w, h, GPTVQConfig(dim=2, bits=2, group_size=32, group_outputs=3, block_size=32), key)
  with pytest.raises(ValueError, match="dim=4 must divide the group width"):
    GPTVQConfig(dim=4, bits=1, group_size=30, group_outputs=8, block_size=30)
  with pytest.raises(ValueError, match="exceeds the 64 vectors"):
    GPTVQConfig(dim=2, bits=4, group_size=32, group_outputs=4, block_size=32)  # k = 256
  bad_h = h.at[0, 0].set(-1.0)
  with pytest.raises(ValueError, match="PSD|eigenvalue"):
    gptvq(w, bad_h, GPTVQConfig(dim=2, bits=2, group_size=32, group_outputs=4, block_size=32), key)
  with pytest.raises(ValueError, match="symmetric"):
    gptvq(w, h.at[0, 1].add(1.0), GPTVQConfig(dim=2, bits=2, group_size=32, group_outputs=4, block_size=32), key)
  with pytest.raises(ValueError, match="svd_rank=9 exceeds the number of codebooks 8"):
    gptvq(w, h, GPTVQConfig(dim=2, bits=2, group_size=32, group_outputs=4, block_size=32, svd_rank=9), key)
  with pytest.raises(ValueError, match="PRNG key"):
    gptvq(w, h, GPTVQConfig(dim=2, bits=2, group_size=32, group_outputs=4, block_size=32))
  with pytest.raises(ValueError, match="minmax"):
    GPTVQConfig(dim=2, bits=2, init="minmax")
  with pytest.raises(ValueError, match="metric"):
    GPTVQConfig(metric="mahalanobis")
