"""Per-phase wall and CPU time of the causal-LM app (``rdq.experiments.causal_lm``), per point.

``python paper_figures/causal_lm_profile.py [--blocks K] [--json FILE] [hydra overrides ...]``
runs the app as ``python -m rdq.experiments.causal_lm`` would (same config, same numbers), with
timers around its phases: model load and reference perplexities (``context``), the sequential
pass (``seq.moments``, ``seq.advance``), the layer algorithm (``algo``, blocked until ready),
distortions, eigenvalues, gaps, perplexity and the figure. CPU time is the process's
``os.times`` user + system (all threads) during the phase, so it is the contention-free measure
on a shared machine; XLA's compile time per point comes from ``jax.monitoring``
(``jax:backend_compile_duration``, wall). ``--blocks K`` keeps only the first K of the 30
decoder blocks (faster; the per-block phases scale by 30/K, compile and evaluation do not).
Points run in this process (``workers=1`` unless given): the app's worker processes are not timed.
Run it with one BLAS thread, as ``make figures`` does::

  OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 JAX_PLATFORMS=cpu \\
    python paper_figures/causal_lm_profile.py --blocks 4 out_dir=/tmp/clp hydra.run.dir=/tmp/clp/h
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import os
import sys
import time
from pathlib import Path

_T: dict = collections.defaultdict(lambda: [0.0, 0.0, 0])  # (point, phase) -> [wall s, cpu s, calls]
_POINT = {"name": "startup"}


def _cpu() -> float:
  t = os.times()
  return t.user + t.system


class _Timer:
  def __init__(self, phase: str):
    self.phase = phase

  def __enter__(self):
    self.w, self.c = time.perf_counter(), _cpu()

  def __exit__(self, *exc):
    v = _T[(_POINT["name"], self.phase)]
    v[0] += time.perf_counter() - self.w
    v[1] += _cpu() - self.c
    v[2] += 1


def _wrap(obj, attr: str, phase: str, block: bool = False) -> None:
  f = getattr(obj, attr)

  @functools.wraps(f)
  def g(*a, **kw):
    import jax

    with _Timer(phase):
      r = f(*a, **kw)
      if block:
        jax.block_until_ready(r)
      return r

  setattr(obj, attr, g)


def report() -> dict:
  out: dict = {}
  for (point, phase), (w, c, n) in _T.items():
    out.setdefault(point, {})[phase] = {"wall_s": round(w, 2), "cpu_s": round(c, 2), "calls": n}
  return out


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--blocks", type=int, default=0, help="keep the first K decoder blocks (0: all 30)")
  ap.add_argument("--json", type=Path, default=None, help="also write the profile here")
  args, overrides = ap.parse_known_args(argv)

  import hydra
  import jax
  from jax import monitoring

  import rdq.models
  import rdq.models.llama as llama
  import rdq.models.sequential as seq
  from rdq.experiments import causal_lm as cl

  def listen(event, duration, **kw):
    if event.endswith(("backend_compile_duration", "jaxpr_trace_duration")):
      v = _T[(_POINT["name"], "jax:" + event.rsplit("/", 1)[-1])]
      v[0] += duration
      v[2] += 1

  monitoring.register_event_duration_secs_listener(listen)
  if args.blocks:
    def small(path=None, *, interleaved_rope=True):
      w = llama._packaged()
      cfg = dataclasses.replace(w.config, num_layers=args.blocks)
      params = {k: v for k, v in w.params.items() if not (k.startswith("layer") and int(k[5:]) >= args.blocks)}
      return llama._from_weights(cfg, params, interleaved_rope)

    rdq.models.from_gguf = small
  _wrap(seq._Stream, "moments", "seq.moments")
  _wrap(seq._Stream, "advance", "seq.advance", block=True)
  _wrap(seq, "_with_kernels", "seq.with_kernels", block=True)
  _wrap(seq, "replace_linears", "seq.replace_linears")
  _wrap(rdq.models, "perplexity", "perplexity")
  _wrap(cl, "eigvalsh", "eigvalsh (background thread)")
  _wrap(cl, "waterfill_gap", "waterfill_gap")
  _wrap(cl, "_distortions", "distortions", block=True)
  _wrap(cl, "figure", "figure")
  jitted = cl._jitted

  @functools.lru_cache(maxsize=None)
  def timed_jitted(algo, budget):
    fn = jitted(algo, budget)

    def g(*a):
      with _Timer("algo"):
        return jax.block_until_ready(fn(*a))

    return g

  cl._jitted = timed_jitted
  compute = cl._compute

  def timed_compute(point, ctx):
    _POINT["name"] = f"{point['algorithm']} {point['bits']:g}"
    try:
      with _Timer("point_total"):
        return compute(point, ctx)
    finally:
      _POINT["name"] = "outputs"

  cl._compute = timed_compute
  init = cl.Context.__init__

  def timed_init(self, cfg):
    with _Timer("context_total"):
      init(self, cfg)

  cl.Context.__init__ = timed_init
  w0, c0 = time.perf_counter(), _cpu()
  if not any(o.lstrip("+").startswith("workers=") for o in overrides):
    overrides = ["workers=1", *overrides]  # the timers see this process only
  sys.argv = [sys.argv[0], *overrides]
  conf = str(Path(cl.__file__).resolve().parent / "conf")
  hydra.main(version_base="1.3", config_path=conf, config_name="causal_lm")(cl.run)()
  prof = {"total": {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(_cpu() - c0, 2)},
          "blocks": args.blocks or 30, "points": report()}
  print(f"total: wall {prof['total']['wall_s']} s, CPU {prof['total']['cpu_s']} s")
  for point, phases in prof["points"].items():
    print(point)
    for phase, v in sorted(phases.items(), key=lambda kv: -kv[1]["wall_s"]):
      print(f"  {phase:32s} wall {v['wall_s']:8.2f}  CPU {v['cpu_s']:8.2f}  calls {v['calls']}")
  if args.json:
    args.json.write_text(json.dumps(prof, indent=1))


if __name__ == "__main__":
  main()
