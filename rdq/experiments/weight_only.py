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

import functools
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


@functools.lru_cache(maxsize=None)
def _stats_fn(algorithm: str, percdamp: float):
  """``_stats`` jitted and vmapped over a batch of (W, Σ, rate) items.

  One compiled program per (algorithm, percdamp, batch shape), shared by every point of the
  sweep: the family, its parameters and the rate are data, not part of the program. (Before,
  each point traced its own sampler with the family and the parameter grid baked in, and
  compilation was ~80 % of the app's time.)
  """
  return jax.jit(jax.vmap(lambda w, h, rate: _stats(algorithm, w, h, rate, percdamp)))


def _chunked(fn, batch: int, *items) -> list[np.ndarray]:
  """``fn`` over the leading axis of ``items`` in calls of exactly ``batch`` items (the last
  padded with item 0, its results dropped): one compiled program whatever the item count."""
  num = len(items[0])
  order = np.concatenate([np.arange(num), np.zeros((-num) % batch, np.int64)])
  outs = [fn(*(x[order[lo:lo + batch]] for x in items)) for lo in range(0, len(order), batch)]
  outs = [o if isinstance(o, tuple) else (o,) for o in outs]
  return [np.concatenate([np.asarray(o[i]) for o in outs])[:num] for i in range(len(outs[0]))]


# Draws are generated DRAW_BATCH at a time, so every point of a family shares one program.
DRAW_BATCH = 16


@functools.partial(jax.jit, static_argnames=("family",))
def _sigmas(family, keys, params):
  """``Σ_i = family(keys[i], params[i])`` (one program per family, shared by the parts)."""
  return jax.vmap(family)(keys, params)


@functools.partial(jax.jit, static_argnames=("shape",))
def _normals(keys, shape: tuple[int, ...]):
  """``W_i ~ N(0, 1)`` of ``shape`` from ``keys[i]``."""
  return jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)


def _draw_keys(seed: int, draws: int, num: int) -> np.ndarray:
  """Draw i's key ``fold_in(key(seed), i)`` (``rdq.montecarlo.estimate``'s keys) split in
  ``num``: ``(draws, num)`` keys."""
  keys = jax.vmap(lambda i: jax.random.split(jax.random.fold_in(jax.random.key(seed), i), num))(jnp.arange(draws))
  return np.asarray(jax.random.key_data(keys))


def _key_rows(data: np.ndarray):
  return jax.random.wrap_key_data(jnp.asarray(data))


def _draw_w(key_data: np.ndarray, n: int, m: int) -> np.ndarray:
  return _chunked(lambda k: _normals(_key_rows(k), (n, m)), DRAW_BATCH, key_data)[0]


def _draw_sigma(family, key_data: np.ndarray, params: np.ndarray) -> np.ndarray:
  return _chunked(lambda k, p: _sigmas(family, _key_rows(k), jnp.asarray(p, jnp.float32)), DRAW_BATCH, key_data,
                  np.asarray(params, np.float32))[0]


def _stats_items(algorithm: str, percdamp: float, w, h, rate, w_idx, h_idx, batch: int) -> np.ndarray:
  """STATS of items ``i``: ``(W[w_idx[i]], Σ[h_idx[i]], rate[i])``, ``batch`` items per call
  (gathered per call: a (draw, param, rate) grid never materializes its repeated W).
  Returns ``(items, len(STATS))``."""
  fn = _stats_fn(algorithm, float(percdamp))
  return _chunked(lambda wi, hi, r: fn(w[wi], h[hi], jnp.asarray(r, jnp.float32)), batch,
                  np.asarray(w_idx), np.asarray(h_idx), np.asarray(rate, np.float32))[0]


def _family(spec: Mapping[str, Any], n: int):
  return cov.make_family(spec["name"], n, **dict(spec.get("options", {}) or {}))


def _plain(x):
  return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


def _mean_stderr(vals: np.ndarray) -> dict:
  """Mean over draws (axis 0) and its standard error ``s/√n`` (unbiased ``s²``)."""
  vals = np.asarray(vals, np.float64)
  return {"mean": vals.mean(0).tolist(), "stderr": (vals.std(0, ddof=1) / np.sqrt(len(vals))).tolist(),
          "n": int(len(vals))}


def _compute(point: Mapping[str, Any]) -> dict:
  """One point. Draw i has the key ``fold_in(key(seed), i)``.

  Gap/spread: ``k_Σ, k_W = split(key)``; one W per draw and one Σ per family parameter, all
  from the same ``k_Σ`` (common random numbers across the sweep); STATS on the (draw, param,
  rate) grid, ``mean[param][rate][stat]`` over draws. Uniformity: ``k_p, k_Σ, k_W = split(key,
  3)``; one Σ per draw with its parameter uniform on [lo, hi] (log-uniform if ``log``) from
  ``k_p``; WaterSIC at ``rate``, ``samples[draw][stat]``.
  """
  part = point["part"]
  fam = _family(point["family"], point["n"])
  draws, n, m = int(point["draws"]), int(point["n"]), int(point["m"])
  if part in ("gap", "spread"):
    params = np.asarray(point["params"], np.float32)
    rates = np.asarray(point["rates"], np.float32)
    keys = _draw_keys(point["seed"], draws, 2)  # (draws, 2): k_Σ, k_W
    w = _draw_w(keys[:, 1], n, m)
    d, p, r = np.meshgrid(np.arange(draws), np.arange(len(params)), np.arange(len(rates)), indexing="ij")
    h = _draw_sigma(fam, np.repeat(keys[:, 0], len(params), axis=0), np.tile(params, draws))  # (draws·P, n, n)
    vals = _stats_items(point["algorithm"], point["percdamp"], w, h, rates[r.ravel()], d.ravel(),
                        (d * len(params) + p).ravel(), point["batch"])
    vals = vals.reshape(draws, len(params), len(rates), len(STATS))
    return {"stats": list(STATS), **_mean_stderr(vals), "eigs_draw0": np.linalg.eigvalsh(
        h[:len(params)].astype(np.float64)).clip(0).tolist()}
  if part == "uniformity":
    spec = point["family"]
    keys = _draw_keys(point["seed"], draws, 3)  # (draws, 3): k_p, k_Σ, k_W
    u = np.asarray(jax.vmap(jax.random.uniform)(_key_rows(keys[:, 0])), np.float32)
    lo, hi = np.float32(spec["lo"]), np.float32(spec["hi"])
    param = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))) if spec.get("log", False) else lo + u * (hi - lo)
    w = _draw_w(keys[:, 2], n, m)
    h = _draw_sigma(fam, keys[:, 1], param)
    idx = np.arange(draws)
    vals = _stats_items("watersic", point["percdamp"], w, h, np.full(draws, point["rate"], np.float32), idx, idx,
                        point["batch"])
    return {"stats": list(STATS), "samples": vals.tolist(), **_mean_stderr(vals)}
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
    # families with a fixed spectrum; for random spectra we use the Σ of draw 0 (stored by the point).
    lam = np.asarray(recs[0]["result"]["eigs_draw0"][p_show])  # Σ of draw 0 (the same for every algorithm)
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
