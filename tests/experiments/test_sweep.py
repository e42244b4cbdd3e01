"""rdq.experiments._sweep: multirun aggregate, the points of this sweep only, +experiment check, plugins."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _app(app, cwd, *args, pythonpath=()):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.pathsep.join([str(ROOT), *map(str, pythonpath)]))
  env.pop("MPLBACKEND", None)  # the app chooses its backend itself
  return subprocess.run([sys.executable, "-m", f"rdq.experiments.{app}", *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=300)


def test_two_seed_multirun_aggregates_both_seeds_once(tmp_path):
  out = tmp_path / "out"
  tiny = [f"out_dir={out}", "num_samples=2048", "batch=2048"]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  stale = subprocess.run([sys.executable, "-m", "rdq.experiments", "lattice_nsm", *tiny, "lattices=[d3]", "seed=7"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # = rdq-sweep lattice_nsm
  assert "lattice_nsm: 1 points in" in stale.stdout + stale.stderr  # another sweep's point in out_dir
  assert stale.returncode == 0, stale.stderr[-3000:]
  proc = _app("lattice_nsm", tmp_path, "-m", *tiny, "lattices=[z,d4]", "seed=0,1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  log = proc.stdout + proc.stderr
  assert log.count("aggregating 2 jobs of lattice_nsm") == 1  # built once, at the end
  res = json.loads((out / "results.json").read_text())
  got = sorted((p["config"]["lattice"], p["config"]["seed"]) for p in res["points"])
  assert got == [("d4", 0), ("d4", 1), ("z", 0), ("z", 1)]  # both seeds, not the stale d3 point
  assert [j["overrides"][-1] for j in res["jobs"]] == ["seed=0", "seed=1"]
  pooled = res["pooled_over_seeds"]
  assert len(pooled) == 2 and all(g["seeds"] == [0, 1] for g in pooled)  # the figure pools the two seeds
  assert "z       n= 1  G =" in log and (out / "lattice_nsm.png").stat().st_size > 10_000
  assert len(list((out / "points").glob("*.json"))) == 5
  # multirun folders under out_dir, not ./multirun of the current directory
  assert not (tmp_path / "multirun").exists() and not (tmp_path / "outputs").exists()
  assert len(list((out / "hydra").glob("multirun-*/*/rdq_job.json"))) == 2
  for f in [out / "results.json", out / "lattice_nsm.png", *(out / "points").glob("*.json")]:
    assert stat.S_IMODE(f.stat().st_mode) & 0o044 == 0o044, f  # readable by collaborators
  # the same aggregate by hand
  sweep_dir = next((out / "hydra").glob("multirun-*"))
  again = subprocess.run([sys.executable, "-m", "rdq.experiments._sweep", str(sweep_dir)], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert again.returncode == 0, again.stderr[-3000:]
  res2 = json.loads((out / "results.json").read_text())
  assert [p["key"] for p in res2["points"]] == [p["key"] for p in res["points"]]


def test_experiment_of_another_app_fails_clearly(tmp_path):
  proc = _app("generic_matmul", tmp_path, f"out_dir={tmp_path}", "+experiment=lattice_nsm_full")
  assert proc.returncode != 0
  assert "+experiment=lattice_nsm_full is not an experiment of rdq.experiments.generic_matmul" in proc.stderr
  assert "it belongs to rdq.experiments.lattice_nsm" in proc.stderr
  assert "accepts: +experiment=generic_matmul_full" in proc.stderr
  assert not (tmp_path / "points").exists()  # failed before any work


PLUGIN = '''
from rdq import quantizers


def _int8_twin(match):
  return quantizers.get("int8")


quantizers.register(r"my_int8", _int8_twin, ("my_int8",), "my_int8: a user's plug-in (int8 under another name)")
'''


def test_user_quantizer_through_plugins_runs_in_a_sweep(tmp_path):
  (tmp_path / "my_quant.py").write_text(PLUGIN)
  out = tmp_path / "out"
  proc = _app("generic_matmul", tmp_path, f"out_dir={out}", "plugins=[my_quant]", "quantizer_names=[int8,my_int8]",
              "n=64", "a=4", "b=4", "num_samples=32", "batch=16", pythonpath=[tmp_path])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "plugins imported: my_quant" in proc.stdout + proc.stderr
  res = json.loads((out / "results.json").read_text())
  by = {p["config"]["quantizer_a"]: p["result"] for p in res["points"]}
  assert by["my_int8"]["mean"] == by["int8"]["mean"]  # same quantizer, same draws: same number
  missing = _app("generic_matmul", tmp_path, f"out_dir={out}", "plugins=[no_such_module]")
  assert missing.returncode != 0 and "plugins: cannot import 'no_such_module'" in missing.stderr


def test_regenerate_only_keeps_the_other_rows_of_index(tmp_path):
  import importlib.util

  spec = importlib.util.spec_from_file_location("regenerate", ROOT / "paper_figures" / "regenerate.py")
  regen = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(regen)
  regen.HERE = tmp_path
  row = lambda fam, t: dict(family=fam, command=f"python -m rdq.experiments.{fam} out_dir=outputs/{fam}", runtime_s=t,
                            files=[f"{fam}.png", f"{fam}.pdf"])
  regen.write_index([row("generic_matmul", 100.0), row("lattice_nsm", 20.0)], "aaa", 120.0, False)
  regen.write_index([row("lattice_nsm", 7.0)], "bbb", 7.0, False, only=True)
  text = (tmp_path / "INDEX.md").read_text()
  assert "`python -m rdq.experiments.generic_matmul out_dir=outputs/generic_matmul` | 100 s |" in text  # kept
  assert "`python -m rdq.experiments.lattice_nsm out_dir=outputs/lattice_nsm` | 7 s |" in text  # replaced
  assert text.count("| [") == 2 and "at commit `aaa`" in text and "--only lattice_nsm` at commit `bbb`" in text


def test_regenerate_jobs_runs_apps_at_once_and_stops_on_a_failure(tmp_path):
  import importlib.util

  spec = importlib.util.spec_from_file_location("regenerate", ROOT / "paper_figures" / "regenerate.py")
  regen = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(regen)
  regen.HERE = tmp_path / "figs"
  regen.HERE.mkdir()
  (regen.HERE / "INDEX.md").write_text("| x | y | `python -m rdq.experiments.fast out_dir=o` | 1 s |\n"
                                       "| x | y | `python -m rdq.experiments.slow out_dir=o` | 9 s |\n")
  started = []

  def fake_command(family, full):  # an app that writes its figure, after sleeping (slow) or failing (bad)
    out = tmp_path / "outputs" / family
    code = (f"import pathlib,sys,time; t=time.time(); time.sleep({2 if family in ('slow', 'new') else 0}); "
            f"p=pathlib.Path({str(out)!r}); p.mkdir(parents=True, exist_ok=True); (p/'{family}.png').write_text('x'); "
            f"print('app {family} ran', t, time.time()); sys.exit({3 if family == 'bad' else 0})")
    started.append(family)
    return out, [sys.executable, "-c", code], f"python -m rdq.experiments.{family}"

  regen._command = fake_command
  rows = regen.run_families(["fast", "slow", "new"], False, jobs=2)
  assert started[:2] == ["new", "slow"]  # unknown runtime first, then the longest by INDEX.md
  assert [r["family"] for r in rows] == ["fast", "slow", "new"]  # rows in the order asked
  assert all((regen.HERE / f"{f}.png").exists() for f in ("fast", "slow", "new"))
  span = {f: [float(x) for x in (tmp_path / "outputs" / f"{f}.log").read_text().split()[-2:]] for f in ("slow", "new")}
  assert span["slow"][0] < span["new"][1] and span["new"][0] < span["slow"][1]  # the two ran at the same time
  assert rows[1]["runtime_s"] >= 2
  with pytest.raises(SystemExit, match=r"(?s)app bad ran.*bad failed with exit code 3"):
    regen.run_families(["bad", "fast"], False, jobs=2)


def test_rdq_sweep_lists_every_family(capsys):
  from rdq.experiments.__main__ import FAMILIES, main, usage

  # the command line (python -m rdq.experiments) once, in a fresh process
  proc = subprocess.run([sys.executable, "-m", "rdq.experiments", "--help"], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0
  present = [f for f in FAMILIES if (ROOT / "rdq" / "experiments" / f"{f}.py").exists()]
  assert {"generic_matmul", "lattice_nsm", "weight_only", "universal", "gptvq", "real_model"} <= set(present)
  for f in present:
    assert f"  {f} " in proc.stdout
  assert proc.stdout.strip() == usage().strip()
  # an unknown family: the same main() in this process (no second interpreter and jax import)
  with pytest.raises(SystemExit) as bad:
    main(["no_such_family"])
  assert bad.value.code == 2 and "unknown family 'no_such_family'" in capsys.readouterr().err


def test_rdq_figures_help_lists_every_family(monkeypatch, capsys):
  # figures() runs paper_figures/regenerate.py of the checkout (stdlib only) in this process; it
  # sets sys.argv and puts the checkout first on sys.path, both restored by monkeypatch
  from rdq.experiments.__main__ import figures

  monkeypatch.chdir(ROOT)
  monkeypatch.setattr(sys, "argv", list(sys.argv))
  monkeypatch.setattr(sys, "path", list(sys.path))
  with pytest.raises(SystemExit) as done:
    figures(["--help"])
  assert done.value.code == 0
  out = capsys.readouterr().out
  for f in ("generic_matmul", "lattice_nsm", "weight_only", "universal", "gptvq", "real_model"):
    assert f"{f} (" in out
  assert "--only [FAMILY ...]" in out
