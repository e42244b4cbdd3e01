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
# # GPTVQ vs GPTQ on a synthetic layer, and where the bits go
#
# GPTVQ (van Baalen et al., arXiv 2402.15319, Sec. 3 / Algorithm 1) is GPTQ's successive error
# feedback with vector steps: $d$ input features at a time are replaced by the nearest of
# $k=2^{db}$ centroids of a per-tile codebook (a tile is `group_size` input features ×
# `group_outputs` output features, $\ell$ weights), and the vector's error is fed forward through
# $U_{PP}^\top e_P = w_P - q_P$ ($U$: upper Cholesky factor of $H^{-1}$). Its rate in bits per value is
#
# $$R = \underbrace{b}_{\text{indices}} + \underbrace{\frac{k\,d\,b_c}{\ell}}_{\text{codebooks}} + \underbrace{\frac{16}{\ell}\,[\text{INT8}]}_{\text{scales}},$$
#
# with $b_c$ = 16 (fp16) or 8 (INT8 codebooks). With $d=1$ and GPTQ's min–max grid as the
# codebook it *is* GPTQ. The reference is reverse waterfilling on the eigenvalues of $H$
# (Cover & Thomas, Thm. 10.3.3).

# %%
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np

import rdq.layer
from rdq import covariance as cov
from rdq import plot
from rdq.layer import GPTVQConfig, gptvq_bits
from rdq.limits import waterfill, waterfill_gap_bits

SMALL = os.environ.get("RDQ_NOTEBOOK_FULL") is None  # small sizes when executed by `make test`
n, m = (128, 128) if SMALL else (512, 512)
em_iters = 8 if SMALL else 25
w = jax.random.normal(jax.random.key(1), (n, m))      # (in_features, out_features), iid N(0, 1)
h = cov.AR1(n)(jax.random.key(2), 0.9)                  # Σ_X = H: AR(1), ρ = 0.9
lam = np.linalg.eigvalsh(np.asarray(h, np.float64)).clip(0)

# %% [markdown]
# ## d = 1 with GPTQ's grid is GPTQ, bit for bit

# %%
w_g, rep_g = rdq.layer.get("gptq", grid="minmax", bits=2, group_size=128)(w, h)
cfg_d1 = dict(dim=1, bits=2, group_size=128, group_outputs=1, init="minmax", codebook_format="fp32", update=False)
w_v, rep_v = rdq.layer.get("gptvq", **cfg_d1)(w, h)
print(f"GPTQ 2-bit g128: D = {float(rep_g.d_per_entry):.4f} at {float(rep_g.rate_nominal_bits):.3f} bits; "
      f"GPTVQ d=1 minmax: D = {float(rep_v.d_per_entry):.4f}")
np.testing.assert_array_equal(np.asarray(w_v), np.asarray(w_g))
np.testing.assert_array_equal(np.asarray(rep_v.codes), np.asarray(rep_g.codes))

# %% [markdown]
# ## GPTVQ at 2 index bits per value
#
# Tiles of $\ell = 128\times32 = 4096$ weights, so fp16 codebooks cost $k\,d\cdot16/4096$ bit per
# value (0.125 for $d=2$); INT8 codebooks halve that and add one fp16 scale per codebook.

# %%
configs = {
    "d=1 k-means": GPTVQConfig(dim=1, bits=2, group_size=128, group_outputs=32, em_iters=em_iters),
    "d=2": GPTVQConfig(dim=2, bits=2, group_size=128, group_outputs=32, em_iters=em_iters),
    "d=2 + INT8 codebooks": GPTVQConfig(dim=2, bits=2, group_size=128, group_outputs=32, em_iters=em_iters, int8=True),
}
if not SMALL:
  configs["d=4"] = GPTVQConfig(dim=4, bits=2, group_size=128, group_outputs=512, em_iters=em_iters)
results = {}
for name, cfg in configs.items():
  _, rep = rdq.layer.LayerAlgorithm("gptvq", cfg)(w, h, key=jax.random.key(0))
  bits = gptvq_bits(cfg, n, m)
  results[name] = (rep, bits)
  print(f"{name:22s} D = {float(rep.d_per_entry):.4f}  bits = {bits.index:.3f} index + {bits.codebook:.4f} codebook "
        f"+ {bits.scale:.4f} scale = {bits.total:.4f}")
_, rep_ws = rdq.layer.get("watersic")(w, h, rate_bits=2.125)
print(f"{'WaterSIC (entropy-coded)':22s} D = {float(rep_ws.d_per_entry):.4f}  at {float(rep_ws.rate_entropy_bits):.3f} bits")

# %%
rep2, bits2 = results["d=2"]
rep8, bits8 = results["d=2 + INT8 codebooks"]
num_cb = (n // 128) * (m // 32)
assert bits2 == (2.0, num_cb * 16 * 2 * 16 / (n * m), 0.0, 2.0 + num_cb * 16 * 2 * 16 / (n * m))  # by hand
assert bits8.codebook == bits2.codebook / 2 and bits8.scale == num_cb * 16 / (n * m)
assert abs(float(rep8.rate_bits) - bits8.total) < 1e-6
d_sic, d_upd = (float(x) for x in rep2.extras["stage_d_per_entry"][:2])
assert d_upd <= d_sic                                             # LS update: optimal for fixed assignments
assert float(rep2.d_per_entry) < 0.6 * float(rep_g.d_per_entry)  # vectors beat GPTQ's 2-bit grid
assert float(rep8.d_per_entry) < 1.05 * float(rep2.d_per_entry)  # INT8 codebooks cost little
for name, (rep, bits) in results.items():
  assert float(waterfill(lam, bits.total).distortion) < float(rep.d_per_entry), name  # the limit holds
gap = {name: float(waterfill_gap_bits(lam, bits.total, rep.d_per_entry)) for name, (rep, bits) in results.items()}
gap["GPTQ 2-bit g128"] = float(waterfill_gap_bits(lam, rep_g.rate_bits, rep_g.d_per_entry))
print("rate gap to waterfilling [bit]:", {k: round(v, 3) for k, v in gap.items()})
assert gap["d=2"] < gap["GPTQ 2-bit g128"] - 0.3

# %%
fig, (ax0, ax1) = plot.figure("double", aspect=0.36, ncols=2)
labels = ["GPTQ 2-bit g128"] + list(results)
idx_bits = [2.0] + [b.index for _, b in results.values()]
cb_bits = [float(rep_g.rate_nominal_bits) - 2.0] + [b.codebook for _, b in results.values()]
sc_bits = [0.0] + [b.scale for _, b in results.values()]
x = np.arange(len(labels))
ax0.bar(x, idx_bits, color=plot.COLORS["gptvq"], label="indices")
ax0.bar(x, cb_bits, bottom=idx_bits, color=plot.COLORS["vq"], label="codebooks / GPTQ scales")
ax0.bar(x, sc_bits, bottom=np.add(idx_bits, cb_bits), color=plot.COLORS["mx"], label="INT8 codebook scales")
ax0.set_ylim(1.8, max(np.add(np.add(idx_bits, cb_bits), sc_bits)) + 0.1)
ax0.set_xticks(x, labels, rotation=20, fontsize=6)
ax0.set_ylabel("bits per value")
ax0.legend(fontsize=6)
rr = np.linspace(1.5, 3.5, 60)
ax1.semilogy(rr, waterfill(lam, rr).distortion, label="waterfilling", **plot.LIMIT_STYLE)
ax1.plot(float(rep_g.rate_nominal_bits), float(rep_g.d_per_entry), "s", color=plot.COLORS["gptq"], label="GPTQ")
ax1.plot(float(rep_ws.rate_entropy_bits), float(rep_ws.d_per_entry), "^", color=plot.COLORS["watersic"],
         label="WaterSIC (entropy-coded)")
for name, (rep, bits) in results.items():
  ax1.plot(bits.total, float(rep.d_per_entry), "o", color=plot.COLORS["gptvq"])
  ax1.annotate(name, (bits.total, float(rep.d_per_entry)), fontsize=6, xytext=(3, 2), textcoords="offset points")
ax1.set_xlabel(plot.RATE_LABEL)
ax1.set_ylabel(plot.DISTORTION_LABEL_WEIGHT)
ax1.legend(fontsize=6)
fig
