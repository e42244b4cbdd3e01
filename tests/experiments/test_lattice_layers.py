"""The lattice-layers app (``rdq.experiments.lattice_layers``): its quick path writes every row.

MiniLM is replaced by small synthetic layers (the app's code path is otherwise the same), so the
test takes seconds: it checks the tables and the figure that ``make figures`` copies."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq.experiments import lattice_layers as ll


def _small_layers(blocks, n_calibration=128):
  del n_calibration
  out = {}
  for b in blocks:
    for i, t in enumerate(ll.LAYER_TYPES):
      k_w, k_x = jax.random.split(jax.random.key(10 * b + i))
      x = jax.random.normal(k_x, (192, 48)) * jnp.linspace(0.3, 2.0, 48)
      out[f"layer{b}.{t}"] = (jax.random.normal(k_w, (48, 384)), x.T @ x / 192)  # GPTVQ tiles need m = 384
  return out


@pytest.fixture
def small_app(monkeypatch):
  monkeypatch.setattr(ll, "minilm_layers", _small_layers)
  monkeypatch.setattr(ll, "synthetic_layer", lambda: _small_layers([9])["layer9.query"])


def test_quick_path_writes_every_row(small_app, tmp_path, capsys):
  ll.main(["--bits", "2", "--types", "query", "attn_out", "--qa-lattices", "e8", "leech", "--out-dir", str(tmp_path)])
  text = (tmp_path / "lattice_layers.md").read_text()
  header = next(ln for ln in text.splitlines() if ln.startswith("| bits | "))
  assert header == "| bits | " + " | ".join(ll.ROWS.values()) + " |"  # the mean table has every row
  mean = [ln for ln in text.splitlines() if ln.startswith("| 2 | ")]
  assert len(mean) == 1 and mean[0].count(" dB @ ") == len(ll.ROWS)
  assert "python -m rdq.experiments.lattice_layers --bits 2 --types query attn_out --qa-lattices e8 leech` (" in text
  per_layer = [ln for ln in text.splitlines()
               if ln.startswith(("| layer0.query | 2 |", "| layer0.attn_out | 2 |")) and " dB @ " in ln]
  assert len(per_layer) == 2 and all(ln.count(" dB @ ") == len(ll.ROWS) for ln in per_layer)
  qa = [ln for ln in text.splitlines() if ln.startswith("| layer0.") and ("| E8 |" in ln or "| Λ24 |" in ln)]
  assert {ln.split(" | ")[2] for ln in qa} == {"E8", "Λ24"} and len(qa) == 4  # query, attn_out × E8, Λ24
  assert "| synthetic(384) | 2 | E8 |" in text and "Mean QA-LDLQ gain, Λ24, 2 bits, 2 MiniLM layers" in text
  for ext in ("png", "pdf"):
    assert (tmp_path / f"lattice_layers.{ext}").stat().st_size > 1000
  assert "total" in capsys.readouterr().out


def test_lattice_row_matches_the_public_layer_algorithm():
  """The app's traced per-layer path gives what the checked public ``lattice_sic`` gives.

  At 2 bits with RHT, as a row of ``test_quick_path_writes_every_row`` (same file, so the same
  pytest worker under ``--dist loadfile``): the traced path reuses that test's compiled program."""
  from rdq.layer import LatticeSICConfig, lattice_sic

  w, h = _small_layers([0])["layer0.query"]
  key = jax.random.key(0)
  w_hat, d, rate = ll._lattice_row(w, h, "e8", 2, "hadamard", key)
  cfg = LatticeSICConfig(ll.lattice_name("e8", 2, 48, 384), block_size=128, rotate=True, rotation="hadamard")
  ref, rep = lattice_sic(w, h, cfg, key)
  np.testing.assert_allclose(np.asarray(w_hat), np.asarray(ref), rtol=0, atol=1e-5)
  assert abs(d - float(rep.d_relative)) < 1e-6 and rate == float(rep.rate_nominal_bits) <= 2 + 16 / 48
