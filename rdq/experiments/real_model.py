"""Real layers of MiniLM-L6: every algorithm against the waterfilling limit, spectra, end to end.

Three parts, one Hydra app (``python -m rdq.experiments.real_model`` quick;
``+experiment=real_model_full`` for the paper):

1. **Layerwise.** For each of the 36 linear layers (6 blocks × query, key, value,
   attention output, FFN in, FFN out), ``H = E[x xᵀ]`` is estimated from the calibration
   passages (``rdq.models.second_moments``). RTN, GPTQ, WaterSIC, GPTVQ and the E8 nested
   lattice code (round to nearest, and with LDLQ feedback) quantize ``W`` at each rate; the distortion ``d = tr((W−Ŵ)ᵀH(W−Ŵ))/(n·m)`` is compared with the reverse-
   waterfilling limit ``D*(R)`` for that H (``rdq.limits.waterfill`` over the eigenvalues
   of H, weights modelled as iid ``N(0, σ²)`` with ``σ² = mean W²``). The **rate gap** of an
   algorithm is ``R_alg − R*(d_alg)``: the extra bits per weight it spends over the limit
   at the distortion it achieves. A second, tighter reference (``limit_featvar``) models
   input feature ``i`` of W with its own variance ``s_i = mean_j W_ij²`` (waterfilling over
   the eigenvalues of ``S^{1/2} H S^{1/2}``), which is what WaterSIC's step rule adapts to.
2. **Spectra.** Eigenvalue spectra of the real H (normalized to mean 1) next to the
   synthetic families of ``rdq.covariance``, and the power-law exponent ``α`` of each
   layer from a least-squares fit of ``log λ_k = c − α log k`` over ranks ``k ∈ [k_lo, f·n]``.
3. **End to end.** All linear layers quantized at 2, 3 and 4 bits per weight (side
   information counted) with each algorithm; mean cosine similarity of the sentence
   embeddings to the fp32 model and top-1 retrieval agreement on the evaluation split.

Rates (bits per weight, side information counted; the budget at ``bits`` is ``bits + 16/n``).

* RTN and GPTQ: GPTQ's symmetric min–max integer grid with one fp16 scale per output feature
  (``MinMaxGrid``): ``bits + 16/n``, fixed length.
* WaterSIC: the same budget ``bits + 16/n`` as an entropy-coded rate (plug-in entropy of each
  input feature's codes plus its 16-bit scales), as in the WaterSIC paper.
* GPTVQ (``rdq.layer.gptvq``, d = 2, EM init, least-squares codebook update): ``bits`` index
  bits plus fp16 codebooks, with tiles chosen so the codebooks cost at most
  ``gptvq.overhead_bits`` (0.125, the paper's ``b + 0.125`` setting) per weight
  (``rdq.layer.gptvq_tiles``). INT8 codebook compression is off: one INT8 scale per codebook cannot
  hold MiniLM's FFN-output outliers (weights up to 175× the layer RMS); measured on
  ``layer0.ffn_out`` at 4 bits it multiplies the distortion by 137.
* E8 nested lattice (``rdq.layer.lattice_sic``; NestQuant's Voronoi code ``E8/qE8`` with k
  scales β per 8-block and one bf16 RMS scale per output feature): the largest integer q with
  ``log2 q + log2(k)/8 ≤ bits`` (q = 3, 6, 13 at 2, 3, 4 bits for k = 4), so the rate
  ``≤ bits + 16/n``, fixed length. Both E8 rows quantize in a Haar-random rotated input basis
  (NestQuant and QuIP# rotate too; without it the 80–175σ outliers of the FFN-output layers
  overload every β and E8 is 20–1000× worse than GPTQ there). ``e8_rtn`` rounds to nearest;
  ``e8_ldlq`` adds the block-SIC (LDLQ) feedback. RTN, GPTQ, WaterSIC and GPTVQ are not
  rotated.

Files, one job each: this module (the Hydra app: points, sweep, outputs);
``real_model_algorithms`` (the rows as ``rdq.layer`` registry algorithms with their rate
budgets, vmapped over same-shape layers); ``real_model_data`` (model, calibration H,
eigenvalues, fp32 reference); ``real_model_limits`` (waterfilling references and rate gaps);
``real_model_spectra`` (power-law fit); ``real_model_e2e`` (embedding cosine, retrieval, table);
``real_model_figures``.

References:
  Lifar, Savkin, Ordentlich & Polyanskiy, "WaterSIC", arXiv 2603.04956 (0.255-bit gap,
  entropy rates); Frantar et al., "GPTQ", ICLR 2023; van Baalen et al., "GPTVQ", arXiv
  2402.15319 (bits per value ``b + k·d·16/ℓ``); Savkin, Porat, Ordentlich & Polyanskiy,
  "NestQuant", arXiv 2502.09720 (E8 Voronoi codes, LDLQ, rotation); Cover & Thomas, *Elements of Information
  Theory*, Thm. 10.3.3 (reverse waterfilling); Reimers & Gurevych, "Sentence-BERT" (2019).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rdq.experiments._store import write_text_atomic
from rdq.experiments._sweep import Sweep, pool_seeds
from rdq.experiments.real_model_algorithms import ALGORITHMS, layer_key, options_from_config, quantize_layers
from rdq.experiments.real_model_data import Context, shared_context
from rdq.experiments.real_model_e2e import e2e_metrics, e2e_table
from rdq.experiments.real_model_figures import figures
from rdq.experiments.real_model_limits import layer_limits
from rdq.experiments.real_model_spectra import power_law_exponent

log = logging.getLogger(__name__)


def _point_config(cfg: DictConfig, ctx: Context, algorithm: str, bits: int) -> dict:
  return {
      "experiment": "real_model",
      "algorithm": algorithm,
      "bits": int(bits),
      "blocks": [int(b) for b in cfg.blocks],
      "e2e": bool(int(bits) in set(cfg.e2e_bits) and len(ctx.layers) == 36),
      "data": OmegaConf.to_container(cfg.data),
      "data_digest": ctx.splits.digest,
      "seed": int(cfg.seed),
      "gptq": OmegaConf.to_container(cfg.gptq),
      "watersic": OmegaConf.to_container(cfg.watersic),
      "gptvq": OmegaConf.to_container(cfg.gptvq),
      "e8": OmegaConf.to_container(cfg.e8),
  }


def _compute(point: Mapping[str, Any], ctx: Context, options: dict) -> dict:
  from rdq.models import replace_linears

  algorithm, bits = point["algorithm"], point["bits"]
  layers, new = {}, {}
  t0 = time.perf_counter()
  groups: dict[tuple[int, int], list[str]] = {}
  for name in ctx.layers:
    groups.setdefault(ctx.kernels[name].shape, []).append(name)
  for names in groups.values():
    keys = [layer_key(point["seed"], k) for k in names]
    outs = quantize_layers(
        [ctx.kernels[k] for k in names], [ctx.stats.h[k] for k in names], algorithm, bits, options, keys
    )
    for name, (w_hat, rate, rep) in zip(names, outs):
      w = ctx.kernels[name]
      rec = {"n": int(w.shape[0]), "m": int(w.shape[1]), **rep.scalars()}
      d = rec["d_per_entry"]
      rec.update(layer_limits(w, ctx.h_eigs[name], ctx.hs_eigs[name], rate, d))
      layers[name] = rec
      new[name] = w_hat
  layers = {k: layers[k] for k in ctx.layers}
  out: dict[str, Any] = {"layers": layers, "quantize_s": time.perf_counter() - t0}
  sizes = np.array([r["n"] * r["m"] for r in layers.values()], np.float64)
  out["model_rate_bits"] = float(np.sum(sizes * np.array([r["rate_bits"] for r in layers.values()])) / sizes.sum())
  if point["e2e"]:
    qmodel = replace_linears(ctx.model, new)
    got = ctx._embed(qmodel, ctx.splits.evaluation, ctx.tokenizer, int(point["data"]["batch_size"]))
    out["e2e"] = e2e_metrics(ctx.ref_eval, got)
  log.info("%s %d bits: %.1f s", algorithm, bits, time.perf_counter() - t0)
  return out


def _context(cfg: DictConfig) -> Context:
  """The run's ``Context``, built once per (data, seed, blocks) in this process."""
  return shared_context(cfg)


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """Figures, the e2e table and the results.json fields of this sweep's points."""
  ctx = _context(cfg)
  spectra = {}
  for name in ctx.layers:
    eig = ctx.h_eigs[name]
    spectra[name] = {
        "alpha": power_law_exponent(eig, int(cfg.spectra.k_lo), float(cfg.spectra.hi_frac)),
        "condition_log10": float(np.log10(eig.max() / max(eig.min(), 1e-30))),
        "top1_share": float(eig.max() / eig.sum()),
    }
  below = all(
      rec["result"]["layers"][name]["d_per_entry"] >= rec["result"]["layers"][name]["limit_d"]
      for rec in records for name in rec["result"]["layers"]
  )
  if not below:
    log.warning("some algorithm is below the waterfilling reference on some layer; see results.json")
  pooled = pool_seeds(records)
  write_text_atomic(out_dir / "real_model_e2e.md", e2e_table(pooled, cfg))
  figures(cfg, ctx, pooled, spectra, out_dir)
  return {"data": ctx.data_info(), "spectra": spectra, "limit_below_all_algorithms": below}


def run(cfg: DictConfig) -> dict | None:
  """Run (or resume) the sweep; a single run writes results.json, the figures and the e2e table."""
  sweep = Sweep(cfg, "real_model")
  for a in cfg.algorithms:
    if a not in ALGORITHMS:
      raise ValueError(f"algorithms contains {a!r}; known: {ALGORITHMS}")
  ctx = _context(cfg)
  options = options_from_config(cfg)
  bits_all = sorted(set(int(b) for b in cfg.bits) | set(int(b) for b in cfg.e2e_bits))
  max_vq = int(cfg.gptvq.max_bits)  # k = 2^(d·b) centroids: time and codebook size grow as 4^b at d = 2
  points = [_point_config(cfg, ctx, a, b) for a in cfg.algorithms for b in bits_all if a != "gptvq" or b <= max_vq]
  sweep.run_points(points, lambda p: _compute(p, ctx, options))
  return sweep.finish()


@hydra.main(version_base="1.3", config_path="conf", config_name="real_model")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  main()
