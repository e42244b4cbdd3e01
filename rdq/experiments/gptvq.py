"""GPTVQ ablation: distortion vs bits per value for RTN, GPTQ, WaterSIC and GPTVQ (d = 1, 2, 4).

One Hydra app (``python -m rdq.experiments.gptvq`` quick; ``+experiment=gptvq_full`` for the
paper). For every layer — synthetic (``W`` iid N(0, 1), ``H`` from a covariance family of
``rdq.covariance``) and, when ``real.enabled``, MiniLM-L6 layers with their calibration
``H`` (``rdq.models``) — it runs

* RTN and GPTQ on GPTQ's symmetric min–max INT grid, per output feature (``b + 16/n`` bits)
  and with groups of 128 input features (``b + 0.125``): fixed-length rates;
* WaterSIC at entropy-coded target rates (``rate_entropy_bits``, side information incl.);
* GPTVQ with d = 1, 2, 4 and b index bits per value: the most codebook tiles whose fp16
  codebooks cost at most ``gptvq.overhead_bits`` per value (``rdq.layer.gptvq_tiles``; one
  codebook's cost where even that is more), then the post-processing chain
  LS update → SVD (d = 1, rank k/2, as in the paper) → Adam fine-tuning → INT8 codebooks.
  The report's ``extras["stage_*"]`` give the cumulative ablation (distortion and bits after
  each step) from one run; ``gptvq.extra_metrics`` adds runs with another EM/assignment
  metric (``diag`` is the paper's Hessian-diagonal weighting).

Distortion is ``tr((W−Ŵ)ᵀH(W−Ŵ))/(n·m)``; the reference is the reverse-waterfilling limit
``D*(R)`` of a Gaussian W with iid entries of variance σ² (1 for synthetic layers,
``mean W²`` for real ones) under the same H (``rdq.limits.waterfill``); the rate gap of a
point is ``R − R*(D)``. Synthetic layers are Monte Carlo over ``draws`` independent
(W, H) draws (mean ± stderr).

Outputs in ``out_dir``: ``results.json``, ``gptvq_ablation.png/.pdf`` and the table
``gptvq_ablation.md``.

References:
  van Baalen et al., "GPTVQ", arXiv 2402.15319 (2024), Sec. 3–4; Frantar et al., "GPTQ",
  ICLR 2023; Lifar et al., "WaterSIC", arXiv 2603.04956; Cover & Thomas, Thm. 10.3.3.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, OmegaConf

import rdq.layer
from rdq import covariance as cov
from rdq.experiments._store import write_text_atomic
from rdq.experiments._sweep import Sweep, pool_seeds
from rdq.layer import GPTVQ_STAGES, gptvq_tiles
from rdq.limits import waterfill, waterfill_gap_bits

log = logging.getLogger(__name__)

STAGE_LABELS = ("SIC", "+LS update", "+SVD", "+fine-tune", "+INT8")


def choose_tiles(n: int, m: int, dim: int, bits: float, overhead_bits: float) -> tuple[int, int]:
  """``(group_size, group_outputs)``: ``rdq.layer.gptvq_tiles`` (the most fp16 codebooks within
  ``overhead_bits`` per value, van Baalen et al. Sec. 4: ``b + k·d·16/ℓ``); when even one codebook
  per layer costs more, the overhead is raised to that of one codebook per ``group_size = n``
  column group and the fewest tiles that still hold k vectors (the rate is reported as is).
  """
  try:
    return gptvq_tiles(n, m, dim, bits, overhead_bits)
  except ValueError:
    k = 2 ** int(round(dim * bits))
    return gptvq_tiles(n, m, dim, bits, k * dim * 16 / (n * m))


def _layer(point: Mapping[str, Any], draw: int, real_ctx=None):
  """``(W, H, σ²)`` of a point's layer for one draw."""
  spec = point["layer"]
  if spec["kind"] == "real":
    w, h = real_ctx(spec["name"])
    return w, h, float(np.mean(np.asarray(w, np.float64) ** 2))
  key = jax.random.fold_in(jax.random.key(point["seed"]), draw)
  k_w, k_s = jax.random.split(key)
  fam = cov.make_family(spec["name"], spec["n"], **dict(spec.get("options") or {}))
  h = fam(k_s, spec["param"])
  w = jax.random.normal(k_w, (spec["n"], spec["m"]), jnp.float32)
  return w, h, 1.0


def _gap(eigs: np.ndarray, var: float, rate: np.ndarray, d: np.ndarray) -> np.ndarray:
  return np.asarray(waterfill_gap_bits(eigs, rate, np.maximum(d, 1e-30), var), np.float64)


def _one(point: Mapping[str, Any], w, h, key) -> dict:
  """One method on one layer → {d, rate} (arrays of 5 stages for GPTVQ)."""
  m = point["method"]
  if m["name"] in ("rtn", "gptq"):
    opts = dict(grid="minmax", bits=m["bits"], sym=True, group_size=m["group"])
    if m["name"] == "gptq":
      opts.update(block_size=128, percdamp=m["percdamp"])
    _, rep = rdq.layer.get(m["name"], **opts)(w, h)
    return {"d": float(rep.d_per_entry), "rate": float(rep.rate_bits)}
  if m["name"] == "watersic":
    _, rep = rdq.layer.get("watersic", percdamp=m["percdamp"])(w, h, rate_bits=m["rate"])
    return {"d": float(rep.d_per_entry), "rate": float(rep.rate_bits)}
  if m["name"] == "gptvq":
    _, rep = rdq.layer.get("gptvq", **m["config"])(w, h, key=key)
    return {"d": np.asarray(rep.extras["stage_d_per_entry"], np.float64),
            "rate": np.asarray(rep.extras["stage_rate_bits"], np.float64)}
  raise ValueError(f"unknown method {m['name']!r}")


def _compute(point: Mapping[str, Any], real_ctx=None) -> dict:
  draws = 1 if point["layer"]["kind"] == "real" else int(point["draws"])
  ds, rates, gaps = [], [], []
  for i in range(draws):
    w, h, var = _layer(point, i, real_ctx)
    eigs = np.clip(np.linalg.eigvalsh(np.asarray(h, np.float64)), 0, None)
    out = _one(point, jnp.asarray(w, jnp.float32), jnp.asarray(h, jnp.float32), jax.random.key(point["seed"] + 1000 * i))
    ds.append(np.asarray(out["d"], np.float64))
    rates.append(np.asarray(out["rate"], np.float64))
    gaps.append(_gap(eigs, var, rates[-1], ds[-1]))

  def stat(xs):
    a = np.stack(xs)
    se = (a.std(0, ddof=1) / np.sqrt(len(a))).tolist() if len(a) > 1 else None
    return {"mean": a.mean(0).tolist(), "stderr": se, "n": len(a)}

  return {"d_per_entry": stat(ds), "rate_bits": stat(rates), "gap_bits": stat(gaps)}


def _limit(point: Mapping[str, Any], real_ctx=None) -> dict:
  """Eigenvalues of H (draw 0) and σ² for the waterfilling curve."""
  w, h, var = _layer(point, 0, real_ctx)
  return {"eigs": np.clip(np.linalg.eigvalsh(np.asarray(h, np.float64)), 0, None).tolist(), "variance": var}


class _RealLayers:
  """MiniLM-L6 kernels and calibration H, loaded on first use."""

  def __init__(self, cfg: DictConfig):
    self.cfg = cfg
    self._data = None

  def __call__(self, name: str):
    if self._data is None:
      from rdq.models import from_pretrained, linear_kernels, load_splits, load_tokenizer, second_moments

      r = self.cfg.real
      model = from_pretrained()
      tok = load_tokenizer(max_seq_length=int(r.max_seq_length))
      splits = load_splits(int(r.n_calibration), 1, int(self.cfg.seed))
      stats = second_moments(model, splits.calibration, tok, int(r.batch_size))
      self._data = ({k: np.asarray(v) for k, v in linear_kernels(model).items()}, stats.h)
    kernels, hs = self._data
    return kernels[name], hs[name]


def _plain(x):
  return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def _layers(cfg: DictConfig) -> list[dict]:
  s = cfg.synthetic
  out = [dict(kind="synthetic", name=f["name"], param=float(f["param"]), options=_plain(f.get("options")) or {},
              n=int(s.n), m=int(s.m)) for f in s.families]
  if cfg.real.enabled:
    from rdq.models import MiniLMConfig

    shapes = MiniLMConfig().linear_shapes()
    for name in cfg.real.layers:
      n, m = shapes[name]
      out.append(dict(kind="real", name=str(name), n=int(n), m=int(m)))
  return out


def _methods(cfg: DictConfig, n: int, m: int) -> list[dict]:
  out = []
  b = cfg.baselines
  for name in ("rtn", "gptq"):
    for bits in b.bits:
      for group in b.groups:
        if group is None or n % int(group) == 0:
          out.append(dict(name=name, bits=int(bits), group=None if group is None else int(group), percdamp=float(b.percdamp)))
  for rate in cfg.watersic.rates:
    out.append(dict(name="watersic", rate=float(rate), percdamp=float(cfg.watersic.percdamp)))
  v = cfg.gptvq
  for setting in v.settings:
    d = int(setting["dim"])
    metrics = [str(v.metric)] + ([str(x) for x in v.extra_metrics] if d > 1 else [])
    for bits in setting["bits"]:
      g, r = choose_tiles(n, m, d, float(bits), float(v.overhead_bits))
      k = 2 ** int(round(d * float(bits)))
      svd = k // 2 if setting.get("svd", False) and k // 2 <= (n // g) * (m // r) else None
      for metric in metrics:
        config = dict(dim=d, bits=float(bits), group_size=g, group_outputs=r, block_size=int(v.block_size),
                      percdamp=float(v.percdamp), em_iters=int(v.em_iters), metric=metric, update=True, svd_rank=svd,
                      finetune_steps=int(v.finetune_steps), finetune_lr=float(v.finetune_lr), int8=True)
        out.append(dict(name="gptvq", config=config))
  return out


def _points(cfg: DictConfig) -> list[dict]:
  pts = []
  for i, layer in enumerate(_layers(cfg)):
    seed = int(cfg.seed) + 17 * i
    pts.append(dict(part="limit", layer=layer, seed=seed))
    for method in _methods(cfg, layer["n"], layer["m"]):
      pts.append(dict(part="method", layer=layer, method=method, seed=seed, draws=int(cfg.draws)))
  return pts


def _label(layer: Mapping[str, Any]) -> str:
  if layer["kind"] == "real":
    return f"MiniLM {layer['name']} ({layer['n']}×{layer['m']})"
  return f"{layer['name']}({layer['param']:g}) {layer['n']}×{layer['m']}"


def _method_label(method: Mapping[str, Any]) -> str:
  if method["name"] == "gptvq":
    c = method["config"]
    extra = "" if c["metric"] == "full" else f", {c['metric']} metric"
    return f"GPTVQ d={c['dim']}{extra}"
  return {"rtn": "RTN", "gptq": "GPTQ", "watersic": "WaterSIC"}[method["name"]]


CONVENTIONS = {
    "distortion": "tr((W-What)^T H (W-What))/(n m), undamped H",
    "rate_bits": "bits per value incl. side information: RTN/GPTQ fixed-length (b + 16/group), WaterSIC "
                 "empirical entropy + side, GPTVQ index bits + codebook (+scale) bits",
    "gap_bits": "rate_bits - R*(d), R* = reverse waterfilling for iid Gaussian W of variance sigma^2 under H",
    "gptvq_stages": list(GPTVQ_STAGES),
}


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """Table and figure (seeds pooled) and the results.json fields of this sweep's points."""
  pooled = pool_seeds(records)
  write_text_atomic(out_dir / "gptvq_ablation.md", ablation_table(pooled))
  _figure(pooled, out_dir)
  return {"conventions": CONVENTIONS}


def run(cfg: DictConfig) -> dict | None:
  """Run (or resume) the sweep; a single run writes results.json, the table and the figure."""
  sweep = Sweep(cfg, "gptvq")
  real_ctx = _RealLayers(cfg)

  def compute(p):
    return _limit(p, real_ctx) if p["part"] == "limit" else _compute(p, real_ctx)

  sweep.run_points(_points(cfg), compute)
  return sweep.finish()


def _fmt(d: float, r: float, gap: float) -> str:
  return f"{d:.3g} @ {r:.3f} ({gap:+.2f})"


def ablation_table(records: list[dict]) -> str:
  """Markdown: per layer, GPTVQ's distortion/bits/gap after each stage, then the baselines."""
  lines = [
      "# GPTVQ ablation",
      "",
      "Each cell: distortion tr((W−Ŵ)ᵀH(W−Ŵ))/(nm) @ bits per value (rate gap to reverse waterfilling, bits).",
      "GPTVQ columns are cumulative: SIC pass with fp16 codebooks, then + least-squares codebook update, + SVD of the",
      "stacked codebooks (d = 1, rank k/2), + Adam fine-tuning, + INT8 codebooks with fp16 scales. RTN/GPTQ: INT grid",
      "(fixed-length, b + 16/group); WaterSIC: entropy-coded rate incl. side information.",
      "",
  ]
  by_layer: dict[str, list[dict]] = {}
  for r in records:
    if r["config"]["part"] == "method":
      by_layer.setdefault(_label(r["config"]["layer"]), []).append(r)
  for layer, recs in by_layer.items():
    lines += [f"## {layer}", "", "| method | b | ℓ | " + " | ".join(STAGE_LABELS) + " |", "|---|---|---|" + "---|" * 5]
    for r in recs:
      mth = r["config"]["method"]
      if mth["name"] != "gptvq":
        continue
      c = mth["config"]
      res = r["result"]
      cells = [_fmt(res["d_per_entry"]["mean"][s], res["rate_bits"]["mean"][s], res["gap_bits"]["mean"][s]) for s in range(5)]
      if c["svd_rank"] is None:
        cells[2] = "—"
      lines.append(f"| {_method_label(mth)} | {c['bits']:g} | {c['group_size']}×{c['group_outputs']} | " + " | ".join(cells) + " |")
    lines += ["", "| baseline | setting | result |", "|---|---|---|"]
    for r in recs:
      mth = r["config"]["method"]
      if mth["name"] == "gptvq":
        continue
      res = r["result"]
      setting = (f"target {mth['rate']:g} bits" if mth["name"] == "watersic"
                 else f"INT{mth['bits']}, " + ("per output feature" if mth["group"] is None else f"group {mth['group']}"))
      lines.append(f"| {_method_label(mth)} | {setting} | "
                   f"{_fmt(res['d_per_entry']['mean'], res['rate_bits']['mean'], res['gap_bits']['mean'])} |")
    lines.append("")
  return "\n".join(lines)


def _ci(stat: Mapping[str, Any], stage: int | None = None) -> float:
  """Half-width of the 95% CI of a {mean, stderr, n} stat (0 with a single draw)."""
  se = stat.get("stderr")
  if se is None:
    return 0.0
  return 1.96 * float(se if stage is None else se[stage])


def _figure(records: list[dict], out_dir: Path) -> None:
  from rdq import plot

  limits = {_label(r["config"]["layer"]): r["result"] for r in records if r["config"]["part"] == "limit"}
  layers = list(limits)
  fig, axes = plot.figure("double", ncols=len(layers))
  axes = np.atleast_1d(axes)
  fig.set_size_inches(3.4 * len(layers), 3.6)
  draws = set()
  for ax, layer in zip(axes, layers):
    recs = [r for r in records if r["config"]["part"] == "method" and _label(r["config"]["layer"]) == layer]
    rmin, rmax = 10.0, 0.0
    for name in ("rtn", "gptq", "watersic"):
      pts = sorted((r["result"]["rate_bits"]["mean"], r["result"]["d_per_entry"]["mean"], _ci(r["result"]["d_per_entry"]))
                   for r in recs if r["config"]["method"]["name"] == name)
      draws |= {r["result"]["d_per_entry"]["n"] for r in recs}
      if pts:
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, marker=plot.marker(name), ms=3, lw=1, color=plot.color(name),
                    label=plot.label(name) + (" (entropy-coded)" if name == "watersic" else ""))
        rmin, rmax = min(rmin, min(x)), max(rmax, max(x))
    groups: dict[tuple, list] = {}
    for r in recs:
      mth = r["config"]["method"]
      if mth["name"] == "gptvq":
        groups.setdefault((mth["config"]["dim"], mth["config"]["metric"]), []).append(r["result"])
    for (d, metric), res in sorted(groups.items()):
      key = f"gptvq_d{d}"
      fin = sorted((x["rate_bits"]["mean"][-1], x["d_per_entry"]["mean"][-1], _ci(x["d_per_entry"], -1)) for x in res)
      sic = sorted((x["rate_bits"]["mean"][0], x["d_per_entry"]["mean"][0], _ci(x["d_per_entry"], 0)) for x in res)
      ls = "-" if metric == "full" else "--"
      tag = "" if metric == "full" else f" ({metric})"
      x, y, e = zip(*fin)
      ax.errorbar(x, y, yerr=e, marker=plot.marker(key), ls=ls, color=plot.color(key),
                  label=f"{plot.label(key)}{tag}, all steps")
      x, y, e = zip(*sic)
      ax.errorbar(x, y, yerr=e, marker=plot.marker(key), ls=":", mfc="none", color=plot.color(key), lw=0.8,
                  label=f"{plot.label(key)}{tag}, SIC only" if metric == "full" else None)
      rmin, rmax = min(rmin, fin[0][0], sic[0][0]), max(rmax, fin[-1][0], sic[-1][0])
    lim = limits[layer]
    rr = np.linspace(max(rmin - 0.25, 0.1), rmax + 0.25, 60)
    ax.plot(rr, np.asarray(waterfill(np.asarray(lim["eigs"]), rr, lim["variance"]).distortion),
            **plot.LIMIT_STYLE, label="waterfilling limit")
    ax.set_yscale("log")
    ax.set_title(layer, fontsize=8)
    ax.set_xlabel(plot.RATE_LABEL, fontsize=7)
  axes[0].set_ylabel(plot.DISTORTION_LABEL_WEIGHT)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=6)  # below the panels, off the data
  many = sorted(n for n in draws if n > 1)
  n_txt = ("; bars: 95% CI over " + "/".join(map(str, many)) + " draws of (W, H)") if many else "; one draw, no error bars"
  fig.suptitle("GPTVQ ablation: distortion vs bits per value (codebooks, scales and side information counted)"
               + n_txt, fontsize=8)
  plot.save(fig, out_dir / "gptvq_ablation")


@hydra.main(version_base="1.3", config_path="conf", config_name="gptvq")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  main()
