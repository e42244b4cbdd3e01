"""The generic-matmul Hydra app: outputs, resumability after SIGKILL, determinism."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NAMES = "[int8,int4_row,int4_block32,e4m3,mxfp4,nvfp4]"
TINY = ["n=64", "a=4", "b=4", "num_samples=32", "batch=16", f"quantizer_names={NAMES}"]


def _run(out_dir, *extra, wait=True):
  flags = [e for e in extra if e.startswith("-")]  # Hydra flags (e.g. -m) precede overrides
  overrides = [e for e in extra if not e.startswith("-")]
  cmd = [sys.executable, "-m", "rdq.experiments.generic_matmul", *flags, f"out_dir={out_dir}", *TINY, *overrides]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
  if wait:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)


def _strip_timing(obj):
  from rdq.experiments._store import TIMING_FIELDS

  if isinstance(obj, dict):
    return {k: _strip_timing(v) for k, v in obj.items() if k not in TIMING_FIELDS and k != "out_dir"}
  if isinstance(obj, list):
    return [_strip_timing(v) for v in obj]
  return obj


def _points(out_dir):
  return sorted((Path(out_dir) / "points").glob("*.json"))


def _means(out_dir):
  res = json.loads((Path(out_dir) / "results.json").read_text())
  return {p["key"]: (p["result"]["mean"], p["result"]["stderr"]) for p in res["points"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  out = tmp_path_factory.mktemp("ref")
  proc = _run(out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def test_outputs(reference):
  res = json.loads((reference / "results.json").read_text())
  assert len(res["points"]) == 6
  for key in ("jax", "jaxlib", "rdq", "device_kind", "device_count", "git_commit"):
    assert key in res["env"]
  for p in res["points"]:
    r = p["result"]
    assert r["ci95"][0] < r["mean"] < r["ci95"][1] and r["rate_effective"] >= r["rate_nominal"]
    assert r["gamma_at_rate"] < r["mean"]
  assert (reference / "generic_matmul.png").stat().st_size > 10_000
  assert (reference / "generic_matmul.pdf").exists()
  # the table (README's generic-matmul table): one row per point, its R_eff and gap as in results.json
  md = (reference / "generic_matmul.md").read_text().splitlines()
  assert len(md) == 2 + len(res["points"])
  for p in res["points"]:
    r = p["result"]
    row = next(ln for ln in md if ln.startswith(f"| {p['config']['quantizer_a']} |"))
    assert f"| {r['rate_effective']:.3f} |" in row and row.endswith(f"| {r['gap_bits']:.3f} |")


MULTIRUN = ("-m", "quantizer=int8,int4_row,int4_block32,e4m3,mxfp4,nvfp4")


def test_killed_multirun_resumes_with_identical_results(reference, tmp_path):
  # a Hydra multirun (one job per quantizer) killed with SIGKILL partway
  proc = _run(tmp_path, *MULTIRUN, wait=False)
  deadline = time.time() + 240
  while len(_points(tmp_path)) < 2 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  done = _points(tmp_path)
  assert 1 <= len(done) < 6, f"kill must land mid-sweep; {len(done)} points finished"
  for p in done:
    json.loads(p.read_text())  # every finished point is complete JSON (atomic writes)
  rerun = _run(tmp_path, *MULTIRUN)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  log = rerun.stderr + rerun.stdout
  assert log.count("1 points, 1 already done, 0 to run") == len(done)  # finished jobs skip their point
  assert log.count("1 points, 0 already done, 1 to run") == 6 - len(done)  # only the missing ones run
  assert _means(tmp_path) == _means(reference)  # bitwise-identical numbers
  # same point configs and seed: identical results apart from timing fields
  a = json.loads((reference / "results.json").read_text())
  b = json.loads((tmp_path / "results.json").read_text())
  assert _strip_timing(a["points"]) == _strip_timing(b["points"]) and a["env"] == b["env"]
  assert a["points"][0]["result"]["wall_time_s"] > 0  # timing is recorded, just not compared


def test_rerun_skips_everything(reference):
  proc = _run(reference)
  assert proc.returncode == 0
  assert "6 already done, 0 to run" in proc.stderr + proc.stdout


def test_unknown_quantizer_fails_clearly(tmp_path):
  proc = _run(tmp_path, "quantizer=int4_blok32")
  assert proc.returncode != 0
  assert "unknown quantizer name 'int4_blok32'" in proc.stderr


def test_submitit_local_sweep(tmp_path):
  # hydra/launcher=submitit_local: every point runs in a fresh process (JAX is never forked)
  proc = _run(tmp_path, "-m", "hydra/launcher=submitit_local", "quantizer=int8,e4m3")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(_points(tmp_path)) == 2
  assert list((tmp_path / "hydra").glob("multirun-*/.submitit"))



def test_grouped_estimates_equal_separate_ones():
  """One program for several quantizers (estimate_group, via grouped_compute) gives bitwise the
  numbers of one matmul_distortion call per quantizer."""
  import jax
  import numpy as np

  from rdq import quantizers
  from rdq.experiments._group import grouped_compute
  from rdq.experiments.generic_matmul import _group_key, compute_point, estimate_group
  from rdq.matmul_mc import MatmulSetup, matmul_distortion

  names = ["int4_block32", "e2m1", "nvfp4"]
  configs = [dict(experiment="generic_matmul", quantizer_a=q, quantizer_b=q, n=32, a=2, b=2, num_samples=8, seed=1)
             for q in names]

  class Store:  # nothing stored yet
    def has(self, config):
      return False

  calls = []

  def group(configs):
    calls.append([c["quantizer_a"] for c in configs])
    return estimate_group(configs, 4)

  compute = grouped_compute(configs, _group_key, group, lambda c, est: compute_point(c, 4, est), 2, Store())
  got = [compute(c) for c in configs]
  assert calls == [["int4_block32", "e2m1"], ["nvfp4"]]  # at most group_size points per program
  for name, res in zip(names, got):
    q = quantizers.get(name)
    est = matmul_distortion(q, q, MatmulSetup(32, 2, 2), jax.random.key(1), 8, 4)
    assert (res["mean"], res["stderr"]) == (float(np.float32(est.mean)), float(np.float32(est.stderr))), name
