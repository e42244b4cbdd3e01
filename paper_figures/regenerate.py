"""Regenerate every paper figure: ``python paper_figures/regenerate.py [--full] [--only NAME ...]``.

Each experiment family runs as its own Hydra app in a fresh Python process (JAX is never
forked), at its quick default or with ``+experiment=<family>_full``. ``--jobs N`` (default: 2, or
the number of CPUs if fewer) runs N families at once, longest first by the runtimes in the
current ``INDEX.md``: an app spends much of its time in XLA compilation, which uses one core, so
two apps at once use both cores of a 2-core machine. With N > 1 each app's output goes to
``outputs/<family>[_full].log``; a failed app's log tail is printed. Finished sweep points
are kept under ``outputs/<family>[_full]/points`` and skipped on the next run. The figures
(``*.png``, ``*.pdf``, ``*.md`` tables) an app writes to its ``out_dir`` are copied here and
``INDEX.md`` lists each one with the exact command that made it, its runtime and the commit.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# (family, one-line description). Order = order in INDEX.md.
FAMILIES = [
    ("generic_matmul", "Generic matmul: INT/FP/MX/NV (and lattice) quantizers vs Γ(R)"),
    ("lattice_nsm", "Normalized second moment G(Λ) of lattices vs dimension"),
    ("weight_only", "Weight-only quantization with known Σ_X: RTN/GPTQ/WaterSIC vs waterfilling"),
    ("universal", "Universal codebooks: rate gap over Σ_X families"),
    ("gptvq", "GPTVQ ablation vs the waterfilling limit"),
    ("real_model", "MiniLM-L6 real layers and end to end"),
    ("causal_lm", "SmolLM2-135M: perplexity with all 210 linear layers quantized"),
    ("lattice_layers", "MiniLM-L6 layers: Λ24 vs E8 LDLQ, WaterSIC, GPTVQ; QA-LDLQ"),
]
# Families that are argparse apps, not Hydra apps: their command-line arguments (out_dir, full).
ARGPARSE_ARGS = {"lattice_layers": lambda out_dir, full: [f"--out-dir={out_dir}"] + (["--full"] if full else [])}
ARTIFACTS = ("*.png", "*.pdf", "*.md")


def _git_commit() -> str:
  out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
  dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True)
  return (out.stdout.strip() or "unknown") + ("+dirty" if dirty.stdout.strip() else "")


def _command(family: str, full: bool) -> tuple[Path, list[str], str]:
  out_dir = ROOT / "outputs" / (f"{family}_full" if full else family)
  args = [f"out_dir={out_dir}"] + ([f"+experiment={family}_full"] if full else [])
  if family in ARGPARSE_ARGS:
    args = ARGPARSE_ARGS[family](out_dir, full)
  cmd = [sys.executable, "-m", f"rdq.experiments.{family}", *args]
  shown = " ".join(["python", "-m", f"rdq.experiments.{family}", *args]).replace(str(ROOT) + "/", "")
  return out_dir, cmd, shown


def _collect(family: str, out_dir: Path, shown: str, runtime: float) -> dict:
  copied = []
  for pattern in ARTIFACTS:
    for src in sorted(out_dir.glob(pattern)):
      if src.name == "INDEX.md":
        continue
      shutil.copy2(src, HERE / src.name)
      copied.append(src.name)
  return dict(family=family, command=shown, runtime_s=runtime, files=copied)


def run_family(family: str, full: bool) -> dict:
  """Run one family's app in this terminal and copy its figures here."""
  out_dir, cmd, shown = _command(family, full)
  print(f"[regenerate] {shown}", flush=True)
  t0 = time.perf_counter()
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, MPLBACKEND="Agg"))  # apps choose their backend
  runtime = time.perf_counter() - t0
  if proc.returncode != 0:
    raise SystemExit(f"[regenerate] {family} failed with exit code {proc.returncode}: {shown}")
  return _collect(family, out_dir, shown, runtime)


def _previous_runtimes() -> dict[str, float]:
  """Each family's runtime in the current INDEX.md (seconds), to start the longest first."""
  path = HERE / "INDEX.md"
  out = {}
  for line in path.read_text().splitlines() if path.exists() else []:
    m = re.search(r"`python -m rdq\.experiments\.(\w+)[ `].*\| (\d+) s", line)
    if m:
      out[m.group(1)] = float(m.group(2))
  return out


def run_families(families: list[str], full: bool, jobs: int) -> list[dict]:
  """Run ``families`` with at most ``jobs`` apps at once; rows in ``families`` order."""
  if jobs <= 1:
    return [run_family(f, full) for f in families]
  before = _previous_runtimes()
  queue = sorted(families, key=lambda f: -before.get(f, float("inf")))  # unknown runtime: first
  running, rows = {}, {}
  while queue or running:
    while queue and len(running) < jobs:
      family = queue.pop(0)
      out_dir, cmd, shown = _command(family, full)
      log = out_dir.parent / f"{out_dir.name}.log"
      log.parent.mkdir(parents=True, exist_ok=True)
      fh = open(log, "w")
      print(f"[regenerate] {shown}  (log: {os.path.relpath(log, ROOT)})", flush=True)
      proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, MPLBACKEND="Agg"), stdout=fh,
                              stderr=subprocess.STDOUT)
      running[family] = (proc, fh, log, out_dir, shown, time.perf_counter())
    time.sleep(0.5)
    for family, (proc, fh, log, out_dir, shown, t0) in list(running.items()):
      if proc.poll() is None:
        continue
      runtime = time.perf_counter() - t0
      fh.close()
      del running[family]
      if proc.returncode != 0:
        for other in running.values():
          other[0].terminate()
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise SystemExit(f"{tail}\n[regenerate] {family} failed with exit code {proc.returncode}: {shown} "
                         f"(log: {log})")
      print(f"[regenerate] {family} done in {runtime:.0f} s", flush=True)
      rows[family] = _collect(family, out_dir, shown, runtime)
  return [rows[f] for f in families]


def _row(row: dict, desc: str) -> str:
  figs = ", ".join(f"[{f}]({f})" for f in row["files"] if not f.endswith(".pdf")) or "(none)"
  return f"| {figs} | {desc} | `{row['command']}` | {row['runtime_s']:.0f} s |"


def write_index(rows: list[dict], commit: str, total_s: float, full: bool, only: bool = False, jobs: int = 1) -> None:
  """Write INDEX.md. With ``only`` (``--only``), the rows of the other families are kept as they
  were and a note names the regenerated ones: one family's rerun never drops the others."""
  desc = dict(FAMILIES)
  path = HERE / "INDEX.md"
  old_lines = path.read_text().splitlines() if only and path.exists() else []

  def old_row(family: str) -> str | None:
    pat = re.compile(rf"`python -m rdq\.experiments\.{family}( |`)")
    return next((ln for ln in old_lines if ln.startswith("| ") and pat.search(ln)), None)

  done = {row["family"]: row for row in rows}
  table = []
  for family, _ in FAMILIES:
    line = _row(done[family], desc[family]) if family in done else old_row(family)
    if line is not None:
      table.append(line)
  cmd = f"python paper_figures/regenerate.py{' --full' if full else ''}"
  header = next((ln for ln in old_lines if ln.startswith("Regenerated by")), None) if only else None
  lines = ["# Paper figures", ""]
  if header is None:
    lines.append(f"Regenerated by `{cmd}` (or `make figures`) at commit `{commit}`; total {total_s:.0f} s on this machine"
                 + (f" ({jobs} families at once: each runtime below shares the cores with the other running apps)."
                    if jobs > 1 else "."))
  else:
    lines += [header, "",
              f"Then `{cmd} --only {' '.join(done)}` at commit `{commit}` ({total_s:.0f} s) regenerated the rows of "
              f"{', '.join(done)}."]
  lines += ["", "| figure | what | command | runtime |", "|---|---|---|---|", *table]
  path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
  available = [f for f, _ in FAMILIES if importlib.util.find_spec(f"rdq.experiments.{f}") is not None]
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog="families: " + "; ".join(
      f"{f} ({d})" for f, d in FAMILIES if f in available))
  parser.add_argument("--full", action="store_true", help="paper-quality sizes (+experiment=<family>_full)")
  parser.add_argument("--only", nargs="*", default=None, metavar="FAMILY",
                      help="families to run (default: all); their rows of INDEX.md are replaced, the others kept")
  parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                      help="families run at once (default: 2, or the CPU count if fewer); 1: one after another, "
                           "output in this terminal")
  args = parser.parse_args(argv)
  if args.jobs < 1:
    raise SystemExit(f"--jobs must be >= 1, got {args.jobs}")
  families = available if not args.only else [f for f in args.only if f in available]
  missing = set(args.only or []) - set(available)
  if missing:
    raise SystemExit(f"unknown or unavailable families: {sorted(missing)}; available: {available}")
  t0 = time.perf_counter()
  rows = run_families(families, args.full, args.jobs)
  write_index(rows, _git_commit(), time.perf_counter() - t0, args.full, only=bool(args.only), jobs=args.jobs)
  print(f"[regenerate] {len(rows)} families in {time.perf_counter() - t0:.0f} s; see paper_figures/INDEX.md")


if __name__ == "__main__":
  sys.path.insert(0, str(ROOT))
  main()
