"""Nested-lattice (Voronoi) codes with NestQuant-style overload handling.

**Voronoi code** ``Λ / qΛ`` (Conway & Sloane 1983): the fine lattice Λ (dimension d, generator
rows B) and the coarse lattice ``qΛ`` (integer q ≥ 2) give ``q^d`` codewords, one per coset of
``qΛ`` in Λ, i.e. ``log2 q`` bits per dimension. A lattice point ``t = zB`` is sent as its
coordinates ``c = z mod q ∈ {0, …, q−1}^d``; the decoder maps ``c`` back to the coset
representative in the Voronoi cell of ``qΛ``:

.. math::
   \\mathrm{dec}(c) = cB - q\\, Q_\\Lambda(cB / q) = t \\bmod q\\Lambda.

``enc(dec(c)) = c`` for every ``c`` (exactly: ``dec(c) − cB ∈ qΛ``).

**Quantizer** (acting on the last axis, split into blocks of d entries). With a scale β the
block ``y`` is quantized to ``β · dec(enc(Q_Λ(y/β)))``; it is reproduced up to the fine
lattice's granular error unless ``Q_Λ(y/β)`` falls outside the Voronoi cell of ``qΛ``
(*overload*, the error is then large). As in NestQuant, a set of scales
``β_1 < … < β_k`` is available and each block picks one (``beta_select``):

* ``"mse"`` (NestQuant's ``try_all``): the β with the least squared error (first on ties);
* ``"first"`` (NestQuant's ``first_beta``): the smallest β without overload (else ``β_k``).

**Encoder scale search** (``search``): the encoder may also try scales ``σ_1 < … < σ_s`` that are
not sent, and keep the pair ``(σ, j)`` with the least ``‖y − γ_j v_σ‖²`` (``v_σ`` the Voronoi-code
point of ``y/σ``, γ the decoder scales below), sending only j. The decoder and the codebooks
``γ_j (Λ ∩ qV)`` are unchanged; the encoder only finds closer codewords: a block that overloads at
``σ = γ_j`` is clipped into the coarse cell (a larger σ decoded at γ_j) instead of wrapping
around, so fewer sent scales are needed (``search_encoder_scales`` fits γ and σ).

The index costs ``log2 k`` bits per block. Optionally the decoder reconstructs with its own
scales ``γ_1 … γ_k`` (``gains``; ``β_j v`` becomes ``γ_j v``, and ``"mse"`` selection scores
``‖y − γ_j v_j‖²``): the centroid condition of Lloyd's decoder per β index,
``γ_j = E[⟨y, v⟩ | j] / E[‖v‖² | j]``, fitted on N(0, 1) blocks (``search_betas_mmse``). It
costs no rate (k constants of the format) and makes the error orthogonal to the reproduction,
which is what the matmul limit Γ(R) assumes (``E‖x̂‖² = (1 − ε)E‖x‖²``). Optionally each vector (the whole last axis, e.g.
one row of ``Aᵀ`` in a matmul) is first divided by its RMS ``s = ‖x‖/√n``, stored in
``norm`` format (fp32/bf16/fp16) — NestQuant's per-vector norm scaling, so β is in units of
the vector's RMS. Optionally a subtractive dither ``z`` uniform on the fine Voronoi cell,
drawn from a PRNG key shared by encoder and decoder: ``t = Q_Λ(y/β + z)``, reconstruction
``β((cB − z) mod qΛ)`` (Erez & Zamir 2004).

**Rate** (bits per entry, everything counted): nominal ``log2 q``; side information
``(⌈n log2 q + (n/d) log2 k⌉ − n log2 q)/n`` per vector of n entries (the codes and β indices
of one vector enumerated jointly: ``log2(k)/d`` when q and k are powers of two) plus
``bits(norm)/n`` for the per-vector scale. A fixed-length code per block costs
``⌈d log2 q⌉ + ⌈log2 k⌉`` bits, the same when q and k are powers of two.

Bad input: n not a multiple of d, q < 2 or not an int, empty/unsorted/non-positive β,
non-finite input to ``encode`` → ``ValueError``/``TypeError`` naming the argument.

References:
  J. H. Conway and N. J. A. Sloane, "A fast encoding method for lattice codes and
  quantizers", IEEE Trans. IT 29(6):820–824, 1983 (Voronoi codes, encoding by ``mod q``).
  K. Savkin, E. Porat, O. Ordentlich, Y. Polyanskiy, "NestQuant: nested lattice quantization
  for matrix products and LLMs", ICML 2025, arXiv 2502.09720 (E8 Voronoi codes, multiple β
  per 8-block chosen by least error or first non-overloaded, per-vector norm scaling).
  U. Erez and R. Zamir, "Achieving ½log(1+SNR) on the AWGN channel with lattice encoding and
  decoding", IEEE Trans. IT 50(10), 2004 (subtractive dither, ``mod Λ`` reduction).
  O. Ordentlich and Y. Polyanskiy, "Optimal quantization for matrix multiplication",
  arXiv 2410.13780 (nested-lattice quantizers for matmul; the limit Γ(R)).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Integer, PRNGKeyArray

from rdq.quantizers._scales import SCALE_BITS, SCALE_DTYPES, round_scale
from rdq.quantizers.base import Rate, check_finite, check_input, check_last_axis_divisible, check_rate_shape, eager_jit
from rdq.quantizers.lattice import Lattice, lattice_from_name

__all__ = [
    "NestedCode", "NestedLatticeQuantizer", "VoronoiCode", "nested_dot", "search_beta_sets", "search_betas",
    "search_betas_mmse", "grid_stats", "search_from_stats", "search_encoder_scales",
]

_NORM_FORMATS = ("fp32", "bf16", "fp16")


def _check_q(q) -> int:
  if isinstance(q, bool) or not isinstance(q, (int, np.integer)):
    raise TypeError(f"q={q!r} must be an integer (the nesting ratio of Λ / qΛ); got {type(q).__name__}")
  if q < 2:
    raise ValueError(f"q={q} must be ≥ 2 (q = 1 has a single codeword)")
  return int(q)


@dataclasses.dataclass(frozen=True)
class VoronoiCode:
  """The Voronoi code ``Λ / qΛ``: lattice points ↔ coordinates mod q (module docstring).

  Attributes:
    lattice: the fine lattice Λ.
    q: nesting ratio, integer ≥ 2; ``q^d`` codewords, ``log2 q`` bits per dimension.
  """

  lattice: Lattice
  q: int

  def __post_init__(self):
    if not isinstance(self.lattice, Lattice):
      raise TypeError(f"lattice must be an rdq Lattice, got {type(self.lattice).__name__}")
    object.__setattr__(self, "q", _check_q(self.q))

  @property
  def code_dtype(self):
    return jnp.uint8 if self.q <= 256 else jnp.int32

  def encode(self, t: Float[Array, "*batch d"]) -> Integer[Array, "*batch d"]:
    """Coordinates mod q of lattice points ``t`` (last axis of length d)."""
    z = self.lattice.coordinates(t)
    return jnp.mod(z, self.q).astype(self.code_dtype)

  def reduce(self, y: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
    """``y mod qΛ = y − q Q_Λ(y / q)``: the representative in the Voronoi cell of ``qΛ``."""
    return y - self.q * self.lattice.closest_point(y / self.q)

  def decode(self, c: Integer[Array, "*batch d"], dtype=jnp.float32) -> Float[Array, "*batch d"]:
    """The coset representative ``cB mod qΛ`` of codes ``c``, in exact integer arithmetic:
    with ``m`` the lattice denominator, ``w = c·(mB)`` is an integer vector and
    ``cB − q Q_Λ(cB/q) = (w − mq·Q_Λ(w/(mq)))/m`` (ties on the boundary of ``qV`` resolved by
    the lattice's tie rule, independently of compilation)."""
    lat = self.lattice
    m = lat.denominator
    mb = np.rint(m * lat.generator()).astype(np.int32)
    w = c.astype(jnp.int32) @ jnp.asarray(mb)
    coarse = lat.closest_point_rational(w, m * self.q, dtype=jnp.float32)
    return ((w.astype(jnp.float32) - (m * self.q) * coarse) / m).astype(dtype)


class NestedCode(NamedTuple):
  """Compact code of a ``NestedLatticeQuantizer``.

  Attributes:
    codes: Voronoi-code coordinates in ``[0, q)``, same shape as the input ``(*batch, n)``
      (uint8 for q ≤ 256).
    beta_index: index of the chosen β per block, ``(*batch, n // d)``, uint8.
    scale: per-vector RMS scale ``(*batch, 1)`` in the ``norm`` dtype, or ``None``.
  """

  codes: Integer[Array, "*batch n"]
  beta_index: Integer[Array, "*batch blocks"]
  scale: Array | None


@dataclasses.dataclass(frozen=True)
class NestedLatticeQuantizer:
  """Nested-lattice (Voronoi) quantizer with k scales per block (module docstring).

  Attributes:
    lattice: fine lattice Λ (``Lattice`` or a name such as ``"e8"``, ``"d4"``, ``"z"``).
    q: nesting ratio (integer ≥ 2): ``log2 q`` bits per entry before side information.
    betas: increasing positive scales ``β_1 < … < β_k`` of the fine lattice, in units of the
      input (of the vector's RMS when ``norm`` is set). NestQuant's ``β0`` values are ``q·β``.
    beta_select: ``"mse"`` (least error) or ``"first"`` (smallest non-overloaded β).
    norm: ``None`` (no per-vector scale) or the storage format of the per-vector RMS scale:
      ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    dither: subtractive dither uniform on the fine cell; needs a ``key`` in ``quantize``,
      ``encode`` and ``decode`` (the same key for both).
    gains: ``None`` (reconstruct with β) or the decoder's scale γ_j per β index (k positive
      floats, same order as ``betas``): reproduction ``γ_j v``, and ``"mse"`` selection scores
      ``‖y − γ_j v_j‖²`` (module docstring; ``search_betas_mmse``). No rate cost.
    search: ``None`` or increasing encoder scales σ (not sent; needs ``beta_select="mse"``): the
      encoder keeps the pair (σ, j) with the least ``‖y − γ_j v_σ‖²`` (module docstring;
      ``search_encoder_scales``). No rate cost; s closest-point searches per block instead of k.
  """

  lattice: Lattice
  q: int
  betas: tuple[float, ...]
  beta_select: Literal["mse", "first"] = "mse"
  norm: str | None = None
  dither: bool = False
  gains: tuple[float, ...] | None = None
  search: tuple[float, ...] | None = None

  def __post_init__(self):
    if isinstance(self.lattice, str):
      object.__setattr__(self, "lattice", lattice_from_name(self.lattice))
    if not isinstance(self.lattice, Lattice):
      raise TypeError(f"lattice must be an rdq Lattice or a lattice name, got {type(self.lattice).__name__}")
    object.__setattr__(self, "q", _check_q(self.q))
    betas = self.betas
    if isinstance(betas, (int, float)):
      raise TypeError(f"betas={betas!r} must be a sequence of floats, e.g. (0.2,) or (0.2, 0.3)")
    betas = tuple(float(b) for b in betas)
    if len(betas) == 0:
      raise ValueError("betas must hold at least one scale")
    if len(betas) > 256:
      raise ValueError(f"at most 256 scales (uint8 index); got {len(betas)}")
    if not all(math.isfinite(b) and b > 0 for b in betas):
      raise ValueError(f"betas={betas} must be positive and finite")
    if any(b1 >= b2 for b1, b2 in zip(betas, betas[1:])):
      raise ValueError(f"betas={betas} must be strictly increasing (β_1 < … < β_k)")
    object.__setattr__(self, "betas", betas)
    if self.beta_select not in ("mse", "first"):
      raise ValueError(f"beta_select={self.beta_select!r} must be 'mse' or 'first'")
    if self.norm is not None and self.norm not in _NORM_FORMATS:
      raise ValueError(f"norm={self.norm!r} must be None or one of {_NORM_FORMATS}")
    if not isinstance(self.dither, bool):
      raise TypeError(f"dither={self.dither!r} must be a bool")
    if self.gains is not None:
      if isinstance(self.gains, (int, float)):
        raise TypeError(f"gains={self.gains!r} must be None or a sequence of k floats")
      gains = tuple(float(g) for g in self.gains)
      if len(gains) != len(betas):
        raise ValueError(f"gains={gains} must hold one decoder scale per β (k={len(betas)})")
      if not all(math.isfinite(g) and g > 0 for g in gains):
        raise ValueError(f"gains={gains} must be positive and finite")
      object.__setattr__(self, "gains", gains)
    if self.search is not None:
      if isinstance(self.search, (int, float)):
        raise TypeError(f"search={self.search!r} must be None or a sequence of encoder scales")
      search = tuple(float(b) for b in self.search)
      if len(search) == 0 or not all(math.isfinite(b) and b > 0 for b in search):
        raise ValueError(f"search={search} must hold at least one positive finite encoder scale")
      if any(b1 >= b2 for b1, b2 in zip(search, search[1:])):
        raise ValueError(f"search={search} must be strictly increasing")
      if self.beta_select != "mse":
        raise ValueError("search (encoder scales) needs beta_select='mse' (least error over scale pairs)")
      object.__setattr__(self, "search", search)

  # ----------------------------------------------------------------------------- helpers
  @property
  def dim(self) -> int:
    """Block length d (the lattice dimension)."""
    return self.lattice.dim

  @property
  def k(self) -> int:
    """Number of scales."""
    return len(self.betas)

  @property
  def recon_scales(self) -> tuple[float, ...]:
    """The decoder's scale per β index: ``gains`` if set, else ``betas``."""
    return self.betas if self.gains is None else self.gains

  @property
  def voronoi(self) -> VoronoiCode:
    return VoronoiCode(self.lattice, self.q)

  def _check_input(self, x: Array, key=None) -> None:
    check_input(x, key=key)  # dtype, rank, emptiness and key: the checks every quantizer runs
    check_last_axis_divisible(x.shape, self.dim, name=f"lattice dimension d ({self.lattice.name})")

  def _dither(self, key: PRNGKeyArray | None, block_shape: tuple[int, ...]) -> Array:
    if not self.dither:
      return jnp.zeros((), jnp.float32)
    if key is None:
      raise ValueError("dither=True needs a PRNG key (the same one for encode and decode)")
    return self.lattice.sample_cell(key, block_shape[:-1])

  def _scale(self, x: Array) -> Array | None:
    if self.norm is None:
      return None
    rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True))
    return round_scale(rms, self.norm)

  def _blocks(self, x: Array) -> Array:
    return x.reshape(x.shape[:-1] + (x.shape[-1] // self.dim, self.dim))

  def _encode(self, x: Array, key: PRNGKeyArray | None) -> NestedCode:
    self._check_input(x, key)
    x32 = x.astype(jnp.float32)
    s = self._scale(x32)
    y = x32 if s is None else x32 / jnp.where(s > 0, s, 1.0)
    yb = self._blocks(y)
    z = self._dither(key, yb.shape)
    z = z[..., None, :] if self.dither else z  # broadcast over the encoder scales
    vc = self.voronoi
    enc = self.betas if self.search is None else self.search
    betas = jnp.asarray(enc, jnp.float32)[:, None]  # (k or s, 1)
    # All encoder scales at once: (*batch, blocks, k or s, d).
    t = self.lattice.closest_point(yb[..., None, :] / betas + z)
    codes = vc.encode(t)
    v = vc.decode(codes) - z
    v = vc.reduce(v) if self.dither else v
    if self.search is not None:  # least ‖y − γ_j v_σ‖² over all (σ, j) pairs, first on ties (σ-major)
      gains = jnp.asarray(self.recon_scales, jnp.float32)[:, None]  # (k, 1)
      errs = jnp.sum((yb[..., None, None, :] - gains * v[..., :, None, :]) ** 2, axis=-1)  # (..., s, k)
      flat = jnp.argmin(errs.reshape(errs.shape[:-2] + (-1,)), axis=-1)
      idx, sel = flat % self.k, flat // self.k
      chosen = jnp.take_along_axis(codes, sel[..., None, None], axis=-2)[..., 0, :]
      scale = None if s is None else s.astype(SCALE_DTYPES[self.norm])
      return NestedCode(codes=chosen.reshape(x.shape), beta_index=idx.astype(jnp.uint8), scale=scale)
    if self.beta_select == "mse":
      gains = jnp.asarray(self.recon_scales, jnp.float32)[:, None]
      errs = jnp.sum((yb[..., None, :] - gains * v) ** 2, axis=-1)
      idx = jnp.argmin(errs, axis=-1)  # first on ties
    else:
      ok = jnp.all(v == t - z, axis=-1)
      idx = jnp.where(jnp.any(ok, axis=-1), jnp.argmax(ok, axis=-1), self.k - 1)
    chosen = jnp.take_along_axis(codes, idx[..., None, None], axis=-2)[..., 0, :]
    scale = None if s is None else s.astype(SCALE_DTYPES[self.norm])
    return NestedCode(codes=chosen.reshape(x.shape), beta_index=idx.astype(jnp.uint8), scale=scale)

  # -------------------------------------------------------------------------- protocol
  @eager_jit(precheck=lambda self, x, key=None: check_finite(jnp.asarray(x)))  # what encode checks first
  def encode(self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None) -> NestedCode:
    """Voronoi coordinates, β indices and (optionally) per-vector scales.

    Args:
      x: input, last axis n a multiple of the lattice dimension d. Raises ``ValueError`` on
        NaN/Inf (when called outside ``jit``).
      key: dither key (required iff ``dither``).
    """
    x = jnp.asarray(x)
    check_finite(x)
    return self._encode(x, key)

  @eager_jit
  def decode(self, code: NestedCode, key: PRNGKeyArray | None = None, dtype=jnp.float32) -> Float[Array, "*batch n"]:
    """``s · γ_j · ((cB − z) mod qΛ)`` per block (``γ = β`` without ``gains``, ``s = 1``
    without ``norm``, ``z = 0`` without dither)."""
    cb = self._blocks(code.codes)
    z = self._dither(key, cb.shape)
    vc = self.voronoi
    v = vc.decode(cb) - z
    v = vc.reduce(v) if self.dither else v
    beta = jnp.asarray(self.recon_scales, jnp.float32)[code.beta_index.astype(jnp.int32)]
    xb = beta[..., None] * v
    out = xb.reshape(code.codes.shape)
    if code.scale is not None:
      out = out * code.scale.astype(jnp.float32)
    return out.astype(dtype)

  @eager_jit
  def quantize(self, x: Float[Array, "*batch n"], key: PRNGKeyArray | None = None) -> Float[Array, "*batch n"]:
    """``decode(encode(x))`` in ``x.dtype`` (no finiteness check; NaN propagates)."""
    x = jnp.asarray(x)
    return self.decode(self._encode(x, key), key, dtype=x.dtype)

  def rate(self, shape: tuple[int, ...]) -> Rate:
    """Bits per entry: ``log2 q`` nominal; β indices and per-vector scales as side information.

    Args:
      shape: input shape; its last axis n (a multiple of d) is one vector.

    Returns:
      ``Rate(nominal=log2 q, side=(⌈n log2 q + (n/d) log2 k⌉ − n log2 q)/n + bits(norm)/n)``.
    """
    shape = check_rate_shape(shape)
    check_last_axis_divisible(shape, self.dim, name=f"lattice dimension d ({self.lattice.name})")
    n = shape[-1]
    nominal = math.log2(self.q)
    bits = n * nominal + (n // self.dim) * math.log2(self.k)
    side = (math.ceil(bits - 1e-9) - n * nominal) / n
    if self.norm is not None:
      side += SCALE_BITS[self.norm] / n
    return Rate(nominal=nominal, side=side)

  @property
  def name(self) -> str:
    sel = "" if self.beta_select == "mse" else "_first"
    norm = "" if self.norm is None else f"_norm_{self.norm}"
    dith = "_dither" if self.dither else ""
    mmse = "" if self.gains is None else "_mmse"
    srch = "" if self.search is None else f"_s{len(self.search)}"
    return f"{self.lattice.name}_nested_q{self.q}_k{self.k}{mmse}{srch}{norm}{sel}{dith}"


def nested_dot(
    quant_a: NestedLatticeQuantizer,
    code_a: NestedCode,
    quant_b: NestedLatticeQuantizer,
    code_b: NestedCode,
) -> Float[Array, "a b"]:
  """Inner products of nested-lattice-coded vectors computed from their codes.

  For rows ``i`` of A and ``j`` of B (each ``n`` entries, ``n/d`` blocks) the reconstruction is
  ``x̂ = s γ_{j(b)} v_b`` per block b (``γ`` the decoder scales, ``β`` without ``gains``), with ``v_b = cB mod qΛ`` a lattice point, so

  .. math::
     \\langle \\hat a_i, \\hat b_j \\rangle = s_i s_j \\sum_b \\gamma^A_{i,b} \\gamma^B_{j,b}\\,
       \\frac{\\langle m v^A_{i,b},\\, m v^B_{j,b} \\rangle}{m^2},

  with ``m`` the lattice denominators (``mΛ ⊂ Zⁿ``): the block inner products are exact int32
  dot products, and only the per-block scale products are floating point. Equal (up to
  float rounding) to ``decode(code_a) @ decode(code_b).T``, the reference.

  Args:
    quant_a, quant_b: the quantizers that produced the codes (same block length d, no dither).
    code_a: code of ``(a, n)`` vectors; code_b: code of ``(b, n)`` vectors.

  Returns:
    ``(a, b)`` float32 matrix of inner products.
  """
  for qz, nm in ((quant_a, "quant_a"), (quant_b, "quant_b")):
    if not isinstance(qz, NestedLatticeQuantizer):
      raise TypeError(f"{nm} must be a NestedLatticeQuantizer, got {type(qz).__name__}")
    if qz.dither:
      raise ValueError(f"{nm} uses dither: decode with its key and use a float dot instead")
  if quant_a.dim != quant_b.dim:
    raise ValueError(f"block lengths differ: quant_a d={quant_a.dim}, quant_b d={quant_b.dim}")
  if code_a.codes.ndim != 2 or code_b.codes.ndim != 2 or code_a.codes.shape[1] != code_b.codes.shape[1]:
    raise ValueError(f"codes must be (a, n) and (b, n) with the same n; got {code_a.codes.shape} and {code_b.codes.shape}")

  def int_points(qz, code):
    v = qz.voronoi.decode(qz._blocks(code.codes))
    m = qz.lattice.denominator
    return jnp.round(v * m).astype(jnp.int32), m

  va, ma = int_points(quant_a, code_a)
  vb, mb = int_points(quant_b, code_b)
  ip = jnp.einsum("aid,bid->abi", va, vb, preferred_element_type=jnp.int32)  # exact
  ba = jnp.asarray(quant_a.recon_scales, jnp.float32)[code_a.beta_index.astype(jnp.int32)] / ma
  bb = jnp.asarray(quant_b.recon_scales, jnp.float32)[code_b.beta_index.astype(jnp.int32)] / mb
  out = jnp.einsum("abi,ai,bi->ab", ip.astype(jnp.float32), ba, bb)
  if code_a.scale is not None:
    out = out * code_a.scale.astype(jnp.float32)
  if code_b.scale is not None:
    out = out * code_b.scale.astype(jnp.float32).T
  return out


def search_betas(
    lattice: Lattice,
    q: int,
    k: int,
    key: PRNGKeyArray,
    *,
    num_blocks: int = 1 << 15,
    grid: tuple[float, float, int] | None = None,
    restarts: int = 4,
) -> tuple[tuple[float, ...], float]:
  """Choose k scales minimizing the MSE per entry of a Voronoi code on N(0, 1) inputs.

  Draws ``num_blocks`` iid N(0, I_d) blocks, computes the squared error of every block at
  every β of a geometric grid (single-β quantizer), and minimizes
  ``mean_blocks min_{β∈S} err(block, β)`` over sets S of k grid points (the ``"mse"``
  selection rule) by coordinate descent from ``restarts`` quantile-spread starts. A small
  substitute for NestQuant's dynamic-programming search (not released with its code).

  Args:
    lattice: fine lattice. q: nesting ratio. k: number of scales ≥ 1. key: PRNG key.
    num_blocks: Monte Carlo blocks. grid: ``(β_min, β_max, points)``; default spans
      ``[0.25, 8] · β_ref`` with ``β_ref = √d / (q ρ_cov)`` on 256 points.
    restarts: coordinate-descent starts.

  Returns:
    ``(betas, mse_per_entry)``: the increasing β set and its Monte Carlo MSE per entry.
  """
  return search_beta_sets(lattice, q, (k,), key, num_blocks=num_blocks, grid=grid, restarts=restarts)[k]


def search_beta_sets(
    lattice: Lattice,
    q: int,
    ks: tuple[int, ...],
    key: PRNGKeyArray,
    *,
    num_blocks: int = 1 << 15,
    grid: tuple[float, float, int] | None = None,
    restarts: int = 4,
) -> dict[int, tuple[tuple[float, ...], float]]:
  """``search_betas`` for several k at once, sharing the grid errors (the costly part):
  ``{k: search_betas(lattice, q, k, key, ...)}`` with identical results."""
  q = _check_q(q)
  for k in ks:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
      raise ValueError(f"k={k!r} must be a positive integer")
  d = lattice.dim
  if grid is None:
    # Overload starts when the coarse cell (radius ≈ q·β·ρ_cov) is smaller than the typical
    # block norm √d; the grid brackets that point generously.
    rho = lattice.covering_radius or math.sqrt(d) / 2.0
    ref = math.sqrt(d) / (q * rho)
    grid = (0.25 * ref, 8.0 * ref, 256)
  lo, hi, num = grid
  betas_grid = np.geomspace(lo, hi, int(num))
  y = jax.random.normal(key, (num_blocks, d), jnp.float32)
  errs = np.asarray(_grid_errors(lattice, q, tuple(float(b) for b in betas_grid), y))  # (blocks, G)
  return {k: _best_set(errs, betas_grid, k, restarts, d) for k in ks}


def _best_set(errs: np.ndarray, betas_grid: np.ndarray, k: int, restarts: int, d: int):
  mean_err = errs.mean(axis=0)
  if k == 1:
    g = int(np.argmin(mean_err))
    return (float(betas_grid[g]),), float(mean_err[g] / d)
  best_val, best_set = np.inf, None
  order = np.argsort(mean_err)
  for r in range(restarts):
    start = np.linspace(order[0], min(len(betas_grid) - 1, order[0] + (r + 1) * len(betas_grid) // (2 * restarts)), k)
    sel = sorted(set(int(round(s)) for s in start))
    while len(sel) < k:
      sel.append(min(len(betas_grid) - 1, sel[-1] + 1))
    for _ in range(50):
      changed = False
      for i in range(k):
        others = [s for j, s in enumerate(sel) if j != i]
        m_other = errs[:, others].min(axis=1)
        vals = np.minimum(m_other[:, None], errs).mean(axis=0)
        g = int(np.argmin(vals))
        if g != sel[i] and vals[g] < np.minimum(m_other, errs[:, sel[i]]).mean() - 1e-12:
          sel[i] = g
          changed = True
      if not changed:
        break
    val = errs[:, sel].min(axis=1).mean()
    if val < best_val and len(set(sel)) == k:
      best_val, best_set = val, sorted(sel)
  if best_set is None:
    raise RuntimeError("beta search found no set of distinct scales; widen the grid")
  return tuple(float(betas_grid[s]) for s in best_set), float(best_val / d)


def search_betas_mmse(
    lattice: Lattice,
    q: int,
    k: int,
    key: PRNGKeyArray,
    *,
    num_blocks: int = 1 << 12,
    grid: tuple[float, float, int] | None = None,
    restarts: int = 4,
    rounds: int = 3,
) -> tuple[tuple[float, ...], tuple[float, ...], float]:
  """k encoder scales β and decoder scales γ (``gains``) minimizing the MSE on N(0, 1) blocks.

  Lloyd-style alternation on ``num_blocks`` iid N(0, I_d) blocks and a geometric β grid: (i)
  with the ratios ``γ_j/β_j`` fixed, coordinate descent over the grid for each β_j (least
  ``mean_blocks min_j ‖y − γ_j v_j(y)‖²``, ``v_j`` the Voronoi-code point at scale β_j); (ii)
  Lloyd iterations of least-error selection and the centroid condition
  ``γ_j = Σ⟨y, v_j⟩ / Σ‖v_j‖²`` over the blocks that pick j, until the selection is stable
  (then both hold on the training blocks); ``rounds`` times, from ``restarts`` starts spread below and above the best single β. Everything is
  computed from the three statistics ``‖y‖², ⟨y, v⟩, ‖v‖²`` per block and grid point
  (``grid_stats``).

  Args:
    lattice: fine lattice. q: nesting ratio. k: number of scales ≥ 1. key: PRNG key.
    num_blocks: Monte Carlo blocks. grid: ``(β_min, β_max, points)``; default
      ``[0.5, 2.5] · β_ref`` on 40 points, ``β_ref = √d / (q ρ_cov)``.
    restarts: starting sets. rounds: (i)–(ii) alternations.

  Returns:
    ``(betas, gains, mse_per_entry)`` (β increasing, γ in the same order).
  """
  q = _check_q(q)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r} must be a positive integer")
  if grid is None:
    rho = lattice.covering_radius or math.sqrt(lattice.dim) / 2.0
    ref = math.sqrt(lattice.dim) / (q * rho)
    grid = (0.5 * ref, 2.5 * ref, 40)
  bg = np.geomspace(grid[0], grid[1], int(grid[2]))
  if k > len(bg):
    raise ValueError(f"k={k} exceeds the {len(bg)} grid points")
  y = jax.random.normal(key, (num_blocks, lattice.dim), jnp.float32)
  stats = grid_stats(lattice, q, bg, y)
  betas, gains, val = search_from_stats(bg, *stats, k, restarts=restarts, rounds=rounds)
  return betas, gains, val / lattice.dim


def grid_stats(lattice: Lattice, q: int, betas_grid, y: Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(‖y‖², ⟨y, v⟩, ‖v‖²)`` of blocks ``y (blocks, d)`` against the single-β Voronoi-code
  point ``v`` (lattice units) at every grid scale: shapes ``(blocks,)``, ``(blocks, G)``, ``(blocks, G)``."""
  st = [_single_beta_stats(lattice, q, jnp.float32(b), y) for b in betas_grid]
  yy = np.asarray(jnp.sum(y * y, axis=-1), np.float64)
  return yy, np.stack([np.asarray(a, np.float64) for a, _ in st], 1), np.stack([np.asarray(c, np.float64) for _, c in st], 1)


def search_from_stats(
    betas_grid, yy, yv, vv, k: int, *, group: int = 1, mmse: bool = True, restarts: int = 4, rounds: int = 3,
    g0: int | None = None,
) -> tuple[tuple[float, ...], tuple[float, ...], float]:
  """The search of ``search_betas_mmse`` on precomputed ``grid_stats``; returns
  ``(betas, gains, mean squared error per block)``. ``group`` consecutive blocks share one β
  index (their errors add); ``mmse=False`` keeps ``γ = β`` (no centroid step)."""
  bg = np.asarray(betas_grid, np.float64)
  nb = len(yy) // group * group
  yy, yv, vv = yy[:nb], yv[:nb], vv[:nb]

  def grouped(e):  # (blocks, c) -> (groups, c)
    return e.reshape(nb // group, group, -1).sum(axis=1)

  def errs(sel, ratio):
    g = np.asarray(ratio) * bg[sel]
    return grouped(yy[:, None] - 2 * g * yv[:, sel] + g**2 * vv[:, sel])

  if g0 is None:
    g0 = int(np.argmin((yy[:, None] - 2 * bg * yv + bg**2 * vv).mean(axis=0)))
  best = None
  for r in range(restarts):
    sel = list(np.unique(np.round(np.linspace(max(0, g0 - 3 * (r + 2)), min(len(bg) - 1, g0 + 2 * (r + 1)), k)).astype(int)))
    for i in range(len(bg)):
      if len(sel) == k:
        break
      if i not in sel:
        sel.append(i)
    sel, ratio = sorted(int(x) for x in sel), [1.0] * k
    for _ in range(rounds if mmse else 1):
      for _sweep in range(20):  # (i) coordinate descent with the ratios fixed
        changed = False
        for i in range(k):
          e = errs(sel, ratio)
          others = np.delete(e, i, axis=1).min(axis=1) if k > 1 else np.full(e.shape[0], np.inf)
          gi = ratio[i] * bg
          cand = grouped(yy[:, None] - 2 * gi * yv + gi**2 * vv)  # (groups, G)
          vals = np.minimum(others[:, None], cand).mean(axis=0)
          vals[[s for j, s in enumerate(sel) if j != i]] = np.inf
          g = int(np.argmin(vals))
          if g != sel[i] and vals[g] < vals[sel[i]] - 1e-12:
            sel[i], changed = g, True
        if not changed:
          break
      order = np.argsort(sel)
      sel, ratio = [sel[o] for o in order], [ratio[o] for o in order]
      if mmse:  # (ii) selection and centroid condition until the selection is stable (Lloyd)
        prev = None
        for _lloyd in range(50):
          idx = np.repeat(np.argmin(errs(sel, ratio), axis=1), group)
          if prev is not None and np.array_equal(idx, prev):
            break
          prev = idx
          for j in range(k):
            m = idx == j
            if m.any():
              ratio[j] = float(yv[m, sel[j]].sum() / vv[m, sel[j]].sum() / bg[sel[j]])
    val = float(errs(sel, ratio).min(axis=1).mean()) / group
    if best is None or val < best[0]:
      best = (val, sel, ratio)
  val, sel, ratio = best
  return tuple(float(bg[s]) for s in sel), tuple(float(r * bg[s]) for r, s in zip(ratio, sel)), val


def search_encoder_scales(
    betas_grid, yy, yv, vv, k: int, s: int, *, lloyd: int = 30, refit: int = 5,
) -> tuple[tuple[float, ...], tuple[float, ...], float]:
  """k decoder scales γ and s encoder scales σ ⊂ grid for the ``search`` encoder, on ``grid_stats``.

  The encoder of ``NestedLatticeQuantizer(..., betas=γ, search=σ)`` picks the pair
  ``(σ, j)`` with the least ``‖y − γ_j v_σ‖²`` (``v_σ`` the Voronoi-code point of ``y`` at scale
  σ); only j is sent. Starting from σ = the whole grid and k γ spread geometrically around the
  best single β: Lloyd iterations (least-error pairs, then the centroid
  ``γ_j = Σ⟨y, v_σ⟩ / Σ‖v_σ‖²`` over the blocks that pick j) until the pairs are stable
  (at most ``lloyd``); then backward elimination: drop the σ whose removal raises the mean
  error least (γ fixed), ``refit`` Lloyd iterations, until s scales remain; a final Lloyd fit.

  Args:
    betas_grid: the ``G`` grid scales of the statistics. yy, yv, vv: ``grid_stats`` output.
    k: decoder scales (sent index). s: encoder scales (≤ G; not sent).
    lloyd, refit: Lloyd iterations of the first/final fits and after each elimination.

  Returns:
    ``(gammas, sigmas, mean squared error per block)`` (both increasing).
  """
  bg = np.asarray(betas_grid, np.float64)
  big = len(bg)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise ValueError(f"k={k!r} must be a positive integer")
  if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= big:
    raise ValueError(f"s={s!r} must be an integer in [1, {big}] (the grid size)")
  i0 = int(np.argmin((yy[:, None] - 2 * bg * yv + bg**2 * vv).mean(axis=0)))
  gam = np.geomspace(bg[max(0, i0 - 8)], bg[min(big - 1, i0 + 4)], k) if k > 1 else bg[i0:i0 + 1].copy()
  rows = np.arange(len(yy))

  def errs(sel, g):  # (blocks, |sel|, k)
    return yy[:, None, None] - 2 * g * yv[:, sel, None] + g**2 * vv[:, sel, None]

  def fit(sel, g, iters):
    prev = None
    for _ in range(iters):
      flat = errs(sel, g).reshape(len(yy), -1).argmin(axis=1)  # σ-major, first on ties
      if prev is not None and np.array_equal(flat, prev):
        break
      prev = flat
      si, j = np.asarray(sel)[flat // k], flat % k
      for jj in range(k):
        m = j == jj
        if m.any():
          g[jj] = yv[rows[m], si[m]].sum() / vv[rows[m], si[m]].sum()
    return g

  sel = list(range(big))
  gam = fit(sel, gam, lloyd)
  while len(sel) > s:
    e = errs(sel, gam).min(axis=2)  # (blocks, |sel|)
    drop = int(np.argmin([np.delete(e, i, axis=1).min(axis=1).mean() for i in range(len(sel))]))
    sel.pop(drop)
    gam = fit(sel, gam, refit)
  gam = fit(sel, gam, lloyd)
  order = np.argsort(gam)
  gam = gam[order]
  val = float(errs(sel, gam).reshape(len(yy), -1).min(axis=1).mean())
  return tuple(float(g) for g in gam), tuple(float(bg[i]) for i in sel), val


@functools.partial(jax.jit, static_argnums=(0, 1))
def _single_beta_stats(lattice: Lattice, q: int, beta: Array, y: Array) -> tuple[Array, Array]:
  """``(⟨y, v⟩, ‖v‖²)`` per block, ``v`` the Voronoi-code point of ``y`` at scale β (lattice units)."""
  vc = VoronoiCode(lattice, q)
  v = vc.decode(vc.encode(lattice.closest_point(y / beta)))
  return jnp.sum(y * v, axis=-1), jnp.sum(v * v, axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _single_beta_errors(lattice: Lattice, q: int, beta: Array, y: Array) -> Array:
  vc = VoronoiCode(lattice, q)
  t = lattice.closest_point(y / beta)
  v = vc.decode(vc.encode(t))
  return jnp.sum((y - beta * v) ** 2, axis=-1)


def _grid_errors(lattice: Lattice, q: int, betas: tuple[float, ...], y: Array) -> Array:
  """Squared error per block (rows) and scale (columns) of the single-β Voronoi quantizer."""
  return jnp.stack([_single_beta_errors(lattice, q, jnp.float32(b), y) for b in betas], axis=1)
