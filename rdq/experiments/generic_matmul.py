"""Generic matmul: distortion of quantized AᵀB vs effective rate, against Γ(R).

For each quantizer (or pair), estimates ``E‖AᵀB − ÂᵀB̂‖²_F/(n a b)`` by Monte Carlo
(``rdq.matmul_mc.matmul_distortion``), records the exact and high-rate predictions of
``rdq.quantizers.scalar_prediction`` where they apply, and the gap in bits to the optimum
``Γ(R)`` at the effective rate: ``R_eff − Γ⁻¹(D)``. Every point is stored atomically under
the hash of its config (``rdq.experiments._store``); a rerun skips finished points.

Run ``python -m rdq.experiments.generic_matmul --help`` for the options (conf/generic_matmul.yaml).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from rdq.experiments._group import grouped_compute
from rdq.experiments._store import write_text_atomic
from rdq.experiments._sweep import Sweep, pool_seeds
from rdq.matmul_mc import NORMAL_GENERATOR

log = logging.getLogger(__name__)

FAMILY_ORDER = ("int", "fp", "mx", "nv", "lattice", "other")


def family(name: str) -> str:
  """Plot family of a registry name."""
  if name.startswith("int"):
    return "int"
  if name.startswith("mx"):
    return "mx"
  if name.startswith("nv"):
    return "nv"
  if name[:1] == "e" and name[1:2].isdigit() and "nested" not in name:
    return "fp"
  if "nested" in name or "lattice" in name:
    return "lattice"
  return "other"


def point_configs(cfg: DictConfig) -> list[dict]:
  names = [cfg.quantizer] if cfg.quantizer else list(cfg.quantizer_names)
  out = []
  for name in names:
    point = dict(n=int(cfg.n), num_samples=int(cfg.num_samples))
    # Per-family settings (conf ``overrides``, keyed by a name prefix): e.g. Λ24 codes need n a
    # multiple of 24 and, with a ~10⁵-operation decoder per block, fewer samples.
    for prefix, over in (cfg.get("overrides") or {}).items():
      if str(name).startswith(str(prefix)):
        point.update({k: int(v) for k, v in over.items() if k in point})
    out.append(dict(
        experiment="generic_matmul", quantizer_a=str(name), quantizer_b=str(cfg.quantizer_b or name),
        n=point["n"], a=int(cfg.a), b=int(cfg.b), num_samples=point["num_samples"], seed=int(cfg.seed),
        generator=NORMAL_GENERATOR,  # the draws of A and B: a new generator never reuses old points
    ))
  return out


def _group_key(config: dict) -> tuple:
  """Points equal in these share their (A, B) draws and can be estimated by one program."""
  return tuple(config[k] for k in ("n", "a", "b", "num_samples", "seed"))


def estimate_group(configs: list[dict], batch: int) -> list:
  """``matmul_distortion`` of each point of ``configs`` (all with one ``_group_key``), traced
  and compiled as ONE program (``rdq.experiments._group``): each estimate is the same
  computation as alone (bitwise the same numbers, tested), the fixed cost of a compilation is
  paid once per group.
  """
  import jax

  from rdq import quantizers
  from rdq.matmul_mc import MatmulSetup, matmul_distortion

  if len({_group_key(c) for c in configs}) != 1:
    raise ValueError(f"estimate_group needs points with one (n, a, b, num_samples, seed); got {configs}")
  c0 = configs[0]
  setup = MatmulSetup(c0["n"], c0["a"], c0["b"])
  pairs = [(quantizers.get(c["quantizer_a"]), quantizers.get(c["quantizer_b"])) for c in configs]
  for qa, qb in pairs:  # shapes checked eagerly (block sizes must divide n), before tracing
    qa.rate((setup.a, setup.n)), qb.rate((setup.b, setup.n))

  @jax.jit
  def run(key):
    return [matmul_distortion(qa, qb, setup, key, c0["num_samples"], batch) for qa, qb in pairs]

  return run(jax.random.key(c0["seed"]))


def compute_point(config: dict, batch: int, est=None) -> dict:
  """One sweep point: MC estimate (``est``, or computed here), predictions and the gap to Γ(R)."""
  import jax

  from rdq import limits, quantizers
  from rdq.matmul_mc import MatmulSetup, matmul_distortion
  from rdq.quantizers import scalar_prediction as sp

  qa, qb = quantizers.get(config["quantizer_a"]), quantizers.get(config["quantizer_b"])
  n, a, b = config["n"], config["a"], config["b"]
  if est is None:
    est = matmul_distortion(qa, qb, MatmulSetup(n, a, b), jax.random.key(config["seed"]), config["num_samples"], batch)
  ra, rb = qa.rate((a, n)), qb.rate((b, n))
  rate_eff = 0.5 * (ra.effective + rb.effective)
  rate_nom = 0.5 * (ra.nominal + rb.nominal)
  mean, se = float(est.mean), float(est.stderr)
  lo, hi = (float(v) for v in est.ci(0.95))
  res = dict(
      mean=mean, stderr=se, n=est.n, ci95=[lo, hi],
      rate_nominal=rate_nom, rate_effective=rate_eff,
      gamma_at_rate=float(limits.generic_matmul(rate_eff)),
      gap_bits=float(rate_eff - limits.generic_matmul_rate(min(mean, 1.0))),
  )
  try:
    res["exact_prediction"] = sp.exact_matmul_distortion(qa, qb, n, a, b)
    res["high_rate_prediction"] = sp.high_rate_matmul_distortion(qa, qb, n, a, b)
  except TypeError:  # not a scalar INT/FP quantizer
    pass
  return res


def plot(records: list[dict], stem: Path) -> list[Path]:
  """Distortion vs effective rate with Γ(R), and predictions vs Monte Carlo."""
  from rdq import limits
  from rdq import plot as rplot

  fig, (ax, ax2) = rplot.figure("double", aspect=0.58, ncols=2)
  r = np.linspace(0.05, max([rec["result"]["rate_effective"] for rec in records] + [4.0]) + 0.5, 400)
  ax.semilogy(r, limits.generic_matmul(r), label=r"$\Gamma(R)$ (optimal)", **rplot.LIMIT_STYLE)
  ax.semilogy(r, limits.naive_matmul_distortion(r), "--", color=rplot.COLORS["gaussian"], lw=1,
              label=r"$2\cdot2^{-2R}-2^{-4R}$ (each factor at $D(R)$)")
  labels_done = set()
  names: list[tuple[float, float, str]] = []  # point labels, placed without collisions below
  lattices: dict[str, list] = {}
  for rec in sorted(records, key=lambda x: x["config"]["quantizer_a"]):
    c, res = rec["config"], rec["result"]
    fam = family(c["quantizer_a"])
    if fam == "lattice" and c["quantizer_a"] == c["quantizer_b"]:
      lattices.setdefault(c["quantizer_a"].split("_nested")[0], []).append(res)
      continue
    err = [[res["mean"] - res["ci95"][0]], [res["ci95"][1] - res["mean"]]]
    lab = rplot.label(fam)
    ax.errorbar(res["rate_effective"], res["mean"], yerr=err, fmt=rplot.marker(fam), color=rplot.color(fam), ms=3.5,
                label=None if lab in labels_done else lab)
    labels_done.add(lab)
    name = c["quantizer_a"] if c["quantizer_a"] == c["quantizer_b"] else f'{c["quantizer_a"]}×{c["quantizer_b"]}'
    names.append((res["rate_effective"], res["mean"], name))
  for lat, pts in sorted(lattices.items()):
    pts.sort(key=lambda r: r["rate_effective"])
    x = [r["rate_effective"] for r in pts]
    y = [r["mean"] for r in pts]
    err = [[r["mean"] - r["ci95"][0] for r in pts], [r["ci95"][1] - r["mean"] for r in pts]]
    ax.errorbar(x, y, yerr=err, fmt="-" + rplot.marker(f"nested_{lat}"), ms=3.5, lw=0.8,
                color=rplot.color(f"nested_{lat}"), label=rplot.LABELS.get(f"nested_{lat}", f"{lat} Voronoi code (NestQuant)"))
  ax.set_xlabel(r"effective rate $R$ [bits/entry per factor, scales included]")
  ax.set_ylabel(r"$\mathbb{E}\|A^\top B-\hat A^\top\hat B\|_F^2/(nab)$")
  c0 = records[0]["config"]
  ax.set_title(f'iid N(0,1), n={c0["n"]}, a={c0["a"]}, b={c0["b"]}; MC 95% CI', fontsize=8)
  # Legend below the panels (constrained layout makes room): nothing on the data or on Γ(R).
  leg = fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=6, frameon=False)
  # Right panel: predictions / Monte Carlo
  preds = [rec for rec in records if "exact_prediction" in rec["result"]]
  preds.sort(key=lambda x: x["result"]["rate_effective"])
  xs = np.arange(len(preds))
  for k, (key, mk, lab) in enumerate([("exact_prediction", "o", "exact (quadrature)"),
                                      ("high_rate_prediction", "s", "high-rate (Bennett)")]):
    ratio = [rec["result"][key] / rec["result"]["mean"] for rec in preds]
    rel_se = [1.96 * rec["result"]["stderr"] / rec["result"]["mean"] for rec in preds]
    ax2.errorbar(xs + (k - 0.5) * 0.25, ratio, yerr=rel_se if k == 0 else None, fmt=mk, ms=3, label=lab,
                 color=["#1f77b4", "#d62728"][k])
  ax2.axhline(1.0, color="black", lw=0.8)
  ax2.set_xticks(xs, [rec["config"]["quantizer_a"] for rec in preds], rotation=60, ha="right", rotation_mode="anchor",
                fontsize=6)
  ax2.set_ylabel("prediction / Monte Carlo")
  ax2.set_title("predicted / measured (bars: MC 95% CI)", fontsize=8)
  ax2.legend(loc="upper right")  # the large ratios are the low-rate formats, at the left
  rplot.label_points(ax, names, fontsize=5, avoid=[leg])  # last: needs the final layout
  return rplot.save(fig, stem)


def table(records: list[dict]) -> str:
  """Markdown table of the points: R_eff, D with its 95% CI and the gap to Γ(R), by family and rate."""
  def order(r):  # family, then the code's name without its modulus (e8_nested_q4/q8/q16 together), then rate
    name = r["config"]["quantizer_a"]
    return FAMILY_ORDER.index(family(name)), re.sub(r"_q\d+", "", name), r["result"]["rate_effective"]

  rows = sorted(records, key=order)
  lines = ["| quantizer (A and B) | n | samples | R_eff [bit] | D (MC) | 95% CI | gap to Γ(R) [bit] |",
           "|---|---|---|---|---|---|---|"]
  for r in rows:
    c, res = r["config"], r["result"]
    name = c["quantizer_a"] if c["quantizer_b"] == c["quantizer_a"] else f"{c['quantizer_a']} × {c['quantizer_b']}"
    lo, hi = res["ci95"]
    lines.append(f"| {name} | {c['n']} | {res['n']} | {res['rate_effective']:.3f} | {res['mean']:.3e} | "
                 f"[{lo:.3e}, {hi:.3e}] | {res['gap_bits']:.3f} |")
  return "\n".join(lines) + "\n"


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """The figure and table (seeds pooled) and the results.json fields of this sweep's points."""
  if records:
    pooled = pool_seeds(records)
    paths = plot(pooled, out_dir / cfg.figure)
    paths.append(write_text_atomic(out_dir / f"{cfg.figure}.md", table(pooled)))
    log.info("wrote %s", ", ".join(str(p) for p in paths))
  return dict(
      distortion="E||A^T B - Ahat^T Bhat||_F^2 / (n a b), A,B iid N(0,1)",
      rate="bits per entry per factor, side information (scales) included",
  )


@hydra.main(version_base="1.3", config_path="conf", config_name="generic_matmul")
def main(cfg: DictConfig) -> None:
  sweep = Sweep(cfg, "generic_matmul")
  configs = point_configs(cfg)
  from rdq import quantizers

  for c in configs:  # fail on a bad name before any work
    quantizers.get(c["quantizer_a"]), quantizers.get(c["quantizer_b"])
  batch = int(cfg.batch)
  sweep.run_points(configs, grouped_compute(configs, _group_key, lambda group: estimate_group(group, batch),
                                            lambda c, est: compute_point(c, batch, est), int(cfg.group_size),
                                            sweep.store))
  sweep.finish()


if __name__ == "__main__":
  main()
