"""Universal codebooks: the rate gap to waterfilling of Σ-independent codebooks, measured.

One Hydra app (``python -m rdq.experiments.universal`` quick; ``+experiment=universal_full`` for the
paper), three figures in ``out_dir``:

1. ``universal_gap_vs_family`` — rate gap ``R − R_wf(D_C(Σ))`` vs the family parameter (power-law
   α, spike strength β, AR(1) ρ, LDL spread) at one (n, R), per construction, Monte Carlo over
   w with 95% error bars; the paper's 0.11-bit line and the asymptotic (n → ∞) random-coding gap
   of the best-scaled Gaussian code on the same spectrum (``rdq.limits.universal_gap``).
2. ``universal_worst_gap_vs_n`` — worst-case gap over a held-out batch of random Σ from every
   family, vs n, per construction, at R = 1 and R = 2, and at n = 24, R = log2(196561)/24 ≈
   0.733 for the Leech shell codebook (origin + the 196 560 minimal vectors of Λ24) against
   iid Gaussian and spherical codes with as many points (``+experiment=universal_leech2``: the
   two-shell Leech codebook, 16 969 681 points, R ≈ 1.0007, against a streamed iid Gaussian
   code of as many points); hollow markers: the gap at Σ = I (the
   finite-n loss that has nothing to do with universality). The same numbers as a table:
   ``universal_worst.md`` (one column per construction).
3. ``universal_learned`` — the optax minimax codebook: training curve and held-out worst-case gap
   next to the random Gaussian codebook it started from.

Conventions. ``w ~ N(0, I_n)``; distortion ``(1/n) E(w−ĉ)ᵀΣ(w−ĉ)``; rate ``log2|C|/n`` bits per
entry; the encoder picks ĉ Σ-aware and a codebook scale τ per Σ from ``scales`` (chosen on
``num_select`` separate draws; its ``log2(#scales)/(n·m)`` bits vanish with the m output
features of a layer and are not counted). Explicit codebooks have ``2^{nR} ≤ 2^16`` points; at
n = 16, R = 2 (``2^32`` points) only product codebooks of two 8-dimensional blocks are measured,
encoded by block SIC.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Mapping

import hydra
import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import DictConfig, ListConfig, OmegaConf

from rdq import covariance as cov
from rdq.experiments._store import PointStore, config_key, write_text_atomic
from rdq.experiments._sweep import Sweep, pool_seeds
from rdq.limits import UNIVERSALITY_GAP_BITS, universal_gap
from rdq.quantizers.lattice import DnLattice, E8Lattice
from rdq.quantizers.universal import (
  DEFAULT_MAX_BYTES,
  Codebook,
  LearnConfig,
  ProductCodebook,
  gaussian_codebook,
  lattice_codebook,
  learn_minimax_codebook,
  leech_codebook,
  rate_gap,
  sphere_codebook,
)

log = logging.getLogger(__name__)

LEECH_RATE = math.log2(196561) / 24
"""Rate of the Leech shell codebook (origin + 196 560 minimal vectors), bits per entry."""
LEECH2_RATE = math.log2(196561 + 16773120) / 24
"""Rate of the two-shell Leech codebook (origin + the vectors of norm 4 and 6), bits per entry."""

LABELS = {
    "gaussian": "iid Gaussian",
    "sphere": "uniform on sphere",
    "lattice": "lattice shells (rotated)",
    "product_gaussian": "product of 2 Gaussian blocks",
    "product_lattice": "product of 2 lattice-shell blocks",
    "product_learned": "product of 2 learned blocks",
    "learned": "learned minimax (optax)",
    "leech": "Leech Λ24: 0 + 196 560 minimal vectors",
    "leech2": "Leech Λ24: 0 + shells of norm 4 and 6 (16 969 681 points)",
}
COLORS = {
    "gaussian": "#1f77b4",
    "sphere": "#ff7f0e",
    "lattice": "#9467bd",
    "product_gaussian": "#8c564b",
    "product_lattice": "#e377c2",
    "product_learned": "#7f7f7f",
    "learned": "#17becf",
    "leech": "#d62728",
    "leech2": "#bcbd22",
}


def _plain(x):
  return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig) else x


# ----------------------------------------------------------------------------- Σ batches
def _family(name: str, n: int):
  opts = {"spiked": dict(k=max(1, round(n / 5))), "wishart": dict(num_samples=2 * n),
          "block_diagonal": dict(num_blocks=2)}.get(name, {})
  return cov.make_family(name, n, **opts)


def _sample(fam, key, params) -> np.ndarray:
  """``cov.sample`` on float32 parameters, as NumPy. (Padding the batch to a few sizes would share
  the eager sampling's programs, but is not bitwise: batched Wishart products round differently.)"""
  return np.asarray(cov.sample(fam, key, jnp.asarray(params, jnp.float32)))


def _random_sigmas(families: list[dict], n: int, per_family: int, seed: int) -> tuple[np.ndarray, list[str]]:
  """``per_family`` Σ from each family with a uniform (or log-uniform) random parameter.

  Every construction of a worst-case point draws the same batch: it is computed once per process."""
  fams = OmegaConf.to_container(families, resolve=True) if isinstance(families, ListConfig) else families
  sig, labels = _random_sigmas_cached(json.dumps([_plain(f) for f in fams], sort_keys=True), n, per_family, seed)
  return sig.copy(), list(labels)


@functools.lru_cache(maxsize=32)
def _random_sigmas_cached(families_json: str, n: int, per_family: int, seed: int) -> tuple[np.ndarray, tuple[str, ...]]:
  families = json.loads(families_json)
  out, labels = [], []
  for i, spec in enumerate(families):
    key = jax.random.fold_in(jax.random.key(seed), i)
    u = np.asarray(jax.random.uniform(jax.random.fold_in(key, 10_000), (per_family,)))
    lo, hi = float(spec["lo"]), float(spec["hi"])
    par = np.exp(np.log(lo) + u * (np.log(hi) - np.log(lo))) if spec.get("log", False) else lo + u * (hi - lo)
    out.append(_sample(_family(spec["name"], n), key, par))
    labels += [f"{spec['name']}={p:.3g}" for p in par]
  return np.concatenate(out), tuple(labels)


def _lattice_for(n: int):
  return E8Lattice() if n == 8 else DnLattice(n)


# ----------------------------------------------------------------------------- codebooks
def _learn_config(cfg_learn: Mapping[str, Any]) -> LearnConfig:
  return LearnConfig(**{k: cfg_learn[k] for k in ("steps", "batch", "sigma_batch", "learning_rate", "temp_start",
                                                   "temp_end", "smooth_max_bits")})


def _learn_point(cfg: DictConfig, n: int, rate: float) -> dict:
  return dict(part="learn", n=n, rate=rate, seed=cfg.seed, learn=_plain(cfg.learn), families=_plain(cfg.sigma_families))


def _build(name: str, n: int, rate: float, seed: int, store: PointStore, cfg: DictConfig):
  key = jax.random.key(seed)
  if name == "gaussian":  # beyond DEFAULT_MAX_BYTES of points: generated by index, never stored
    return gaussian_codebook(key, n, rate, stream=2.0 ** (n * rate) * n * 4 > DEFAULT_MAX_BYTES)
  if name == "sphere":
    return sphere_codebook(key, n, rate)
  if name == "lattice":
    return lattice_codebook(key, _lattice_for(n), rate)
  if name == "leech":
    if n != 24 or abs(rate - LEECH_RATE) > 1e-9:
      raise ValueError(f"the Leech shell codebook has n = 24 and R = log2(196561)/24 = {LEECH_RATE!r}; got n={n}, R={rate}")
    return leech_codebook(key)
  if name == "leech2":
    if n != 24 or abs(rate - LEECH2_RATE) > 1e-9:
      raise ValueError(f"the two-shell Leech codebook has n = 24 and R = log2(16969681)/24 = {LEECH2_RATE!r}; "
                       f"got n={n}, R={rate}")
    return leech_codebook(key, shells=2)
  if name.startswith("product_"):
    d = n // 2
    return ProductCodebook(_build(name.removeprefix("product_"), d, rate, seed + 1, store, cfg), num_blocks=2)
  if name == "learned":
    rec = store.get(_learn_point(cfg, n, rate))
    if rec is None:
      raise RuntimeError(f"learned codebook for n={n}, R={rate} missing: add 'learned' to that worst_case case")
    return Codebook(jnp.asarray(rec["result"]["points"], jnp.float32), name="learned")
  raise ValueError(f"unknown construction {name!r}; known: {sorted(LABELS)}")


# ----------------------------------------------------------------------------- points
def _compute_learn(point: Mapping[str, Any]) -> dict:
  n, rate = point["n"], point["rate"]
  train, _ = _random_sigmas(point["families"], n, point["learn"]["train_sigmas_per_family"], point["seed"] + 3000)
  train = np.concatenate([np.eye(n, dtype=np.float32)[None], train])
  init = gaussian_codebook(jax.random.key(point["seed"]), n, rate)
  t0 = time.perf_counter()
  learned, hist = learn_minimax_codebook(init, jnp.asarray(train), jax.random.key(point["seed"] + 4000),
                                         _learn_config(point["learn"]))
  return {"points": np.asarray(learned.points).tolist(), "smooth_max_gap_bits": hist.smooth_max_gap_bits.tolist(),
          "max_gap_bits": hist.max_gap_bits.tolist(), "mean_gap_bits": hist.mean_gap_bits.tolist(),
          "train_time_s": time.perf_counter() - t0, "num_train_sigmas": int(len(train))}


def _gap_record(cb, sigmas: np.ndarray, seed: int, draws: int, cfg: Mapping[str, Any]) -> dict:
  g = rate_gap(cb, jnp.asarray(sigmas), jax.random.key(seed), num_samples=draws, scales=tuple(cfg["scales"]),
               num_select=cfg["num_select"], batch=min(cfg["batch"], draws))
  return {"gap_bits": g.gap_bits.tolist(), "gap_stderr_bits": g.gap_stderr_bits.tolist(),
          "d_per_entry": g.distortion.mean.tolist(), "d_stderr": g.distortion.stderr.tolist(), "n": g.distortion.n,
          "scale": np.asarray(g.scale).tolist(), "limit_d": g.limit_distortion.tolist(),
          "rate_bits": cb.rate_bits}


def _make_compute(cfg: DictConfig, store: PointStore):
  def compute(point: Mapping[str, Any]) -> dict:
    part = point["part"]
    if part == "learn":
      return _compute_learn(point)
    cb = _build(point["construction"], point["n"], point["rate"], point["seed"], store, cfg)
    if part == "family":
      fam = _family(point["family"], point["n"])
      sig = _sample(fam, jax.random.key(point["seed"] + 1000), point["params"])
      return _gap_record(cb, sig, point["seed"] + 2000, point["draws"], point)
    if part == "worst":
      sig, labels = _random_sigmas(point["families"], point["n"], point["per_family"], point["seed"] + 1000)
      sig = np.concatenate([np.eye(point["n"], dtype=np.float32)[None], sig])
      rec = _gap_record(cb, sig, point["seed"] + 2000, point["draws"], point)
      rec["labels"] = ["isotropic"] + labels
      return rec
    raise ValueError(f"unknown part {part!r}")

  return compute


def _points(cfg: DictConfig) -> tuple[list[dict], list[dict]]:
  common = dict(seed=cfg.seed, scales=list(cfg.scales), num_select=cfg.num_select, batch=cfg.batch)
  learn = []
  for case in cfg.worst_case.cases:
    if "learned" in case.constructions:
      learn.append(_learn_point(cfg, case.n, case.rate))
  pts = []
  fs = cfg.family_sweep
  learned_cases = {(p["n"], p["rate"]) for p in learn}
  for fam in fs.families:
    for c in fs.constructions:
      if c == "learned" and (fs.n, fs.rate) not in learned_cases:
        continue
      pts.append(dict(part="family", construction=c, n=fs.n, rate=fs.rate, family=fam.name, params=list(fam.params),
                      draws=fs.draws, **common, **_dep(cfg, c, fs.n, fs.rate)))
  wc = cfg.worst_case
  for case in wc.cases:
    for c in case.constructions:
      pts.append(dict(part="worst", construction=c, n=case.n, rate=case.rate, families=_plain(cfg.sigma_families),
                      per_family=wc.sigmas_per_family, draws=wc.draws, **common, **_dep(cfg, c, case.n, case.rate)))
  return learn, pts


def _dep(cfg: DictConfig, construction: str, n: int, rate: float) -> dict:
  """Learned constructions depend on their training point: include its key in the config."""
  if construction == "learned":
    return {"learn_key": config_key(_learn_point(cfg, n, rate))}
  if construction == "product_learned":
    return {"learn_key": config_key(_learn_point(cfg, n // 2, rate))}
  return {}


# ----------------------------------------------------------------------------- run
CONVENTIONS = {
    "distortion": "d_per_entry = E (w-c)^T Sigma (w-c) / n, w ~ N(0, I_n), Sigma-aware nearest codeword",
    "rate_bits": "log2(#codewords)/n bits per entry; encoder-selected scale tau not counted (vanishes with m)",
    "gap_bits": "rate_bits - R_waterfill(d_per_entry); gap_stderr_bits by the delta method",
    "worst": "max over the held-out Sigma batch (index 0 is Sigma = I)",
}
# Per-Σ lists of a "worst" point: seeds draw different held-out Σ, so their batches are joined.
_PER_SIGMA = ("gap_bits", "gap_stderr_bits", "d_per_entry", "d_stderr", "scale", "limit_d", "labels")


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """The three figures (seeds pooled) and the results.json fields of this sweep's points."""
  learn_recs = [r for r in records if r["config"]["part"] == "learn"]
  recs = [r for r in records if r["config"]["part"] != "learn"]
  summary = _summary(recs)
  for row in summary:
    log.info("n=%d R=%g %-17s worst gap %.3f ± %.3f bit (%s), gap at Σ=I %.3f ± %.3f", row["n"], row["rate"],
             row["construction"], row["worst_gap_bits"], row["worst_gap_stderr_bits"], row["worst_sigma"],
             row["iso_gap_bits"], row["iso_gap_stderr_bits"])
  pooled = (pool_seeds([r for r in recs if r["config"]["part"] == "family"])
            + pool_seeds([r for r in recs if r["config"]["part"] == "worst"], concat=_PER_SIGMA))
  _figures(cfg, pooled, learn_recs, _summary(pooled), out_dir)
  write_text_atomic(out_dir / "universal_worst.md", worst_table(_summary(pooled)))
  return {
      "conventions": CONVENTIONS,
      "paper_bound_bits": UNIVERSALITY_GAP_BITS,
      "summary": summary,
      "learn": [{"config": r["config"], "result": {k: v for k, v in r["result"].items() if k != "points"}}
                for r in learn_recs],
  }


def run(cfg: DictConfig) -> dict | None:
  """Run (or resume) the sweep; a single run writes results.json and the figures."""
  sweep = Sweep(cfg, "universal")
  learn_pts, pts = _points(cfg)
  compute = _make_compute(cfg, sweep.store)
  sweep.run_points(learn_pts, compute, desc="universal/learn")
  sweep.run_points(pts, compute, desc="universal")
  return sweep.finish()


def worst_table(summary: list[dict]) -> str:
  """Markdown: one row per (n, R), one column per construction: worst-case gap ± stderr and the
  gap at Σ = I, bits per entry."""
  cons = [c for c in LABELS if any(row["construction"] == c for row in summary)]
  cases = sorted({(row["n"], row["rate"]) for row in summary})
  lines = ["| n | R [bit] | " + " | ".join(LABELS[c] for c in cons) + " |", "|---|---|" + "---|" * len(cons)]
  for n, rate in cases:
    cells = []
    for c in cons:
      row = [r for r in summary if r["construction"] == c and r["n"] == n and r["rate"] == rate]
      cells.append(f"{row[0]['worst_gap_bits']:.3f} ± {row[0]['worst_gap_stderr_bits']:.3f} (I: {row[0]['iso_gap_bits']:.3f})"
                   if row else "—")
    lines.append(f"| {n} | {rate:.4g} | " + " | ".join(cells) + " |")
  lines.append("")
  lines.append(f"Worst-case rate gap R − R_wf(D_C(Σ)) over the held-out Σ (and Σ = I), ± one standard error; "
               f"in parentheses the gap at Σ = I. Paper bound (n → ∞): {UNIVERSALITY_GAP_BITS} bit.")
  return "\n".join(lines) + "\n"


def _summary(recs: list[dict]) -> list[dict]:
  rows = []
  for r in recs:
    c, res = r["config"], r["result"]
    if c["part"] != "worst":
      continue
    g = np.asarray(res["gap_bits"])
    se = np.asarray(res["gap_stderr_bits"])
    i = int(np.argmax(g))
    rows.append(dict(n=c["n"], rate=c["rate"], construction=c["construction"], worst_gap_bits=float(g[i]),
                     worst_gap_stderr_bits=float(se[i]), worst_sigma=res["labels"][i], mean_gap_bits=float(g.mean()),
                     iso_gap_bits=float(g[0]), iso_gap_stderr_bits=float(se[0]), num_sigmas=int(len(g))))
  return rows


# ----------------------------------------------------------------------------- figures
def _figures(cfg: DictConfig, recs: list[dict], learn_recs: list[dict], summary: list[dict], out_dir: Path) -> None:
  # 1. gap vs family parameter
  fam_recs = [r for r in recs if r["config"]["part"] == "family"]
  fams = list(dict.fromkeys(r["config"]["family"] for r in fam_recs))
  if fams:
    _family_figure(cfg, fam_recs, fams, out_dir)
  _worst_figures(cfg, recs, learn_recs, summary, out_dir)


def _family_figure(cfg: DictConfig, fam_recs: list[dict], fams: list[str], out_dir: Path) -> None:
  from rdq import plot

  fs = cfg.family_sweep
  fig, axes = plot.figure("double", ncols=len(fams))
  fig.set_size_inches(7.0, 2.6)
  axes = np.atleast_1d(axes)
  for j, fname in enumerate(fams):
    ax = axes[j]
    family = _family(fname, fs.n)
    rs = [r for r in fam_recs if r["config"]["family"] == fname]
    params = np.asarray(rs[0]["config"]["params"])
    xs = np.arange(len(params)) if fname == "spiked" else params
    for r in rs:
      c = r["config"]["construction"]
      ax.errorbar(xs, r["result"]["gap_bits"], yerr=1.96 * np.asarray(r["result"]["gap_stderr_bits"]),
                  color=COLORS[c], marker="o", ms=3, lw=1, label=LABELS[c])
    sig = _sample(family, jax.random.key(cfg.seed + 1000), params).astype(np.float64)
    lam = np.clip(np.linalg.eigvalsh(sig), 1e-12, None)
    ax.plot(xs, np.asarray(universal_gap(lam, fs.rate)), color="black", ls=":", lw=1.2,
            label="n→∞ Gaussian code (random coding)")
    ax.axhline(UNIVERSALITY_GAP_BITS, color="0.3", ls="--", lw=0.9, label="paper bound 0.11 bit")
    if fname == "spiked":
      ax.set_xticks(xs, [f"{p:g}" for p in params], fontsize=6)
    ax.set_xlabel(f"{family.param_name}")
    ax.set_title(fname, fontsize=8)
    ax.set_ylim(bottom=0)
    if j == 0:
      ax.set_ylabel("rate gap R − R_wf(D_C(Σ)) [bits/entry]")
  axes[0].legend(fontsize=5.5, loc="upper left")
  fig.suptitle(f"Universal codebooks, n={fs.n}, R={fs.rate:g} bit ({2 ** round(fs.n * fs.rate)} codewords), "
               f"Σ-aware encoding + encoder-selected scale; D = E(w−ĉ)ᵀΣ(w−ĉ)/n; 95% CI over w", fontsize=7)
  plot.save(fig, out_dir / "universal_gap_vs_family")


def _worst_figures(cfg: DictConfig, recs: list[dict], learn_recs: list[dict], summary: list[dict], out_dir: Path) -> None:
  from rdq import plot

  # 2. worst-case gap vs n
  rates = sorted({row["rate"] for row in summary})
  fig, axes = plot.figure("double", ncols=len(rates))
  fig.set_size_inches(max(7.0, 3.0 * len(rates)), 2.8)
  for ax, rate in zip(np.atleast_1d(axes), rates):
    rows = [row for row in summary if row["rate"] == rate]
    for c in LABELS:
      rc = sorted([row for row in rows if row["construction"] == c], key=lambda row: row["n"])
      if not rc:
        continue
      ns = np.array([row["n"] for row in rc])
      ax.errorbar(ns, [row["worst_gap_bits"] for row in rc], yerr=[1.96 * row["worst_gap_stderr_bits"] for row in rc],
                  color=COLORS[c], marker="o", lw=1.2, label=LABELS[c])
      ax.plot(ns, [row["iso_gap_bits"] for row in rc], color=COLORS[c], marker="o", mfc="none", ls=":", lw=0.8)
    ax.axhline(UNIVERSALITY_GAP_BITS, color="0.3", ls="--", lw=0.9, label="paper bound 0.11 bit (n→∞)")
    ax.set_xscale("log", base=2)
    ax.set_xticks([4, 8, 16, 24], ["4", "8", "16", "24"])
    ax.set_xlabel("dimension n (input features per codeword)")
    leech = " (Leech shell)" if abs(rate - LEECH_RATE) < 1e-9 else " (Leech shells)" if abs(rate - LEECH2_RATE) < 1e-9 else ""
    ax.set_title(f"R = {rate:.4g} bit/entry" + leech, fontsize=8)
    ax.set_ylim(bottom=0)
  np.atleast_1d(axes)[0].set_ylabel("worst-case rate gap over held-out Σ [bits]")
  handles = {}  # one legend for every construction of every panel (the first panel may lack some)
  for ax in np.atleast_1d(axes):
    for h, lab in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(lab, h)
  np.atleast_1d(axes)[0].legend(handles.values(), handles.keys(), fontsize=5.5, loc="upper left")
  ns = 1 + len(cfg.sigma_families) * cfg.worst_case.sigmas_per_family
  fig.suptitle(f"Worst case over {ns} held-out Σ (6 families + I), {cfg.worst_case.draws} draws of w each; "
               "filled: worst Σ, hollow: Σ = I (finite-n loss); 95% CI", fontsize=7)
  plot.save(fig, out_dir / "universal_worst_gap_vs_n")

  # 3. learned codebook
  fig, (ax_t, ax_b) = plot.figure("double", ncols=2)
  fig.set_size_inches(7.0, 2.8)
  bars = []
  for lr in learn_recs:
    n, rate = lr["config"]["n"], lr["config"]["rate"]
    h = np.asarray(lr["result"]["max_gap_bits"])
    win = max(1, len(h) // 30)
    smooth = np.convolve(h, np.ones(win) / win, mode="valid")
    ax_t.plot(np.arange(len(smooth)) + win - 1, smooth, lw=1, label=f"n={n}, R={rate:g}")
    row = {r["construction"]: r for r in summary if r["n"] == n and r["rate"] == rate}
    if "learned" in row and "gaussian" in row:
      bars.append((f"n={n}\nR={rate:g}", row["gaussian"], row["learned"]))
  ax_t.set_xlabel("optax step")
  ax_t.set_ylabel("max gap over the step's training Σ [bits]")
  ax_t.set_title(f"training (hard assignment, {cfg.learn.batch} w/step; running mean)", fontsize=7)
  ax_t.legend(fontsize=6)
  x = np.arange(len(bars))
  for off, key, c in ((-0.2, 1, "gaussian"), (0.2, 2, "learned")):
    ax_b.bar(x + off, [b[key]["worst_gap_bits"] for b in bars], width=0.38, color=COLORS[c], label=LABELS[c],
             yerr=[1.96 * b[key]["worst_gap_stderr_bits"] for b in bars], capsize=2)
  ax_b.axhline(UNIVERSALITY_GAP_BITS, color="0.3", ls="--", lw=0.9, label="0.11 bit")
  ax_b.set_xticks(x, [b[0] for b in bars], fontsize=7)
  ax_b.set_ylabel("held-out worst-case gap [bits]")
  ax_b.set_title("held-out Σ (all families): random start vs learned", fontsize=7)
  ax_b.legend(fontsize=6)
  plot.save(fig, out_dir / "universal_learned")


@hydra.main(version_base="1.3", config_path="conf", config_name="universal")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  main()
