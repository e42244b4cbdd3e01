"""Gap of nested-lattice (Voronoi) codes to Γ(R) for generic matmul, and its decomposition.

For each registry name (``<lattice>_nested_q<q>[_k<k>][_mmse]``) on iid N(0, 1) data:

* ``gap_matmul = R_eff − Γ⁻¹(D)``: D the Monte Carlo matmul distortion
  ``E‖AᵀB − ÂᵀB̂‖²_F/(nab)`` (``rdq.matmul_mc.matmul_distortion``, both factors quantized),
  R_eff the rate with side information (``rate().effective``, fixed-length β index), Γ the
  optimal matmul distortion–rate function (``rdq.limits.generic_matmul``); 95% CI from
  ``D ± 1.96·se`` mapped through Γ⁻¹;
* ``gap_mse = R_eff − ½ log2(1/ε)``: ε the MSE per entry of the code, against Gaussian D(R);
  95% CI from the per-row errors;

and ``gap_mse`` split exactly into five terms (bits per entry):

.. math::
   \\underbrace{\\tfrac12\\log_2(2\\pi e G)}_{\\text{shaping}}
   + \\underbrace{\\tfrac{\\log_2 k}{d}}_{\\beta\\ \\text{side info}}
   + \\underbrace{\\tfrac12\\log_2\\frac{q^2 \\varepsilon_{gran}}{2\\pi e G}}_{\\text{finite } q}
   + \\underbrace{\\tfrac12\\log_2\\frac{\\varepsilon_\\beta}{\\varepsilon_{gran}}}_{\\text{overload}}
   + \\underbrace{\\tfrac12\\log_2\\frac{\\varepsilon}{\\varepsilon_\\beta}}_{\\text{decoder gain}},

with ``ε_gran = G V^{2/d} E[β²]`` the granular error the chosen scales would give without
overload (G the published normalized second moment, V the cell volume) and ``ε_β`` the error
of the same codes decoded with β instead of the decoder scales γ (``_mmse`` codes; the term is
0 otherwise). A code whose coarse cell ``qβΛ`` exactly covered the typical Gaussian ball would
have ``ε = 2πeG/q²``: the "finite q" term is the price of the scales needed to cover the norm
fluctuations of a d-dimensional Gaussian block (and of the coarse cell not being a ball);
"overload" is net of the gain of choosing the best of k scales (hence negative values). For
encoder-search codes (``_s<s>``, ``NestedLatticeQuantizer.search``) the k scales in ``ε_gran``
are the decoder scales γ (there is no separate β to decode with: ``ε_β = ε``, decoder gain 0), so
the gain of the searched encoder scales (clipping instead of wrapping) is in "overload". The β
side-information term uses ``log2(k)/d``; ``R_eff`` rounds the per-vector bit count up, so the
terms add up to ``gap_mse`` up to that rounding. ``gap_matmul − gap_mse`` is the
matmul-specific remainder (errors correlated with the reproduction; ≈ 0 for ``_mmse``).

**Entropy-coded β index** (columns ``H_idx``, ``huff``, ``gap_huff``): the index distribution
on N(0, 1) blocks is not uniform; a static Huffman code built on a *calibration* sample
(another key) and charged its expected length on the evaluation blocks gives a variable-length
β code with ``R = log2 q + L̄/d``; ``gap_huff`` is ``gap_matmul`` at that rate. ``H_idx`` is the
empirical entropy (the ideal code length). Neither is the registry's ``rate()`` (fixed length).

**β options** (``--beta-options LATTICE Q``): the single-β statistics ``‖y‖², ⟨y, v⟩, ‖v‖²``
of Voronoi-code points on a 40-point β grid (``nested.grid_stats``), on a training and an
independent test set of Gaussian blocks; for k ∈ {2, 4, 8, 16} scales, β shared by g ∈ {1, 2,
4} consecutive blocks and plain (γ = β) or MMSE decoder scales, the β/γ sets are searched on
the training set (``nested.search_from_stats``) and the MSE gap measured on the test set with a
fixed-length (``log2(k)/(gd)``), Huffman (code from the training set) and entropy β index.

**Search options** (``--search-options LATTICE Q``): the same statistics on a 48-point grid
``[0.5, 3]·√d/(q ρ_cov)``; for k ∈ {2, 3, 4} decoder scales and s ∈ {12, 48} encoder scales
(``nested.search_encoder_scales`` on the training set) the MSE gap on the test set with a
fixed-length index, and with an entropy-coded index chosen rate–distortion-optimally: the pair
minimizing ``err + λ·ℓ_j`` with ``ℓ_j = −log2 p_j``, p and γ iterated on the training set (λ = 0:
least error), then *frozen*; the test rate is the ideal code length under that fixed p
(``ideal``) or the length of the Huffman code of p (``huffman``, selection with its lengths).

Usage (n must be a multiple of every block length d):
  python -m rdq.experiments.nested_gap --names leech_nested_q4 leech_nested_q4_mmse --n 240
  python -m rdq.experiments.nested_gap --names leech_nested_q4_k3_s12 --n 240
  python -m rdq.experiments.nested_gap --beta-options leech 4
  python -m rdq.experiments.nested_gap --search-options leech 4 --blocks 4096
"""

from __future__ import annotations

import argparse
import heapq
import math

import numpy as np


def huffman_lengths(p) -> np.ndarray:
  """Code-word lengths of a binary Huffman code for probabilities ``p`` (0 for p = 0; a single
  used symbol gets length 1)."""
  p = np.asarray(p, np.float64)
  used = [i for i in range(len(p)) if p[i] > 0]
  out = np.zeros(len(p))
  if len(used) == 1:
    out[used[0]] = 1
    return out
  heap = [(p[i], i, (i,)) for i in used]
  heapq.heapify(heap)
  tie = len(p)
  while len(heap) > 1:
    a, b = heapq.heappop(heap), heapq.heappop(heap)
    for i in a[2] + b[2]:
      out[i] += 1
    heapq.heappush(heap, (a[0] + b[0], tie, a[2] + b[2]))
    tie += 1
  return out


def _entropy(p) -> float:
  p = np.asarray(p, np.float64)
  p = p[p > 0]
  return float(-(p * np.log2(p)).sum())


def decompose(name: str, n: int, a: int, b: int, num_samples: int, seed: int, blocks: int) -> dict:
  import dataclasses

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
  d_mm, se = float(est.mean), float(est.stderr)

  def gap_of(rate, dist):
    return rate - float(limits.generic_matmul_rate(min(max(dist, 1e-12), 1.0)))

  gap_mm = gap_of(r_eff, d_mm)
  gap_mm_ci = (gap_of(r_eff, d_mm - 1.96 * se), gap_of(r_eff, d_mm + 1.96 * se))
  # MSE, chosen scales and index distribution on Gaussian rows of n entries (as in the matmul).
  rows = blocks * d // n + 1
  x = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 1), (rows, n), jnp.float32)
  enc = jax.jit(qz.encode)
  code = enc(x)
  row_err = np.asarray(jnp.mean((x - qz.decode(code)) ** 2, axis=-1), np.float64)
  eps = float(row_err.mean())
  eps_se = float(row_err.std(ddof=1) / math.sqrt(rows))
  plain = dataclasses.replace(qz, gains=None)
  eps_beta = float(jnp.mean((x - plain.decode(code)) ** 2))
  idx = np.asarray(code.beta_index).ravel()
  beta = np.asarray(qz.betas, np.float64)[idx]
  eps_gran = g * lat.volume ** (2.0 / d) * float(np.mean(beta**2))
  gap_mse = r_eff - 0.5 * math.log2(1.0 / eps)
  gap_mse_ci = (r_eff - 0.5 * math.log2(1.0 / (eps - 1.96 * eps_se)), r_eff - 0.5 * math.log2(1.0 / (eps + 1.96 * eps_se)))
  shaping = 0.5 * math.log2(2 * math.pi * math.e * g)
  side = math.log2(qz.k) / d
  finite_q = 0.5 * math.log2(qz.q**2 * eps_gran / (2 * math.pi * math.e * g))
  overload = 0.5 * math.log2(eps_beta / eps_gran)
  dec_gain = 0.5 * math.log2(eps / eps_beta)
  # Entropy-coded β index: Huffman code from a calibration sample (another key), length on these blocks.
  xc = jax.random.normal(jax.random.fold_in(jax.random.key(seed), 2), (rows, n), jnp.float32)
  p_cal = np.bincount(np.asarray(enc(xc).beta_index).ravel(), minlength=qz.k) / idx.size
  lens = huffman_lengths(np.maximum(p_cal, 1e-12) if (p_cal == 0).any() else p_cal)
  huff = float(lens[idx].mean())
  h_idx = _entropy(np.bincount(idx, minlength=qz.k) / idx.size)
  r_huff = math.log2(qz.q) + huff / d + (r_eff - math.log2(qz.q) - side)  # keeps any norm side bits
  return dict(name=name, rate=r_eff, d=d_mm, d_se=se, gap_matmul=gap_mm, gap_matmul_ci=gap_mm_ci, eps=eps,
              gap_mse=gap_mse, gap_mse_ci=gap_mse_ci, shaping=shaping, side=side, finite_q=finite_q,
              overload=overload, dec_gain=dec_gain, H_idx=h_idx, huff=huff, rate_huff=r_huff,
              gap_huff=gap_of(r_huff, d_mm))


def beta_options(lattice_name: str, q: int, blocks: int, seed: int, ks=(2, 4, 8, 16), groups=(1, 2, 4)) -> list[dict]:
  """MSE gaps of the β-index options (module docstring, ``--beta-options``)."""
  import jax
  import jax.numpy as jnp

  from rdq.quantizers.lattice import lattice_from_name
  from rdq.quantizers.nested import grid_stats, search_from_stats

  lat = lattice_from_name(lattice_name)
  d = lat.dim
  rho = lat.covering_radius or math.sqrt(d) / 2.0
  ref = math.sqrt(d) / (q * rho)
  bg = np.geomspace(0.5 * ref, 2.5 * ref, 40)
  key = jax.random.key(seed)
  sets = [grid_stats(lat, q, bg, jax.random.normal(jax.random.fold_in(key, i), (blocks, d), jnp.float32)) for i in (10, 11)]
  (yy, yv, vv), (ty, tv, tw) = sets
  out = []
  for group in groups:
    for k in ks:
      for mmse in (False, True):
        betas, gains, _ = search_from_stats(bg, yy, yv, vv, k, group=group, mmse=mmse)
        sel = [int(np.argmin(np.abs(bg - b))) for b in betas]

        def pick(yy_, yv_, vv_, sel=sel, gains=gains, group=group):
          nb = len(yy_) // group * group
          gm = np.asarray(gains)
          e = (yy_[:nb, None] - 2 * gm * yv_[:nb][:, sel] + gm**2 * vv_[:nb][:, sel]).reshape(nb // group, group, -1).sum(1)
          i = np.argmin(e, axis=1)
          return i, e[np.arange(len(i)), i].sum() / (nb * d)

        i_tr, _ = pick(yy, yv, vv)
        i_te, eps = pick(ty, tv, tw)
        lens = huffman_lengths(np.bincount(i_tr, minlength=k) / len(i_tr) + 1e-12)
        p_te = np.bincount(i_te, minlength=k) / len(i_te)
        base = math.log2(q) - 0.5 * math.log2(1.0 / eps)
        out.append(dict(k=k, group=group, mmse=mmse, eps=eps, gap_fixed=base + math.log2(k) / (group * d),
                        gap_huff=base + float(lens[i_te].mean()) / (group * d), gap_entropy=base + _entropy(p_te) / (group * d),
                        H_idx=_entropy(p_te), betas=betas, gains=gains))
  return out


def search_options(lattice_name: str, q: int, blocks: int, seed: int, ks=(2, 3, 4), ss=(12, 48),
                   lams=(0.0, 0.5, 1.0)) -> list[dict]:
  """MSE gaps of encoder-search codes with fixed-length and entropy-coded β indices
  (module docstring, ``--search-options``)."""
  import jax
  import jax.numpy as jnp

  from rdq.quantizers.lattice import lattice_from_name
  from rdq.quantizers.nested import grid_stats, search_encoder_scales

  lat = lattice_from_name(lattice_name)
  d = lat.dim
  ref = math.sqrt(d) / (q * (lat.covering_radius or math.sqrt(d) / 2.0))
  bg = np.geomspace(0.5 * ref, 3.0 * ref, 48)
  key = jax.random.key(seed)
  (yy, yv, vv), (ty, tv, tw) = [grid_stats(lat, q, bg, jax.random.normal(jax.random.fold_in(key, i), (blocks, d), jnp.float32))
                                for i in (20, 21)]

  def choose(yy_, yv_, vv_, sel, g, lens, lam):  # least err + λ·ℓ_j over (σ, j); returns (j, σ index, err)
    e = yy_[:, None, None] - 2 * g * yv_[:, sel, None] + g**2 * vv_[:, sel, None]
    flat = (e + lam * lens).reshape(len(yy_), -1).argmin(axis=1)
    si, j = flat // len(g), flat % len(g)
    return j, si, e.reshape(len(yy_), -1)[np.arange(len(yy_)), flat]

  out = []
  for k in ks:
    for s in ss:
      gam, sig, _ = search_encoder_scales(bg, yy, yv, vv, k, s)
      sel = np.asarray([int(np.argmin(np.abs(bg - x))) for x in sig])
      for lam_f in lams:
        g, lens = np.asarray(gam), np.full(k, math.log2(k))
        lam = 0.0
        for _ in range(20 if lam_f > 0 else 1):  # Lloyd with the rate term: p from the choices, γ centroids
          j, si, e = choose(yy, yv, vv, sel, g, lens, lam)
          lam = lam_f * 2 * math.log(2) * float(e.mean()) / d  # ∂(½log2 ε)/∂ε = 1/(2 ln2 ε): one bit of index ≈ 2 ln2 ε of error
          if lam_f == 0:
            break
          p = np.bincount(j, minlength=k) / len(j)
          lens = -np.log2(np.maximum(p, 1e-6))
          for jj in range(k):
            m = j == jj
            if m.any():
              g[jj] = yv[np.flatnonzero(m), sel[si[m]]].sum() / vv[np.flatnonzero(m), sel[si[m]]].sum()
        j_tr, _, _ = choose(yy, yv, vv, sel, g, lens, lam)
        p_tr = np.bincount(j_tr, minlength=k) / len(j_tr)
        ideal = -np.log2(np.maximum(p_tr, 1e-6))  # a static model fixed on the training blocks
        huff = huffman_lengths(p_tr + 1e-12)
        j_te, _, e_te = choose(ty, tv, tw, sel, g, ideal if lam_f > 0 else lens, lam)
        base = math.log2(q) - 0.5 * math.log2(d / float(e_te.mean()))
        j_h, _, e_h = choose(ty, tv, tw, sel, g, huff, lam)
        out.append(dict(k=k, s=s, lam=lam_f, eps=float(e_te.mean()) / d, gap_fixed=base + math.log2(k) / d,
                        gap_ideal=base + float(ideal[j_te].mean()) / d,
                        gap_huff=math.log2(q) - 0.5 * math.log2(d / float(e_h.mean())) + float(huff[j_h].mean()) / d,
                        H_idx=_entropy(np.bincount(j_te, minlength=k) / len(j_te))))
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--names", nargs="+", help="registry names of nested-lattice quantizers")
  p.add_argument("--beta-options", nargs=2, metavar=("LATTICE", "Q"), help="compare the β-index options (MSE gaps)")
  p.add_argument("--search-options", nargs=2, metavar=("LATTICE", "Q"),
                 help="encoder-search codes: fixed-length vs entropy-coded (rate-distortion) β index (MSE gaps)")
  p.add_argument("--n", type=int, default=240, help="inner dimension (multiple of the block lengths)")
  p.add_argument("--a", type=int, default=16)
  p.add_argument("--b", type=int, default=16)
  p.add_argument("--num-samples", type=int, default=32, help="(A, B) pairs for the matmul distortion")
  p.add_argument("--blocks", type=int, default=1 << 13, help="Gaussian blocks for the MSE terms")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  if not args.names and not args.beta_options and not args.search_options:
    p.error("give --names, --beta-options and/or --search-options")
  if args.search_options:
    lat, q = args.search_options[0], int(args.search_options[1])
    print(f"search options: {lat}, q={q}, {args.blocks} training + {args.blocks} test blocks, seed={args.seed} (MSE gaps, bits)")
    print(f"{'k':>3} {'s':>3} {'λ':>4} {'eps':>9} {'H_idx':>6} {'fixed':>7} {'ideal':>7} {'huffman':>8}")
    for r in search_options(lat, q, args.blocks, args.seed):
      print(f"{r['k']:3d} {r['s']:3d} {r['lam']:4.1f} {r['eps']:9.5f} {r['H_idx']:6.3f} {r['gap_fixed']:7.4f} "
            f"{r['gap_ideal']:7.4f} {r['gap_huff']:8.4f}", flush=True)
  if args.beta_options:
    lat, q = args.beta_options[0], int(args.beta_options[1])
    print(f"β options: {lat}, q={q}, {args.blocks} training + {args.blocks} test blocks, seed={args.seed} (MSE gaps, bits)")
    print(f"{'k':>3} {'g':>2} {'γ':>5} {'eps':>9} {'H_idx':>6} {'fixed':>7} {'huffman':>8} {'entropy':>8}")
    for r in beta_options(lat, q, args.blocks, args.seed):
      print(f"{r['k']:3d} {r['group']:2d} {'mmse' if r['mmse'] else 'β':>5} {r['eps']:9.5f} {r['H_idx']:6.3f} "
            f"{r['gap_fixed']:7.4f} {r['gap_huff']:8.4f} {r['gap_entropy']:8.4f}", flush=True)
  if not args.names:
    return
  cols = ("rate", "gap_matmul", "gap_mse", "shaping", "side", "finite_q", "overload", "dec_gain", "H_idx", "rate_huff", "gap_huff")
  print(f"n={args.n} a={args.a} b={args.b} num_samples={args.num_samples} blocks={args.blocks} seed={args.seed}")
  print(f"{'name':26s} {'D (±se)':>20s} " + " ".join(f"{c:>10s}" for c in cols) + "   gap_matmul 95% CI   gap_mse 95% CI")
  for name in args.names:
    r = decompose(name, args.n, args.a, args.b, args.num_samples, args.seed, args.blocks)
    print(f"{name:26s} {r['d']:.5f} ± {r['d_se']:.5f}   " + " ".join(f"{r[c]:10.4f}" for c in cols)
          + "   [{:.3f}, {:.3f}]".format(*r["gap_matmul_ci"]) + "   [{:.3f}, {:.3f}]".format(*r["gap_mse_ci"]), flush=True)


if __name__ == "__main__":
  main()
