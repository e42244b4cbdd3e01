"""One skeleton for every sweep app: start-up, points, results.json, figures, multirun aggregate.

An app (``rdq/experiments/<name>.py``) does::

    @hydra.main(version_base="1.3", config_path="conf", config_name="<name>")   # rdq/experiments/conf/<name>.yaml
    def main(cfg):
      sweep = Sweep(cfg, "<name>")          # logging, Agg backend, +experiment check, plugins
      records = sweep.run_points(points, compute)   # the points of THIS sweep
      sweep.finish()                         # outputs(cfg, records, out_dir) + results.json

and defines ``outputs(cfg, records, out_dir) -> dict`` that writes its figures and tables from
the records alone and returns the extra fields of ``results.json``.

**One collection rule.** ``results.json`` and the figures are built from the points this sweep
asked for (their keys), never from everything in ``out_dir``: stale points of another sweep
stay in ``points/`` but out of the figure. **One output order**: figures and tables first,
then ``results.json`` (its presence means the outputs are complete); its ``points`` are in
sweep order (job by job, point by point).

**Multirun.** In ``-m`` mode each job only stores its points and writes
``<sweep dir>/<job>/rdq_job.json`` (its config and point keys). The Hydra callback
``AggregateSweep.on_multirun_end`` (``conf/sweep.yaml``) then builds ``results.json`` and the
figures once, from the points of every job; ``python -m rdq.experiments._sweep <sweep dir>`` does
the same by hand (e.g. after a failed job was rerun). Points that differ only in their seed
are pooled for the figures by ``pool_seeds`` (``results.json`` keeps every seed's point).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rdq.experiments._store import PointStore, config_key, env_info, run_points, write_json_atomic

__all__ = ["AggregateSweep", "Sweep", "aggregate", "configure_logging", "pool_seeds"]

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent / "conf"  # shipped in the wheel; conf/ at the repo root links here
JOB_FILE = "rdq_job.json"
# Loggers whose INFO/DEBUG output is noise in a sweep log (190 of 202 lines were fontTools').
NOISY_LOGGERS = ("fontTools", "matplotlib", "PIL", "jax", "jax._src", "absl", "h5py", "numexpr")
# Config fields that only select the random draw: points equal up to these are pooled.
SEED_FIELDS = ("seed", "learn_key")
# (mean, stderr) field pairs that pool_seeds combines as independent samples (count in "n").
MEAN_STDERR_PAIRS = (("mean", "stderr"), ("gap_bits", "gap_stderr_bits"), ("d_per_entry", "d_stderr"))


def configure_logging() -> None:
  """Silence third-party chatter below WARNING (once per process; Hydra owns the handlers)."""
  for name in NOISY_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)


def use_agg_backend() -> None:
  """Apps write files, never windows: Agg as the *default* backend of an app's process.

  Only a default (``MPLBACKEND``, read when matplotlib is first imported): a backend the caller
  chose (a notebook's inline backend, ``MPLBACKEND`` set by the user, matplotlib already imported)
  is never switched.
  """
  if "matplotlib" not in sys.modules:
    os.environ.setdefault("MPLBACKEND", "Agg")


def check_experiment(app: str, choice: str | None) -> None:
  """``+experiment=X`` must be one of ``app``'s configs (``conf/experiment/<app>_*.yaml``)."""
  if not choice:
    return
  if not str(choice).startswith(f"{app}_"):
    own = sorted(p.stem for p in (CONF_DIR / "experiment").glob(f"{app}_*.yaml"))
    owner = next((p.stem for p in (CONF_DIR).glob("*.yaml") if str(choice).startswith(f"{p.stem}_")), None)
    whose = f"it belongs to rdq.experiments.{owner}" if owner else "it belongs to no app"
    raise ValueError(
        f"+experiment={choice} is not an experiment of rdq.experiments.{app} ({whose}; experiment configs are "
        f"conf/experiment/<app>_*.yaml). rdq.experiments.{app} accepts: "
        + (", ".join(f"+experiment={o}" for o in own) or "none"))


def import_plugins(modules: Iterable[str] | None) -> list[str]:
  """Import user modules (``plugins=[my_pkg.my_quantizers]``) so their registrations exist."""
  done = []
  for name in modules or ():
    try:
      importlib.import_module(str(name))
    except ImportError as e:
      raise ImportError(f"plugins: cannot import {name!r} ({e}); is its directory on PYTHONPATH?") from e
    done.append(str(name))
  if done:
    log.info("plugins imported: %s", ", ".join(done))
  return done


def _hydra():
  from hydra.core.hydra_config import HydraConfig

  return HydraConfig.get() if HydraConfig.initialized() else None


def _container(cfg) -> dict:
  from omegaconf import DictConfig, OmegaConf

  return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class Sweep:
  """The run of one app in one process: store, the keys of its points, and the end."""

  def __init__(self, cfg, app: str):
    self.t0 = time.perf_counter()
    self.started = time.time()
    self.cfg, self.app = cfg, app
    configure_logging()
    use_agg_backend()
    hc = _hydra()
    if hc is not None:
      check_experiment(app, hc.runtime.choices.get("experiment"))
    import_plugins(cfg.get("plugins"))
    self.out_dir = Path(cfg.out_dir)
    self.store = PointStore(self.out_dir)
    self.keys: list[str] = []

  def run_points(self, configs: Sequence[Mapping[str, Any]], compute: Callable[[Mapping[str, Any]], Mapping],
                 desc: str | None = None) -> list[dict]:
    """Compute (or reuse) ``configs``; they become part of this sweep's outputs."""
    records = run_points(self.store, configs, compute, desc=desc or self.app)
    self.keys += [r["key"] for r in records if r["key"] not in self.keys]
    return records

  def finish(self) -> dict | None:
    """Single run: build the outputs now. Multirun job: record the keys for the aggregate."""
    from hydra.types import RunMode

    hc = _hydra()
    if hc is not None and hc.mode == RunMode.MULTIRUN:
      job = dict(app=self.app, num=int(hc.job.num), overrides=list(hc.overrides.task), keys=self.keys,
                 config=_container(self.cfg), started=self.started, wall_time_s=time.perf_counter() - self.t0)
      write_json_atomic(Path(hc.runtime.output_dir) / JOB_FILE, job)
      log.info("%s job %d: %d points stored; results.json and figures are built once, at the end of the multirun",
               self.app, job["num"], len(self.keys))
      return None
    jobs = [dict(num=0, overrides=list(hc.overrides.task) if hc else [], keys=self.keys)]
    return build(self.app, self.cfg, jobs, time.perf_counter() - self.t0)


def build(app: str, cfg, jobs: list[dict], wall_time_s: float) -> dict:
  """Figures and tables (the app's ``outputs``), then ``results.json``, from the jobs' points."""
  from omegaconf import OmegaConf

  cfg = OmegaConf.create(_container(cfg))
  out_dir = Path(cfg.out_dir)
  store = PointStore(out_dir)
  keys = list(dict.fromkeys(k for job in jobs for k in job["keys"]))
  records = [store.get_key(k) for k in keys]
  missing = [k for k, r in zip(keys, records) if r is None]
  if missing:
    raise RuntimeError(f"{app}: {len(missing)} points of this sweep are missing from {store.points_dir} "
                       f"(e.g. {missing[0]}.json); rerun the sweep to compute them")
  module = importlib.import_module(f"rdq.experiments.{app}")
  t0 = time.perf_counter()
  fields = module.outputs(cfg, records, out_dir) or {}
  results = {
      "experiment": app,
      "config": _container(cfg),
      "jobs": [{k: v for k, v in j.items() if k not in ("config", "keys")} | {"num_points": len(j["keys"])}
               for j in jobs],
      "env": env_info(),
      "wall_time_s": wall_time_s + (time.perf_counter() - t0),
      **fields,
      "pooled_over_seeds": [{"keys": r["pooled_keys"], "seeds": r["config"]["seeds"]}
                            for r in pool_seeds(records) if "pooled_keys" in r],
      "points": records,
  }
  write_json_atomic(out_dir / "results.json", results)
  log.info("%s: %d points in %s (%.1f s)", app, len(records), out_dir / "results.json", results["wall_time_s"])
  return results


def aggregate(sweep_dir: str | os.PathLike) -> dict | None:
  """Build one ``results.json`` and the figures from every job of a multirun in ``sweep_dir``."""
  files = sorted(Path(sweep_dir).glob(f"*/{JOB_FILE}"))
  if not files:
    log.warning("no %s under %s: nothing to aggregate", JOB_FILE, sweep_dir)
    return None
  jobs = sorted((json.loads(p.read_text()) for p in files), key=lambda j: j["num"])
  apps = {j["app"] for j in jobs}
  if len(apps) != 1:
    raise ValueError(f"{sweep_dir} mixes jobs of several apps: {sorted(apps)}")
  configure_logging()
  use_agg_backend()
  cfg = jobs[0]["config"]
  import_plugins(cfg.get("plugins"))
  wall = time.time() - min(j["started"] for j in jobs)
  log.info("aggregating %d jobs of %s in %s", len(jobs), jobs[0]["app"], sweep_dir)
  return build(jobs[0]["app"], cfg, jobs, wall)


try:
  from hydra.experimental.callback import Callback as _Callback
except ImportError:  # pragma: no cover - hydra < 1.1
  _Callback = object


class AggregateSweep(_Callback):
  """Hydra callback (``hydra.callbacks.aggregate`` in ``conf/sweep.yaml``): at the end of a
  multirun, one ``results.json`` and one set of figures from the points of every job."""

  def on_multirun_end(self, config, **kwargs) -> None:
    aggregate(Path(str(config.hydra.sweep.dir)))


# ------------------------------------------------------------------------------ seeds
def _is_num(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _numeric(x) -> bool:
  if _is_num(x):
    return True
  if isinstance(x, list) and x:
    try:
      a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
      return False
    return a.dtype == np.float64
  return False


def _pool_pair(means, ses, ns):
  """Pooled mean and stderr of independent samples: k groups of n_i draws with mean m_i and
  stderr se_i (sample variance s_i² = n_i se_i²), as if all N = Σn_i draws were one sample."""
  m = [np.asarray(x, np.float64) for x in means]
  n = np.asarray(ns, np.float64)
  big_n = n.sum()
  mean = sum(ni * mi for ni, mi in zip(n, m)) / big_n
  within = sum((ni - 1) * ni * np.asarray(se, np.float64) ** 2 for ni, se in zip(n, ses) if se is not None and ni > 1)
  between = sum(ni * (mi - mean) ** 2 for ni, mi in zip(n, m))
  var = (within + between) / max(big_n - 1, 1)
  return mean, np.sqrt(var / big_n), int(big_n)


def _pool_results(results: list[dict], concat: tuple[str, ...]) -> dict:
  r0 = results[0]
  out = dict(r0)
  done = set()
  if "n" in r0 and all(_is_num(r.get("n")) for r in results):
    for mk, sk in MEAN_STDERR_PAIRS:
      if mk in r0 and sk in r0 and mk not in concat and all(_numeric(r.get(mk)) for r in results):
        mean, se, n = _pool_pair([r[mk] for r in results], [r[sk] for r in results], [r["n"] for r in results])
        out[mk], out[sk] = mean.tolist(), se.tolist()
        out["n"] = n
        done |= {mk, sk, "n"}
        if mk == "mean":
          for key, z in (("ci95", 1.959963984540054), ("ci99", 2.5758293035489004)):
            if key in r0:
              out[key] = [float(mean - z * se), float(mean + z * se)]
              done.add(key)
  for k, v in r0.items():
    if k in done:
      continue
    vals = [r.get(k) for r in results]
    if k in concat and all(isinstance(x, list) for x in vals):
      out[k] = [y for x in vals for y in x]
    elif all(isinstance(x, dict) for x in vals):
      out[k] = _pool_results(vals, concat)
    elif isinstance(v, bool):
      out[k] = all(bool(x) for x in vals)
    elif all(_numeric(x) for x in vals) and len({np.shape(x) for x in vals}) == 1:
      out[k] = np.mean([np.asarray(x, np.float64) for x in vals], axis=0).tolist()  # same quantity: averaged
  return out


def pool_seeds(records: Sequence[dict], concat: tuple[str, ...] = ("samples",),
               seed_fields: tuple[str, ...] = SEED_FIELDS) -> list[dict]:
  """Merge records whose configs differ only in ``seed_fields`` (one per distinct config, in order).

  Pairs of ``MEAN_STDERR_PAIRS`` are pooled as independent Monte Carlo samples (mean weighted
  by ``n``, stderr from the within- and between-seed spread; ``ci95``/``ci99`` recomputed), so
  two seeds of ``n`` draws give the estimate of one run of ``2n`` draws and a seed-to-seed error
  bar even when each seed has one draw. Lists named in ``concat`` are concatenated (samples);
  other numeric fields of equal shape are averaged; the config gets ``seeds``.
  """
  groups: dict[str, list[dict]] = {}
  for r in records:
    rest = {k: v for k, v in r["config"].items() if k not in seed_fields}
    groups.setdefault(config_key(rest), []).append(r)
  out = []
  for recs in groups.values():
    if len(recs) == 1:
      out.append(recs[0])
      continue
    config = dict(recs[0]["config"], seeds=[r["config"].get("seed") for r in recs])
    out.append({"key": recs[0]["key"], "config": config, "pooled_keys": [r["key"] for r in recs],
                "result": _pool_results([r["result"] for r in recs], concat)})
  return out


if __name__ == "__main__":
  logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
  if len(sys.argv) != 2:
    raise SystemExit("usage: python -m rdq.experiments._sweep <multirun dir>  (rebuilds results.json and figures)")
  aggregate(sys.argv[1])
