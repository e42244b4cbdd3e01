"""Figures of the real-model experiment: D(R) and gap heat-maps, spectra, end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rdq.experiments.real_model_algorithms import ALGO_LABELS, ALGORITHMS
from rdq.experiments.real_model_data import LAYER_TYPES, Context


def figures(cfg, ctx: Context, records, spectra, out_dir: Path) -> None:
  """``real_layer_gap``, ``real_spectra`` and (with end-to-end points) ``real_model_e2e`` in ``out_dir``."""
  import jax
  import matplotlib.pyplot as plt

  from rdq import covariance
  from rdq.limits import waterfill
  from rdq.plot import COLORS, DISTORTION_LABEL_LAYER, LIMIT_STYLE, RATE_LABEL, save, style

  style()
  by = {(r["config"]["algorithm"], r["config"]["bits"]): r["result"] for r in records}
  algos = [a for a in ALGORITHMS if a in cfg.algorithms]
  bits = sorted({b for _, b in by})
  blocks = [int(b) for b in cfg.blocks]

  # --- real_layer_gap: D(R) for two layers + gap heat-maps at gap_bits -----------------
  gap_b = int(cfg.gap_bits) if int(cfg.gap_bits) in bits else bits[len(bits) // 2]
  heat_algos = [a for a in algos if (a, gap_b) in by]
  cols = min(3, len(heat_algos))
  rows = -(-len(heat_algos) // cols)
  fig = plt.figure(figsize=(7.0, 3.0 + 2.0 * rows))
  gs = fig.add_gridspec(1 + rows, 2 * cols, height_ratios=[1.4] + [1.0] * rows, hspace=0.55, wspace=0.6)
  examples = [ctx.layers[0], ctx.layers[-1]]
  top = [fig.add_subplot(gs[0, :cols]), fig.add_subplot(gs[0, cols:])]
  for ax, name in zip(top, examples):
    w = ctx.kernels[name]
    r_grid = np.linspace(min(bits) - 0.25, max(bits) + 0.25, 40)
    lim = [float(waterfill(np.clip(ctx.h_eigs[name], 0, None), r, float(np.mean(w.astype(np.float64) ** 2))).distortion)
           for r in r_grid]
    ax.semilogy(r_grid, lim, label="waterfilling limit", **LIMIT_STYLE)
    for a in algos:
      pts = sorted((by[(a, b)]["layers"][name]["rate_bits"], by[(a, b)]["layers"][name]["d_per_entry"])
                   for b in bits if (a, b) in by)
      if pts:
        ax.semilogy(*zip(*pts), "o-", ms=3, color=COLORS[a], label=ALGO_LABELS[a])
    ax.set_title(f"{name} (n={w.shape[0]}, m={w.shape[1]})")
    ax.set_xlabel("rate [bits/weight, side incl.]")
  top[0].set_ylabel(DISTORTION_LABEL_LAYER)
  top[1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6)
  vmax = max(by[(a, gap_b)]["layers"][n]["gap_bits"] for a in heat_algos for n in ctx.layers)
  heat = []
  for j, a in enumerate(heat_algos):
    ax = fig.add_subplot(gs[1 + j // cols, 2 * (j % cols): 2 * (j % cols) + 2])
    heat.append(ax)
    g = np.array([[by[(a, gap_b)]["layers"][f"layer{b}.{t}"]["gap_bits"] for t in LAYER_TYPES] for b in blocks])
    im = ax.imshow(g, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    for (i, k), v in np.ndenumerate(g):
      ax.text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=5, color="w" if v < 0.6 * vmax else "k")
    ax.set_xticks(range(len(LAYER_TYPES)), ["q", "k", "v", "o", "in", "out"])
    ax.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks] if j % cols == 0 else [])
    ax.set_title(f"{ALGO_LABELS[a]}\ngap at {gap_b} bits", fontsize=7)
    ax.grid(False)
  fig.colorbar(im, ax=heat, shrink=0.9, label="rate gap to limit [bits/weight]")
  fig.suptitle("MiniLM-L6 real layers: distortion vs rate and rate gap to reverse waterfilling", fontsize=9)
  save(fig, out_dir / "real_layer_gap")

  # --- real_spectra: spectra vs synthetic families; fitted α per layer ------------------
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.0, 2.9), gridspec_kw=dict(width_ratios=[1.3, 1.0], wspace=0.35))
  cmap = plt.get_cmap("tab10")
  for t_i, t in enumerate(LAYER_TYPES):
    if t in ("key", "value"):
      continue  # same input as query
    for b in blocks:
      eig = np.sort(np.clip(ctx.h_eigs[f"layer{b}.{t}"], 1e-30, None))[::-1]
      ax0.loglog(np.arange(1, eig.size + 1) / eig.size, eig / eig.mean(), color=cmap(t_i), lw=0.7, alpha=0.8,
                 label=t if b == blocks[0] else None)
  n_syn = 384
  key = jax.random.key(int(cfg.seed))
  syn = {
      r"power law $\alpha$=1": np.asarray(covariance.PowerLaw(n_syn).eigenvalues(1.0)),
      r"power law $\alpha$=2": np.asarray(covariance.PowerLaw(n_syn).eigenvalues(2.0)),
      "Wishart (N=4n)": np.linalg.eigvalsh(np.asarray(covariance.Wishart(n_syn, num_samples=4 * n_syn)(key, 0.0))),
      "spiked (k=4, β=50)": np.linalg.eigvalsh(np.asarray(covariance.Spiked(n_syn)(key, 50.0))),
  }
  for (label, eig), ls in zip(syn.items(), ["--", "-.", ":", (0, (5, 1, 1, 1))]):
    eig = np.sort(np.clip(eig, 1e-30, None))[::-1]
    ax0.loglog(np.arange(1, eig.size + 1) / eig.size, eig / eig.mean(), color="0.3", ls=ls, lw=1.0, label=label)
  ax0.set_xlabel("rank / n")
  ax0.set_ylabel(r"eigenvalue of $H$ / mean")
  ax0.set_ylim(1e-6, None)
  ax0.legend(ncol=2, fontsize=6)
  ax0.set_title("spectra of real H vs synthetic Σ")
  alpha = np.array([[spectra[f"layer{b}.{t}"]["alpha"] for t in LAYER_TYPES] for b in blocks])
  im = ax1.imshow(alpha, cmap="magma", aspect="auto")
  for (i, k), v in np.ndenumerate(alpha):
    ax1.text(k, i, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w" if v < alpha.mean() else "k")
  ax1.set_xticks(range(len(LAYER_TYPES)), ["q", "k", "v", "o", "in", "out"])
  ax1.set_yticks(range(len(blocks)), [f"block {b}" for b in blocks])
  ax1.grid(False)
  ax1.set_title(rf"fitted $\alpha$, $\lambda_k\propto k^{{-\alpha}}$ (k={int(cfg.spectra.k_lo)}..{cfg.spectra.hi_frac:g}n)")
  fig.colorbar(im, ax=ax1, shrink=0.9)
  save(fig, out_dir / "real_spectra")

  # --- real_model_e2e ---------------------------------------------------------------------
  e2e = [(c, r) for c, r in by.items() if "e2e" in r]
  if e2e:
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(7.0, 2.6), gridspec_kw=dict(wspace=0.35))
    for a in algos:
      pts = sorted((r["model_rate_bits"], r["e2e"]) for (aa, _), r in e2e if aa == a)
      if not pts:
        continue
      x = [p[0] for p in pts]
      ax0.errorbar(x, [1 - p[1]["cosine_mean"] for p in pts], yerr=[p[1]["cosine_stderr"] for p in pts],
                   fmt="o-", ms=3, color=COLORS[a], label=ALGO_LABELS[a])
      ax1.errorbar(x, [p[1]["top1_agreement"] for p in pts], yerr=[p[1]["top1_agreement_stderr"] for p in pts],
                   fmt="o-", ms=3, color=COLORS[a], label=ALGO_LABELS[a])
    ax0.set_yscale("log")
    ax0.set_xlabel(RATE_LABEL.replace(" per entry", " per weight"), fontsize=7)
    ax0.set_ylabel("1 − mean cosine to fp32 embedding")
    ax1.set_xlabel(RATE_LABEL.replace(" per entry", " per weight"), fontsize=7)
    ax1.set_ylabel("top-1 retrieval agreement with fp32")
    ax1.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=6)  # beside the panels, never on the data
    fig.suptitle(f"MiniLM-L6 end to end, all linear layers quantized ({cfg.data.n_eval} eval passages)", fontsize=9)
    save(fig, out_dir / "real_model_e2e")
