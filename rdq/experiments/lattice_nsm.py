"""Normalized second moment G(Λ) of rdq's lattices vs dimension, against published values.

For each lattice (``rdq.quantizers.lattice_from_name``) estimates

.. math::
   G(\\Lambda) = \\frac{\\mathbb{E}\\|x - Q_\\Lambda(x)\\|^2}{n\\, V^{2/n}}, \\quad x \\sim \\mathrm{Unif}(\\mathbb{R}^n / \\Lambda)

by Monte Carlo (``rdq.quantizers.normalized_second_moment``) with a confidence interval, and
compares it with SPLAG Table 2.3 (``rdq.limits.PUBLISHED_G``), the closed form ``G(Dₙ)``
(``rdq.limits.g_dn``) and the sphere bound ``G(S_n) → 1/(2πe)`` (``rdq.limits.g_sphere``).
The right axis shows the high-rate loss ``½ log2(2πe G)`` in bits per dimension.

Every lattice is a point stored atomically under the hash of its config; a rerun skips
finished points. Writes ``out_dir/results.json`` and ``out_dir/<figure>.png|pdf``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from rdq.experiments._group import grouped_compute
from rdq.experiments._sweep import Sweep, pool_seeds

log = logging.getLogger(__name__)


def point_configs(cfg: DictConfig) -> list[dict]:
  return [dict(experiment="lattice_nsm", lattice=str(name), num_samples=int(cfg.num_samples), seed=int(cfg.seed))
          for name in cfg.lattices]


def _key(config: dict):
  """The point's PRNG key: ``fold_in(key(seed), dim)``."""
  import jax

  from rdq.quantizers import lattice_from_name

  return jax.random.fold_in(jax.random.key(config["seed"]), lattice_from_name(config["lattice"]).dim)


def _group_key(config: dict) -> tuple:
  """Lattices estimated by one program (``estimate_group``) share the sample count."""
  return (config["num_samples"],)


def estimate_group(configs: list[dict], batch: int) -> list:
  """``normalized_second_moment`` of each lattice of ``configs``, traced and compiled as ONE
  program (``rdq.experiments._group``): each estimate is the same computation as alone (the
  same numbers, tested), the fixed cost of a compilation is paid once per group."""
  import jax

  from rdq.quantizers import lattice_from_name, normalized_second_moment

  lats = [lattice_from_name(c["lattice"]) for c in configs]
  n = configs[0]["num_samples"]

  @jax.jit
  def run(keys):
    return [normalized_second_moment(lat, k, n, batch) for lat, k in zip(lats, keys)]

  return run([_key(c) for c in configs])


def compute_point(config: dict, batch: int, est=None) -> dict:
  """G(Λ) by Monte Carlo (``est``, or computed here) for one lattice, with the reference values
  it is compared with."""
  from rdq import limits
  from rdq.quantizers import DnDualLattice, DnLattice, lattice_from_name, normalized_second_moment

  lat = lattice_from_name(config["lattice"])
  if est is None:
    est = normalized_second_moment(lat, _key(config), config["num_samples"], batch)
  mean, se = float(est.mean), float(est.stderr)
  res = dict(
      dim=lat.dim, mean=mean, stderr=se, n=est.n,
      ci95=[float(v) for v in est.ci(0.95)], ci99=[float(v) for v in est.ci(0.99)],
      rate_gap_bits=limits.rate_gap_bits(mean), sphere_bound=limits.g_sphere(lat.dim),
  )
  ref_name = "z" if lat.name.startswith("z") else lat.name
  if lat.name == "d4star":
    ref_name = "d4"  # D4* is similar to D4
  if ref_name in limits.PUBLISHED_G:
    res["published"] = limits.PUBLISHED_G[ref_name]
  if isinstance(lat, DnLattice):
    res["closed_form"] = limits.g_dn(lat.dim)
  ref = res.get("published", res.get("closed_form"))
  if ref is not None:
    res["reference"] = ref
    res["z_score"] = (mean - ref) / se
    res["reference_in_ci99"] = bool(res["ci99"][0] <= ref <= res["ci99"][1])
  res["family"] = "z" if lat.name.startswith("z") else ("dnstar" if isinstance(lat, DnDualLattice)
                                                        else "dn" if isinstance(lat, DnLattice) else lat.name)
  return res


def plot(records: list[dict], stem: Path) -> list[Path]:
  """G vs dimension: MC with 95% CIs, published values, Dₙ closed form, sphere bound."""
  from rdq import limits
  from rdq import plot as rplot

  fig, ax = rplot.figure("double", aspect=0.42)
  dims = [rec["result"]["dim"] for rec in records]
  n_max = max(max(dims), 24)
  ns = np.arange(1, n_max + 1)
  ax.plot(ns, [limits.g_sphere(int(n)) for n in ns], color=rplot.COLORS["limit"], lw=1.2,
          label=r"sphere bound $G(S_n)$")
  ax.axhline(limits.G_SPHERE_LIMIT, color=rplot.COLORS["limit"], lw=0.8, ls=":", label=r"$1/(2\pi e)$")
  nd = np.arange(2, n_max + 1)
  ax.plot(nd, [limits.g_dn(int(n)) for n in nd], color=rplot.COLORS["gaussian"], lw=0.8, ls="--",
          label=r"$G(D_n)$ closed form")
  styles = {"z": ("s", "#1f77b4", r"$\mathbb{Z}^n$"), "dn": ("o", "#2ca02c", r"$D_n$"),
            "dnstar": ("D", "#ff7f0e", r"$D_n^*$"), "e8": ("*", rplot.COLORS["lattice"], r"$E_8$"),
            "bw16": ("P", rplot.COLORS["vq"], r"$\Lambda_{16}$ (BW16)"),
            "leech": ("h", "#d62728", r"$\Lambda_{24}$ (Leech)")}
  done = set()
  for rec in sorted(records, key=lambda r: r["result"]["dim"]):
    res = rec["result"]
    mk, col, lab = styles.get(res["family"], ("^", "0.3", res["family"]))
    lo, hi = res["ci95"]
    ax.errorbar(res["dim"], res["mean"], yerr=[[res["mean"] - lo], [hi - res["mean"]]], fmt=mk, color=col,
                ms=6 if mk in "*Ph" else 3.5, label=None if lab in done else f"{lab} (MC, 95% CI)", zorder=4)
    done.add(lab)
  pub_dims = {"z": 1, "a2": 2, "d3star": 3, "d4": 4, "d5star": 5, "e6star": 6, "e7star": 7, "e8": 8,
              "k12": 12, "bw16": 16, "leech": 24}
  ax.plot(list(pub_dims.values()), [limits.PUBLISHED_G[k] for k in pub_dims], "x", color="black", ms=5,
          mew=0.8, label="best known (SPLAG Table 2.3)", zorder=5)
  for k in ("a2", "e6star", "e7star", "k12", "bw16", "leech"):
    ax.annotate({"a2": r"$A_2$", "e6star": r"$E_6^*$", "e7star": r"$E_7^*$", "k12": r"$K_{12}$",
                 "bw16": r"$\Lambda_{16}$", "leech": r"$\Lambda_{24}$"}[k], (pub_dims[k], limits.PUBLISHED_G[k]),
                fontsize=6, xytext=(2, 3), textcoords="offset points")
  ax.set_xlabel("dimension n")
  ax.set_ylabel(r"normalized second moment $G(\Lambda)$")
  ax.set_xlim(0.5, n_max + 1.5)
  sec = ax.secondary_yaxis(
      "right", functions=(lambda g: 0.5 * np.log2(2 * np.pi * np.e * np.maximum(g, 1e-9)),
                          lambda b: 2.0 ** (2 * b) / (2 * np.pi * np.e)))
  sec.set_ylabel(r"high-rate loss $\frac{1}{2}\log_2(2\pi e G)$ [bits/dim]")
  n_samples = records[0]["result"]["n"]  # seeds pooled: all their points
  ax.set_title(f"G(Λ) by Monte Carlo ({n_samples:,} uniform points per lattice)", fontsize=8)
  ax.legend(loc="upper right", fontsize=6.5, ncol=2)
  return rplot.save(fig, stem)


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """The figure (seeds pooled), a log line per lattice and the results.json fields."""
  pooled = pool_seeds(records)
  for rec in pooled:  # seeds pooled: z-score against the pooled stderr
    res = rec["result"]
    if "pooled_keys" in rec and "reference" in res:
      res["z_score"] = (res["mean"] - res["reference"]) / res["stderr"]
      res["reference_in_ci99"] = bool(res["ci99"][0] <= res["reference"] <= res["ci99"][1])
  paths = plot(pooled, out_dir / cfg.figure)
  log.info("wrote %s", ", ".join(str(p) for p in paths))
  for rec in sorted(pooled, key=lambda r: r["result"]["dim"]):
    res = rec["result"]
    log.info("%-7s n=%2d  G = %.6f ± %.6f  ref %s", rec["config"]["lattice"], res["dim"], res["mean"],
             res["stderr"], f'{res["reference"]:.7f} (z={res["z_score"]:+.2f})' if "reference" in res else "-")
  return dict(
      quantity="G = E||x - Q(x)||^2 / (n V^(2/n)), x uniform mod the lattice (dimensionless)",
      references="published: SPLAG Table 2.3; closed_form: G(D_n) = (1/12 + 1/(2n(n+1))) 2^(-2/n); "
                 "sphere_bound: G(S_n) = Gamma(n/2+1)^(2/n) / ((n+2) pi)",
  )


@hydra.main(version_base="1.3", config_path="conf", config_name="lattice_nsm")
def main(cfg: DictConfig) -> None:
  sweep = Sweep(cfg, "lattice_nsm")
  from rdq.quantizers import lattice_from_name

  for name in cfg.lattices:  # fail on a bad name before any work
    lattice_from_name(str(name))
  configs, batch = point_configs(cfg), int(cfg.batch)
  sweep.run_points(configs, grouped_compute(configs, _group_key, lambda group: estimate_group(group, batch),
                                            lambda c, est: compute_point(c, batch, est), int(cfg.group_size),
                                            sweep.store))
  sweep.finish()


if __name__ == "__main__":
  main()
