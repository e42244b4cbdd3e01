# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Generic matmul: how far are INT / FP / MX / NV formats from Γ(R)?
#
# Both factors of $A^\top B$ ($A\in\mathbb R^{n\times a}$, $B\in\mathbb R^{n\times b}$, iid
# $\mathcal N(0,1)$) are quantized at $R$ bits per entry (scales counted). The optimum is
# $\Gamma(R)$ (Ordentlich & Polyanskiy, arXiv 2410.13780): $2\cdot2^{-2R}-2^{-4R}$ above
# $R^*\approx0.906$, time sharing below. This notebook runs a small live Monte Carlo and
# compares it with the exact (quadrature) and high-rate predictions.

# %%
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np

from rdq import limits, plot, quantizers
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantizers import scalar_prediction as sp

SMALL = os.environ.get("RDQ_NOTEBOOK_FULL") is None  # small sizes when executed by `make test`
setup = MatmulSetup(n=128, a=8, b=8) if SMALL else MatmulSetup(n=1024, a=64, b=64)
num_samples = 64 if SMALL else 1024
names = ["int8_row", "int4_row", "int4_block32", "e4m3", "mxfp4", "nvfp4"]

# %%
# All formats' estimates as ONE compiled program: the same numbers as one matmul_distortion call
# each (rdq.experiments.generic_matmul's estimate_group is tested bitwise), one compilation.
qs = [quantizers.get(name) for name in names]
ests = jax.jit(lambda key: [matmul_distortion(q, q, setup, key, num_samples, 32) for q in qs])(jax.random.key(0))
rows = []
for name, q, est in zip(names, qs, ests):
  rate = q.rate((setup.a, setup.n)).effective
  exact = sp.exact_matmul_distortion(q, q, setup.n, setup.a, setup.b)
  rows.append((name, rate, float(est.mean), float(est.stderr), exact))
  print(f"{name:14s} R={rate:6.3f}  D={float(est.mean):.3e} ± {1.96 * float(est.stderr):.1e}  "
        f"exact={exact:.3e}  gap to Γ = {rate - float(limits.generic_matmul_rate(float(est.mean))):.2f} bit")

# %%
for name, rate, mean, se, exact in rows:
  assert abs(mean - exact) < 4 * se + 0.01 * exact, name  # exact prediction inside the MC error
  assert float(limits.generic_matmul(rate)) < mean          # the limit is below every format

# %%
fig, ax = plot.figure()
r = np.linspace(0.05, 9, 300)
ax.semilogy(r, limits.generic_matmul(r), label=r"$\Gamma(R)$", **plot.LIMIT_STYLE)
for name, rate, mean, se, exact in rows:
  ax.errorbar(rate, mean, yerr=1.96 * se, fmt="o", ms=3)
  ax.annotate(name, (rate, mean), fontsize=6, xytext=(3, 2), textcoords="offset points")
ax.set_xlabel(plot.RATE_LABEL)
ax.set_ylabel(plot.DISTORTION_LABEL_MATMUL)
ax.legend()
fig
