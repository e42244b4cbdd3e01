"""The wheel: built with setuptools (PEP 517), installed into a fresh venv, runs an app from anywhere."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_installs_and_runs_an_app_outside_the_repo(tmp_path):
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLBACKEND")}
  env["JAX_PLATFORMS"] = "cpu"
  src = tmp_path / "src"  # a copy of the sources, so the build leaves nothing in the checkout
  skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "*.ipynb")
  for name in ("rdq",):
    shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=skip)
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy2(ROOT / name, src / name)
  build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                         capture_output=True, text=True, timeout=600, env=env)
  if build.returncode != 0 and ("NewConnectionError" in build.stderr or "No matching distribution" in build.stderr):
    pytest.skip(reason="network: the isolated build cannot fetch setuptools>=77")
  assert build.returncode == 0, build.stderr[-3000:]
  wheel = next((tmp_path / "dist").glob("rdq-*.whl"))
  venv = tmp_path / "venv"
  subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
  py = venv / "bin" / "python"
  inst = subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                        capture_output=True, text=True, timeout=300, env=env)
  assert inst.returncode == 0, inst.stderr[-3000:]
  # dependencies (jax, hydra, ...) from this environment, rdq itself only from the wheel
  site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip())
  (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  work = tmp_path / "elsewhere"
  work.mkdir()
  # where `import rdq` resolves from here, without importing it (rdq imports jax; the app run below imports it)
  where = subprocess.run([str(py), "-c", "import importlib.util as u; print(u.find_spec('rdq').origin)"],
                         cwd=work, capture_output=True, text=True, env=env, timeout=120)
  assert where.returncode == 0, where.stderr[-3000:]
  origin = Path(where.stdout.strip())
  assert str(ROOT) not in where.stdout and origin.is_relative_to(site)  # the installed copy, not the checkout
  assert (origin.parent / "experiments" / "__init__.py").is_file()  # rdq.experiments comes with it
  assert (venv / "bin" / "rdq-sweep").exists()
  run = subprocess.run([str(venv / "bin" / "rdq-sweep"), "lattice_nsm", f"out_dir={work / 'out'}", "lattices=[z]",
                        "num_samples=1024", "batch=1024"], cwd=work, capture_output=True, text=True, env=env, timeout=300)
  assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
  res = json.loads((work / "out" / "results.json").read_text())
  assert [p["config"]["lattice"] for p in res["points"]] == ["z"] and (work / "out" / "lattice_nsm.png").exists()


def test_core_library_imports_none_of_the_extras():
  # rdq[models] and rdq[experiments] are extras: `import rdq` must not need them
  code = ("import sys, rdq, rdq.quantizers, rdq.layer, rdq.limits\n"
          "extras = ('flax', 'tokenizers', 'safetensors', 'gguf', 'matplotlib', 'hydra', 'omegaconf', 'tqdm')\n"
          "print(sorted(m for m in extras if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip() == "[]"
