"""experiments/real_model.py: limit below every algorithm on real layers, fits, metrics, config."""

import numpy as np
import pytest
from hydra import compose, initialize

from experiments.real_model import (
    LAYER_TYPES,
    e2e_metrics,
    layer_limits,
    power_law_exponent,
    quantize_layer,
    quantize_layers,
)
from rdq.covariance import PowerLaw
from rdq.models import from_pretrained, linear_kernels, load_splits, second_moments


@pytest.fixture(scope="module")
def block3():
  """Weights, calibration H and the eigenvalues the limits need, for the six layers of block 3."""
  model = from_pretrained()  # fails (never skips) with an install hint if the package is missing
  stats = second_moments(model, load_splits(32, 8, seed=0).calibration)
  kernels = linear_kernels(model)
  out, eig_cache = {}, {}
  for t in LAYER_TYPES:
    name = f"layer3.{t}"
    w, h = np.asarray(kernels[name]), stats.h[name]
    if id(h) not in eig_cache:  # query, key and value share one H
      eig_cache[id(h)] = np.linalg.eigvalsh(h)
    s = np.sqrt(np.mean(w.astype(np.float64) ** 2, axis=1))
    out[name] = (w, h, eig_cache[id(h)], np.linalg.eigvalsh(s[:, None] * h * s[None, :]))
  return out


@pytest.mark.parametrize("algorithm", ["rtn", "gptq", "watersic"])
def test_limit_below_every_algorithm_on_every_layer_type(block3, algorithm):
  groups = {}
  for name, (w, *_) in block3.items():
    groups.setdefault(w.shape, []).append(name)
  for names in groups.values():
    outs = quantize_layers([block3[k][0] for k in names], [block3[k][1] for k in names], algorithm, 3)
    for name, (w_hat, rate, rep) in zip(names, outs):
      w, h, eig, eig_s = block3[name]
      n, m = w.shape
      assert w_hat.shape == (n, m)
      d = float(rep.d_per_entry)
      e = (w - w_hat).astype(np.float64)
      np.testing.assert_allclose(d, np.sum(e * (h @ e)) / (n * m), rtol=1e-3)
      assert abs(rate - (3 + 16 / n)) < (1e-6 if algorithm != "watersic" else 0.05), (name, rate)
      lim = layer_limits(w, eig, eig_s, rate, d)
      assert lim["limit_d"] < d and lim["limit_d_featvar"] < d, (name, d, lim)
      assert lim["gap_bits"] > 0 and lim["gap_bits_featvar"] > 0, (name, lim)
      if algorithm == "watersic":  # high-rate theory: ≈ 0.255 bit; allow the finite-m entropy bias
        assert lim["gap_bits"] < 0.6, (name, lim)


def test_quantize_layer_checks_h(block3):
  w, h, *_ = block3["layer3.attn_out"]
  with pytest.raises(ValueError, match="H"):
    quantize_layer(w, h[:10, :10], "rtn", 3)
  with pytest.raises(ValueError, match="algorithm='awq'"):
    quantize_layer(w, h, "awq", 3)


def test_gptq_beats_rtn_layerwise(block3):
  w, h, *_ = block3["layer3.ffn_in"]
  (_, _, r_rtn), = quantize_layers([w], [h], "rtn", 3)
  (_, _, r_gptq), = quantize_layers([w], [h], "gptq", 3)
  assert float(r_gptq.d_per_entry) < float(r_rtn.d_per_entry)


@pytest.mark.parametrize("alpha", [0.5, 1.3, 2.0])
def test_power_law_exponent_recovers_alpha(alpha):
  eig = np.asarray(PowerLaw(256).eigenvalues(alpha))
  rng = np.random.default_rng(0)
  assert abs(power_law_exponent(rng.permutation(eig)) - alpha) < 1e-3


def test_power_law_exponent_bad_input():
  with pytest.raises(ValueError, match="must be > 0"):
    power_law_exponent(np.r_[np.ones(10), np.zeros(10)], k_lo=2, hi_frac=1.0)
  with pytest.raises(ValueError, match="k_lo"):
    power_law_exponent(np.ones(10), k_lo=6, hi_frac=0.5)


def test_e2e_metrics():
  rng = np.random.default_rng(0)
  ref = rng.normal(size=(50, 16))
  same = e2e_metrics(ref, ref * 3.0)  # scale-invariant (cosine)
  assert same["cosine_mean"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
  assert same["top1_agreement_stderr"] == 0.0
  noisy = e2e_metrics(ref, ref + rng.normal(size=ref.shape))
  assert noisy["cosine_mean"] < 0.9 and noisy["top1_agreement"] < 1.0 and noisy["cosine_stderr"] > 0
  with pytest.raises(ValueError, match="must be equal"):
    e2e_metrics(ref, ref[:, :8])


@pytest.mark.parametrize("overrides", [[], ["+experiment=real_model_full"]])
def test_config_composes(overrides):
  with initialize(version_base="1.3", config_path="../../conf"):
    cfg = compose(config_name="real_model", overrides=overrides)
  assert set(cfg.e2e_bits) == {2, 3, 4} and list(cfg.blocks) == list(range(6))
  assert set(cfg.algorithms) == {"rtn", "gptq", "watersic"}
  if overrides:
    assert cfg.data.n_calibration == 512 and max(cfg.bits) == 6
