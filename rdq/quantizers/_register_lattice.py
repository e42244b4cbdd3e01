"""Registry entries for nested-lattice (Voronoi) quantizers.

Name grammar (``rdq.quantizers.get``)::

  <lattice>_nested_q<q>[_k<k>][_mmse][_s<s>][_norm[_fp32|_bf16|_fp16]][_first][_dither]

* ``<lattice>``: ``z`` (scalar), ``z<n>``, ``d<n>``, ``d<n>star``, ``e8``, ``bw16`` or ``leech``;
* ``q``: nesting ratio, ``log2 q`` bits per entry; ``k``: number of scales β per block
  (default: ``DEFAULT_K[lattice]``, the k with the least gap to Γ(R) in the search below);
* ``_mmse``: the decoder reconstructs with its own scale γ_j per β index (the centroid
  condition, ``NestedLatticeQuantizer.gains``) and the ``"mse"`` selection scores with γ; no
  rate cost. β and γ are searched jointly (``MMSE_BETAS``); only the tabulated (lattice, q, k)
  exist, and not with ``_dither``;
* ``_s<s>``: **encoder scale search** (``NestedLatticeQuantizer.search``): the encoder tries s
  scales σ (not sent) and picks the pair (σ, j) with the least ``‖y − γ_j v_σ‖²``; the k
  decoder scales γ_j (the sent index) are Lloyd centroids. The decoder is the plain one, so this
  only finds closer codewords of the same codebooks ``γ_j·(Λ ∩ qV)``: a block that overloads at
  σ = γ_j is clipped into the coarse cell at a larger σ instead of wrapping around, and fewer
  sent scales are needed. Tabulated (``SEARCH_SCALES``) only, not with ``_mmse``/``_first``/``_dither``;
* ``_norm``: per-vector RMS scale stored in bf16 (or the named format), 16/n bits per entry;
* ``_first``: NestQuant's ``first_beta`` selection instead of least error;
* ``_dither``: subtractive dither (needs a PRNG key).

**The β sets** (``BETAS``) were found with ``rdq.quantizers.nested.search_betas(lattice, q,
k, jax.random.key(0), num_blocks=1 << 16)``: least MSE per entry on iid N(0, 1) blocks with
least-error selection, a 256-point geometric grid and coordinate descent (rerun that call to
reproduce them; the BW16 rows used ``num_blocks=1 << 14``; the Λ24 rows
``search_beta_sets(LeechLattice(), q, (4, 8), jax.random.key(0), num_blocks=1 << 13,
grid=(0.5 * r, 4 * r, 64))`` with ``r = √24 / (4q)`` (k = 1, 2: ``(1, 2)``, ``1 << 11`` blocks, 96
points), the same search on a narrower grid, as the Λ24 decoder costs ~10⁵ operations per block;
2^11 blocks see too few overloads (rare at q = 16) and picked too small a largest β). They are in units of the input standard deviation (of the vector RMS with
``_norm``). For (lattice, q, k) not in the table the nearest tabulated q of the same lattice
and k is rescaled by ``q₀/q`` (β·q is nearly constant in q); an untabulated k spreads k
scales geometrically over ``[0.45, 1]·β*(k=1)``.
"""

from __future__ import annotations

import math

import numpy as np

from rdq.quantizers.lattice import lattice_from_name
from rdq.quantizers.nested import NestedLatticeQuantizer
from rdq.quantizers.registry import register

__all__ = ["BETAS", "DEFAULT_K", "MMSE_BETAS", "SEARCH_SCALES", "default_betas"]

# (lattice, q, k) -> β set; MSE per entry on N(0, 1) in the comments (search_betas, 2^16 blocks).
BETAS: dict[tuple[str, int, int], tuple[float, ...]] = {
    ("z", 4, 1): (2.0,),  # 0.40469
    ("z", 4, 2): (0.8611, 2.0551),  # 0.09142
    ("z", 8, 1): (0.9732,),  # 0.09858
    ("z", 8, 2): (0.4546, 1.0416),  # 0.02198
    ("z", 16, 1): (0.5425,),  # 0.02570
    ("z", 16, 2): (0.1984, 0.5425),  # 0.00520
    ("d4", 3, 4): (0.7637, 1.1327, 1.6128, 2.4247),  # 0.13974
    ("d4", 4, 1): (1.4433,),  # 0.28192
    ("d4", 4, 2): (0.8729, 1.6311),  # 0.11757
    ("d4", 4, 4): (0.6048, 0.8611, 1.1933, 1.7939),  # 0.07030
    ("d4", 5, 4): (0.4972, 0.6889, 0.9417, 1.4158),  # 0.04343
    ("d4", 6, 4): (0.4257, 0.5741, 0.7534, 1.1023),  # 0.02946
    ("d4", 7, 4): (0.3801, 0.5056, 0.6458, 0.9709),  # 0.02148
    ("d4", 8, 1): (0.7517,),  # 0.07010
    ("d4", 8, 2): (0.4365, 0.8046),  # 0.02739
    ("d4", 8, 4): (0.3065, 0.4134, 0.5352, 0.8729),  # 0.01644
    ("d4", 10, 4): (0.2419, 0.3262, 0.434, 0.6704),  # 0.01041
    ("d4", 12, 4): (0.2044, 0.2756, 0.3666, 0.5741),  # 0.00707
    ("d4", 14, 4): (0.1752, 0.2394, 0.3142, 0.4921),  # 0.00517
    ("d4", 16, 1): (0.4078,),  # 0.01960
    ("d4", 16, 2): (0.2182, 0.419),  # 0.00685
    ("d4", 16, 4): (0.1533, 0.2124, 0.2787, 0.4424),  # 0.00398
    ("e8", 3, 2): (1.4966, 2.5085),  # 0.22148
    ("e8", 3, 4): (1.0801, 1.4368, 1.8602, 2.6129),  # 0.16136
    ("e8", 4, 1): (1.6875,),  # 0.23344
    ("e8", 4, 2): (1.0924, 1.8062),  # 0.11598
    ("e8", 4, 4): (0.8211, 1.0631, 1.3577, 1.9071),  # 0.08156
    ("e8", 5, 2): (0.8858, 1.4647),  # 0.07175
    ("e8", 5, 4): (0.6659, 0.8505, 1.0715, 1.5257),  # 0.04965
    ("e8", 6, 2): (0.7184, 1.1879),  # 0.04860
    ("e8", 6, 4): (0.5474, 0.6991, 0.8809, 1.2714),  # 0.03341
    ("e8", 7, 2): (0.6075, 1.0044),  # 0.03476
    ("e8", 7, 4): (0.4692, 0.5993, 0.7448, 1.0751),  # 0.02412
    ("e8", 8, 1): (0.8324,),  # 0.05586
    ("e8", 8, 2): (0.5315, 0.8789),  # 0.02656
    ("e8", 8, 4): (0.4106, 0.5173, 0.6429, 0.9666),  # 0.01830
    ("e8", 10, 2): (0.431, 0.7127),  # 0.01683
    ("e8", 10, 4): (0.3285, 0.4138, 0.5214, 0.7733),  # 0.01163
    ("e8", 12, 2): (0.3544, 0.5939),  # 0.01161
    ("e8", 12, 4): (0.27, 0.3449, 0.4345, 0.6622),  # 0.00802
    ("e8", 14, 2): (0.3079, 0.5231),  # 0.00861
    ("e8", 14, 4): (0.2314, 0.2956, 0.3724, 0.5676),  # 0.00586
    ("e8", 16, 1): (0.4454,),  # 0.01556
    ("e8", 16, 2): (0.2731, 0.4833),  # 0.00660
    ("e8", 16, 4): (0.2025, 0.2586, 0.3215, 0.4833),  # 0.00445
    ("bw16", 4, 1): (0.9217,),  # 0.18029 (2^14 blocks)
    ("bw16", 4, 4): (0.5425, 0.6652, 0.8156, 1.0559),  # 0.08279 (2^14 blocks)
    ("bw16", 4, 8): (0.4424, 0.5068, 0.5651, 0.6215, 0.6835, 0.7517, 0.8611, 1.0559),  # 0.07448 (2^14 blocks)
    ("bw16", 8, 1): (0.4735,),  # 0.04377 (2^14 blocks)
    ("bw16", 8, 4): (0.2604, 0.3065, 0.3658, 0.4735),  # 0.01885 (2^14 blocks)
    ("bw16", 8, 8): (0.2242, 0.2534, 0.2787, 0.3065, 0.3371, 0.3708, 0.4134, 0.5068),  # 0.01660 (2^14 blocks)
    ("bw16", 16, 1): (0.2433,),  # 0.01143 (2^14 blocks)
    ("bw16", 16, 4): (0.1302, 0.1533, 0.1804, 0.2433),  # 0.00461 (2^14 blocks)
    ("bw16", 16, 8): (0.1121, 0.1284, 0.1394, 0.1512, 0.164, 0.178, 0.1984, 0.2433),  # 0.00402 (2^14 blocks)
    ("leech", 4, 1): (0.5216,),  # 0.14792 (2^11 blocks)
    ("leech", 4, 2): (0.4011, 0.5449),  # 0.09713 (2^11 blocks)
    ("leech", 4, 4): (0.3271, 0.3858, 0.455, 0.5925),  # 0.08071 (2^13 blocks)
    ("leech", 4, 8): (0.2866, 0.3165, 0.3494, 0.3858, 0.4121, 0.4402, 0.486, 0.5925),  # 0.07392 (2^13 blocks)
    ("leech", 8, 1): (0.2608,),  # 0.03574 (2^11 blocks)
    ("leech", 8, 2): (0.1919, 0.2608),  # 0.02253 (2^11 blocks)
    ("leech", 8, 4): (0.1635, 0.1866, 0.213, 0.2773),  # 0.01848 (2^13 blocks)
    ("leech", 8, 8): (0.1387, 0.1531, 0.169, 0.1806, 0.1929, 0.213, 0.2351, 0.2773),  # 0.01669 (2^13 blocks)
    ("leech", 16, 1): (0.1304,),  # 0.00897 (2^11 blocks)
    ("leech", 16, 2): (0.096, 0.1304),  # 0.00553 (2^11 blocks)
    ("leech", 16, 4): (0.0818, 0.0933, 0.1065, 0.1387),  # 0.00454 (2^13 blocks)
    ("leech", 16, 8): (0.0741, 0.0818, 0.0874, 0.0933, 0.0964, 0.103, 0.1137, 0.1387),  # 0.00408 (2^13 blocks)
}

# (lattice, q, k) -> (β set, decoder scales γ) of the ``_mmse`` codes, from
# ``rdq.quantizers.nested.search_betas_mmse(lattice, q, k, jax.random.key(0), num_blocks=1 << 13)``
# (40-point grid [0.5, 2.5]·√d/(q ρ_cov), 3 Lloyd rounds); training MSE per entry in the comments.
MMSE_BETAS: dict[tuple[str, int, int], tuple[tuple[float, ...], tuple[float, ...]]] = {
    ("leech", 4, 8): ((0.2843, 0.3218, 0.3495, 0.3795, 0.4122, 0.4476, 0.5066, 0.5976),
                      (0.2669, 0.2994, 0.3271, 0.3549, 0.3834, 0.4168, 0.4644, 0.5443)),  # 0.07138
    ("leech", 5, 8): ((0.2274, 0.2574, 0.2796, 0.3036, 0.3297, 0.3581, 0.3889, 0.4587),
                      (0.2194, 0.2466, 0.2685, 0.2901, 0.3136, 0.3392, 0.3719, 0.4290)),  # 0.04412
    ("leech", 8, 8): ((0.1422, 0.1544, 0.1677, 0.1821, 0.1978, 0.2148, 0.2333, 0.2867),
                      (0.1401, 0.1527, 0.1657, 0.1795, 0.1945, 0.2104, 0.2294, 0.2787)),  # 0.01655
    ("leech", 16, 8): ((0.0682, 0.0772, 0.0838, 0.0874, 0.0949, 0.1030, 0.1119, 0.1376),
                       (0.0680, 0.0770, 0.0835, 0.0873, 0.0946, 0.1026, 0.1116, 0.1366)),  # 0.00407
}

# (lattice, q, k, s) -> (decoder scales γ, encoder scales σ) of the ``_s<s>`` codes, from
# ``nested.search_encoder_scales(bg, *nested.grid_stats(LeechLattice(), q, bg, y), k, s)`` with
# ``bg = np.geomspace(0.5 * r, 3 * r, 48)``, ``r = √24 / (4q)`` (4 the covering radius in these coordinates) and
# ``y = jax.random.normal(jax.random.fold_in(jax.random.key(1), 77), (8192, 24))``; MSE per entry
# on an independent 8192-block test set (key 2) in the comments.
SEARCH_SCALES: dict[tuple[str, int, int, int], tuple[tuple[float, ...], tuple[float, ...]]] = {
    ("leech", 4, 3, 12): ((0.30123, 0.36104, 0.43172),
                          (0.30407, 0.32816, 0.34091, 0.36792, 0.38222, 0.39707, 0.4125, 0.44518, 0.48045, 0.51851,
                           0.55959, 0.6274)),  # 0.07381
    ("leech", 8, 4, 12): ((0.15284, 0.17601, 0.19748, 0.23045),
                          (0.15203, 0.15794, 0.16408, 0.17708, 0.18396, 0.19853, 0.20625, 0.23124, 0.24022, 0.24956,
                           0.26933, 0.29067)),  # 0.01732
}

# k used when a name has no ``_k``: least gap to Γ(R) in the generic-matmul search.
DEFAULT_K: dict[str, int] = {"z": 1, "d4": 4, "e8": 4, "bw16": 8, "leech": 8}


def default_betas(lattice: str, q: int, k: int) -> tuple[float, ...]:
  """The β set for ``(lattice, q, k)``: tabulated, or rescaled/spread (module docstring)."""
  if (lattice, q, k) in BETAS:
    return BETAS[(lattice, q, k)]
  same_k = [q0 for (lat, q0, k0) in BETAS if lat == lattice and k0 == k]
  if same_k:
    q0 = min(same_k, key=lambda q0: abs(math.log(q0 / q)))
    return tuple(b * q0 / q for b in BETAS[(lattice, q0, k)])
  one = [q0 for (lat, q0, k0) in BETAS if lat == lattice and k0 == 1]
  if one:
    q0 = min(one, key=lambda q0: abs(math.log(q0 / q)))
    b1 = BETAS[(lattice, q0, 1)][0] * q0 / q
  else:  # untabulated lattice: overload radius q·β·ρ_cov ≈ 1.2·√d
    lat = lattice_from_name(lattice)
    rho = lat.covering_radius or math.sqrt(lat.dim) / 2.0
    b1 = 1.2 * math.sqrt(lat.dim) / (q * rho)
  if k == 1:
    return (b1,)
  return tuple(float(b) for b in np.geomspace(0.45 * b1, b1, k))


def _nested(m) -> NestedLatticeQuantizer:
  lattice = m["lat"]
  q = int(m["q"])
  if m["k"] is not None:
    k = int(m["k"])
    if k < 1:
      raise ValueError(f"k={k} in {m.string!r} must be ≥ 1")
  else:
    k = DEFAULT_K.get(lattice, 1)
  norm = None
  if m["norm"] is not None:
    norm = m["normfmt"] or "bf16"
  betas, gains, search = default_betas(lattice, q, k), None, None
  if m["s"] is not None:
    key = (lattice, q, k, int(m["s"]))
    if m["mmse"] or m["first"] or m["dither"]:
      raise ValueError(f"{m.string!r}: _s<s> (encoder scale search) takes no _mmse, _first or _dither")
    if key not in SEARCH_SCALES:
      raise ValueError(f"{m.string!r}: no _s scales for (lattice, q, k, s) = {key}; tabulated: {sorted(SEARCH_SCALES)} "
                       "(search them with nested.search_encoder_scales)")
    betas, search = SEARCH_SCALES[key]
  if m["mmse"]:
    if m["dither"]:
      raise ValueError(f"{m.string!r}: _mmse decoder scales are fitted for the undithered code; drop _dither")
    if (lattice, q, k) not in MMSE_BETAS:
      raise ValueError(f"{m.string!r}: no _mmse scales for (lattice, q, k) = {(lattice, q, k)}; "
                       f"tabulated: {sorted(MMSE_BETAS)} (search them with nested.search_betas_mmse)")
    betas, gains = MMSE_BETAS[(lattice, q, k)]
  return NestedLatticeQuantizer(
      lattice=lattice_from_name(lattice),
      q=q,
      betas=betas,
      beta_select="first" if m["first"] else "mse",
      norm=norm,
      dither=bool(m["dither"]),
      gains=gains,
      search=search,
  )


register(
    r"(?P<lat>z\d*|d\d+(?:star)?|e8|bw16|leech)_nested_q(?P<q>\d+)(?:_k(?P<k>\d+))?(?P<mmse>_mmse)?(?:_s(?P<s>\d+))?"
    r"(?P<norm>_norm(?:_(?P<normfmt>fp32|bf16|fp16))?)?(?P<first>_first)?(?P<dither>_dither)?",
    _nested,
    # Examples (each runs through the registry contract suite; kept few, compiles are costly).
    ("z_nested_q16", "d4_nested_q8", "e8_nested_q4", "e8_nested_q16", "e8_nested_q16_norm", "e8_nested_q14_k4_first"),
    "<z|d<n>|d<n>star|e8|bw16|leech>_nested_q<q>[_k<k>][_mmse][_s<s>][_norm[_fp32|_bf16|_fp16]][_first][_dither]: Voronoi code Λ/qΛ, "
    "log2 q bits/entry + log2(k)/d for the per-block β index (+16/n with _norm); _mmse: decoder scales γ (centroids); _s<s>: s encoder scales searched (not sent)",
)
