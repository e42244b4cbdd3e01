"""Gap of nested-lattice (Voronoi) codes to Γ(R) for generic matmul, and its decomposition.

For each registry name (``<lattice>_nested_q<q>[_k<k>]``) on iid N(0, 1) data:

* ``gap_matmul = R_eff − Γ⁻¹(D)``: D the Monte Carlo matmul distortion
  ``E‖AᵀB − ÂᵀB̂‖²_F/(nab)`` (``rdq.matmul_mc.matmul_distortion``, both factors quantized),
  R_eff the rate with side information (``rate().effective``), Γ the optimal matmul
  distortion–rate function (``rdq.limits.generic_matmul``);
* ``gap_mse = R_eff − ½ log2(1/ε)``: ε the MSE per entry of the code, against Gaussian D(R);

and ``gap_mse`` split exactly into four terms (bits per entry):

.. math::
   \\underbrace{\\tfrac12\\log_2(2\\pi e G)}_{\\text{shaping}}
   + \\underbrace{\\tfrac{\\log_2 k}{d}}_{\\beta\\ \\text{side info}}
   + \\underbrace{\\tfrac12\\log_2\\frac{q^2 \\varepsilon_{gran}}{2\\pi e G}}_{\\text{finite } q}
   + \\underbrace{\\tfrac12\\log_2\\frac{\\varepsilon}{\\varepsilon_{gran}}}_{\\text{overload}},

with ``ε_gran = G V^{2/d} E[β²]`` the granular error the chosen scales would give without
overload (G the published normalized second moment, V the cell volume). A code whose coarse
cell ``qβΛ`` exactly covered the typical Gaussian ball would have ``ε = 2πeG/q²``: the
"finite q" term is the price of the scales needed to cover the norm fluctuations of a
d-dimensional Gaussian block (and of the coarse cell not being a ball). The β side-information
term uses ``log2(k)/d``; ``R_eff`` rounds the per-vector bit count up, so the terms add up to
``gap_mse`` up to that rounding. ``gap_matmul − gap_mse`` is the matmul-specific remainder
(errors correlated with the data).

Usage (n must be a multiple of every block length d):
  python -m rdq.experiments.nested_gap --names leech_nested_q4 leech_nested_q8 --n 240
"""

from __future__ import annotations

import argparse
import math


def decompose(name: str, n: int, a: int, b: int, num_samples: int, seed: int, blocks: int) -> dict:
  import jax
  import jax.numpy as jnp

  from rdq import limits, quantizers
  from rdq.matmul_mc import MatmulSetup, matmul_distortion

  qz = quantizers.get(name)
  lat = qz.lattice
  d = lat.dim
  g = limits.PUBLISHED_G[lat.name if not lat.name.startswith("z") else "z"]
  est = matmul_distortion(qz, qz, MatmulSetup(n, a, b), jax.random.key(seed), num_samples, 32)
  r_eff = qz.rate((a, n)).effective
  d_mm = float(est.mean)
  gap_mm = r_eff - float(limits.generic_matmul_rate(min(d_mm, 1.0)))
  # MSE and chosen scales on Gaussian blocks (rows of n entries, as in the matmul).
  x = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1), (blocks * d // n + 1, n), jnp.float32)
  code = jax.jit(qz.encode)(x)
  xh = qz.decode(code)
  eps = float(jnp.mean((x - xh) ** 2))
  beta = jnp.asarray(qz.betas, jnp.float32)[code.beta_index.astype(jnp.int32)]
  eps_gran = g * lat.volume ** (2.0 / d) * float(jnp.mean(beta**2))
  gap_mse = r_eff - 0.5 * math.log2(1.0 / eps)
  shaping = 0.5 * math.log2(2 * math.pi * math.e * g)
  side = math.log2(qz.k) / d
  finite_q = 0.5 * math.log2(qz.q**2 * eps_gran / (2 * math.pi * math.e * g))
  overload = 0.5 * math.log2(eps / eps_gran)
  return dict(name=name, rate=r_eff, d=d_mm, d_se=float(est.stderr), gap_matmul=gap_mm, eps=eps, gap_mse=gap_mse,
              shaping=shaping, side=side, finite_q=finite_q, overload=overload)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--names", nargs="+", required=True, help="registry names of nested-lattice quantizers")
  p.add_argument("--n", type=int, default=240, help="inner dimension (multiple of the block lengths)")
  p.add_argument("--a", type=int, default=16)
  p.add_argument("--b", type=int, default=16)
  p.add_argument("--num-samples", type=int, default=32, help="(A, B) pairs for the matmul distortion")
  p.add_argument("--blocks", type=int, default=1 << 13, help="Gaussian blocks for the MSE terms")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  cols = ("rate", "gap_matmul", "gap_mse", "shaping", "side", "finite_q", "overload")
  print(f"n={args.n} a={args.a} b={args.b} num_samples={args.num_samples} blocks={args.blocks} seed={args.seed}")
  print(f"{'name':24s} {'D (±se)':>20s} " + " ".join(f"{c:>10s}" for c in cols))
  for name in args.names:
    r = decompose(name, args.n, args.a, args.b, args.num_samples, args.seed, args.blocks)
    print(f"{name:24s} {r['d']:.5f} ± {r['d_se']:.5f}   " + " ".join(f"{r[c]:10.4f}" for c in cols), flush=True)


if __name__ == "__main__":
  main()
