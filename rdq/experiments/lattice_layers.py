"""Lattice layer codes on MiniLM layers: Λ24 vs E8 LDLQ, Hadamard vs Haar rotation, QA-LDLQ.

Rows (weight-only, one layer at a time, ``H = E[x xᵀ]`` from the MiniLM calibration pass of
``rdq.experiments.real_model``; budget ``bits + 16/n`` bits per weight, side information counted):

* ``E8 LDLQ (Haar)`` / ``E8 LDLQ (RHT)``: ``lattice_sic`` with ``e8_nested_q<q>_k4_norm`` (largest
  q within the budget), SIC feedback, rotated input basis (dense Haar / randomized Hadamard).
* ``Λ24 LDLQ (RHT)``: the same with the Leech code ``leech_nested_q<q>_k4_norm`` (24-blocks).
* ``WaterSIC``, ``GPTVQ (d=2)``: ``rdq.experiments.real_model_algorithms`` at the same bits
  (WaterSIC's rate is entropy-coded, GPTVQ's budget is ``bits + 0.125``), for reference.

Printed: relative distortion ``tr((W−Ŵ)ᵀH(W−Ŵ))/tr(WᵀHW)`` in dB and the rate (bits/weight)
per layer and row, then the mean over layers. Second table (QA-LDLQ, NestQuant): output error
with white activation noise of relative variance ``act_noise`` (NestQuant's 4-bit activations:
1/155), ``D_ε = [tr((W−Ŵ)ᵀH(W−Ŵ)) + ε²‖Ŵ‖²]/tr(WᵀHW)``, for E8 LDLQ and E8 QA-LDLQ (RHT), on
the MiniLM layers and on a synthetic layer (iid Gaussian W, H with a power-law spectrum
``λ_k ∝ k^{-1.5}`` in a Haar basis).

Third table (``--only rotation``): mean E8-LDLQ distortion over 48 independent rotations, Haar
vs RHT, on iid Gaussian W with three H (AR(1), diagonal with a 10³ spread, empirical).

Usage:
  python -m rdq.experiments.lattice_layers                      # block 0 (6 layers), 2–4 bits
  python -m rdq.experiments.lattice_layers --only rotation      # Haar vs RHT in distribution
  python -m rdq.experiments.lattice_layers --only layers --rows e8_rht leech_rht watersic --types query attn_out ffn_in ffn_out
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from rdq.covariance import haar_orthogonal
from rdq.layer import LatticeSICConfig, lattice_sic, lattice_sic_traced
from rdq.layer.lattice_sic import noisy_input_distortion
from rdq.quantizers import get as get_quantizer

LAYER_TYPES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
ROWS = {"e8_haar": "E8 LDLQ (Haar)", "e8_rht": "E8 LDLQ (RHT)", "leech_rht": "Λ24 LDLQ (RHT)", "watersic": "WaterSIC",
        "gptvq": "GPTVQ (d=2)"}


def lattice_name(lattice: str, bits: int, n: int, m: int, k: int = 4) -> str:
  """``<lattice>_nested_q<q>_k<k>_norm`` with the largest q whose rate on an (n, m) layer is ≤ bits + 16/n."""
  budget = bits + 16.0 / n
  q = 2
  while get_quantizer(f"{lattice}_nested_q{q + 1}_k{k}_norm").rate((m, n)).effective <= budget + 1e-9:
    q += 1
  return f"{lattice}_nested_q{q}_k{k}_norm"


def _db(x: float) -> float:
  return 10.0 * float(np.log10(x))


def _lattice_row(w, h, lattice, bits, rotation, key, act_noise=0.0, percdamp=0.01):
  n, m = w.shape
  cfg = LatticeSICConfig(lattice_name(lattice, bits, n, m), block_size=96 if lattice == "leech" else 128,
                         rotate=True, rotation=rotation, act_noise=act_noise, percdamp=percdamp)
  w_hat, rep = lattice_sic(w, h, cfg, key)
  return w_hat, float(rep.d_relative), float(rep.rate_nominal_bits)


def minilm_layers(blocks, n_calibration: int = 128):
  from rdq.models import (
    from_pretrained,
    linear_kernels,
    load_splits,
    load_tokenizer,
    second_moments,
  )

  model = from_pretrained()
  tok = load_tokenizer(max_seq_length=256)
  splits = load_splits(n_calibration, 16, 0)
  stats = second_moments(model, splits.calibration, tok, 64)
  kernels = linear_kernels(model)
  names = [f"layer{b}.{t}" for b in blocks for t in LAYER_TYPES]
  return {nm: (jnp.asarray(kernels[nm], jnp.float32), jnp.asarray(stats.h[nm], jnp.float32)) for nm in names}


def synthetic_layer(n: int = 384, m: int = 384, alpha: float = 1.5, seed: int = 0):
  k_w, k_q = jax.random.split(jax.random.key(seed))
  w = jax.random.normal(k_w, (n, m))
  lam = np.arange(1, n + 1, dtype=np.float64) ** -alpha
  q = np.asarray(haar_orthogonal(k_q, n), np.float64)
  h = (q * (lam / lam.mean())) @ q.T
  return w, jnp.asarray(0.5 * (h + h.T), jnp.float32)


def rotation_in_distribution(n: int = 96, m: int = 32, samples: int = 48) -> None:
  """Mean E8-LDLQ distortion (q = 8) over independent rotations, Haar vs RHT, iid Gaussian W."""
  i = np.arange(n)
  x = np.random.default_rng(0).standard_normal((2 * n, n))
  x = (x + 0.9 * np.roll(x, 1, 1)) * np.linspace(0.2, 3, n) ** 0.5
  hs = {"AR(1) ρ=0.9": 0.9 ** np.abs(i[:, None] - i[None, :]), "diagonal, 10^±1.5": np.diag(np.logspace(-1.5, 1.5, n)),
        "empirical (2n samples)": x.T @ x / (2 * n)}
  ws = jax.random.normal(jax.random.key(2), (samples, n, m))
  keys = jax.random.split(jax.random.key(1), samples)
  print(f"E8 LDLQ (q=8) on iid Gaussian W ({n}x{m}), mean d_per_entry ± stderr over {samples} rotations")
  print(f"{'H':<24}{'Haar':>22}{'RHT':>22}{'RHT/Haar':>10}{'z':>7}")
  for name, h in hs.items():
    h = jnp.asarray(h, jnp.float32)
    d = {}
    for rotation in ("haar", "hadamard"):
      cfg = LatticeSICConfig("e8_nested_q8_norm", block_size=n, rotate=True, rotation=rotation)
      _, rep = jax.vmap(lambda w, k, cfg=cfg, h=h: lattice_sic_traced(w, h, cfg, k))(ws, keys)
      v = np.asarray(rep.d_per_entry, np.float64)
      d[rotation] = (v.mean(), v.std(ddof=1) / np.sqrt(samples))
    z = (d["hadamard"][0] - d["haar"][0]) / np.hypot(d["hadamard"][1], d["haar"][1])
    print(f"{name:<24}{d['haar'][0]:>13.5f} ± {d['haar'][1]:.5f}{d['hadamard'][0]:>13.5f} ± {d['hadamard'][1]:.5f}"
          f"{d['hadamard'][0] / d['haar'][0]:>10.3f}{z:>7.1f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--blocks", type=int, nargs="+", default=[0])
  parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
  parser.add_argument("--act-noise", type=float, default=1 / 155)
  parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=["e8_haar", "e8_rht", "leech_rht", "watersic", "gptvq"])
  parser.add_argument("--types", nargs="+", default=list(LAYER_TYPES), help="layer types of the first table")
  parser.add_argument("--only", choices=["layers", "qa", "rotation"], default=None)
  parser.add_argument("--qa-types", nargs="+", default=["query", "attn_out", "ffn_in", "ffn_out"],
                      help="layer types of the QA-LDLQ table")
  args = parser.parse_args()
  t0 = time.perf_counter()
  if args.only == "rotation":
    rotation_in_distribution()
    return
  layers = minilm_layers(args.blocks)
  print(f"MiniLM blocks {args.blocks}: {len(layers)} layers ({time.perf_counter() - t0:.0f} s to load + calibrate)")
  key = jax.random.key(0)

  if args.only in (None, "layers"):
    rows = [ROWS[r] for r in args.rows]
    print("\nrelative distortion [dB] @ rate [bits/weight]")
    print(f"{'layer':<18}{'bits':>5} " + " ".join(f"{r:>22}" for r in rows))
    mean = {(r, b): [] for r in rows for b in args.bits}
    for name, (w, h) in layers.items():
      if name.split(".")[1] not in args.types:
        continue
      for bits in args.bits:
        cells = []
        for r in rows:
          if r == "E8 LDLQ (Haar)":
            _, d, rate = _lattice_row(w, h, "e8", bits, "haar", key)
          elif r == "E8 LDLQ (RHT)":
            _, d, rate = _lattice_row(w, h, "e8", bits, "hadamard", key)
          elif r == "Λ24 LDLQ (RHT)":
            _, d, rate = _lattice_row(w, h, "leech", bits, "hadamard", key)
          else:
            from rdq.experiments.real_model_algorithms import quantize_layer

            algo = "watersic" if r == "WaterSIC" else "gptvq"
            _, rate, rep = quantize_layer(np.asarray(w), np.asarray(h), algo, bits)
            d = float(rep.d_relative)
          mean[(r, bits)].append((d, rate))
          cells.append(f"{_db(d):>8.2f} dB @ {rate:5.3f}")
        print(f"{name:<18}{bits:>5} " + " ".join(f"{c:>22}" for c in cells), flush=True)
    print(f"\nmean over {len(mean[(rows[0], args.bits[0])])} layers (distortion averaged in dB)")
    for bits in args.bits:
      print(f"{'mean':<18}{bits:>5} " + " ".join(
          f"{np.mean([_db(d) for d, _ in mean[(r, bits)]]):>8.2f} dB @ {np.mean([x for _, x in mean[(r, bits)]]):5.3f}"
          for r in rows))

  if args.only in (None, "qa"):
    a = args.act_noise
    print(f"\nQA-LDLQ: D_ε/tr(WᵀHW) [dB] with act_noise = {a:.5g} (E8, RHT); gain = LDLQ − QA-LDLQ")
    print("  'LDLQ+ridge': LDLQ with the same H + ε²I as QA-LDLQ (percdamp 0.01 + act_noise) but the original W as")
    print("  target: QA − (LDLQ+ridge) isolates the target shrinkage W_ε = W − ε²H_ε⁻¹W from the extra damping.")
    print(f"{'layer':<18}{'bits':>5} {'LDLQ':>9} {'LDLQ+ridge':>11} {'QA-LDLQ':>9} {'gain dB':>8} {'vs ridge':>9}"
          f" {'clean LDLQ':>11} {'clean QA':>9}")
    qa_layers = {k: v for k, v in layers.items() if k.split(".")[1] in args.qa_types}
    qa_layers["synthetic(384)"] = synthetic_layer()
    gains = {b: [] for b in args.bits}
    for name, (w, h) in qa_layers.items():
      signal = float(jnp.sum(w * (h @ w)))
      for bits in args.bits:
        out = {}
        for label, noise, damp in (("ldlq", 0.0, 0.01), ("ridge", 0.0, 0.01 + a), ("qa", a, 0.01)):
          w_hat, d_clean, _ = _lattice_row(w, h, "e8", bits, "hadamard", key, act_noise=noise, percdamp=damp)
          d_eps = float(noisy_input_distortion(w, w_hat, h, a)) * w.size / signal
          out[label] = (d_eps, d_clean)
        g = _db(out["ldlq"][0]) - _db(out["qa"][0])
        g_r = _db(out["ridge"][0]) - _db(out["qa"][0])
        if not name.startswith("synthetic"):
          gains[bits].append((g, g_r))
        print(f"{name:<18}{bits:>5} {_db(out['ldlq'][0]):>9.2f} {_db(out['ridge'][0]):>11.2f} {_db(out['qa'][0]):>9.2f}"
              f" {g:>8.3f} {g_r:>9.3f} {_db(out['ldlq'][1]):>11.2f} {_db(out['qa'][1]):>9.2f}", flush=True)
    for bits in args.bits:
      gs = np.asarray(gains[bits])
      print(f"mean QA-LDLQ gain over {len(gs)} MiniLM layers at {bits} bits: {gs[:, 0].mean():.3f} dB vs LDLQ, "
            f"{gs[:, 1].mean():.3f} dB vs LDLQ+ridge")
  print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  main()
