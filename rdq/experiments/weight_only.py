"""Weight-only quantization with known Σ_X: RTN, GPTQ and WaterSIC against reverse waterfilling.

Three parts, one Hydra app (``python -m rdq.experiments.weight_only`` quick;
``+experiment=weight_only_full`` for the paper), three figures in ``out_dir``:

1. ``weight_only_gap`` — on each covariance family (``rdq.covariance``), vmapped over the
   family parameter: top row, distortion vs rate at one parameter with the waterfilling
   limit ``rdq.limits.waterfill``; bottom row, the rate gap to the limit (bits) vs the family
   parameter at a fixed rate. Monte Carlo over draws of (W, Σ), 95% error bars.
2. ``gptq_unbounded`` — the LDL-spread family: GPTQ's gap grows like ½·log2(AM/GM) of its
   LDL diagonal, WaterSIC's stays at ½·log2(πe/6) = 0.2546 bit.
3. ``watersic_uniformity`` — the distribution of WaterSIC's gap at high rate over many random
   Σ from every family, with the 0.2546-bit line.

Conventions. ``W ∈ R^{n×m}`` has iid N(0, 1) entries; distortion is
``tr((W−Ŵ)ᵀΣ(W−Ŵ))/(n·m)``. RTN and GPTQ use entropy-coded uniform scalar quantization
(``UniformGrid``: one step for the layer, unbounded integer codes) so that all three are
compared at entropy-coded rates. The rate is ``LayerReport.rate_coded_bits``: an achievable
rate — per-input-feature quantized-Gaussian code length + 64 model bits per input feature +
side information (16-bit steps). The gap of an algorithm is ``R − R_wf(D)``: its rate minus
the least rate at which waterfilling reaches its distortion. For the uniformity figure the
gap uses the code rate alone (``rate_coded_bits`` less the model and side bits, which are
O(1/m)), as in the theorem; the label says so.
"""

from __future__ import annotations

import dataclasses
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
from rdq.experiments._sweep import Sweep, pool_seeds
from rdq.layer import damp_hessian, inverse_cholesky_upper
from rdq.limits import ECSQ_GAP_BITS, waterfill, waterfill_gap_bits
from rdq.montecarlo import estimate
from rdq.rate import GAUSSIAN_MODEL_BITS

log = logging.getLogger(__name__)

ALGORITHMS = ("rtn", "gptq", "watersic")
STATS = ("d_per_entry", "rate_bits", "code_rate_bits", "gap_bits", "code_gap_bits", "amgm_bits", "limit_d")


def _algorithm(algorithm: str, percdamp: float) -> rdq.layer.LayerAlgorithm:
  """RTN and GPTQ on the entropy-coded uniform grid, WaterSIC at the high-rate rule (traced rates)."""
  if algorithm == "rtn":
    return rdq.layer.get("rtn", grid="uniform")
  if algorithm == "gptq":
    return rdq.layer.get("gptq", grid="uniform", percdamp=percdamp)
  if algorithm == "watersic":
    return rdq.layer.get("watersic", rate_iters=0, percdamp=percdamp)
  raise ValueError(f"algorithm={algorithm!r} must be one of {ALGORITHMS}")


def _stats(algorithm: str, w, h, rate, percdamp: float):
  """One (W, Σ, rate) → the STATS vector."""
  n, m = w.shape
  _, rep = _algorithm(algorithm, percdamp)(w, h, rate_bits=rate)
  lam = jnp.maximum(jnp.linalg.eigvalsh(h), 0.0)
  d = rep.d_per_entry
  gap = waterfill_gap_bits(lam, rep.rate_coded_bits, d)
  code_rate = rep.rate_coded_bits - rep.side_bits - GAUSSIAN_MODEL_BITS / m
  dd = 1.0 / jnp.diagonal(inverse_cholesky_upper(damp_hessian(h, percdamp))) ** 2
  amgm = 0.5 * jnp.log2(jnp.mean(dd) / jnp.exp(jnp.mean(jnp.log(dd))))
  limit_d = waterfill(lam, rep.rate_coded_bits).distortion
  return jnp.stack([d, rep.rate_coded_bits, code_rate, gap, gap - (rep.rate_coded_bits - code_rate), amgm, limit_d])


@dataclasses.dataclass(frozen=True)
class SweepSample:
  """Hashable MC sample: one draw of (W, Σ) → STATS for every (family param, rate).

  The same Σ key is used for every parameter (common random numbers across the sweep).
  Returns an array ``(len(params), len(rates), len(STATS))``.
  """

  family: Any
  params: tuple[float, ...]
  rates: tuple[float, ...]
  algorithm: str
  m: int
  percdamp: float

  def __call__(self, key):
    k_s, k_w = jax.random.split(key)
    w = jax.random.normal(k_w, (self.family.n, self.m), jnp.float32)

    def one(param, rate):
      return _stats(self.algorithm, w, self.family(k_s, param), rate, self.percdamp)

    p = jnp.asarray(self.params, jnp.float32)
    r = jnp.asarray(self.rates, jnp.float32)
    return jax.vmap(lambda pp: jax.vmap(lambda rr: one(pp, rr))(r))(p)


@dataclasses.dataclass(frozen=True)
class RandomSigmaSample:
  """One random Σ from ``family`` with its parameter uniform on [lo, hi] (log-uniform if
  ``log``), one W; WaterSIC at ``rate`` → STATS."""

  family: Any
  lo: float
  hi: float
  log: bool
  rate: float
  m: int
  percdamp: float

  def __call__(self, key):
    k_p, k_s, k_w = jax.random.split(key, 3)
    u = jax.random.uniform(k_p)
    param = jnp.exp(jnp.log(self.lo) + u * (jnp.log(self.hi) - jnp.log(self.lo))) if self.log else self.lo + u * (self.hi - self.lo)
    w = jax.random.normal(k_w, (self.family.n, self.m), jnp.float32)
    return _stats("watersic", w, self.family(k_s, param), jnp.float32(self.rate), self.percdamp)


def _family(spec: Mapping[str, Any], n: int):
  return cov.make_family(spec["name"], n, **dict(spec.get("options", {}) or {}))


def _plain(x):
  return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def _estimate_point(sample, seed: int, draws: int, batch: int) -> dict:
  est = estimate(sample, jax.random.key(seed), n=draws, batch=min(batch, draws))
  return {"mean": np.asarray(est.mean).tolist(), "stderr": np.asarray(est.stderr).tolist(), "n": est.n}


def _compute(point: Mapping[str, Any]) -> dict:
  part = point["part"]
  fam = _family(point["family"], point["n"])
  if part in ("gap", "spread"):
    sample = SweepSample(fam, tuple(point["params"]), tuple(point["rates"]), point["algorithm"], point["m"], point["percdamp"])
    return {"stats": list(STATS), **_estimate_point(sample, point["seed"], point["draws"], point["batch"])}
  if part == "uniformity":
    spec = point["family"]
    sample = RandomSigmaSample(fam, spec["lo"], spec["hi"], bool(spec.get("log", False)), point["rate"], point["m"], point["percdamp"])
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(point["seed"]), i))(jnp.arange(point["draws"]))
    vals = jax.lax.map(jax.jit(sample), keys, batch_size=min(point["batch"], point["draws"]))
    vals = np.asarray(vals)
    return {
        "stats": list(STATS),
        "samples": vals.tolist(),
        "mean": vals.mean(0).tolist(),
        "stderr": (vals.std(0, ddof=1) / np.sqrt(len(vals))).tolist(),
        "n": int(len(vals)),
    }
  raise ValueError(f"unknown part {part!r}")


def _points(cfg: DictConfig) -> list[dict]:
  pts = []
  g = cfg.gap
  for i, fam in enumerate(g.families):
    for alg in cfg.algorithms:
      pts.append(dict(part="gap", family=_plain(fam), params=list(fam.params), rates=list(g.rates), algorithm=alg,
                      n=g.n, m=g.m, draws=g.draws, batch=cfg.batch, percdamp=cfg.percdamp[alg], seed=cfg.seed + i))
  s = cfg.spread
  for alg in ("gptq", "watersic"):
    pts.append(dict(part="spread", family={"name": "ldl_spread", "options": _plain(s.options)}, params=list(s.log_spreads),
                    rates=[s.rate], algorithm=alg, n=s.n, m=s.m, draws=s.draws, batch=cfg.batch,
                    percdamp=cfg.percdamp[alg], seed=cfg.seed + 100))
  u = cfg.uniformity
  for i, fam in enumerate(u.families):
    pts.append(dict(part="uniformity", family=_plain(fam), rate=u.rate, n=u.n, m=u.m, draws=u.draws, batch=cfg.batch,
                    percdamp=cfg.percdamp.watersic, seed=cfg.seed + 200 + i))
  return pts


CONVENTIONS = {
    "distortion": "tr((W-What)^T Sigma (W-What))/(n m), W iid N(0,1)",
    "rate_bits": "rate_coded_bits: per-input-feature quantized-Gaussian code length + 64 model bits per "
                 "input feature + side information, bits per entry",
    "gap_bits": "rate_bits - R_waterfill(d_per_entry)",
    "code_gap_bits": "same with the code rate alone (model and side bits excluded)",
    "amgm_bits": "0.5 log2(AM/GM) of GPTQ's LDL diagonal 1/U_ii^2 (forward order, damped H)",
    "stats_axes": "gap/spread points: mean[param][rate][stat]; uniformity: samples[draw][stat]",
}


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """The three figures (seeds pooled) and the results.json fields of this sweep's points."""
  bad = [r for r in records if np.any(np.asarray(r["result"]["mean"])[..., STATS.index("limit_d")]
                                      > np.asarray(r["result"]["mean"])[..., 0])]
  if bad:
    log.warning("%d points where the waterfilling limit exceeds the measured distortion", len(bad))
  _figures(cfg, pool_seeds(records), out_dir)
  return {"conventions": CONVENTIONS, "stats": list(STATS)}


def run(cfg: DictConfig) -> dict | None:
  """Run (or resume) the sweep; a single run writes results.json and the figures."""
  sweep = Sweep(cfg, "weight_only")
  sweep.run_points(_points(cfg), _compute)
  return sweep.finish()


def _figures(cfg: DictConfig, records: list[dict], out_dir: Path) -> None:
  from rdq import plot

  idx = {s: i for i, s in enumerate(STATS)}
  gap_recs = [r for r in records if r["config"]["part"] == "gap"]
  fams = list(dict.fromkeys(r["config"]["family"]["name"] for r in gap_recs))

  # 1. gap to the limit
  fig, axes = plot.figure("double", ncols=len(fams), nrows=2)
  fig.set_size_inches(7.0, 4.2)
  fig.set_layout_engine("constrained")
  axes = np.asarray(axes).reshape(2, len(fams))
  for j, fname in enumerate(fams):
    ax_d, ax_g = axes[0, j], axes[1, j]
    recs = [r for r in gap_recs if r["config"]["family"]["name"] == fname]
    fam_cfg = recs[0]["config"]["family"]
    params = fam_cfg["params"]
    p_show = fam_cfg.get("show", len(params) - 1)
    r_gap = cfg.gap.gap_rate_index
    family = _family(fam_cfg, cfg.gap.n)
    for r in recs:
      alg = r["config"]["algorithm"]
      mean = np.asarray(r["result"]["mean"])
      se = np.asarray(r["result"]["stderr"])
      col, mk = plot.color(alg), plot.marker(alg)
      ax_d.errorbar(mean[p_show, :, idx["rate_bits"]], mean[p_show, :, idx["d_per_entry"]],
                    yerr=1.96 * se[p_show, :, idx["d_per_entry"]], color=col, marker=mk, label=plot.label(alg))
      ax_g.errorbar(params, mean[:, r_gap, idx["gap_bits"]], yerr=1.96 * se[:, r_gap, idx["gap_bits"]],
                    color=col, marker=mk, label=plot.label(alg))
    # limit curve: the mean of waterfill D(R) over the same Σ draws is not needed for
    # families with a fixed spectrum; for random spectra we use one Σ of the first key.
    lam = np.linalg.eigvalsh(np.asarray(family(jax.random.key(cfg.seed + j), params[p_show]), np.float64)).clip(0)
    rr = np.linspace(0.25, max(cfg.gap.rates) + 1.0, 60)
    ax_d.plot(rr, np.asarray(waterfill(lam, rr).distortion), **plot.LIMIT_STYLE, label="waterfilling")
    ax_d.set_yscale("log")
    ax_d.set_title(f"{fname}\n{family.param_name}={params[p_show]:g}", fontsize=8)
    ax_g.axhline(ECSQ_GAP_BITS, **plot.REFERENCE_STYLE, label="½log₂(πe/6) = 0.255 (ECSQ)")
    ax_g.set_ylim(bottom=0)  # the 0.255-bit line inside the axes, not on its edge
    ax_g.set_xlabel(family.param_name)
    if j == 0:
      ax_d.set_ylabel("D = tr((W−Ŵ)ᵀΣ(W−Ŵ))/(nm)")
      ax_g.set_ylabel(f"rate gap [bits] at R≈{cfg.gap.rates[r_gap]:g}")
    ax_d.set_xlabel("R [bits/entry]")
  # one legend for all panels, below them (never on the data)
  handles = {}
  for ax in (axes[0, 0], axes[1, 0]):
    for h, lab in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(lab, h)
  fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=len(handles), fontsize=6.5)
  fig.suptitle(f"Weight-only, W iid N(0,1), n={cfg.gap.n}, m={cfg.gap.m}: rate = achievable entropy-coded rate "
               "incl. side info; RTN/GPTQ on an entropy-coded uniform grid; 95% CI", fontsize=7)
  plot.save(fig, out_dir / "weight_only_gap")

  # 2. GPTQ's unbounded gap on the LDL-spread family
  sp = [r for r in records if r["config"]["part"] == "spread"]
  fig, ax = plot.figure("single")
  for r in sp:
    alg = r["config"]["algorithm"]
    mean = np.asarray(r["result"]["mean"])[:, 0, :]
    se = np.asarray(r["result"]["stderr"])[:, 0, :]
    x = np.asarray(r["config"]["params"])
    ax.errorbar(x, mean[:, idx["gap_bits"]], yerr=1.96 * se[:, idx["gap_bits"]], color=plot.color(alg),
                marker=plot.marker(alg), label=plot.label(alg))
    if alg == "gptq":
      wat = next(q for q in sp if q["config"]["algorithm"] == "watersic")
      base = np.asarray(wat["result"]["mean"])[:, 0, idx["gap_bits"]]
      ax.plot(x, base + mean[:, idx["amgm_bits"]], color=plot.COLORS["gptq"], ls=":", lw=1,
              label="WaterSIC + ½log₂(AM/GM of d_i)")
  ax.axhline(ECSQ_GAP_BITS, **plot.REFERENCE_STYLE, label="½log₂(πe/6) = 0.255 (ECSQ)")
  ax.set_ylim(bottom=0)  # the 0.255-bit line inside the axes, not on its edge
  ax.set_xlabel("LDL-diagonal spread s = ln(d_max/d_min)")
  ax.set_ylabel("rate gap to waterfilling [bits/entry]")
  ax.set_title(f"Σ = LDLᵀ, n={cfg.spread.n}, m={cfg.spread.m}, R≈{cfg.spread.rate:g} bits", fontsize=8)
  ax.legend()
  plot.save(fig, out_dir / "gptq_unbounded")

  # 3. uniformity of WaterSIC's gap
  un = [r for r in records if r["config"]["part"] == "uniformity"]
  fig, ax = plot.figure("single")
  allv = np.concatenate([np.asarray(r["result"]["samples"])[:, idx["code_gap_bits"]] for r in un])
  bins = np.linspace(min(allv.min(), ECSQ_GAP_BITS - 0.03), max(allv.max(), ECSQ_GAP_BITS + 0.03), 30)
  ax.hist([np.asarray(r["result"]["samples"])[:, idx["code_gap_bits"]] for r in un], bins=bins, stacked=True,
          label=[r["config"]["family"]["name"] for r in un])
  ax.axvline(ECSQ_GAP_BITS, **plot.LIMIT_STYLE, label="½log₂(πe/6) = 0.2546")
  side = 16 / cfg.uniformity.m + GAUSSIAN_MODEL_BITS / cfg.uniformity.m
  ax.set_xlabel(f"WaterSIC code-rate gap [bits/entry] (side+model {side:.3f} bit excluded)")
  ax.set_ylabel("number of random Σ")
  se = allv.std(ddof=1) / np.sqrt(len(allv))
  ax.set_title(f"{len(allv)} random Σ, n={cfg.uniformity.n}, m={cfg.uniformity.m}, R≈{cfg.uniformity.rate:g}; "
               f"mean {allv.mean():.4f} ± {se:.4f}", fontsize=7)
  ax.yaxis.get_major_locator().set_params(integer=True)
  ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the histogram, not on it
  plot.save(fig, out_dir / "watersic_uniformity")


@hydra.main(version_base="1.3", config_path="conf", config_name="weight_only")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  main()
