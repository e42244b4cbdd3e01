"""Hostile but fair inputs to rdq's public API: a correct value or a clear error, eager and jit.

Issue 17 ("No silent garbage"). Every case states its expected behaviour beside it:

* ``Val(ref)``: a correct value, checked against a closed form (or the same input at scale 1);
* ``Err(Type, *parts)``: an exception of that type whose message contains every part (the
  argument's name, the bad value, what was expected).

Each case runs eagerly and under ``jit``: ``rdq.checks.checked(jax.jit(fn))(*args)`` — the
documented mechanism (``checkify``) by which value checks fire inside ``jit``; static checks
(dtype, shape, config) raise while tracing. A value case must also give the same result under
jit (bit for bit unless the case says why not). Host-only functions (NumPy/ANS, store) run
eagerly only, and say so.

Cases in modules owned by other work streams that still fail are ``xfail(strict=True)`` with
the owner named, so they stay visible and turn red once fixed (then drop the mark).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rdq import covariance as cov
from rdq import limits as L
from rdq import quantizers as Q
from rdq import rate as R
from rdq.matmul_mc import MatmulSetup, matmul_distortion, matmul_error
from rdq.montecarlo import Estimate, estimate


@dataclasses.dataclass(frozen=True)
class Val:
  """Expected value (closed form, or the same input at scale 1); ``rtol`` relative tolerance."""

  ref: Any
  rtol: float = 1e-6
  atol: float = 0.0
  nan_mask: Any = None  # entries expected to be NaN (the rest compared)


@dataclasses.dataclass(frozen=True)
class Err:
  """Expected error type and message parts."""

  exc: type
  parts: tuple[str, ...]

  def __init__(self, exc, *parts):
    object.__setattr__(self, "exc", exc)
    object.__setattr__(self, "parts", parts)


@dataclasses.dataclass
class Case:
  id: str
  fn: Callable
  args: tuple
  expect: Val | Err
  jit: bool | str = True  # False-y string: why the case runs eagerly only
  bitwise: bool | str = True  # jit == eager bit for bit, or why not
  owner: str | None = None  # xfail(strict) naming the owner while the case still fails


CASES: list[Case] = []


def case(id, fn, args, expect, **kw):
  CASES.append(Case(id, fn, tuple(args), expect, **kw))


f32 = jnp.float32
NAN, INF = float("nan"), float("inf")
KEY = jax.random.key(0)

# ------------------------------------------------------------------ limits: Gaussian D(R), R(D)
# Cases that differ only in their arguments share one function object, so under jit they share one
# compiled program per argument shape (``_jitted`` caches per function); a lambda made inside a loop
# would be a new function, and a new compilation, for every case.
_rd_of_var = lambda v: L.gaussian_rd(f32(1.0), v)  # noqa: E731
for r in (-1.0, 0.0, NAN):
  case(f"gaussian_rd(rate={r})", L.gaussian_rd, (f32(r),), Err(ValueError, "rate must be > 0", str(r).replace("nan", "n")))
  case(f"gaussian_rate(D={r})", L.gaussian_rate, (f32(r),), Err(ValueError, "distortion must be > 0"))
  case(f"gaussian_rd(var={r})", _rd_of_var, (f32(r),), Err(ValueError, "variance must be > 0"))
case("gaussian_rd(complex)", L.gaussian_rd, (jnp.complex64(1.0),), Err(TypeError, "rate must be real", "complex"))
case("gaussian_rate(int32 D)", L.gaussian_rate, (jnp.int32(1),), Val(0.0))  # integers are numbers: D = 1 → 0 bits
case("gaussian_rate(bool)", L.gaussian_rate, (jnp.bool_(True),), Err(TypeError, "distortion", "bool"))
for r in (1e-30, 0.25, 10.0, 60.0):  # D = 2^-2R (60 bits: 2^-120, still a float32 normal)
  case(f"gaussian_rd(rate={r})", L.gaussian_rd, (f32(r),), Val(2.0 ** (-2 * r), rtol=2e-6))
_rd3_of_var = lambda v: L.gaussian_rd(f32(3.0), v)  # noqa: E731
_rate_of_d_var = lambda d, v: L.gaussian_rate(d, v)  # noqa: E731
for var in (1e-30, 1e30):
  case(f"gaussian_rd(var={var})", _rd3_of_var, (f32(var),), Val(var * 2.0**-6, rtol=2e-6))
  case(f"gaussian_rate(D=var·2^-6, var={var})", _rate_of_d_var, (f32(var * 2.0**-6), f32(var)), Val(3.0, rtol=1e-6))
for d in (1e-40, 1e-30, 1e-10):  # log domain: ½ log2(1/D)
  case(f"gaussian_rate(D={d})", L.gaussian_rate, (d,), Val(0.5 * math.log2(1 / d), rtol=1e-6),
       bitwise="eager takes log2 of the float64 argument; jit gets the float32 one" if d < 1e-38 else True)
case("gaussian_rate(D=1e30) = 0", L.gaussian_rate, (f32(1e30),), Val(0.0))
case("gaussian_rd(rate=inf) = 0", L.gaussian_rd, (f32(INF),), Val(0.0))
case("gaussian_rd(vector with -1)", L.gaussian_rd, (jnp.array([1.0, -1.0]),), Err(ValueError, "rate must be > 0", "-1"))

# ------------------------------------------------------------------ limits: generic matmul Γ(R)
R_STAR, F_STAR = L.critical_rate()


def gamma_ref(r):
  if r < R_STAR:
    return 1 - (1 - F_STAR) * r / R_STAR
  x = 2.0 ** (-2 * r)
  return 2 * x - x * x


for r in (-1.0, 0.0, NAN):
  case(f"generic_matmul(rate={r})", L.generic_matmul, (f32(r),), Err(ValueError, "rate must be > 0"))
  case(f"naive_matmul_distortion(rate={r})", L.naive_matmul_distortion, (f32(r),), Err(ValueError, "rate must be > 0"))
for d in (1.5, 0.0, -1.0, NAN):
  case(f"generic_matmul_rate(D={d})", L.generic_matmul_rate, (f32(d),),
       Err(ValueError, "distortion must be", "1.5" if d == 1.5 else "> 0"))
case("generic_matmul(complex)", L.generic_matmul, (jnp.complex64(1.0),), Err(TypeError, "rate must be real"))
for r in (1e-30, 0.5, 2.0, 8.0, 40.0):
  case(f"generic_matmul(rate={r})", L.generic_matmul, (f32(r),), Val(gamma_ref(r), rtol=2e-6, atol=1e-7))
for d in (1e-40, 1e-30, 0.01, 0.5, 1.0):
  ref = R_STAR * (1 - d) / (1 - F_STAR) if d > F_STAR else -0.5 * math.log2(d / (1 + math.sqrt(1 - d)))
  case(f"generic_matmul_rate(D={d})", L.generic_matmul_rate, (d,), Val(ref, rtol=2e-6, atol=1e-6),
       bitwise="eager takes log2 of the float64 argument; jit gets the float32 one" if d < 1e-38 else True)

# ------------------------------------------------------------------ limits: reverse waterfilling
E4 = jnp.ones(4)
_wf_eig = lambda e: L.waterfill(e, f32(1.0))  # noqa: E731
_wf_rate_eig = lambda e: L.waterfill_rate(e, f32(0.1))  # noqa: E731
_wf_high_eig = lambda e: L.waterfill_high_rate(e, f32(1.0))  # noqa: E731
for bad, part in [(jnp.array([1.0, -1.0]), "≥ 0"), (jnp.array([1.0, NAN]), "finite"), (jnp.array([1.0, INF]), "finite"),
                  (jnp.zeros(3), "all zero")]:
  case(f"waterfill(eig={np.asarray(bad).tolist()})", _wf_eig, (bad,), Err(ValueError, "eigenvalues", part))
  case(f"waterfill_rate(eig={np.asarray(bad).tolist()})", _wf_rate_eig, (bad,), Err(ValueError, "eigenvalues", part))
  case(f"waterfill_high_rate(eig={np.asarray(bad).tolist()})", _wf_high_eig, (bad,), Err(ValueError, "eigenvalues", part))
case("waterfill(eig empty)", _wf_eig, (jnp.zeros((0,)),), Err(ValueError, "eigenvalues", "length n ≥ 1", "(0,)"))
case("waterfill(eig scalar)", _wf_eig, (f32(1.0),), Err(ValueError, "eigenvalues", "trailing axis"))
case("waterfill(eig complex)", _wf_eig, (jnp.ones(3, jnp.complex64),), Err(TypeError, "eigenvalues must be real", "complex"))
_wf_of_rate = lambda r: L.waterfill(E4, r)  # noqa: E731
_wf_rate_of_d = lambda d: L.waterfill_rate(E4, d)  # noqa: E731
_wf_of_var = lambda v: L.waterfill(E4, f32(1.0), v)  # noqa: E731
for r in (-1.0, 0.0, NAN):
  case(f"waterfill(rate={r})", _wf_of_rate, (f32(r),), Err(ValueError, "rate_bits must be > 0"))
  case(f"waterfill_rate(D={r})", _wf_rate_of_d, (f32(r),), Err(ValueError, "distortion must be > 0"))
  case(f"waterfill(var={r})", _wf_of_var, (f32(r),), Err(ValueError, "variance must be > 0"))
case("waterfill(15 zeros + 1, 4 bits): D underflows", lambda e: L.waterfill(e, f32(4.0)), (jnp.array([0.0] * 15 + [1.0]),),
     Err(ValueError, "distortion underflows float32", "rate_bits", "multiply variance"))
case("waterfill(same, var=2^140): D = 256", lambda e: L.waterfill(e, f32(4.0), 2.0**140).distortion,
     (jnp.array([0.0] * 15 + [1.0]),), Val(256.0), jit="2^140 is not a float32 (inf): a traced variance cannot hold it")
_wf_d_at_2 = lambda e: L.waterfill(e, f32(2.0)).distortion  # noqa: E731
for c in (1e-30, 1e-8, 1.0, 1e6, 1e30):  # D(c·λ, R) = c·D(λ, R): isotropic D = c·2^-2R
  case(f"waterfill(eig·{c})", _wf_d_at_2, (E4 * f32(c),), Val(c / 16, rtol=2e-6))
  case(f"waterfill_rate(eig·{c})", lambda e, c=c: L.waterfill_rate(e, f32(c / 16)).rate_bits, (E4 * f32(c),), Val(2.0, rtol=2e-6))
case("waterfill_rate(D=2^-200) = 100 bits", lambda d: L.waterfill_rate(E4, d).rate_bits, (2.0**-200,), Val(100.0),
     jit="2^-200 is not a float32: under jit the argument is 0 and is rejected")
case("waterfill(rate=100) underflows", _wf_of_rate, (f32(100.0),), Err(ValueError, "underflows float32"))
case("waterfill(rate=1e-30)", lambda r: L.waterfill(jnp.array([2.0, 1.0]), r).distortion, (f32(1e-30),), Val(1.5, rtol=1e-6))
case("waterfill_high_rate(eig·1e30)", lambda e: L.waterfill_high_rate(e, f32(3.0)), (E4 * f32(1e30),), Val(1e30 / 64, rtol=2e-6))
case("ecsq_distortion(rate=-1)", L.ecsq_distortion, (f32(-1.0),), Err(ValueError, "rate must be > 0"))
case("ecsq_distortion(rate=4)", L.ecsq_distortion, (f32(4.0),), Val(math.pi * math.e / 6 * 2.0**-8, rtol=1e-6), bitwise="eager float64, jit float32")

# universal codebooks (rdq.limits.universal)
_ur_eig = lambda e: L.universal_rate(e, f32(0.1))[0]  # noqa: E731
_ur_of_d = lambda d: L.universal_rate(E4, d)[0]  # noqa: E731
for bad, part in [(jnp.array([1.0, -1.0]), "≥ 0"), (jnp.array([NAN, 1.0]), "finite")]:
  case(f"universal_rate(eig={np.asarray(bad).tolist()})", _ur_eig, (bad,), Err(ValueError, "eigenvalues", part))
case("universal_rate(D=-1)", _ur_of_d, (f32(-1.0),), Err(ValueError, "distortion must be > 0"))
case("universal_rate(isotropic, D=1/4) = 1", _ur_of_d, (f32(0.25),), Val(1.0, rtol=1e-4),
     bitwise="golden-section search in float32: fusion inside the caller's jit changes the last ulp")
case("universal_distortion(rate=0)", lambda r: L.universal_distortion(E4, r), (f32(0.0),), Err(ValueError, "rate_bits must be > 0"))
case("universal_gap(rate=nan)", lambda r: L.universal_gap(E4, r), (f32(NAN),), Err(ValueError, "rate_bits must be > 0"))
case("random_coding_rate(c=-1)", lambda c: L.random_coding_rate(E4, f32(0.25), c), (f32(-1.0),), Err(ValueError, "codebook_variance must be > 0"))

# lattice constants (host floats, eager only)
HOST = "host-side float function (Python scalars), not traced"
case("g_dn(n=1)", L.g_dn, (1,), Err(ValueError, "n ≥ 2", "n=1"), jit=HOST)
case("g_dn(n=2.5)", L.g_dn, (2.5,), Err(ValueError, "n ≥ 2", "n=2.5"), jit=HOST)
case("g_dn(n=4)", L.g_dn, (4,), Val(0.0766032, rtol=1e-6), jit=HOST)
case("g_sphere(n=0)", L.g_sphere, (0,), Err(ValueError, "n ≥ 1", "n=0"), jit=HOST)
case("g_sphere(n=1) = 1/12", L.g_sphere, (1,), Val(1 / 12, rtol=1e-12), jit=HOST)
case("rate_gap_bits(g=-1)", L.rate_gap_bits, (-1.0,), Err(ValueError, "g", "-1"), jit=HOST)
case("rate_gap_bits(g=nan)", L.rate_gap_bits, (NAN,), Err(ValueError, "g", "nan"), jit=HOST)
case("rate_gap_bits(1/12)", L.rate_gap_bits, (1 / 12,), Val(0.5 * math.log2(math.pi * math.e / 6), rtol=1e-12), jit=HOST)

# ------------------------------------------------------------------ quantizers
X = jax.random.normal(jax.random.key(1), (4, 256))
QNAMES = ["int8", "int8_row", "int4_row", "int4_block32", "int4_block32_e8m0", "int4_row_fp16", "int3_block64_bf16",
          "e4m3", "e5m2", "e2m1", "mxfp4", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp4_ceil", "nvfp4", "e4m3_block128_fp32",
          "vq2_b2_g64", "vq1_b2_g64_int8"]
# Nested-lattice (Voronoi) codes: without ``_norm`` β is in units of the input (a fixed grid, like
# elementwise FP), with ``_norm`` a per-vector RMS scale makes them scale-invariant.
NESTED_Q = ("e8_nested_q16", "d4_nested_q6", "e8_nested_q16_norm")
BLOCKED = {"int4_block32": ("int4_block64", 64), "mxfp4": ("mxfp4", None), "nvfp4": ("nvfp4", None),
           "e4m3_block128_fp32": ("e4m3_block64_fp32", 64)}


class _QRef:
  """Lazy reference ``quantize(X)`` of a named quantizer (computed once, at first use)."""

  _cache: dict[str, np.ndarray] = {}

  def __init__(self, name, factor=1.0, entry=None):
    self.name, self.factor, self.entry = name, factor, entry

  def times(self, f):
    return _QRef(self.name, f, self.entry)

  def with_entry(self, idx, v):
    return _QRef(self.name, self.factor, (idx, v))

  def __call__(self):
    if self.name not in self._cache:
      # the eager call: the same compiled program (``eager_jit``) as the eager cases on X·2^k
      self._cache[self.name] = np.asarray(Q.get(self.name).quantize(X), np.float64)
    out = self._cache[self.name] * self.factor
    if self.entry is not None:
      out = out.copy()
      out[self.entry[0]] = self.entry[1]
    return out


def _half_scales_fit(q, x) -> bool:
  """The documented range rule for half-precision side information (README, "No silent garbage")."""
  tiny, big = float(np.finfo(np.float16).smallest_normal), float(np.finfo(np.float16).max)
  if isinstance(q, Q.IntQuantizer) and q.scale_format == "fp16":
    g = x.reshape(x.shape[0], -1, q.block_size) if q.granularity == "block" else x[:, None, :]
    raw = np.abs(g).max(-1) / q.q_max
    return bool(np.all((raw >= tiny) & (raw <= big)))
  if isinstance(q, Q.VQQuantizer) and q.codebook_format != "fp32":
    amax = np.abs(x.reshape(x.shape[0], -1, q.group_size)).max(-1)
    lo = tiny * (127 if q.codebook_format == "int8" else 1)
    return bool(np.all((amax >= lo) & (amax <= big)))
  return True


_PASSING_ELSEWHERE = ("quantize(scalar)", "encode(NaN)")  # other owners' cases that already pass


def _qcases(name, owner=None):
  q = Q.get(name)
  kw = dict(owner=owner)
  n0 = len(CASES)
  case(f"{name}.quantize(int32)", q.quantize, (jnp.ones((2, 256), jnp.int32),), Err(TypeError, "x must have a real floating dtype", "int32"), **kw)
  case(f"{name}.quantize(complex64)", q.quantize, (jnp.ones((2, 256), jnp.complex64),), Err(TypeError, "x must have a real floating dtype", "complex64"), **kw)
  case(f"{name}.quantize(empty)", q.quantize, (jnp.ones((0, 256)),), Err(ValueError, "x is empty", "(0, 256)"), **kw)
  case(f"{name}.quantize(scalar)", q.quantize, (f32(1.0),), Err(ValueError, "1-D", "scalar"), **kw)
  case(f"{name}.quantize(key=0)", lambda x: q.quantize(x, key=0), (X,), Err(TypeError, "key must be a PRNG key", "int"), **kw)
  case(f"{name}.rate((4, 0))", q.rate, ((4, 0),), Err(ValueError, "shape must be a tuple of positive integers", "0"), jit=HOST, **kw)
  case(f"{name}.rate((4, -256))", q.rate, ((4, -256),), Err(ValueError, "positive integers", "-256"), jit=HOST, **kw)
  case(f"{name}.rate((4, 256.5))", q.rate, ((4, 256.5),), Err(ValueError, "positive integers", "256.5"), jit=HOST, **kw)
  case(f"{name}.rate(())", q.rate, ((),), Err(ValueError, "shape", "()"), jit=HOST, **kw)
  if hasattr(q, "encode"):
    case(f"{name}.encode(NaN)", q.encode, (X.at[0, 5].set(NAN),), Err(ValueError, "x has 1 non-finite", "encode needs finite"), **kw)
  # scale invariance by powers of two (1e-8 … 1e6): quantize(2^k x) = 2^k quantize(x) exactly
  ref = _QRef(name)
  for k in (-26, -13, 10, 20):
    if not _half_scales_fit(q, np.asarray(X, np.float64) * 2.0**k):
      # documented rule: an fp16 scale (or fp16/int8 codebook) that cannot hold the data raises
      exp = Err(ValueError, "outside", "rescale x")
    elif getattr(q, "block_size", 0) is None and getattr(q, "granularity", None) is None:
      continue  # elementwise FP has no scale: not scale-invariant by design (fixed grid)
    elif isinstance(q, Q.NestedLatticeQuantizer) and q.norm is None:
      continue  # β in units of the input: a fixed grid by design (``_norm`` adds the scale)
    elif isinstance(q, Q.VQQuantizer) and q.codebook_format == "fp16":
      # fp16 codebook entries below 2^-14 are subnormal: absolute error ≤ 2^-25 there, below the
      # half-ulp 2^-11·max|x| of the largest centroids, so equal up to one fp16 ulp at the top.
      exp = Val(ref.times(2.0**k), rtol=0.0, atol=2.0**k * float(jnp.max(jnp.abs(X))) * 2.0**-10)
    else:
      exp = Val(ref.times(2.0**k), rtol=0.0)
    case(f"{name}.quantize(x·2^{k})", q.quantize, (X * f32(2.0**k),), exp, **kw)
  # a NaN poisons its own group only (elementwise: only itself)
  if name in ("int8_row", "int4_block32", "mxfp4", "nvfp4", "e4m3"):
    g = {"int8_row": 256, "int4_block32": 32, "mxfp4": 32, "nvfp4": 16, "e4m3": 1}[name]
    mask = np.zeros(X.shape, bool)
    start = (64 // g) * g
    mask[1, start:start + g] = True
    for bad in (NAN, INF, -INF):
      if name == "e4m3" and bad != bad:
        pass
      exp_val = ref
      if name == "e4m3" and bad == bad:  # elementwise FP saturates ±Inf to ±x_max
        exp_val = ref.with_entry((1, 64), math.copysign(448.0, bad))
        case(f"{name}.quantize(Inf={bad})", q.quantize, (X.at[1, 64].set(bad),), Val(exp_val, rtol=0.0), **kw)
        continue
      case(f"{name}.quantize({bad} in one group)", q.quantize, (X.at[1, 64].set(bad),), Val(exp_val, rtol=0.0, nan_mask=mask), **kw)
  if name in BLOCKED:
    other, _ = BLOCKED[name]
    code = q.encode(X)
    q2 = Q.get(other) if other != name else dataclasses.replace(q, block_size=q.block_size * 2)
    case(f"{name}: decode with another block size", q2.decode, (code,), Err(ValueError, "code.scales has shape", "block"), **kw)
  for c in CASES[n0:]:
    if c.owner and c.id.endswith(_PASSING_ELSEWHERE):
      c.owner = None


for _n in QNAMES:
  _qcases(_n)
for _n in NESTED_Q:
  _qcases(_n)

case("get(4)", Q.get, (4,), Err(TypeError, "quantizer name must be a str", "int"), jit=HOST)
case("get('int4_blok32')", Q.get, ("int4_blok32",), Err(ValueError, "unknown quantizer name", "int4_blok32", "int4_block32"), jit=HOST)
case("get('int9_row')", Q.get, ("int9_row",), Err(ValueError, "bits=9", "[2, 8]"), jit=HOST)
case("IntQuantizer(block_size=0)", lambda: Q.IntQuantizer(4, "block", 0), (), Err(ValueError, "block_size", "0"), jit=HOST)
case("FPQuantizer('e3m3')", lambda: Q.FPQuantizer("e3m3"), (), Err(ValueError, "unknown FP element format", "e3m3"), jit=HOST)
case("int4_block32 on n=48", Q.get("int4_block32").quantize, (jnp.ones((2, 48)),), Err(ValueError, "block_size=32", "n=48"))
case("int8.decode(tuple)", Q.get("int8").decode, ((1, 2),), Err(TypeError, "code must be an IntCode", "tuple"), jit=HOST)
case("round_to_format(inf)", lambda x: Q.round_to_format(x, Q.FORMATS["e5m2"]), (jnp.array([INF, -INF, 1.0]),),
     Val(np.array([57344.0, -57344.0, 1.0]), rtol=0.0))
case("bf16 input keeps dtype and values", lambda x: Q.get("int8_row").quantize(x).astype(jnp.float32),
     (X.astype(jnp.bfloat16),), Val(np.asarray(Q.get("int8_row").quantize(X.astype(jnp.bfloat16)), np.float64), rtol=0.0))
# ties to even (issue 14): x/s = 6.5 with s a power of two → 6
case("int8_row tie 6.5 → 6", Q.get("int8_row").quantize, (jnp.array([[127.0 / 64, 6.5 / 64]]) ,),
     Val(np.array([[127.0 / 64, 6.0 / 64]]), rtol=1e-7))
case("e2m1 tie 2.5 → 2", Q.get("e2m1").quantize, (jnp.array([2.5, 3.5, 5.0, -2.5]),), Val(np.array([2.0, 4.0, 4.0, -2.0]), rtol=0.0))

# ------------------------------------------------------------------ covariance
_FAM_CALL: dict[Any, Callable] = {}
_FAM_SAMPLE: dict[Any, Callable] = {}
for fam, p, part in [(cov.AR1(8), 1.5, "rho=1.5"), (cov.AR1(8), -1.5, "rho=-1.5"), (cov.AR1(8), NAN, "rho=nan"),
                     (cov.Spiked(8), -2.0, "beta=-2"), (cov.Spiked(8), NAN, "beta=nan"),
                     (cov.BlockDiagonal(8, num_blocks=2), -0.5, "rho=-0.5"), (cov.BlockDiagonal(8, num_blocks=2), 1.5, "rho=1.5"),
                     (cov.PowerLaw(8), NAN, "alpha=nan"), (cov.PowerLaw(8), INF, "alpha=inf"), (cov.Wishart(8, 16), NAN, "alpha=nan"),
                     (cov.LDLSpread(8), INF, "log_spread=inf")]:
  # one function per family (equal families share it): the bad parameter is the traced argument
  call = _FAM_CALL.setdefault(fam, lambda p, fam=fam: fam(KEY, p))
  sample = _FAM_SAMPLE.setdefault(fam, lambda ps, fam=fam: cov.sample(fam, KEY, ps))
  case(f"{fam.name}(param={p})", call, (f32(p),), Err(ValueError, part.split("=")[0], "out of range", "expected"))
  case(f"sample({fam.name}, [0, {p}])", sample, (jnp.array([0.0, p]),), Err(ValueError, part.split("=")[0], "out of range"))
_FAM_PSD: dict[Any, Callable] = {}
for fam, p in [(cov.AR1(8), 1.0), (cov.AR1(8), -1.0), (cov.Spiked(8), -1.0), (cov.BlockDiagonal(8, num_blocks=2), -1.0 / 3),
               (cov.PowerLaw(8), 30.0), (cov.LDLSpread(8), 20.0)]:
  psd = _FAM_PSD.setdefault(
      fam, lambda p, fam=fam: jnp.minimum(jnp.linalg.eigvalsh(fam(KEY, p))[0] / jnp.max(jnp.abs(fam(KEY, p))), 0.0) > -1e-5)
  case(f"{fam.name}(param={p}) boundary is PSD", psd, (f32(p),), Val(True), bitwise=True)
case("AR1(key=0)", lambda: cov.PowerLaw(8)(0, 1.0), (), Err(TypeError, "key must be a PRNG key"), jit=HOST)
case("sample(params 2-D)", _FAM_SAMPLE[cov.PowerLaw(8)], (jnp.ones((2, 2)),), Err(ValueError, "params must be 1-D", "(2, 2)"))
case("sample(params empty)", _FAM_SAMPLE[cov.PowerLaw(8)], (jnp.ones((0,)),), Err(ValueError, "params is empty"))
case("PowerLaw(n=0)", lambda: cov.PowerLaw(0), (), Err(ValueError, "n=0", "positive integer"), jit=HOST)
case("make_family('nope')", lambda: cov.make_family("nope", 8), (), Err(ValueError, "unknown covariance family", "nope"), jit=HOST)
case("from_data(NaN)", cov.from_data, (jnp.ones((4, 3)).at[0, 0].set(NAN),), Err(ValueError, "x has 1 NaN/Inf", "finite"))
case("from_data(Inf)", cov.from_data, (jnp.ones((4, 3)).at[0, 0].set(INF),), Err(ValueError, "x has 1 NaN/Inf"))
case("from_data(empty N)", cov.from_data, (jnp.ones((0, 3)),), Err(ValueError, "x is empty", "(0, 3)"))
case("from_data(empty n)", cov.from_data, (jnp.ones((3, 0)),), Err(ValueError, "x is empty", "(3, 0)"))
case("from_data(1-D)", cov.from_data, (jnp.ones(3),), Err(ValueError, "x must be (N, n)", "(3,)"))
case("from_data(complex)", cov.from_data, (jnp.ones((2, 2), jnp.complex64),), Err(TypeError, "x must be real", "complex64"))
case("from_data(rel_damp=-1)", lambda x: cov.from_data(x, -1.0), (jnp.ones((2, 2)),), Err(ValueError, "rel_damp=-1", "≥ 0"))
case("from_data(x·1e-30) = 1e-60·I flushed? no: x·1e-15", cov.from_data, (jnp.eye(3) * f32(1e-15) * math.sqrt(3),),
     Val(np.eye(3) * 1e-30, rtol=1e-5))
case("from_data(x·1e15)", cov.from_data, (jnp.eye(3) * f32(1e15) * math.sqrt(3),), Val(np.eye(3) * 1e30, rtol=1e-5))
for bad, exc, part in [(jnp.eye(3, dtype=jnp.complex64), TypeError, "must be real"), (jnp.ones((2, 3)), ValueError, "square"),
                       (jnp.eye(3).at[0, 0].set(NAN), ValueError, "finite"), (jnp.eye(3).at[0, 1].set(1.0), ValueError, "symmetric"),
                       (jnp.diag(jnp.array([1.0, -1.0, 1.0])), ValueError, "positive semidefinite")]:
  case(f"check_covariance({part})", cov.check_covariance, (bad,), Err(exc, "Σ", part))
case("check_covariance(eye·1e-30) ok", cov.check_covariance, (jnp.eye(3) * f32(1e-30),), Val(np.eye(3) * 1e-30, rtol=1e-6))

# ------------------------------------------------------------------ rate accounting
CODES = jnp.tile(jnp.arange(8, dtype=jnp.int32), (3, 4))  # 8 equiprobable symbols per row
for fn, ref in [(R.empirical_entropy_bits, 3.0), (R.fixed_length_bits, 3.0)]:
  case(f"{fn.__name__}(uniform 8 symbols) = 3", fn, (CODES,), Val(np.full(3, ref), rtol=1e-6))
  case(f"{fn.__name__}(zero-length axis)", fn, (jnp.zeros((3, 0), jnp.int32),), Err(ValueError, "codes has a zero-length axis", "(3, 0)"))
  case(f"{fn.__name__}(complex)", fn, (jnp.zeros((3, 4), jnp.complex64),), Err(TypeError, "codes", "complex64"))
  case(f"{fn.__name__}(scalar)", fn, (jnp.int32(1),), Err(ValueError, "codes must be at least 1-D"))
  case(f"{fn.__name__}(axis=5)", lambda c, fn=fn: fn(c, axis=5), (CODES,), Err(ValueError, "axis=5", "out of range"))
case("gaussian_code_bits(zero-length)", R.gaussian_code_bits, (jnp.zeros((2, 0), jnp.int32),), Err(ValueError, "zero-length axis"))
case("empirical_entropy_bits(constant) = 0", R.empirical_entropy_bits, (jnp.zeros((2, 16), jnp.int32),), Val(np.zeros(2)))
ANS = "host-side ANS coder (constriction), documented as not jit-able"
case("ans_coded_bits(float codes)", R.ans_coded_bits, (np.ones((2, 4), np.float32),), Err(TypeError, "codes must be integers", "float32"), jit=ANS)
case("ans_coded_bits(1-D)", R.ans_coded_bits, (np.ones(4, np.int32),), Err(ValueError, "codes must be a 2-D", "(4,)"), jit=ANS)
case("ans_coded_bits(empty rows)", R.ans_coded_bits, (np.ones((2, 0), np.int32),), Err(ValueError, "no symbols per row", "(2, 0)"), jit=ANS)
case("ans_coded_bits(model='x')", lambda c: R.ans_coded_bits(c, "x"), (np.ones((2, 4), np.int32),), Err(ValueError, "model='x'"), jit=ANS)

# ------------------------------------------------------------------ matmul and Monte Carlo
QI = Q.get("int8_row")
A = jax.random.normal(jax.random.key(2), (64, 4))
case("matmul_error(quant_a='nvfp4')", lambda a, b: matmul_error(a, b, "nvfp4", QI), (A, A),
     Err(TypeError, "quant_a must be a quantizer object", "'nvfp4'", "rdq.quantizers.get"))
case("matmul_error(int A)", lambda a, b: matmul_error(a, b, QI, QI), (A.astype(jnp.int32), A), Err(TypeError, "A must be a real floating array", "int32"))
case("matmul_error(shapes)", lambda a, b: matmul_error(a, b, QI, QI), (A, A[:32]), Err(ValueError, "same inner dimension", "(64, 4)", "(32, 4)"))
case("matmul_error(key=1.0)", lambda a, b: matmul_error(a, b, QI, QI, key=1.0), (A, A), Err(TypeError, "key must be a PRNG key", "float"))
case("matmul_error(A, A) exact quantizer = 0", lambda a, b: matmul_error(a, b, Q.get("int8_row"), Q.get("int8_row")),
     (jnp.ones((64, 4)), jnp.ones((64, 4))), Val(0.0, atol=0.0))
MC = "Monte Carlo driver: jits its own sample function; not itself a traced function"
case("matmul_distortion(quant_b=str)", lambda: matmul_distortion(QI, "int8", MatmulSetup(16, 2, 2), KEY, 4), (),
     Err(TypeError, "quant_b must be a quantizer object", "'int8'"), jit=MC)
case("matmul_distortion(key=0)", lambda: matmul_distortion(QI, QI, MatmulSetup(16, 2, 2), 0, 4), (), Err(TypeError, "key must be a PRNG key", "int"), jit=MC)
case("matmul_distortion(setup tuple)", lambda: matmul_distortion(QI, QI, (16, 2, 2), KEY, 4), (), Err(TypeError, "setup must be a MatmulSetup", "tuple"), jit=MC)
case("matmul_distortion(num_samples=1)", lambda: matmul_distortion(QI, QI, MatmulSetup(16, 2, 2), KEY, 1), (), Err(ValueError, "n=1", "≥ 2"), jit=MC)
case("matmul_distortion(block ∤ n)", lambda: matmul_distortion(Q.get("int4_block32"), QI, MatmulSetup(48, 2, 2), KEY, 4), (),
     Err(ValueError, "block_size=32", "n=48"), jit=MC)
for f in ("n", "a", "b"):
  for v in (0, -1, 2.5, True):
    kw = {"n": 16, "a": 2, "b": 2, f: v}
    case(f"MatmulSetup({f}={v})", lambda kw=kw: MatmulSetup(**kw), (), Err(ValueError, f"{f}={v!r}", "positive integer"), jit=HOST)
case("estimate(sample_fn=3)", lambda: estimate(3, KEY, 8), (), Err(TypeError, "sample_fn must be a function", "int"), jit=MC)
case("estimate(key='a')", lambda: estimate(lambda k: jax.random.normal(k), "a", 8), (), Err(TypeError, "key must be a PRNG key", "str"), jit=MC)
case("estimate(n=1)", lambda: estimate(lambda k: jax.random.normal(k), KEY, 1), (), Err(ValueError, "n=1", "≥ 2"), jit=MC)
case("estimate(batch=0)", lambda: estimate(lambda k: jax.random.normal(k), KEY, 8, batch=0), (), Err(ValueError, "batch=0", "positive"), jit=MC)
case("estimate(constant 1e30) = 1e30 ± 0", lambda: estimate(lambda k: jnp.float32(1e30), KEY, 8).mean, (), Val(1e30, rtol=1e-6), jit=MC)
case("Estimate.ci(level=1.5)", lambda: Estimate(jnp.float32(0), jnp.float32(1), 2).ci(1.5), (), Err(ValueError, "level=1.5", "(0, 1)"), jit=HOST)


# ------------------------------------------------------------------ kernels' pack functions and the sweep store
try:
  from rdq.kernels.pack import pack_codebook, pack_int, pack_int_zero_point
except ImportError:  # pragma: no cover - kernels not importable on this install
  pack_codebook = None
if pack_codebook is not None:
  CB = jnp.ones((1, 16, 2))
  _pack_cb = lambda i: pack_codebook(i, CB, group_size=16)  # noqa: E731
  case("pack_codebook(index 16 ≥ C=16)", _pack_cb, (jnp.full((4, 8), 16, jnp.int32),),
       Err(ValueError, "indices holds 16", "[0, 15]"))
  case("pack_codebook(index -1)", _pack_cb, (jnp.full((4, 8), -1, jnp.int32),),
       Err(ValueError, "indices holds -1", "[0, 15]"))
  case("pack_int_zero_point(4-bit code 20)", lambda c: pack_int_zero_point(c, jnp.ones((4, 1)), jnp.zeros((4, 1), jnp.int32), bits=4,
       group_size=32), (jnp.full((4, 32), 20, jnp.int32),), Err(ValueError, "codes holds 20", "[0, 15]"))
  case("pack_int(8-bit code as 4-bit)", lambda c: pack_int(c, Q.IntQuantizer(4, "row")), (Q.get("int8_row").encode(X[:, :32]),),
       Err(ValueError, "code.codes holds", "[-8, 7]"))


def _store_damaged_point():
  import os
  import tempfile

  from rdq.experiments._store import PointStore

  d = tempfile.mkdtemp()
  store = PointStore(d)
  cfg = {"a": 1}
  path = store.put(cfg, {"x": 1.0})
  path.write_text('{"key": "tr')  # truncated by a full disk / rsync
  got = store.get(cfg)
  return got is None and not path.exists() and len(os.listdir(os.path.join(d, "points", "damaged"))) == 1


STORE = "file-system store (host only): a damaged point is detected, moved aside, recomputed"
case("PointStore.get(truncated point) → None, moved aside", _store_damaged_point, (), Val(True), jit=STORE)


# ------------------------------------------------------------------ runner
_EAGER: dict[str, Any] = {}
_JITTED: dict[Any, Callable] = {}


def _jitted(fn):
  """``checked(jax.jit(fn))``, one per function: cases sharing a function (and shapes) share
  one compilation (the outer ``jit`` caches the checkified program)."""
  if fn not in _JITTED:
    from jax.experimental import checkify

    inner = jax.jit(checkify.checkify(jax.jit(fn), errors=checkify.user_checks))

    def run(*args):
      err, out = inner(*args)
      err.throw()
      return out

    _JITTED[fn] = run
  return _JITTED[fn]


def _check_value(out, exp: Val):
  got = np.asarray(jax.tree_util.tree_leaves(out)[0] if isinstance(out, tuple) else out, np.float64)
  ref = exp.ref() if callable(exp.ref) else exp.ref
  ref = np.broadcast_to(np.asarray(ref, np.float64), got.shape)
  if exp.nan_mask is not None:
    assert np.all(np.isnan(got[exp.nan_mask])), "the poisoned group must be NaN"
    got, ref = got[~exp.nan_mask], ref[~exp.nan_mask]
  assert not np.any(np.isnan(got)), f"silent NaN: {got}"
  np.testing.assert_allclose(got, ref, rtol=exp.rtol, atol=exp.atol)
  return out


def _check_error(call, exp: Err):
  with pytest.raises(exp.exc) as info:
    call()
  msg = str(info.value)
  for part in exp.parts:
    assert part in msg, f"error message lacks {part!r}: {msg}"


def _params():
  out = []
  for c in CASES:
    marks = [pytest.mark.xfail(strict=True, reason=f"still failing; owner: {c.owner}")] if c.owner else []
    out.append(pytest.param(c, "eager", id=f"{c.id}-eager", marks=marks))
    if c.jit is True:
      out.append(pytest.param(c, "jit", id=f"{c.id}-jit", marks=marks))
  return out


def test_corpus_is_large_enough():
  assert len(CASES) >= 250, len(CASES)


@pytest.mark.parametrize("c,mode", _params())
def test_case(c: Case, mode: str):
  if mode == "eager":
    call = lambda: c.fn(*c.args)  # noqa: E731
  else:
    call = lambda: _jitted(c.fn)(*c.args)  # noqa: E731
  if isinstance(c.expect, Err):
    _check_error(call, c.expect)
    return
  out = _check_value(call(), c.expect)
  if mode == "eager":
    _EAGER[c.id] = out
  if mode == "jit" and c.bitwise is True:
    eager = _EAGER.get(c.id)
    eager = c.fn(*c.args) if eager is None else eager
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(eager)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg="jit differs from eager")


@pytest.mark.parametrize("name", ["vq2_b2_g64", "int4_block32", "nvfp4", "e8_nested_q16"])
def test_bad_input_fails_before_compiling(name):
  """``eager_jit``'s host pre-check: an eager ``encode(NaN)`` (and VQ's out-of-range group maxima)
  raise the method's own error without compiling the whole program first."""
  import jax.monitoring

  q = Q.get(name)
  x = X[:, :192].at[0, 5].set(NAN)  # a shape no other case uses: nothing cached
  tiny = X[:, :192] * f32(2.0**-26)
  compiles = []
  on = [True]
  jax.monitoring.register_event_duration_secs_listener(
      lambda ev, dur, **kw: on[0] and ev == "/jax/core/compile/backend_compile_duration" and compiles.append(dur))
  try:
    with pytest.raises(ValueError, match="x has 1 non-finite"):
      q.encode(x)
    if name.startswith("vq"):
      with pytest.raises(ValueError, match="rescale x"):
        Q.get("vq1_b2_g64_int8").quantize(tiny)
  finally:
    on[0] = False
  assert compiles == [], f"{len(compiles)} programs compiled before the error"
