"""``python -m rdq.experiments <family> [hydra overrides]`` (console script ``rdq-sweep``): run one app.

``python -m rdq.experiments --help`` lists the families; everything after the family goes to that
app's Hydra command line (``-m``, ``--help``, ``+experiment=<family>_full``, overrides).
"""

from __future__ import annotations

import importlib
import importlib.util
import runpy
import sys

# (family, what its figures show); each is rdq/experiments/<family>.py with conf/<family>.yaml.
FAMILIES = {
    "generic_matmul": "INT/FP/MX/NV and nested-lattice quantizers of AᵀB vs Γ(R)",
    "lattice_nsm": "normalized second moment G(Λ) of lattices vs dimension",
    "weight_only": "RTN/GPTQ/WaterSIC with known Σ_X vs reverse waterfilling",
    "universal": "universal codebooks: rate gap over Σ_X families",
    "gptvq": "GPTVQ ablation vs the waterfilling limit",
    "real_model": "MiniLM-L6 real layers and end to end",
    "causal_lm": "a causal language model's layers and end to end",
}


def _available() -> dict[str, str]:
  return {f: d for f, d in FAMILIES.items() if importlib.util.find_spec(f"rdq.experiments.{f}") is not None}


def usage() -> str:
  fams = _available()
  width = max(map(len, fams))
  lines = ["usage: rdq-sweep <family> [hydra overrides]   (= python -m rdq.experiments.<family> ...)", "", "families:"]
  lines += [f"  {f:<{width}}  {d}" for f, d in fams.items()]
  lines += ["", "e.g.  rdq-sweep lattice_nsm -m seed=0,1        rdq-sweep generic_matmul --help",
            "then  rdq-report outputs    one HTML page of every family's figures, tables and results.json"]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ("-h", "--help"):
    print(usage())
    raise SystemExit(0 if argv else 2)
  family, rest = argv[0], argv[1:]
  if family not in _available():
    print(f"unknown family {family!r}\n\n{usage()}", file=sys.stderr)
    raise SystemExit(2)
  sys.argv = [sys.argv[0], *rest]  # Hydra reads the command line
  runpy.run_module(f"rdq.experiments.{family}", run_name="__main__", alter_sys=True)  # = python -m rdq.experiments.<family>


def figures(argv: list[str] | None = None) -> None:
  """``rdq-figures [--full] [--only FAMILY ...]``: ``paper_figures/regenerate.py`` of the checkout
  (the current directory, or the one this package was installed from in editable mode)."""
  from pathlib import Path

  argv = list(sys.argv[1:] if argv is None else argv)
  for root in (Path.cwd(), Path(__file__).resolve().parents[1]):
    script = root / "paper_figures" / "regenerate.py"
    if script.exists():
      sys.argv = [str(script), *argv]
      runpy.run_path(str(script), run_name="__main__")
      return
  print("rdq-figures regenerates paper_figures/ of an rdq checkout: run it inside the repository "
        "(no paper_figures/regenerate.py here or next to the installed package)", file=sys.stderr)
  raise SystemExit(2)


if __name__ == "__main__":
  main()
