"""Synthetic input-covariance families Σ_X (the layer Hessian H = E[x xᵀ]) and a validator.

Every family is a frozen dataclass (hashable, so it can be a static ``jit`` argument) with

* ``name`` — a short identifier used in configs and plots;
* ``__call__(key, param) -> Σ`` — one ``(n, n)`` symmetric PSD matrix, jit-able and
  vmappable over both ``key`` and the scalar family parameter ``param``;
* ``param_name`` — what ``param`` means (e.g. ``"alpha"`` for the power law).

``sample(family, key, params)`` draws one Σ per entry of ``params`` (a batch ``(b, n, n)``;
the i-th matrix uses ``fold_in(key, i)``), so experiments vmap over the family axis.
Unless stated otherwise each Σ is normalized to ``tr Σ = n`` (mean eigenvalue 1), so that
families are comparable at equal "signal power" ``E‖x‖²/n = 1``.

The families (n = input features):

========================  ======================================================  ==========
class                     Σ                                                       param
========================  ======================================================  ==========
``Isotropic``             ``I``                                                   (unused)
``PowerLaw``              ``Q diag(λ) Qᵀ``, ``λ_i ∝ i^(−α)``, Q Haar-random        ``alpha``
``Spiked``                ``I + β V Vᵀ``, V Haar-random ``(n, k)`` orthonormal     ``beta``
``AR1``                   Toeplitz ``ρ^|i−j|`` (already ``tr = n``)               ``rho``
``Wishart``               ``XᵀX/N``, rows of X ~ N(0, Σ_pop), Σ_pop power law     ``alpha``
``BlockDiagonal``         blocks ``(1−ρ)I + ρ 11ᵀ`` scaled by log-normal factors  ``rho``
``LDLSpread``             ``L D Lᵀ``, L unit lower-triangular, D log-uniform      ``log_spread``
========================  ======================================================  ==========

``from_data(x, rel_damp)`` is the empirical ``Σ = xᵀx/N + rel_damp · mean(diag) · I``.

References:
  Haar-random orthogonal matrices via QR with sign correction: F. Mezzadri, "How to
  generate random matrices from the classical compact groups", Notices AMS 54 (2007), Sec. 5.
  The LDL spread family realises the "arithmetic vs geometric mean of the LDL diagonal"
  gap of GPTQ in Lifar, Savkin, Ordentlich & Polyanskiy, "WaterSIC" (arXiv 2603.04956), and
  Ordentlich & Polyanskiy, "High-Rate Quantized Matrix Multiplication II" (2026).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from rdq.checks import check_key, is_concrete, require

__all__ = [
    "AR1",
    "BlockDiagonal",
    "FAMILIES",
    "Isotropic",
    "LDLSpread",
    "PowerLaw",
    "Spiked",
    "Wishart",
    "check_covariance",
    "from_data",
    "haar_orthogonal",
    "make_family",
    "sample",
]


def _check_param(param, name: str, lo: float = -np.inf, hi: float = np.inf, what: str = "") -> None:
  """Require a real, finite family parameter in [lo, hi] (eagerly: ValueError; traced: checkify)."""
  dt = param.dtype if hasattr(param, "dtype") else np.asarray(param).dtype
  if not (jnp.issubdtype(dt, jnp.floating) or jnp.issubdtype(dt, jnp.integer)):
    raise TypeError(f"{name} must be a real number; got dtype {dt}")
  p = jnp.asarray(param, jnp.float32) if not is_concrete(param) else np.asarray(param, np.float64)
  # finite, inside [lo, hi] up to float32 rounding of the boundary (e.g. ρ = f32(−1/3)); NaN fails
  slack_lo, slack_hi = lo - 1e-6 * abs(lo), hi + 1e-6 * abs(hi)
  ok = (p >= slack_lo) & (p <= slack_hi) & (p > -np.inf) & (p < np.inf)
  bad = p if is_concrete(param) else jnp.where(ok, jnp.nan, p)
  shown = bad if not is_concrete(param) else (np.asarray(p)[~np.asarray(ok)] if np.ndim(p) else p)
  require(ok, f"{name}={{}} is out of range: expected a finite {lo:g} ≤ {name} ≤ {hi:g}{what}", shown)


def _check_n(n) -> None:
  if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
    raise ValueError(f"n={n!r} must be a positive integer (number of input features)")


def haar_orthogonal(key: PRNGKeyArray, n: int) -> Float[Array, "n n"]:
  """A Haar-distributed ``n × n`` orthogonal matrix (QR of a Gaussian, signs fixed).

  References:
    Mezzadri (2007), "How to generate random matrices from the classical compact groups", Sec. 5.
  """
  g = jax.random.normal(key, (n, n), jnp.float32)
  q, r = jnp.linalg.qr(g)
  d = jnp.sign(jnp.diagonal(r))
  d = jnp.where(d == 0, 1.0, d)
  return q * d[None, :]


def _sym(s: Array) -> Array:
  return 0.5 * (s + s.T)


def _normalize_trace(s: Array) -> Array:
  n = s.shape[-1]
  return s * (n / jnp.trace(s))


def _rotate(key: PRNGKeyArray, eig: Array) -> Array:
  q = haar_orthogonal(key, eig.shape[0])
  return _sym((q * eig[None, :]) @ q.T)


@dataclasses.dataclass(frozen=True)
class Isotropic:
  """``Σ = I_n`` (``param`` is ignored; kept so every family has the same signature)."""

  n: int
  name: ClassVar[str] = "isotropic"
  param_name: ClassVar[str] = "unused"

  def __post_init__(self):
    _check_n(self.n)

  def __call__(self, key: PRNGKeyArray, param: ArrayLike = 0.0) -> Float[Array, "n n"]:
    del key
    return jnp.eye(self.n, dtype=jnp.float32) + 0.0 * jnp.asarray(param, jnp.float32)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """Power-law spectrum ``λ_i ∝ i^(−α)`` (i = 1..n) in a Haar-random eigenbasis, ``tr Σ = n``.

  ``α = 0`` is isotropic; ``α = 1`` is Zipf-like; larger α spreads the spectrum.
  """

  n: int
  name: ClassVar[str] = "power_law"
  param_name: ClassVar[str] = "alpha"

  def __post_init__(self):
    _check_n(self.n)

  def eigenvalues(self, alpha: ArrayLike) -> Float[Array, " n"]:
    """The spectrum, descending, normalized to mean 1."""
    i = jnp.arange(1, self.n + 1, dtype=jnp.float32)
    lam = i ** (-jnp.asarray(alpha, jnp.float32))
    return lam * (self.n / jnp.sum(lam))

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    check_key(key)
    _check_param(param, "alpha")
    return _rotate(key, self.eigenvalues(param))


@dataclasses.dataclass(frozen=True)
class Spiked:
  """``Σ ∝ I + β V Vᵀ`` with V a Haar-random ``(n, k)`` orthonormal frame; ``tr Σ = n``."""

  n: int
  k: int = 4
  name: ClassVar[str] = "spiked"
  param_name: ClassVar[str] = "beta"

  def __post_init__(self):
    _check_n(self.n)
    if not isinstance(self.k, int) or not 1 <= self.k <= self.n:
      raise ValueError(f"k={self.k!r} must be an integer in [1, n={self.n}]")

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    check_key(key)
    _check_param(param, "beta", -1.0, np.inf, " (β < −1 makes I + β V Vᵀ indefinite)")
    v = haar_orthogonal(key, self.n)[:, : self.k]
    s = jnp.eye(self.n, dtype=jnp.float32) + jnp.asarray(param, jnp.float32) * (v @ v.T)
    return _normalize_trace(_sym(s))


@dataclasses.dataclass(frozen=True)
class AR1:
  """Stationary AR(1) / Kac–Murdock–Szegő Toeplitz matrix ``Σ_ij = ρ^|i−j|`` (|ρ| < 1)."""

  n: int
  name: ClassVar[str] = "ar1"
  param_name: ClassVar[str] = "rho"

  def __post_init__(self):
    _check_n(self.n)

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    del key
    _check_param(param, "rho", -1.0, 1.0, " (|ρ| > 1 is not a covariance)")
    i = jnp.arange(self.n, dtype=jnp.float32)
    lag = jnp.abs(i[:, None] - i[None, :])
    rho = jnp.asarray(param, jnp.float32)
    # rho**0 = 1 also for rho = 0.
    return jnp.where(lag == 0, 1.0, jnp.sign(rho) ** lag * jnp.abs(rho) ** lag)


@dataclasses.dataclass(frozen=True)
class Wishart:
  """Empirical covariance ``XᵀX/N`` of ``N = num_samples`` rows ``x ~ N(0, Σ_pop)``.

  ``Σ_pop`` is the ``PowerLaw`` matrix with exponent ``param`` (``0``: white Wishart, whose
  spectrum follows Marchenko–Pastur with aspect ``n/N``). Normalized to ``tr Σ = n``.
  Singular when ``N < n``.
  """

  n: int
  num_samples: int = 1024
  name: ClassVar[str] = "wishart"
  param_name: ClassVar[str] = "alpha"

  def __post_init__(self):
    _check_n(self.n)
    if not isinstance(self.num_samples, int) or self.num_samples < 1:
      raise ValueError(f"num_samples={self.num_samples!r} must be a positive integer")

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    check_key(key)
    _check_param(param, "alpha")
    k_rot, k_x = jax.random.split(key)
    lam = PowerLaw(self.n).eigenvalues(param)
    q = haar_orthogonal(k_rot, self.n)
    x = jax.random.normal(k_x, (self.num_samples, self.n), jnp.float32) * jnp.sqrt(lam)[None, :]
    x = x @ q.T
    return _normalize_trace(_sym(x.T @ x / self.num_samples))


@dataclasses.dataclass(frozen=True)
class BlockDiagonal:
  """Block-diagonal Σ: ``num_blocks`` equicorrelated blocks ``(1−ρ)I + ρ 11ᵀ``.

  Block ``b`` is multiplied by ``exp(log_scale_std · g_b)``, ``g_b ~ N(0, 1)`` (random block
  powers); then ``tr Σ = n``. PSD for ``−1/(block−1) ≤ ρ ≤ 1``.
  """

  n: int
  num_blocks: int = 8
  log_scale_std: float = 1.0
  name: ClassVar[str] = "block_diagonal"
  param_name: ClassVar[str] = "rho"

  def __post_init__(self):
    _check_n(self.n)
    if not isinstance(self.num_blocks, int) or self.num_blocks < 1 or self.n % self.num_blocks:
      raise ValueError(f"num_blocks={self.num_blocks!r} must be a positive integer dividing n={self.n}")
    if not self.log_scale_std >= 0:
      raise ValueError(f"log_scale_std={self.log_scale_std!r} must be ≥ 0")

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    check_key(key)
    b = self.n // self.num_blocks
    lo = -1.0 / (b - 1) if b > 1 else -np.inf
    _check_param(param, "rho", lo, 1.0, f" for blocks of size {b} (else a block is indefinite)")
    rho = jnp.asarray(param, jnp.float32)
    block = (1.0 - rho) * jnp.eye(b, dtype=jnp.float32) + rho
    scales = jnp.exp(self.log_scale_std * jax.random.normal(key, (self.num_blocks,), jnp.float32))
    s = jnp.kron(jnp.diag(scales), block)
    return _normalize_trace(s)


@dataclasses.dataclass(frozen=True)
class LDLSpread:
  """``Σ = L D Lᵀ`` with a spread LDL diagonal: the family where GPTQ's gap is unbounded.

  ``L`` is unit lower-triangular with iid ``N(0, coupling²/n)`` entries below the diagonal;
  ``D = diag(d)`` with ``log d_i`` evenly spaced on ``[−s/2, s/2]`` (``s = log_spread``,
  natural log) in a random order. ``L D^{1/2}`` is then the Cholesky factor of Σ, so the
  Cholesky diagonal used by WaterSIC is exactly ``d_i`` and the arithmetic/geometric
  mean ratio of ``d`` grows without bound with ``s`` (``AM/GM = sinh(s/2)/(s/2)`` as
  ``n → ∞``) while ``det Σ = Π d_i = 1``. Not trace-normalized (``det Σ = 1`` instead).
  """

  n: int
  coupling: float = 1.0
  name: ClassVar[str] = "ldl_spread"
  param_name: ClassVar[str] = "log_spread"

  def __post_init__(self):
    _check_n(self.n)
    if not self.coupling >= 0:
      raise ValueError(f"coupling={self.coupling!r} must be ≥ 0")

  def ldl_diagonal(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, " n"]:
    """The diagonal ``d`` of ``Σ = L D Lᵀ`` (``= diag(chol(Σ))²``) for this key."""
    k_perm, _ = jax.random.split(key)
    u = jnp.linspace(-0.5, 0.5, self.n, dtype=jnp.float32) if self.n > 1 else jnp.zeros((1,), jnp.float32)
    d = jnp.exp(jnp.asarray(param, jnp.float32) * u)
    return jax.random.permutation(k_perm, d)

  def __call__(self, key: PRNGKeyArray, param: ArrayLike) -> Float[Array, "n n"]:
    check_key(key)
    _check_param(param, "log_spread")
    _, k_l = jax.random.split(key)
    d = self.ldl_diagonal(key, param)
    g = jax.random.normal(k_l, (self.n, self.n), jnp.float32) * (self.coupling / np.sqrt(self.n))
    lower = jnp.tril(g, -1) + jnp.eye(self.n, dtype=jnp.float32)
    return _sym((lower * d[None, :]) @ lower.T)


FAMILIES = {
    cls.name: cls for cls in (Isotropic, PowerLaw, Spiked, AR1, Wishart, BlockDiagonal, LDLSpread)
}


def make_family(name: str, n: int, **options):
  """Build a family by its ``name`` (as in configs): ``make_family("power_law", 256)``."""
  if name not in FAMILIES:
    raise ValueError(f"unknown covariance family {name!r}; known: {sorted(FAMILIES)}")
  return FAMILIES[name](n, **options)


def sample(family, key: PRNGKeyArray, params: Float[ArrayLike, " b"]) -> Float[Array, "b n n"]:
  """One Σ per family parameter: ``out[i] = family(fold_in(key, i), params[i])``.

  Args:
    family: a family instance (e.g. ``PowerLaw(256)``).
    key: PRNG key.
    params: 1-D array of family parameters (e.g. ``alpha`` values).

  Returns:
    ``(b, n, n)`` batch of symmetric PSD matrices.
  """
  check_key(key)
  if np.ndim(params) != 1:
    raise ValueError(f"params must be 1-D (one parameter per matrix); got shape {np.shape(params)}")
  if np.shape(params)[0] == 0:
    raise ValueError("params is empty: give at least one family parameter")
  if is_concrete(params) and not isinstance(family, Isotropic):
    # check every parameter eagerly, before vmapping (inside, the checks are traced)
    _family_check(family, np.asarray(params, np.float64))
  params = jnp.asarray(params, jnp.float32)
  keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(params.shape[0]))
  return jax.vmap(family)(keys, params)


def _family_check(family, params: np.ndarray) -> None:
  """The parameter check of ``family.__call__``, applied to a concrete batch of parameters."""
  if isinstance(family, AR1):
    _check_param(params, "rho", -1.0, 1.0, " (|ρ| > 1 is not a covariance)")
  elif isinstance(family, Spiked):
    _check_param(params, "beta", -1.0, np.inf, " (β < −1 makes I + β V Vᵀ indefinite)")
  elif isinstance(family, BlockDiagonal):
    b = family.n // family.num_blocks
    lo = -1.0 / (b - 1) if b > 1 else -np.inf
    _check_param(params, "rho", lo, 1.0, f" for blocks of size {b} (else a block is indefinite)")
  elif hasattr(family, "param_name"):
    _check_param(params, family.param_name)


def from_data(x: Float[ArrayLike, "N n"], rel_damp: float = 0.0) -> Float[Array, "n n"]:
  """Empirical second moment of activations plus relative damping.

  .. math::  Σ = \\frac1N x^\\top x + δ \\cdot \\overline{\\mathrm{diag}}(x^\\top x / N)\\, I.

  Args:
    x: ``(N, n)`` activations, one token per row (uncentred: H = E[x xᵀ] is what a linear
      layer's output error depends on).
    rel_damp: δ ≥ 0, damping relative to the mean diagonal (GPTQ's ``percdamp``).
  """
  x = jnp.asarray(x)
  if x.ndim != 2:
    raise ValueError(f"x must be (N, n) activations; got shape {x.shape}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise ValueError(f"x is empty (shape {x.shape}); from_data needs N ≥ 1 rows of n ≥ 1 features")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    if jnp.issubdtype(x.dtype, jnp.complexfloating) or x.dtype == jnp.bool_:
      raise TypeError(f"x must be real activations; got dtype {x.dtype}")
  if isinstance(rel_damp, bool) or not (isinstance(rel_damp, (int, float, np.floating)) and rel_damp >= 0
                                        and np.isfinite(rel_damp)):
    raise ValueError(f"rel_damp={rel_damp!r} must be a finite float ≥ 0")
  nonfinite = jnp.sum(~jnp.isfinite(x))
  require(nonfinite == 0, "x has {} NaN/Inf entries; from_data needs finite activations", nonfinite)
  x = x.astype(jnp.float32)
  s = _sym(x.T @ x / x.shape[0])
  return s + rel_damp * jnp.mean(jnp.diagonal(s)) * jnp.eye(x.shape[1], dtype=s.dtype)


def check_covariance(
    sigma: ArrayLike, name: str = "Σ", tol: float = 1e-5, n: int | None = None, *, psd: bool = True
) -> ArrayLike:
  """Raise ``ValueError`` unless ``sigma`` is a finite, symmetric, PSD ``(n, n)`` matrix.

  Checks, in order (the error names the one that failed): 2-D square (and ``n`` rows if
  given); finite; ``max|Σ − Σᵀ| ≤ tol·max|Σ|``; smallest eigenvalue ``≥ −tol·‖Σ‖₂``.
  Complex input raises ``TypeError``. Under ``jit`` the shape checks raise while tracing and
  the value checks are checkify checks (they raise through ``rdq.checks.checked``).
  ``psd=False`` skips the O(n³) eigenvalue check, for a caller that certifies it from a
  factorization it computes anyway (WaterSIC's Cholesky factor). Returns ``sigma`` unchanged.
  """
  if np.iscomplexobj(sigma) or (hasattr(sigma, "dtype") and jnp.issubdtype(sigma.dtype, jnp.complexfloating)):
    raise TypeError(f"{name} must be real; got complex dtype {sigma.dtype}")
  if isinstance(sigma, jax.core.Tracer):
    return _check_covariance_traced(sigma, name, tol, n, psd)
  s = np.asarray(sigma, dtype=np.float64)
  if s.ndim != 2 or s.shape[0] != s.shape[1]:
    raise ValueError(f"{name} must be a square (n, n) matrix; got shape {s.shape}")
  if n is not None and s.shape[0] != n:
    raise ValueError(f"{name} must be ({n}, {n}) to match n={n} input features; got {s.shape}")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"{name} must be finite; it has {int(np.sum(~np.isfinite(s)))} NaN/Inf entries")
  scale = float(np.max(np.abs(s))) if s.size else 0.0
  asym = float(np.max(np.abs(s - s.T))) if s.size else 0.0
  if asym > tol * max(scale, 1e-30):
    raise ValueError(f"{name} must be symmetric; max|{name} − {name}ᵀ| = {asym:.3g} > {tol}·max|{name}| = {tol * scale:.3g}")
  if not psd:
    return sigma
  eig = np.linalg.eigvalsh(0.5 * (s + s.T))
  norm = float(np.max(np.abs(eig))) if eig.size else 0.0
  if eig.size and eig[0] < -tol * norm:
    raise ValueError(f"{name} must be positive semidefinite; min eigenvalue {eig[0]:.3g} < −{tol}·‖{name}‖ = {-tol * norm:.3g}")
  return sigma


def _check_covariance_traced(sigma, name: str, tol: float, n: int | None, psd: bool = True):
  if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
    raise ValueError(f"{name} must be a square (n, n) matrix; got shape {sigma.shape}")
  if n is not None and sigma.shape[0] != n:
    raise ValueError(f"{name} must be ({n}, {n}) to match n={n} input features; got {sigma.shape}")
  s = sigma.astype(jnp.float32)
  bad = jnp.sum(~jnp.isfinite(s))
  require(bad == 0, f"{name} must be finite; it has {{}} NaN/Inf entries", bad)
  scale = jnp.max(jnp.abs(s))
  asym = jnp.max(jnp.abs(s - s.T))
  require(asym <= tol * jnp.maximum(scale, 1e-30), f"{name} must be symmetric; max|{name} − {name}ᵀ| = {{}}", asym)
  if not psd:
    return sigma
  eig = jnp.linalg.eigvalsh(0.5 * (s + s.T))
  norm = jnp.max(jnp.abs(eig))
  require(eig[0] >= -tol * norm, f"{name} must be positive semidefinite; min eigenvalue {{}}", eig[0])
  return sigma
