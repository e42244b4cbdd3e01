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

Same-shape layers run together (``vmap``); LDLQ, damped LDLQ and QA-LDLQ with one quantizer
share one compiled program (``percdamp``/``act_noise``/``feedback`` are traced), so the cost is about one
compilation per (row, bits, layer shape) plus Λ24's decoding (~1.5 s of CPU per 384×384 layer).

With ``--out-dir`` the tables are also written as ``lattice_layers.md`` and the mean distortion
per row as ``lattice_layers.png``/``.pdf`` (``make figures``: ``paper_figures/regenerate.py``).

Usage:
  python -m rdq.experiments.lattice_layers                      # quick: block 0's query and attn_out, 2–4 bits
  python -m rdq.experiments.lattice_layers --full               # all 36 layers (6 blocks × 6 types)
  python -m rdq.experiments.lattice_layers --only rotation      # Haar vs RHT in distribution
  python -m rdq.experiments.lattice_layers --only layers --rows e8_rht leech_rht watersic --types query attn_out ffn_in ffn_out
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rdq.covariance import haar_orthogonal
from rdq.layer import LatticeSICConfig, lattice_sic_traced
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
  """Lattice SIC on one layer: ``(Ŵ, d_relative, rate)``. One compiled program per (quantizer,
  rotation, shape): ``percdamp`` and ``act_noise`` are traced (``rdq.layer.lattice_sic``)."""
  n, m = w.shape
  cfg = LatticeSICConfig(lattice_name(lattice, bits, n, m), block_size=96 if lattice == "leech" else 128,
                         rotate=True, rotation=rotation, act_noise=act_noise, percdamp=percdamp)
  w_hat, rep = lattice_sic_traced(w, h, cfg, key)
  return w_hat, float(rep.d_relative), float(rep.rate_nominal_bits)


def _by_shape(layers: dict) -> dict:
  """``{(n, m): [names]}`` in the order of ``layers``."""
  out: dict = {}
  for name, (w, _) in layers.items():
    out.setdefault(tuple(w.shape), []).append(name)
  return out


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


LATTICE_ROWS = {"E8 LDLQ (Haar)": ("e8", "haar"), "E8 LDLQ (RHT)": ("e8", "hadamard"), "Λ24 LDLQ (RHT)": ("leech", "hadamard")}
QA_LATTICES = {"e8": "E8", "leech": "Λ24"}


def layer_table(layers: dict, rows, bits_list, key, memo: dict) -> dict:
  """``{(row, bits): {layer: (d_relative, rate)}}``; same-shape layers run at once."""
  from rdq.experiments.real_model_algorithms import quantize_layers

  out = {(r, b): {} for r in rows for b in bits_list}
  for names in _by_shape(layers).values():
    ws = jnp.stack([layers[nm][0] for nm in names])
    hs = jnp.stack([layers[nm][1] for nm in names])
    for bits in bits_list:
      for r in rows:
        c0 = time.process_time()
        if r in LATTICE_ROWS:
          lat, rot = LATTICE_ROWS[r]
          for nm in names:
            w_hat, d, rate = _lattice_row(*layers[nm], lat, bits, rot, key)
            memo[(nm, lat, rot, bits, 0.0, 0.01)] = w_hat
            out[(r, bits)][nm] = (d, rate)
        else:
          algo = "watersic" if r == "WaterSIC" else "gptvq"
          res = quantize_layers([np.asarray(w) for w in ws], [np.asarray(h) for h in hs], algo, bits)
          for nm, (_, rate, rep) in zip(names, res):
            out[(r, bits)][nm] = (float(rep.d_relative), rate)
        print(f"  {r} @ {bits} bits on {len(names)} layers {ws.shape[1]}×{ws.shape[2]}: "
              f"{time.process_time() - c0:.1f} s CPU", flush=True)
  return out


def qa_table(layers: dict, lattices, bits_list, act_noise: float, key, memo: dict) -> list[dict]:
  """NestQuant's QA-LDLQ against LDLQ and LDLQ+ridge (E8 only) on ``layers``: ``D_ε/tr(WᵀHW)``."""
  variants = {"ldlq": (0.0, 0.01), "ridge": (0.0, 0.01 + act_noise), "qa": (act_noise, 0.01)}
  out = []
  for lat in lattices:
    for bits in bits_list:
      c0 = time.process_time()
      for nm, (w, h) in layers.items():
        d = {}
        for label, (noise, damp) in variants.items():
          if label == "ridge" and lat != "e8":
            continue
          k = (nm, lat, "hadamard", bits, noise, damp)
          if k not in memo:
            memo[k] = _lattice_row(w, h, lat, bits, "hadamard", key, noise, damp)[0]
          signal = float(jnp.sum(w * (h @ w)))
          d[label] = _db(float(noisy_input_distortion(w, memo[k], h, act_noise)) * w.size / signal)
        out.append(dict(layer=nm, bits=bits, lattice=QA_LATTICES[lat], **d))
      print(f"  QA-LDLQ table, {QA_LATTICES[lat]} @ {bits} bits on {len(layers)} layers: "
            f"{time.process_time() - c0:.1f} s CPU", flush=True)
  return out


def _fmt(d_rate) -> str:
  d, rate = d_rate
  return f"{_db(d):.2f} dB @ {rate:.3f}"


def write_outputs(out_dir: Path, table: dict, rows, bits_list, qa: list[dict], command: str, runtime_s: float) -> None:
  """``lattice_layers.md`` (mean and per-layer tables, QA-LDLQ table) and ``lattice_layers.png/.pdf``."""
  import matplotlib.pyplot as plt

  out_dir.mkdir(parents=True, exist_ok=True)
  layer_names = list(table[(rows[0], bits_list[0])])
  mean = {(r, b): (float(np.mean([_db(d) for d, _ in table[(r, b)].values()])),
                   float(np.mean([x for _, x in table[(r, b)].values()]))) for r in rows for b in bits_list}
  lines = [
      "# Lattice layer codes on MiniLM-L6: Λ24 vs E8 LDLQ, WaterSIC, GPTVQ; QA-LDLQ", "",
      f"`{command}` ({runtime_s:.0f} s). Weight-only, one layer at a time, `H = E[xxᵀ]` from MiniLM's calibration "
      "pass. Cell: relative distortion `tr((W−Ŵ)ᵀH(W−Ŵ))/tr(WᵀHW)` in dB (lower is better) @ rate in bits per "
      "weight, side information counted (lattice rows: fixed-length Voronoi code + β indices + bf16 row norm, "
      "largest q within `bits + 16/n`; WaterSIC: entropy-coded; GPTVQ: `bits + 0.125` budget). RHT = randomized "
      "Hadamard rotation, Haar = dense random rotation.", "",
      f"## Mean over {len(layer_names)} layers (dB averaged; {', '.join(layer_names)})", "",
      "| bits | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
  lines += [f"| {b} | " + " | ".join(f"{mean[(r, b)][0]:.2f} dB @ {mean[(r, b)][1]:.3f}" for r in rows) + " |"
            for b in bits_list]
  if "Λ24 LDLQ (RHT)" in rows and "E8 LDLQ (RHT)" in rows:
    lines += ["", "Λ24 − E8 (both RHT), mean over layers: " + ", ".join(
        f"{b} bits: {mean[('Λ24 LDLQ (RHT)', b)][0] - mean[('E8 LDLQ (RHT)', b)][0]:+.2f} dB at "
        f"{mean[('Λ24 LDLQ (RHT)', b)][1] - mean[('E8 LDLQ (RHT)', b)][1]:+.3f} bit" for b in bits_list) + "."]
  lines += ["", "## Per layer", "", "| layer | bits | " + " | ".join(rows) + " |", "|---|---|" + "---|" * len(rows)]
  lines += [f"| {nm} | {b} | " + " | ".join(_fmt(table[(r, b)][nm]) for r in rows) + " |"
            for nm in layer_names for b in bits_list]
  if qa:
    lines += ["", "## QA-LDLQ (NestQuant) vs LDLQ, both RHT",  "",
              "`D_ε/tr(WᵀHW)` in dB with white activation noise `ε² = act_noise · mean diag H` (act_noise = 1/155, "
              "NestQuant's 4-bit activations): `D_ε = tr((W−Ŵ)ᵀH(W−Ŵ)) + ε²‖Ŵ‖²`. LDLQ+ridge: LDLQ with the same "
              "`H + ε²I` but the original target (E8 only); gain = LDLQ − QA-LDLQ (positive: QA-LDLQ better).", "",
              "| layer | bits | lattice | LDLQ | LDLQ+ridge | QA-LDLQ | gain dB |", "|---|---|---|---|---|---|---|"]
    for q in qa:
      ridge = f"{q['ridge']:.2f}" if "ridge" in q else "—"
      lines.append(f"| {q['layer']} | {q['bits']} | {q['lattice']} | {q['ldlq']:.2f} | {ridge} | {q['qa']:.2f} | "
                   f"{q['ldlq'] - q['qa']:+.3f} |")
    for lat in dict.fromkeys(q["lattice"] for q in qa):
      for b in bits_list:
        g = [q["ldlq"] - q["qa"] for q in qa if q["lattice"] == lat and q["bits"] == b and not q["layer"].startswith("synth")]
        if g:
          lines.append(f"\nMean QA-LDLQ gain, {lat}, {b} bits, {len(g)} MiniLM layers: {np.mean(g):+.3f} dB.")
  (out_dir / "lattice_layers.md").write_text("\n".join(lines) + "\n")

  fig, ax = plt.subplots(figsize=(6.0, 4.0))
  for r, marker in zip(rows, "osD^v"):
    ax.plot([mean[(r, b)][1] for b in bits_list], [mean[(r, b)][0] for b in bits_list], marker=marker, label=r)
  ax.set_xlabel("rate [bits per weight, side information counted]")
  ax.set_ylabel("relative distortion [dB]")
  ax.set_title(f"MiniLM-L6, mean over {len(layer_names)} layers")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  for ext in ("png", "pdf"):
    fig.savefig(out_dir / f"lattice_layers.{ext}", dpi=150)
  plt.close(fig)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true", help="all 36 layers (blocks 0–5, every type) in both tables")
  parser.add_argument("--blocks", type=int, nargs="+", default=None, help="MiniLM blocks (quick: 0; --full: 0–5)")
  parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
  parser.add_argument("--act-noise", type=float, default=1 / 155)
  parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=["e8_haar", "e8_rht", "leech_rht", "watersic", "gptvq"])
  parser.add_argument("--types", nargs="+", default=None,
                      help="layer types of the first table (quick: query attn_out; --full: all six)")
  parser.add_argument("--only", choices=["layers", "qa", "rotation"], default=None)
  parser.add_argument("--qa-types", nargs="+", default=None,
                      help="layer types of the QA-LDLQ table (quick: query attn_out; --full: query attn_out ffn_in ffn_out)")
  parser.add_argument("--qa-lattices", nargs="+", choices=sorted(QA_LATTICES), default=None,
                      help="lattices of the QA-LDLQ table (quick: e8; --full: e8 leech)")
  parser.add_argument("--out-dir", type=Path, default=None, help="write lattice_layers.md/.png/.pdf here")
  args = parser.parse_args(argv)
  blocks = args.blocks or (list(range(6)) if args.full else [0])
  types = args.types or (list(LAYER_TYPES) if args.full else ["query", "attn_out"])
  qa_lattices = args.qa_lattices or (["e8", "leech"] if args.full else ["e8"])
  qa_types = args.qa_types or (["query", "attn_out", "ffn_in", "ffn_out"] if args.full else ["query", "attn_out"])
  t0 = time.perf_counter()
  if args.only == "rotation":
    rotation_in_distribution()
    return
  layers = minilm_layers(blocks)
  print(f"MiniLM blocks {blocks}: {len(layers)} layers ({time.perf_counter() - t0:.0f} s, "
        f"{time.process_time():.0f} s CPU to load + calibrate)", flush=True)
  key = jax.random.key(0)
  memo: dict = {}
  rows = [ROWS[r] for r in args.rows]
  table: dict = {}
  if args.only in (None, "layers"):
    sel = {k: v for k, v in layers.items() if k.split(".")[1] in types}
    table = layer_table(sel, rows, args.bits, key, memo)
    print("\nrelative distortion [dB] @ rate [bits/weight]")
    print(f"{'layer':<18}{'bits':>5} " + " ".join(f"{r:>22}" for r in rows))
    for nm in sel:
      for bits in args.bits:
        print(f"{nm:<18}{bits:>5} " + " ".join(f"{_fmt(table[(r, bits)][nm]):>22}" for r in rows))
    print(f"\nmean over {len(sel)} layers (distortion averaged in dB)")
    for bits in args.bits:
      print(f"{'mean':<18}{bits:>5} " + " ".join(
          f"{np.mean([_db(d) for d, _ in table[(r, bits)].values()]):>8.2f} dB @ "
          f"{np.mean([x for _, x in table[(r, bits)].values()]):5.3f}" for r in rows))

  qa: list[dict] = []
  if args.only in (None, "qa"):
    a = args.act_noise
    qa_layers = {k: v for k, v in layers.items() if k.split(".")[1] in qa_types}
    qa_layers["synthetic(384)"] = synthetic_layer()
    qa = qa_table(qa_layers, qa_lattices, args.bits, a, key, memo)
    print(f"\nQA-LDLQ: D_ε/tr(WᵀHW) [dB] with act_noise = {a:.5g} (RHT); gain = LDLQ − QA-LDLQ")
    print("  'LDLQ+ridge' (E8): LDLQ with the same H + ε²I as QA-LDLQ (percdamp 0.01 + act_noise) but the original W as")
    print("  target: QA − (LDLQ+ridge) isolates the target shrinkage W_ε = W − ε²H_ε⁻¹W from the extra damping.")
    print(f"{'layer':<18}{'bits':>5} {'lattice':>8} {'LDLQ':>9} {'LDLQ+ridge':>11} {'QA-LDLQ':>9} {'gain dB':>8}")
    for q in qa:
      ridge = f"{q['ridge']:.2f}" if "ridge" in q else "—"
      print(f"{q['layer']:<18}{q['bits']:>5} {q['lattice']:>8} {q['ldlq']:>9.2f} {ridge:>11} {q['qa']:>9.2f}"
            f" {q['ldlq'] - q['qa']:>8.3f}")
    for lat in dict.fromkeys(q["lattice"] for q in qa):
      for bits in args.bits:
        g = [q["ldlq"] - q["qa"] for q in qa if q["lattice"] == lat and q["bits"] == bits and not q["layer"].startswith("synth")]
        print(f"mean QA-LDLQ gain, {lat}, over {len(g)} MiniLM layers at {bits} bits: {np.mean(g):.3f} dB vs LDLQ")
  runtime = time.perf_counter() - t0
  print(f"\ntotal {runtime:.0f} s ({time.process_time():.0f} s CPU)")
  if args.out_dir is not None and table:
    import sys

    given = list(argv if argv is not None else sys.argv[1:])
    shown = [a for i, a in enumerate(given) if not a.startswith("--out-dir") and (i == 0 or given[i - 1] != "--out-dir")]
    cmd = " ".join(["python -m rdq.experiments.lattice_layers", *shown])
    write_outputs(args.out_dir, table, rows, args.bits, qa, cmd, runtime)
    print(f"wrote {args.out_dir / 'lattice_layers.md'} and lattice_layers.png/.pdf")


if __name__ == "__main__":
  main()
