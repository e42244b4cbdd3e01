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
# # Pallas kernels: INT4 and MXFP4 weight-only matmul, checked against rdq
#
# `rdq/kernels/` computes $y = x\cdot\mathrm{dequant}(W_q)$ with the dequantization fused into a
# tiled matmul ($x$: $(M,K)$, $W$: $(K,N)$, fp32 accumulation). A weight is encoded by an rdq
# quantizer as $W^\top$ (quantizers act on the last axis, so block scales run along $K$), then
# packed (`rdq.kernels.pack`: two 4-bit codes per byte). On CPU the kernels run in the Pallas
# interpreter (`interpret=True`); on a GPU/TPU the same call compiles.
#
# Two checks: (1) the kernel equals rdq's pure-JAX reference `rdq.quantized_matmul.dequant_matmul`
# (decode, then `jnp.dot`) up to fp32 summation order, $|y-y_{\rm ref}|\le 8\,\epsilon_{32}\sqrt K\,(|x|\,|\hat W|)$;
# (2) its product error $\|xW-y\|_F^2/(KMN)$ for iid $\mathcal N(0,1)$ data equals rdq's Monte Carlo
# prediction `matmul_distortion` (with $x$ unquantized) and the exact per-entry MSE
# $1-2\rho+P$ of the format ($\rho=\mathbb E[w\hat w]$, $P=\mathbb E[\hat w^2]$, by quadrature over the
# law of the block maximum; `rdq.quantizers.scalar_prediction`).

# %%
import dataclasses
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
import jax
import jax.numpy as jnp
import numpy as np

from rdq import plot, quantizers
from rdq.kernels import Config, bytes_of, fp4_matmul, int_matmul, pack_fp4, pack_int
from rdq.matmul_mc import MatmulSetup, matmul_distortion
from rdq.quantized_matmul import dequant_matmul
from rdq.quantizers import Rate
from rdq.quantizers import scalar_prediction as sp

SMALL = os.environ.get("RDQ_NOTEBOOK_FULL") is None  # small sizes when executed by `make test`
m, k, n = 8, 256, 128                     # tokens, input features, output features
draws = 8 if SMALL else 64                # independent (x, W) draws through the kernel
mc_samples = 128 if SMALL else 2048
on_accelerator = jax.default_backend() in ("gpu", "tpu")
run_kw = dict(interpret=False) if on_accelerator else dict(backend="tpu", interpret=True, config=Config(8, 128, 256))
print("backend:", jax.default_backend(), "| kernel call:", run_kw)

# %% [markdown]
# ## Pack and run

# %%
formats = {
    "int4_block32": (quantizers.get("int4_block32"), pack_int, int_matmul),
    "mxfp4": (quantizers.get("mxfp4"), pack_fp4, fp4_matmul),
}
x = jax.random.normal(jax.random.key(0), (m, k))
w = jax.random.normal(jax.random.key(1), (k, n))
for name, (q, pack, kernel) in formats.items():
  code = q.encode(w.T)                    # (N, K) codes + block scales
  packed = pack(code, q)
  y = kernel(x, packed, **run_kw)
  ref = dequant_matmul(x, q, code)
  w_hat = q.decode(code).T                # (K, N)
  tol = 8 * float(jnp.finfo(jnp.float32).eps) * np.sqrt(k) * (np.abs(np.asarray(x)) @ np.abs(np.asarray(w_hat)))
  err = np.abs(np.asarray(y) - np.asarray(ref))
  print(f"{name:13s} packed {bytes_of(packed):6d} B vs bf16 {2 * k * n} B ({2 * k * n / bytes_of(packed):.2f}×), "
        f"R = {q.rate((n, k)).effective:.3f} bit/entry; max |kernel − ref| = {err.max():.2e} "
        f"(bound {tol.min():.1e}…)")
  assert y.shape == (m, n) and np.all(err <= tol + 1e-30), name
  # packed bytes = the rate (PackedFP4 also carries a 4-byte fp32 tensor-scale slot, 1.0 for MX)
  assert 0 <= bytes_of(packed) - q.rate((n, k)).effective * k * n / 8 <= (4 if name == "mxfp4" else 0), name


# %% [markdown]
# ## E8 nested-lattice codes decoded inside the kernel
#
# `rdq.kernels.e8_matmul` reads the Voronoi coordinates of `NestedLatticeQuantizer("e8", q, betas)`
# (stored as 8 planes, one per coordinate of a block) and runs the E8 closest-point reduction
# $\hat w = \beta\,(cB - q\,Q_{E8}(cB/q))$ inside the kernel with fixed-shape integer ops. With
# integer-valued $x$ and dyadic $\beta$ every sum is exact, so the kernel must equal rdq's decode
# followed by `jnp.dot` bit for bit.

# %%
from rdq.kernels import e8_matmul, pack_e8
from rdq.quantizers.nested import NestedLatticeQuantizer

e8q = NestedLatticeQuantizer("e8", 4, (0.25, 0.5))
e8_code = jax.jit(e8q.encode)(w.T)
x_int = jnp.round(4 * x)
y_e8 = e8_matmul(x_int, pack_e8(e8_code, e8q), **run_kw)
ref_e8 = dequant_matmul(x_int, e8q, e8_code)
print(f"E8 q=4: packed {bytes_of(pack_e8(e8_code, e8q))} B, max |kernel − ref| = "
      f"{float(jnp.max(jnp.abs(y_e8 - ref_e8))):.1e}")
assert bool(jnp.all(y_e8 == ref_e8))

# %% [markdown]
# ## Kernel error vs rdq's Monte Carlo and the exact prediction

# %%
@dataclasses.dataclass(frozen=True)
class Unquantized:
  """The identity 'quantizer' for the activation factor (weight-only quantization)."""

  def quantize(self, x, key=None):
    return x

  def rate(self, shape):
    return Rate(nominal=32.0, side=0.0)


# rdq's Monte Carlo estimates of both formats as ONE compiled program: the same numbers as one
# matmul_distortion call each (rdq.experiments.generic_matmul's estimate_group is tested bitwise).
mc = jax.jit(lambda key: [matmul_distortion(Unquantized(), q, MatmulSetup(n=k, a=m, b=n), key, mc_samples, 32)
                          for q, _, _ in formats.values()])(jax.random.key(3))
rows = []
for (name, (q, pack, kernel)), est in zip(formats.items(), mc):
  errs = []
  for i in range(draws):
    kx, kw = jax.random.split(jax.random.fold_in(jax.random.key(2), i))
    xi, wi = jax.random.normal(kx, (m, k)), jax.random.normal(kw, (k, n))
    yi = kernel(xi, pack(q.encode(wi.T), q), **run_kw)
    exact = np.asarray(xi, np.float64) @ np.asarray(wi, np.float64)
    errs.append(np.sum((exact - np.asarray(yi, np.float64)) ** 2) / (k * m * n))
  errs = np.array(errs)
  closed = sp.exact_scalar_moments(q, (n, k)).mse
  rows.append((name, errs.mean(), errs.std(ddof=1) / np.sqrt(draws), float(est.mean), float(est.stderr), closed))
  print(f"{name:13s} kernel {errs.mean():.5f} ± {errs.std(ddof=1) / np.sqrt(draws):.5f}   "
        f"rdq MC {float(est.mean):.5f} ± {float(est.stderr):.5f}   exact 1−2ρ+P {closed:.5f}")

# %%
for name, mk, sk, mm, sm, closed in rows:
  assert abs(mk - mm) <= 3.3 * np.hypot(sk, sm), name   # kernel and rdq MC agree (99.9% two-sample CI)
  assert abs(mk - closed) <= 3.3 * sk, name             # and both match the closed form
  assert abs(mm - closed) <= 3.3 * sm, name

# %%
fig, (ax0, ax1) = plot.figure("double", aspect=0.36, ncols=2)
ax0.plot(np.asarray(ref).ravel(), np.asarray(y).ravel(), ".", ms=2, color=plot.COLORS["mx"])
ax0.plot(np.asarray(ref).ravel(), np.asarray(x @ w).ravel(), ".", ms=1, alpha=0.3, color="0.6")
ax0.set_xlabel(r"reference $x\,\hat W$ (rdq decode, then dot)")
ax0.set_ylabel(r"MXFP4 kernel output $y$ (grey: $xW$)")
xpos = np.arange(len(rows))
ax1.errorbar(xpos - 0.1, [r[1] for r in rows], yerr=[1.96 * r[2] for r in rows], fmt="o", label="Pallas kernel")
ax1.errorbar(xpos + 0.1, [r[3] for r in rows], yerr=[1.96 * r[4] for r in rows], fmt="s", label="rdq Monte Carlo")
ax1.plot(xpos, [r[5] for r in rows], "_", ms=20, color="black", label=r"exact $1-2\rho+P$")
ax1.set_xticks(xpos, [r[0] for r in rows])
ax1.set_ylabel(r"$\|xW-y\|_F^2/(KMN)$, 95% CI")
ax1.legend(fontsize=6)
fig
