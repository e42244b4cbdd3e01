"""End-to-end quality of a quantized MiniLM: embedding cosine and retrieval agreement, and their table.

References:
  N. Reimers & I. Gurevych, "Sentence-BERT", EMNLP 2019 (cosine similarity of sentence
  embeddings; retrieval by nearest neighbour).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from omegaconf import DictConfig

from rdq.experiments.real_model_algorithms import ALGO_LABELS, ALGORITHMS


def e2e_metrics(ref: np.ndarray, got: np.ndarray) -> dict:
  """Cosine similarity to the fp32 embeddings and top-1 retrieval agreement.

  Retrieval: each evaluation passage is a query against the other passages (itself
  excluded); agreement is the fraction of queries whose nearest neighbour (cosine) under the
  quantized model is the one under the fp32 model. Both are means over passages with a
  standard error (sample std/√N; binomial for agreement).
  """
  ref = np.asarray(ref, np.float64)
  got = np.asarray(got, np.float64)
  if ref.shape != got.shape or ref.ndim != 2 or ref.shape[0] < 2:
    raise ValueError(f"ref {ref.shape} and got {got.shape} must be equal (N ≥ 2, d) shapes")
  nrm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
  ref, got = nrm(ref), nrm(got)
  cos = np.sum(ref * got, axis=1)
  n = cos.size

  def top1(e):
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    return np.argmax(s, axis=1)

  agree = (top1(ref) == top1(got)).astype(np.float64)
  p = float(agree.mean())
  return {
      "cosine_mean": float(cos.mean()),
      "cosine_stderr": float(cos.std(ddof=1) / np.sqrt(n)),
      "cosine_min": float(cos.min()),
      "top1_agreement": p,
      "top1_agreement_stderr": float(np.sqrt(max(p * (1 - p), 0.0) / n)),
      "n": n,
  }


def e2e_table(records: Sequence[dict], cfg: DictConfig) -> str:
  rows = [r for r in records if "e2e" in r["result"]]
  lines = [
      "| algorithm | bits | rate (bits/weight, side incl.) | mean layer gap to limit (bits) | "
      "cosine to fp32 | top-1 retrieval agreement |",
      "|---|---|---|---|---|---|",
  ]
  for r in sorted(rows, key=lambda r: (r["config"]["bits"], ALGORITHMS.index(r["config"]["algorithm"]))):
    res, c = r["result"], r["config"]
    e = res["e2e"]
    gap = np.mean([v["gap_bits"] for v in res["layers"].values()])
    lines.append(
        f"| {ALGO_LABELS[c['algorithm']]} | {c['bits']} | {res['model_rate_bits']:.3f} | {gap:.2f} | "
        f"{e['cosine_mean']:.4f} ± {e['cosine_stderr']:.4f} | "
        f"{e['top1_agreement']:.3f} ± {e['top1_agreement_stderr']:.3f} |"
    )
  d = cfg.data
  lines.append("")
  lines.append(
      f"all-MiniLM-L6-v2, all 36 linear layers quantized; calibration {d.n_calibration} and evaluation "
      f"{d.n_eval} stdlib-docstring passages (disjoint, seed {cfg.seed}); ± is one standard error over "
      "evaluation passages. Budget at b bits: b + 16/n bits per weight. RTN/GPTQ: symmetric min–max INT "
      "grid, one fp16 scale per output feature (fixed-length rate); WaterSIC: entropy-coded rate at the "
      "same budget; GPTVQ: 2-D codebooks (EM init, least-squares update) with fp16 codebooks costing "
      "≤ 0.125 bit per weight (the paper's b + 0.125; INT8 codebooks are off because of FFN-output "
      "outliers); E8: Voronoi code E8/qE8 with 4 β-scales per 8-block and a bf16 scale per output feature, "
      "largest q within the budget (q = 3, 6, 13), in a Haar-random rotated basis, rounded to nearest "
      "(RTN) or with block-LDLQ feedback. Gap: rate minus the waterfilling rate R*(d) at the achieved "
      "distortion, averaged over layers."
  )
  return "\n".join(lines) + "\n"
