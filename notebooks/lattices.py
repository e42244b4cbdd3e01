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
# # Lattices: closest point, G(Λ), and a nested-lattice code for matmul
#
# A lattice quantizer $Q_\Lambda$ maps $x$ to its closest lattice point (Conway & Sloane 1982
# decoders for $\mathbb Z^n$, $D_n$, $D_n^*$, $E_8$; a 32-coset decoder for Barnes–Wall
# $\Lambda_{16}$). Its quality is
# the normalized second moment
#
# $$G(\Lambda) = \frac{\mathbb E\|U\|^2}{n\,V^{2/n}},\qquad U\sim\mathrm{Unif}(\mathcal V(\Lambda)),$$
#
# with published values in SPLAG Table 2.3 ($1/12$ for $\mathbb Z$, $929/12960$ for $E_8$) and
# the closed form $G(D_n) = \big(\tfrac1{12}+\tfrac1{2n(n+1)}\big)2^{-2/n}$. At high rate a lattice
# loses $\tfrac12\log_2(2\pi e G)$ bits per dimension against the Shannon bound (0.2546 bit for
# $\mathbb Z$, 0.1458 bit for $E_8$).
#
# A nested-lattice (Voronoi) code $\Lambda/q\Lambda$ (Conway & Sloane 1983) spends $\log_2 q$ bits
# per entry; with NestQuant's overload handling (Savkin et al., arXiv 2502.09720: $k$ scales
# $\beta$, one per block) it comes close to the generic-matmul optimum $\Gamma(R)$ of
# Ordentlich & Polyanskiy (arXiv 2410.13780).

# %%
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np

from rdq import limits, plot, quantizers
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantizers import lattice_from_name, normalized_second_moment

SMALL = os.environ.get("RDQ_NOTEBOOK_FULL") is None  # small sizes when executed by `make test`
nsm_samples = 1 << 14 if SMALL else 1 << 20
setup = MatmulSetup(n=128, a=8, b=8) if SMALL else MatmulSetup(n=1024, a=64, b=64)
num_samples = 32 if SMALL else 1024

# %% [markdown]
# ## Closest point
#
# $E_8 = D_8 \cup (D_8 + \tfrac12\mathbf 1)$: decode in both cosets and keep the closer point.
# Every output is a lattice point (integer coordinates in the generator basis) and no farther
# from $x$ than the covering radius (1 for $E_8$).

# %%
e8 = lattice_from_name("e8")
x = 3.0 * jax.random.normal(jax.random.key(0), (4096, 8))
p = jax.jit(e8.closest_point)(x)
z = np.asarray(e8.coordinates(p))
dist = np.linalg.norm(np.asarray(x - p), axis=-1)
# brute force over the 240 minimal vectors: no neighbour of p is closer to x
nbrs = np.asarray(p)[:, None, :] + e8.minimal_vectors()[None]
d_nbr = np.linalg.norm(np.asarray(x)[:, None, :] - nbrs, axis=-1).min(axis=1)
print(f"max distance {dist.max():.4f} (covering radius {e8.covering_radius:.4f}), "
      f"min neighbour distance − own distance {np.min(d_nbr - dist):.4f}")
assert np.array_equal(z, np.round(z))
assert dist.max() <= e8.covering_radius + 1e-5
assert np.all(d_nbr >= dist - 1e-5)  # no minimal-vector neighbour of p is closer to x

# %% [markdown]
# ## G(Λ) by Monte Carlo vs the published constants
#
# Reference: SPLAG Table 2.3 where listed, else the closed form $G(D_n)$.

# %%
names = ["z", "d3star", "d4", "d5star", "e8", "bw16"] if SMALL else ["z", "d2", "d3", "d3star", "d4", "d5star", "d6", "d8", "e8", "bw16"]
refs = {"z": limits.PUBLISHED_G["z"], "d3star": limits.PUBLISHED_G["d3star"], "d3": limits.PUBLISHED_G["d3"],
        "d4": limits.PUBLISHED_G["d4"], "d5star": limits.PUBLISHED_G["d5star"], "e8": limits.PUBLISHED_G["e8"],
        "bw16": limits.PUBLISHED_G["bw16"]}
# every lattice's estimate in one compiled program (the same numbers as one call each)
lats = [lattice_from_name(name) for name in names]
g_ests = jax.jit(lambda key: [normalized_second_moment(lat, jax.random.fold_in(key, lat.dim), nsm_samples, 4096)
                              for lat in lats])(jax.random.key(1))
g_rows = []
for name, lat, est in zip(names, lats, g_ests):
  ref = refs.get(name, limits.g_dn(lat.dim) if name.startswith("d") and not name.endswith("star") else None)
  g_rows.append((name, lat.dim, float(est.mean), float(est.stderr), ref, est))
  print(f"{name:7s} n={lat.dim:2d}  G = {float(est.mean):.5f} ± {1.96 * float(est.stderr):.5f}  "
        f"reference {ref:.5f}  loss {limits.rate_gap_bits(float(est.mean)):.3f} bit/dim")

# %%
for name, dim, g, se, ref, est in g_rows:
  assert est.contains(ref, 0.999), (name, g, se, ref)  # published value inside the MC CI
  assert float(est.ci(0.999)[1]) >= limits.g_sphere(dim)  # no quantizer beats the sphere bound (= 1/12 at n = 1)

# %% [markdown]
# ## A nested-lattice code in the generic-matmul setting
#
# Quantize both factors of $A^\top B$ with the $E_8$ Voronoi code at $q\in\{8,16\}$ (3, 4 bits
# per entry, plus $\log_2(k)/8 = 0.25$ bit for the β index of $k=4$ scales) and compare with
# $\Gamma(R)$ and with INT4 per row at the same rate. The gap printed is $R - \Gamma^{-1}(D)$ at the
# upper end of the 99.9% CI of $D$, so it is an upper estimate.

# %%
mm_names = ["e8_nested_q8", "e8_nested_q16", "int4_row"]
if not SMALL:
  mm_names += ["e8_nested_q4", "d4_nested_q16", "int3_row", "int8_row"]
# one compiled program for all codes (the same numbers as one matmul_distortion call each)
mm_qs = [quantizers.get(name) for name in mm_names]
mm_ests = jax.jit(lambda key: [matmul_distortion(q, q, setup, key, num_samples, 16) for q in mm_qs])(jax.random.key(2))
mm_rows = []
for name, q, est in zip(mm_names, mm_qs, mm_ests):
  rate = q.rate((setup.a, setup.n)).effective
  gap = rate - float(limits.generic_matmul_rate(float(est.ci(0.999)[1])))
  mm_rows.append((name, rate, float(est.mean), float(est.stderr), gap))
  print(f"{name:14s} R={rate:5.3f}  D={float(est.mean):.3e} ± {1.96 * float(est.stderr):.1e}  "
        f"Γ(R)={float(limits.generic_matmul(rate)):.3e}  gap ≤ {gap:.2f} bit")

# %%
gaps = {name: gap for name, _, _, _, gap in mm_rows}
for name, rate, mean, se, gap in mm_rows:
  assert float(limits.generic_matmul(rate)) < mean - 2 * se, name  # Γ(R) is a lower bound
assert gaps["e8_nested_q16"] < 0.55                               # NestQuant-style code: ≈ ½ bit from optimum
assert gaps["e8_nested_q16"] < gaps["int4_row"] - 0.5             # and far better than INT4 per row

# %%
fig, (ax0, ax1) = plot.figure("double", aspect=0.36, ncols=2)
ns = np.arange(1, 25)
ax0.plot(ns, [limits.g_sphere(int(n)) for n in ns], color=plot.COLORS["limit"], lw=1.0, label=r"sphere bound $G(S_n)$")
ax0.axhline(limits.G_SPHERE_LIMIT, color=plot.COLORS["limit"], ls=":", lw=0.8, label=r"$1/(2\pi e)$")
for name, dim, g, se, ref, est in g_rows:
  ax0.errorbar(dim, g, yerr=1.96 * se, fmt="o", ms=3, color=plot.COLORS["lattice"])
  ax0.plot(dim, ref, "x", color="black", ms=5)
  ax0.annotate(name, (dim, g), fontsize=6, xytext=(3, 3), textcoords="offset points")
ax0.set_xlabel("dimension n")
ax0.set_ylabel(r"$G(\Lambda)$ (MC, 95% CI; × published)")
ax0.legend()
r = np.linspace(0.5, max(row[1] for row in mm_rows) + 0.5, 200)
ax1.semilogy(r, limits.generic_matmul(r), label=r"$\Gamma(R)$", **plot.LIMIT_STYLE)
for name, rate, mean, se, gap in mm_rows:
  col = plot.COLORS["lattice"] if "nested" in name else plot.COLORS["int"]
  ax1.errorbar(rate, mean, yerr=1.96 * se, fmt="o", ms=3, color=col)
  ax1.annotate(name, (rate, mean), fontsize=6, xytext=(3, 2), textcoords="offset points")
ax1.set_xlabel(plot.RATE_LABEL)
ax1.set_ylabel(plot.DISTORTION_LABEL_MATMUL)
ax1.legend()
fig
