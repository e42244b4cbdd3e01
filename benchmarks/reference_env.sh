#!/usr/bin/env bash
# Reference environment for benchmarks/reference.py: a separate virtual environment with torch
# (CPU) + NumPy, and the three reference repositories checked out at the pinned commits.
# Nothing here touches .venv; the reference code is read from .ref/, never copied into rdq.
#
#   bash benchmarks/reference_env.sh          # or: make bench-ref (also runs the benchmark)
#   REF_MIRROR=/path/to/mirror bash benchmarks/reference_env.sh   # clone from <mirror>/<owner>+<name>/repo
#
# Environment: REF_VENV (default .venv-ref), REF_ROOT (default .ref), REF_PYTHON (default python3),
# REF_TORCH (pip requirement, default "torch", e.g. "torch==2.13.0+cpu" for a local CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${REF_VENV:-.venv-ref}
root=${REF_ROOT:-.ref}

if [ ! -x "$venv/bin/python" ]; then
  "${REF_PYTHON:-python3}" -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
  "$venv/bin/pip" install -q "${REF_TORCH:-torch}" numpy
fi

# owner name commit (the snapshots read for /work/shared/research/reference_code.md)
repos="IST-DASLab gptq 2d65066
egorlifar watersic f837398
Qualcomm-AI-research gptvq fd8a3ce"
mkdir -p "$root"
while read -r owner name commit; do
  dest="$root/$name"
  if [ ! -d "$dest/.git" ]; then
    if [ -n "${REF_MIRROR:-}" ]; then url="$REF_MIRROR/$owner+$name/repo"; else url="https://github.com/$owner/$name"; fi
    git clone -q "$url" "$dest"
  fi
  git -C "$dest" -c advice.detachedHead=false checkout -q "$commit"
  echo "$owner/$name @ $(git -C "$dest" rev-parse --short HEAD) -> $dest"
done <<< "$repos"
"$venv/bin/python" -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)"
