"""rdq.experiments._store: damaged points, concurrent sweeps (one computation per point), atomic files."""

import json
import multiprocessing as mp
import os
import stat
import time

import numpy as np
import pytest

from rdq.experiments import _store
from rdq.experiments._store import PointStore, config_key, run_points, write_json_atomic


def _compute(config):
  return {"value": config["x"] ** 2}


def test_damaged_point_is_named_moved_aside_and_recomputed(tmp_path, caplog):
  store = PointStore(tmp_path)
  configs = [{"x": i} for i in range(3)]
  run_points(store, configs, _compute)
  victim = store.path(configs[1])
  victim.write_text(victim.read_text()[:25])  # truncated, as by a full disk
  wrong = store.path(configs[2])
  rec = json.loads(wrong.read_text())
  rec["config"] = {"x": 7}  # parses, but is not the point of its file name
  wrong.write_text(json.dumps(rec))
  calls = []
  with caplog.at_level("WARNING", logger="rdq.experiments._store"):
    records = run_points(store, configs, lambda c: calls.append(c) or _compute(c))
  assert calls == configs[1:]  # exactly the two damaged points are recomputed
  assert [r["result"]["value"] for r in records] == [0, 1, 4]
  assert victim.name in caplog.text and "not valid JSON" in caplog.text
  assert wrong.name in caplog.text and "hashes to" in caplog.text
  assert len(list((tmp_path / "points" / "damaged").iterdir())) == 2
  assert len(store.all()) == 3


def test_files_are_world_readable_and_orphan_temps_removed(tmp_path):
  p = write_json_atomic(tmp_path / "points" / "a.json", {"a": 1})
  assert stat.S_IMODE(p.stat().st_mode) & 0o044 == 0o044  # group/other can read (not 0600)
  # orphans: a temp file of a dead writer on this host, and an old-style one aged out
  dead = tmp_path / "points" / f".a.json~{_store._HOST}~999999999~abc.tmp"
  old = tmp_path / ".results.json.xyz.tmp"
  live = tmp_path / "points" / f".b.json~{_store._HOST}~{os.getpid()}~def.tmp"
  for f in (dead, old, live):
    f.write_text("{")
  past = time.time() - 2 * _store.STALE_AFTER_S
  os.utime(old, (past, past))
  PointStore(tmp_path)
  assert not dead.exists() and not old.exists() and live.exists()


def test_stale_claim_of_a_dead_process_is_taken_over(tmp_path):
  store = PointStore(tmp_path)
  config = {"x": 3}
  store.lock_path(config).parent.mkdir(parents=True)
  store.lock_path(config).write_text(json.dumps({"host": _store._HOST, "pid": 999999999, "started": 0}))
  assert store.claim(config)  # the owner is gone
  assert not store.claim(config)  # now ours: a second claim fails
  store.release(config)
  assert store.claim(config)


def _sweep_worker(root, log_path, barrier):
  store = PointStore(root)
  barrier.wait()

  def compute(config):
    with open(log_path, "a") as f:
      f.write(f"{config['x']}\n")
    time.sleep(0.3)
    return _compute(config)

  recs = run_points(store, [{"x": i} for i in range(6)], compute)
  assert [r["result"]["value"] for r in recs] == [i * i for i in range(6)]


def test_two_concurrent_sweeps_compute_each_point_once(tmp_path):
  ctx = mp.get_context("spawn")
  barrier = ctx.Barrier(2)
  log_path = tmp_path / "computed.txt"
  procs = [ctx.Process(target=_sweep_worker, args=(tmp_path / "out", log_path, barrier)) for _ in range(2)]
  for p in procs:
    p.start()
  for p in procs:
    p.join(120)
  assert [p.exitcode for p in procs] == [0, 0]
  computed = sorted(int(x) for x in log_path.read_text().split())
  assert computed == list(range(6))  # every point once, none twice
  assert not list((tmp_path / "out" / "points").glob("*.lock"))


def test_atomic_figure_save_leaves_old_file_on_failure(tmp_path, monkeypatch):
  from rdq import plot

  fig, ax = plot.figure()
  ax.plot([0, 1])
  png, pdf = plot.save(fig, tmp_path / "f", close=False)
  before = png.read_bytes()
  assert stat.S_IMODE(png.stat().st_mode) & 0o044 == 0o044

  def broken(*args, **kwargs):
    raise KeyboardInterrupt  # killed mid-write

  monkeypatch.setattr(fig, "savefig", broken)
  with pytest.raises(KeyboardInterrupt):
    plot.save(fig, tmp_path / "f")
  assert png.read_bytes() == before  # the old figure, complete
  assert not list(tmp_path.glob(".*.tmp"))  # no orphan


def test_pool_seeds_equals_one_sample_of_all_draws():
  from rdq.experiments._sweep import pool_seeds

  rng = np.random.default_rng(0)
  draws = rng.normal(size=(2, 50, 3))
  recs = []
  for s in range(2):
    x = draws[s]
    recs.append({"key": f"k{s}", "config": {"q": "int8", "seed": s},
                 "result": {"mean": x.mean(0).tolist(), "stderr": (x.std(0, ddof=1) / np.sqrt(50)).tolist(), "n": 50,
                            "rate": 4.0, "samples": [1, 2]}})
  recs.append({"key": "k9", "config": {"q": "nvfp4", "seed": 0}, "result": {"mean": 1.0, "stderr": 0.1, "n": 5}})
  pooled = pool_seeds(recs)
  assert len(pooled) == 2 and pooled[1] is recs[2]
  allx = draws.reshape(100, 3)
  res = pooled[0]["result"]
  np.testing.assert_allclose(res["mean"], allx.mean(0), rtol=1e-12)
  np.testing.assert_allclose(res["stderr"], allx.std(0, ddof=1) / 10, rtol=1e-12)
  assert res["n"] == 100 and res["rate"] == 4.0 and res["samples"] == [1, 2, 1, 2]
  assert pooled[0]["config"]["seeds"] == [0, 1] and pooled[0]["pooled_keys"] == ["k0", "k1"]
  # one draw per seed: the seed-to-seed spread gives the error bar
  one = [{"key": str(s), "config": {"seed": s}, "result": {"mean": float(v), "stderr": None, "n": 1}}
         for s, v in enumerate([1.0, 3.0])]
  r = pool_seeds(one)[0]["result"]
  assert r["mean"] == 2.0 and r["stderr"] == pytest.approx(np.std([1.0, 3.0], ddof=1) / np.sqrt(2))
  assert config_key({"a": 1}) == config_key({"a": 1})
