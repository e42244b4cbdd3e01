"""Real layers of MiniLM-L6: every algorithm against the waterfilling limit, spectra, end to end.

Three parts, one Hydra app (``python -m experiments.real_model`` quick;
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
  (``gptvq_tiles``). INT8 codebook compression is off: one INT8 scale per codebook cannot
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

References:
  Lifar, Savkin, Ordentlich & Polyanskiy, "WaterSIC", arXiv 2603.04956 (0.255-bit gap,
  entropy rates); Frantar et al., "GPTQ", ICLR 2023; van Baalen et al., "GPTVQ", arXiv
  2402.15319 (bits per value ``b + k·d·16/ℓ``); Savkin, Porat, Ordentlich & Polyanskiy,
  "NestQuant", arXiv 2502.09720 (E8 Voronoi codes, LDLQ, rotation); Cover & Thomas, *Elements of Information
  Theory*, Thm. 10.3.3 (reverse waterfilling); Reimers & Gurevych, "Sentence-BERT" (2019).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from experiments._store import PointStore, env_info, run_points, write_json_atomic

log = logging.getLogger(__name__)

LAYER_TYPES = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")
ALGORITHMS = ("rtn", "gptq", "watersic", "gptvq", "e8_rtn", "e8_ldlq")
ALGO_LABELS = {
    "rtn": "RTN",
    "gptq": "GPTQ",
    "watersic": "WaterSIC",
    "gptvq": "GPTVQ (d=2)",
    "e8_rtn": "E8-nested RTN (rot.)",
    "e8_ldlq": "E8-nested LDLQ (rot.)",
}


# --------------------------------------------------------------------------------------
# Pure pieces (tested in tests/experiments/test_real_model.py)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AlgoSettings:
  """Hyperparameters of the layer algorithms (from the config's ``gptq``/``watersic``/``gptvq``/``e8``)."""

  gptq_percdamp: float = 0.01
  gptq_block_size: int = 128
  gptq_act_order: bool = False
  watersic_percdamp: float = 1e-4
  watersic_rate_iters: int = 2
  watersic_rescale_iters: int = 4
  gptvq_dim: int = 2
  gptvq_overhead_bits: float = 0.125
  gptvq_em_iters: int = 10
  gptvq_percdamp: float = 0.01
  e8_k: int = 4
  e8_rotate: bool = True
  e8_percdamp: float = 0.01


def e8_quantizer_name(bits: int, k: int = 4) -> str:
  """Registry name of the E8 Voronoi code within ``bits`` per weight before the scale.

  The largest integer ``q ≥ 2`` with ``log2 q + log2(k)/8 ≤ bits`` (β index: ``log2 k`` bits
  per 8-block), with one bf16 RMS scale per output feature (``_norm``, 16/n bits).
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"e8 k={k!r} must be a positive integer")
  q = math.floor(2.0 ** (bits - math.log2(k) / 8) + 1e-9)
  if q < 2:
    raise ValueError(f"bits={bits} leaves no room for an E8 code with k={k} scales (need log2 2 + log2(k)/8 ≤ bits)")
  return f"e8_nested_q{q}_k{k}_norm"


def gptvq_tiles(n: int, m: int, dim: int, bits: int, max_overhead_bits: float, block_size: int = 128) -> tuple[int, int]:
  """``(group_size, group_outputs)`` with the most codebooks whose fp16 entries cost ≤ ``max_overhead_bits``.

  ``#codebooks · k·d·16 / (n·m) ≤ max_overhead_bits`` with ``k = 2^{d·bits}`` (GPTVQ's bits
  per value ``b + k·d·16/ℓ``, ℓ = n·m/#codebooks). ``group_size`` divides n, is a multiple of
  d and of or a divisor of ``block_size``; every tile holds at least k vectors. Among the
  layouts with the most codebooks, the group width nearest 256 (the paper's) wins.
  """
  k = 2 ** (dim * bits)
  per = k * dim * 16
  best = None
  for g in range(dim, n + 1, dim):
    if n % g or (g % block_size and block_size % g):
      continue
    for r in range(1, m + 1):
      if m % r or (g // dim) * r < k:
        continue
      count = (n // g) * (m // r)
      if count * per <= max_overhead_bits * n * m + 1e-9:
        cand = (count, -abs(math.log(g / 256)), g, r)
        best = cand if best is None else max(best, cand)
        break  # larger r only means fewer codebooks
  if best is None:
    raise ValueError(
        f"no GPTVQ tiling of an ({n}, {m}) layer keeps d={dim}, b={bits} fp16 codebooks within "
        f"{max_overhead_bits} bits per weight (one codebook costs {per / (n * m):.3f})"
    )
  return best[2], best[3]


def _algo_fn(algorithm: str, bits: int, shape: tuple[int, int], settings: AlgoSettings):
  """The traced (jit-able, vmappable) layer algorithm ``(w, h, key) -> (Ŵ, report)`` and its rate key."""
  from rdq.layer import GPTQConfig, GPTVQConfig, LatticeSICConfig, MinMaxGrid, RTNConfig, WaterSICConfig
  from rdq.layer.gptq import gptq_traced
  from rdq.layer.gptvq import _gptvq
  from rdq.layer.lattice_sic import lattice_sic_traced
  from rdq.layer.rtn import rtn_traced
  from rdq.layer.watersic import watersic_traced

  if algorithm not in ALGORITHMS:
    raise ValueError(f"algorithm={algorithm!r} must be one of {ALGORITHMS}")
  if not isinstance(bits, int) or not 2 <= bits <= 8:
    raise ValueError(f"bits={bits!r} must be an integer in [2, 8]")
  n, m = shape
  if algorithm == "rtn":
    cfg = RTNConfig(MinMaxGrid(bits=bits))
    return (lambda w, h, key: rtn_traced(w, h, cfg)), "rate_nominal_bits"
  if algorithm == "gptq":
    cfg = GPTQConfig(
        grid=MinMaxGrid(bits=bits), block_size=settings.gptq_block_size,
        percdamp=settings.gptq_percdamp, act_order=settings.gptq_act_order,
    )
    return (lambda w, h, key: gptq_traced(w, h, cfg)), "rate_nominal_bits"
  if algorithm == "watersic":
    cfg = WaterSICConfig(
        rate_bits=float(bits), rate_iters=settings.watersic_rate_iters,
        percdamp=settings.watersic_percdamp, rescale_iters=settings.watersic_rescale_iters,
    )
    target = bits + 16.0 / n  # the same budget as the INT grid with one fp16 scale per output feature
    return (lambda w, h, key: watersic_traced(w, h, target, cfg)), "rate_entropy_bits"
  if algorithm == "gptvq":
    g, r = gptvq_tiles(n, m, settings.gptvq_dim, bits, settings.gptvq_overhead_bits)
    cfg = GPTVQConfig(
        dim=settings.gptvq_dim, bits=bits, group_size=g, group_outputs=r, percdamp=settings.gptvq_percdamp,
        em_iters=settings.gptvq_em_iters, update=True,
    )
    return (lambda w, h, key: _gptvq(w, h, key, cfg)), "rate_bits"
  cfg = LatticeSICConfig(
      quantizer=e8_quantizer_name(bits, settings.e8_k), percdamp=settings.e8_percdamp,
      feedback=algorithm == "e8_ldlq", rotate=settings.e8_rotate,
  )
  return (lambda w, h, key: lattice_sic_traced(w, h, cfg, key)), "rate_nominal_bits"


@functools.lru_cache(maxsize=None)
def _batched(algorithm: str, bits: int, shape: tuple[int, int], settings: AlgoSettings):
  """Jitted ``vmap`` of ``_algo_fn`` (cached, so each shape compiles once per run)."""
  import jax

  fn, rate_key = _algo_fn(algorithm, bits, shape, settings)
  return jax.jit(jax.vmap(fn)), rate_key


def layer_key(seed: int, name: str):
  """PRNG key of one layer (GPTVQ seeding, E8 rotation): ``fold_in(key(seed), crc32(name))``."""
  import jax

  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def quantize_layers(
    ws: Sequence[np.ndarray],
    hs: Sequence[np.ndarray],
    algorithm: str,
    bits: int,
    settings: AlgoSettings = AlgoSettings(),
    keys: Sequence[Any] | None = None,
) -> list[tuple[np.ndarray, float, Any]]:
  """Quantize several same-shape layers at once (``vmap``); returns ``[(Ŵ, rate_bits, report)]``.

  ``rate_bits`` is the algorithm's rate incl. side information: fixed-length for RTN, GPTQ,
  GPTVQ and E8, entropy-coded for WaterSIC (see module docstring). ``keys``: one PRNG key per
  layer (default ``layer_key(0, f"layer{i}")``); only GPTVQ and the rotated E8 codes use them.
  ``H`` must already be validated (the caller checks each H once with
  ``rdq.layer.report.check_layer_inputs``).
  """
  import jax

  ws = np.stack([np.asarray(w, np.float32) for w in ws])
  hs = np.stack([np.asarray(h, np.float32) for h in hs])
  if ws.ndim != 3 or hs.shape != (ws.shape[0], ws.shape[1], ws.shape[1]):
    raise ValueError(f"need k layers of one shape: W (k, n, m) and H (k, n, n); got {ws.shape} and {hs.shape}")
  if keys is None:
    keys = [layer_key(0, f"layer{i}") for i in range(ws.shape[0])]
  if len(keys) != ws.shape[0]:
    raise ValueError(f"need one key per layer: {len(keys)} keys for {ws.shape[0]} layers")
  fn, rate_key = _batched(algorithm, bits, tuple(ws.shape[1:]), settings)
  w_hat, rep = fn(ws, hs, jax.numpy.stack(list(keys)))
  w_hat = np.asarray(w_hat)
  rates = np.asarray(getattr(rep, rate_key))
  reps = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), rep) for i in range(ws.shape[0])]
  return [(w_hat[i], float(rates[i]), reps[i]) for i in range(ws.shape[0])]


def quantize_layer(
    w: np.ndarray, h: np.ndarray, algorithm: str, bits: int, settings: AlgoSettings = AlgoSettings(), key=None
):
  """One layer: ``quantize_layers([w], [h], …)[0]`` after the eager checks of W and H."""
  from rdq.layer.report import check_layer_inputs

  check_layer_inputs(w, h, settings.gptq_percdamp)
  return quantize_layers([w], [h], algorithm, bits, settings, None if key is None else [key])[0]


def report_fields(rep: Any) -> dict:
  """Rates and distortions of a ``LayerReport`` or ``GPTVQReport`` as plain floats.

  GPTVQ has no per-feature integer code: its nominal rate is its bits per value (indices,
  codebooks and scales), its side information the codebooks and scales, its entropy rate None.
  """
  if hasattr(rep, "rate_nominal_bits"):
    return {
        "rate_nominal_bits": float(rep.rate_nominal_bits), "rate_entropy_bits": float(rep.rate_entropy_bits),
        "side_bits": float(rep.side_bits), "d_per_entry": float(rep.d_per_entry),
        "d_relative": float(rep.d_relative),
    }
  return {
      "rate_nominal_bits": float(rep.rate_bits), "rate_entropy_bits": None,
      "side_bits": float(rep.rate_codebook_bits) + float(rep.rate_scale_bits), "d_per_entry": float(rep.d_per_entry),
      "d_relative": float(rep.d_relative),
  }


def layer_limits(w: np.ndarray, h_eigs: np.ndarray, hs_eigs: np.ndarray, rate_bits: float, d_per_entry: float) -> dict:
  """Waterfilling references for one layer at the algorithm's rate and distortion.

  Args:
    w: ``(n, m)`` weights (for ``σ² = mean W²``).
    h_eigs: eigenvalues of H.
    hs_eigs: eigenvalues of ``S^{1/2} H S^{1/2}``, ``S = diag(mean_j W_ij²)``.
    rate_bits: the algorithm's rate (bits per weight incl. side information).
    d_per_entry: the algorithm's distortion ``tr((W−Ŵ)ᵀH(W−Ŵ))/(n·m)``.

  Returns:
    ``limit_d``: ``D*(rate)``; ``limit_rate``: ``R*(d)``; ``gap_bits = rate − R*(d)``;
    ``dropped_frac``: the fraction of components ``var·λ_i`` below the water level θ of ``R*(d)``
    (given no rate by the limit; the ½log2(πe/6) high-rate gap of ECSQ assumes none is);
    the same four with suffix ``_featvar`` for the per-input-feature-variance model.
  """
  from rdq.limits import waterfill, waterfill_rate

  sigma2 = float(np.mean(np.square(w, dtype=np.float64)))
  out = {}
  for suffix, eigs, var in (("", h_eigs, sigma2), ("_featvar", hs_eigs, 1.0)):
    eigs = np.clip(np.asarray(eigs, np.float64), 0.0, None)
    d_lim = float(waterfill(eigs, rate_bits, var).distortion)
    at_d = waterfill_rate(eigs, max(d_per_entry, 1e-30), var)
    r_lim = float(at_d.rate_bits)
    out[f"limit_d{suffix}"] = d_lim
    out[f"limit_rate{suffix}"] = r_lim
    out[f"gap_bits{suffix}"] = rate_bits - r_lim
    out[f"dropped_frac{suffix}"] = float(np.mean(var * eigs < float(at_d.water_level)))
  return out


def power_law_exponent(eigs: np.ndarray, k_lo: int = 2, hi_frac: float = 0.5) -> float:
  """Least-squares exponent α of ``λ_k ∝ k^{−α}`` over ranks ``k_lo ≤ k ≤ hi_frac·n``.

  Eigenvalues are sorted descending; ranks start at 1. Non-positive eigenvalues in the
  range are an error (fit a damped or full-rank H).
  """
  lam = np.sort(np.asarray(eigs, np.float64))[::-1]
  n = lam.size
  k_hi = int(hi_frac * n)
  if not (1 <= k_lo < k_hi <= n):
    raise ValueError(f"need 1 ≤ k_lo < hi_frac·n ≤ n; got {k_lo=}, {hi_frac=}, {n=}")
  k = np.arange(k_lo, k_hi + 1)
  y = lam[k - 1]
  if np.any(y <= 0):
    raise ValueError(f"eigenvalues at ranks {k_lo}..{k_hi} must be > 0; min is {y.min():.3g}")
  slope = np.polyfit(np.log(k), np.log(y), 1)[0]
  return float(-slope)


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


# --------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------


class _Context:
  """Model, calibration statistics and fp32 reference, built once per run."""

  def __init__(self, cfg: DictConfig):
    from rdq.models import embed_sentences, from_pretrained, linear_kernels, load_splits, load_tokenizer, second_moments

    t0 = time.perf_counter()
    d = cfg.data
    self.model = from_pretrained()
    self.tokenizer = load_tokenizer(max_seq_length=int(d.max_seq_length))
    self.splits = load_splits(int(d.n_calibration), int(d.n_eval), int(cfg.seed))
    self.stats = second_moments(self.model, self.splits.calibration, self.tokenizer, int(d.batch_size))
    self.kernels = {k: np.asarray(v) for k, v in linear_kernels(self.model).items()}
    self.layers = [f"layer{b}.{t}" for b in cfg.blocks for t in LAYER_TYPES]
    unknown = [name for name in self.layers if name not in self.kernels]
    if unknown:
      raise ValueError(f"blocks={list(cfg.blocks)} name layers the model lacks: {unknown[:3]}")
    self.h_eigs, self.hs_eigs = {}, {}
    eig_cache: dict[int, np.ndarray] = {}
    for name in self.layers:
      h, w = self.stats.h[name], self.kernels[name]
      if id(h) not in eig_cache:  # query, key and value share one H
        eig_cache[id(h)] = _validated_eigs(h, name)
      s = np.sqrt(np.mean(np.square(w, dtype=np.float64), axis=1))
      self.h_eigs[name] = eig_cache[id(h)]
      self.hs_eigs[name] = np.linalg.eigvalsh(s[:, None] * h * s[None, :])
    self.ref_eval = embed_sentences(self.model, self.splits.evaluation, self.tokenizer, int(d.batch_size))
    self._embed = embed_sentences
    log.info(
        "calibration: %d passages, %d tokens; eval: %d passages; data digest %s (%.1f s)",
        self.stats.num_sentences, self.stats.num_tokens, len(self.splits.evaluation), self.splits.digest,
        time.perf_counter() - t0,
    )

  def data_info(self) -> dict:
    return {
        "source": "Python stdlib docstrings (rdq.models.data)",
        "num_available": self.splits.num_available,
        "n_calibration": len(self.splits.calibration),
        "n_eval": len(self.splits.evaluation),
        "calibration_tokens": self.stats.num_tokens,
        "digest": self.splits.digest,
    }


def _validated_eigs(h: np.ndarray, name: str) -> np.ndarray:
  """Eigenvalues of a calibration H after checking it is finite, symmetric and PSD (once per H)."""
  if not np.all(np.isfinite(h)):
    raise ValueError(f"H of {name} has non-finite entries")
  if not np.array_equal(h, h.T):
    raise ValueError(f"H of {name} is not symmetric")
  eig = np.linalg.eigvalsh(h)
  if eig[0] < -1e-6 * max(eig[-1], 1e-30):
    raise ValueError(f"H of {name} must be PSD; min eigenvalue {eig[0]:.3g} (max {eig[-1]:.3g})")
  return eig


def _point_config(cfg: DictConfig, ctx: _Context, algorithm: str, bits: int) -> dict:
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


def _settings(cfg: DictConfig) -> AlgoSettings:
  return AlgoSettings(
      gptq_percdamp=float(cfg.gptq.percdamp), gptq_block_size=int(cfg.gptq.block_size),
      gptq_act_order=bool(cfg.gptq.act_order), watersic_percdamp=float(cfg.watersic.percdamp),
      watersic_rate_iters=int(cfg.watersic.rate_iters), watersic_rescale_iters=int(cfg.watersic.rescale_iters),
      gptvq_dim=int(cfg.gptvq.dim), gptvq_overhead_bits=float(cfg.gptvq.overhead_bits),
      gptvq_em_iters=int(cfg.gptvq.em_iters), gptvq_percdamp=float(cfg.gptvq.percdamp),
      e8_k=int(cfg.e8.k), e8_rotate=bool(cfg.e8.rotate), e8_percdamp=float(cfg.e8.percdamp),
  )


def _compute(point: Mapping[str, Any], ctx: _Context, settings: AlgoSettings) -> dict:
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
        [ctx.kernels[k] for k in names], [ctx.stats.h[k] for k in names], algorithm, bits, settings, keys
    )
    for name, (w_hat, rate, rep) in zip(names, outs):
      w = ctx.kernels[name]
      rec = {"n": int(w.shape[0]), "m": int(w.shape[1]), "rate_bits": rate, **report_fields(rep)}
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


def run(cfg: DictConfig) -> dict:
  """Run (or resume) the sweep, write ``results.json``, the figures and the e2e table."""
  t_start = time.perf_counter()
  logging.getLogger("jax").setLevel(logging.WARNING)
  logging.getLogger("fontTools").setLevel(logging.WARNING)  # PDF font subsetting chatter
  for a in cfg.algorithms:
    if a not in ALGORITHMS:
      raise ValueError(f"algorithms contains {a!r}; known: {ALGORITHMS}")
  out_dir = Path(cfg.out_dir)
  store = PointStore(out_dir)
  ctx = _Context(cfg)
  settings = _settings(cfg)
  bits_all = sorted(set(int(b) for b in cfg.bits) | set(int(b) for b in cfg.e2e_bits))
  max_vq = int(cfg.gptvq.max_bits)  # k = 2^(d·b) centroids: time and codebook size grow as 4^b at d = 2
  points = [_point_config(cfg, ctx, a, b) for a in cfg.algorithms for b in bits_all if a != "gptvq" or b <= max_vq]
  records = run_points(store, points, lambda p: _compute(p, ctx, settings), desc="real_model")

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
  results = {
      "config": OmegaConf.to_container(cfg, resolve=True),
      "data": ctx.data_info(),
      "points": records,
      "spectra": spectra,
      "limit_below_all_algorithms": below,
      "env": env_info(),
      "wall_time_s": time.perf_counter() - t_start,
  }
  write_json_atomic(out_dir / "results.json", results)
  table = _e2e_table(records, cfg)
  (out_dir / "real_model_e2e.md").write_text(table)
  _figures(cfg, ctx, records, spectra, out_dir)
  log.info("wrote %s (%.1f s)", out_dir / "results.json", time.perf_counter() - t_start)
  return results


def _e2e_table(records: Sequence[dict], cfg: DictConfig) -> str:
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


def _figures(cfg, ctx: _Context, records, spectra, out_dir: Path) -> None:
  import jax
  import matplotlib.pyplot as plt

  from rdq import covariance
  from rdq.limits import waterfill
  from rdq.plot import COLORS, LIMIT_STYLE, RATE_LABEL, save, style

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
  top[0].set_ylabel(r"$\mathrm{tr}((W-\hat W)^\top H(W-\hat W))/(nm)$")
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
    ax1.legend(loc="lower right", fontsize=6)  # the lower right of the agreement panel is empty
    fig.suptitle(f"MiniLM-L6 end to end, all linear layers quantized ({cfg.data.n_eval} eval passages)", fontsize=9)
    save(fig, out_dir / "real_model_e2e")


@hydra.main(version_base="1.3", config_path="../conf", config_name="real_model")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  main()
