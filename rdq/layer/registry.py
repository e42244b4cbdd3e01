"""One door to the layer algorithms: ``rdq.layer.get(name, **options)`` and ``rdq.layer.names()``.

Every algorithm is a frozen, hashable ``LayerAlgorithm`` — a name, its config dataclass and an
optional input rotation — with one entry point

.. code-block:: python

   w_hat, report = algo(w, h, key=key, rate_bits=rate_bits)

for ``W`` of shape ``(n, m) = (in_features, out_features)`` and ``H = E[x xᵀ]`` ``(n, n)``.
It is jit-able and vmappable over ``w``, ``h`` and ``key`` (and over ``rate_bits`` where
``algo.traced_rate``); on concrete inputs it first runs the algorithm's eager checks, which
raise ``ValueError``/``TypeError`` naming the bad argument. ``report`` is a ``LayerReport``
for every algorithm; ``report.rate_bits`` is the rate that ``rate_bits`` budgets.

**Rate budget.** ``rate_bits`` is bits per weight *with side information*; ``None`` keeps the
config's own rate. Fixed-length codes take the largest code within the budget
(``report.rate_bits ≤ rate_bits``): RTN/GPTQ on a min–max grid the most bits
(``MinMaxGrid.for_budget``), GPTVQ the index bits and codebook tiles
(``gptvq_for_budget``), lattice SIC the largest Voronoi modulus q. Entropy-coded ones aim at it
(WaterSIC by secant steps on the measured plug-in entropy; the ``"uniform"`` grid by the
high-rate rule, plus ``rate_iters`` secant steps on the measured entropy if asked). Codes
whose size depends on the rate need a concrete ``rate_bits``.

**Scale invariance.** Side information is stored in fp16 (scales, steps, codebooks), whose
range would make the result depend on the units of W (at ``W·10⁻⁸`` the scales flush to zero,
at ``W·10⁶`` they overflow). For the algorithms whose side information is relative to W
(min–max and uniform grids, WaterSIC, GPTVQ) the entry point therefore quantizes ``W/2^e``,
``2^e`` the power of two just above the RMS of W, and multiplies back: the fp16 quantities are
then relative to a per-layer exponent (one int8 per layer, ``8/(n·m)`` bits, not counted).
Powers of two commute with float rounding, so for weights already in fp16's range nothing
changes bit for bit, and ``W·s`` gives exactly the result of ``W·c`` (``c = s·2^{−k} ∈ [½, 2)``)
scaled by ``2^k`` for any s from 10⁻⁸ to 10¹⁵ (``d_per_entry`` is float32: it overflows when
``s²·D`` exceeds 3·10³⁸). RTN with a registry quantizer
and lattice SIC keep W as it is: those codes are defined in absolute units (a quantizer with
its own scales handles them itself; bf16 lattice scales have float32's range).

**Rotation** (option ``rotation="haar"`` or ``"hadamard"``, needs ``key``): the layer is
quantized in a random orthogonal input basis, ``W' = QᵀW``, ``H' = QᵀHQ``, ``Ŵ = QŴ'``
(incoherence processing: Chee et al., "QuIP", NeurIPS 2023, Sec. 4; Tseng et al., "QuIP#",
ICML 2024, Sec. 3). The distortion is basis-free; the key is split into the rotation's and
the algorithm's.

**One program per structure** (``algo.split(n, m, rate_bits)``). Options that only enter the
arithmetic — the bit width of RTN's and GPTQ's min–max grid (``q_max = 2^b − 1`` as a float32),
lattice SIC's ``percdamp``, ``act_noise`` and ``feedback`` (``U = I`` without it) — are split off
as traced scalars, so every call, eager or under ``jit``/``vmap``, runs the program of the
remaining *structure*: 2-, 3- and 4-bit GPTQ, or E8 with and without LDLQ feedback, compile once
per layer shape, with the same Ŵ and report bit for bit. What sizes arrays (GPTVQ's codebooks
``2^{d·b}``, a lattice code's modulus q, group sizes) stays static.

Names (``names()``): ``rtn``, ``gptq``, ``watersic``, ``gptvq``, ``lattice_sic``; options are
the fields of their config dataclasses (``RTNConfig``, ``GPTQConfig``, ``WaterSICConfig``,
``GPTVQConfig``, ``LatticeSICConfig``), with the grid of RTN/GPTQ given flat: ``grid="minmax"``
(``bits``, ``sym``, ``group_size``), ``grid="uniform"`` (``rate_bits``; ``rate_iters``) or, for RTN, a
quantizer registry name (``grid="nvfp4"``). A Hydra node ``{name: gptq, percdamp: 0.01}`` is
``get(**node)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from rdq.checks import require
from rdq.layer._sic import MinMaxGrid, UniformGrid
from rdq.layer.gptq import GPTQConfig, gptq_traced
from rdq.layer.gptq import _check as _gptq_check
from rdq.layer.gptq import _split as _gptq_split
from rdq.layer.gptvq import GPTVQConfig, gptvq_traced
from rdq.layer.gptvq import _check as _gptvq_check
from rdq.layer.report import EXTRAS_WEIGHT_POWER, LayerReport, concrete_rate
from rdq.layer.rtn import RTNConfig, rtn_traced
from rdq.layer.rtn import _check as _rtn_check
from rdq.layer.rtn import _split as _rtn_split
from rdq.layer.watersic import WaterSICConfig, watersic_traced
from rdq.layer.watersic import _check as _watersic_check

__all__ = ["ROTATIONS", "LayerAlgorithm", "LayerSpec", "get", "names", "register"]

ROTATIONS = (None, "haar", "hadamard")


@dataclasses.dataclass(frozen=True)
class LayerSpec:
  """What ``register`` needs to add a layer algorithm: its config type, a builder from options,
  the traced core ``(w, h, config, key=None, *, rate_bits=None) -> (Ŵ, LayerReport)``, the eager
  checks, and whether its rate is nominal or entropy-coded (and may be traced)."""

  config_type: type
  build: Callable[..., Any]  # options -> config
  core: Callable[..., tuple[Array, LayerReport]]  # (w, h, config, key=None, *, rate_bits=None)
  check: Callable[..., None]  # (w, h, config, key, rate_bits), eager
  rate_kind: Callable[[Any], str]  # config -> "nominal" | "entropy"
  traced_rate: Callable[[Any], bool]  # config -> whether rate_bits may be traced
  normalize: Callable[[Any], bool] = lambda config: True  # config -> whether W is normalized (module docstring)
  # (config, n, m, rate_bits) -> (structure config, {name: scalar}): the config sized for a concrete
  # budget, with the options that only enter arithmetic moved to traced scalars (``LayerAlgorithm.split``);
  # the core then takes ``scalars=``. None (or a split returning None for a config): no such split.
  split: Callable[..., tuple[Any, dict]] | None = None


_REGISTRY: dict[str, LayerSpec] = {}


def register(name: str, spec: LayerSpec) -> None:
  """Add an algorithm (its config type, builder, core, checks); it then gets the contract suite."""
  if name in _REGISTRY:
    raise ValueError(f"layer algorithm {name!r} is already registered")
  _REGISTRY[name] = spec


def names() -> tuple[str, ...]:
  """Registered layer-algorithm names, in registration order."""
  return tuple(_REGISTRY)


def _spec(name: str) -> LayerSpec:
  if name not in _REGISTRY:
    raise ValueError(f"unknown layer algorithm {name!r}; known: {names()}")
  return _REGISTRY[name]


@dataclasses.dataclass(frozen=True)
class LayerAlgorithm:
  """A layer algorithm with its config: ``algo(w, h, *, key, rate_bits) -> (Ŵ, LayerReport)``.

  Frozen and hashable (a static ``jit`` argument). Build it with ``rdq.layer.get``.

  Attributes:
    name: a name of ``rdq.layer.names()``.
    config: the algorithm's config dataclass.
    rotation: ``None``, ``"haar"`` or ``"hadamard"``: quantize in a random rotated input basis.
  """

  name: str
  config: Any
  rotation: str | None = None

  def __post_init__(self):
    spec = _spec(self.name)
    if not isinstance(self.config, spec.config_type):
      raise TypeError(f"config of {self.name!r} must be a {spec.config_type.__name__}; got {type(self.config).__name__}")
    if self.rotation not in ROTATIONS:
      raise ValueError(f"rotation={self.rotation!r} must be one of {ROTATIONS}")

  @property
  def rate_kind(self) -> str:
    """``"nominal"`` (fixed-length code) or ``"entropy"``: which rate ``report.rate_bits`` is."""
    return _spec(self.name).rate_kind(self.config)

  @property
  def traced_rate(self) -> bool:
    """Whether ``rate_bits`` may be a traced value (vmap a rate sweep) for this config."""
    return _spec(self.name).traced_rate(self.config)

  def split(self, n: int, m: int, rate_bits=None) -> tuple["LayerAlgorithm", Any, dict | None]:
    """``(structure, rate_bits', scalars)`` with ``structure(w, h, key=key, rate_bits=rate_bits',
    scalars=scalars)`` equal to ``self(w, h, key=key, rate_bits=rate_bits)`` on ``(n, m)`` layers.

    ``structure`` keeps only what fixes the compiled program (shapes, code sizes, loop counts);
    ``scalars`` are the options that only enter arithmetic (e.g. the number of min–max levels,
    the damping, LDLQ's feedback on/off), so a ``jit`` keyed on ``structure`` that takes
    ``scalars`` as an argument compiles once for all of them. A concrete budget of a code whose
    size depends on it is resolved here (``rate_bits' = None``). Algorithms without a split
    return ``(self, rate_bits, None)``.
    """
    spec = _spec(self.name)
    parts = None if spec.split is None else spec.split(self.config, n, m, rate_bits)
    if parts is None:
      return self, rate_bits, None
    return dataclasses.replace(self, config=parts[0]), None, parts[1]

  def check(self, w, h, *, key: PRNGKeyArray | None = None, rate_bits=None) -> None:
    """The eager checks of ``__call__`` (skipped for traced ``w``/``h``)."""
    _spec(self.name).check(w, h, self.config, key, rate_bits)
    if rate_bits is not None and not self.traced_rate:
      concrete_rate(rate_bits, self.name)
    if self.rotation is not None and key is None:
      raise ValueError(f"rotation={self.rotation!r} needs a PRNG key (key=jax.random.key(…))")

  def __call__(
      self,
      w: Float[Array, "n m"],
      h: Float[Array, "n n"],
      *,
      key: PRNGKeyArray | None = None,
      rate_bits=None,
      scalars: dict | None = None,
  ) -> tuple[Float[Array, "n m"], LayerReport]:
    """Quantize ``W`` under ``H`` within ``rate_bits`` (module docstring); ``Ŵ`` is float32.

    ``scalars``: only with a ``structure`` from ``split`` (its traced options); the eager checks
    then are the caller's (``check`` of the algorithm that was split).
    """
    if scalars is None:
      self.check(w, h, key=key, rate_bits=rate_bits)
    w = jnp.asarray(w, jnp.float32)
    h = jnp.asarray(h, jnp.float32)
    rot = None
    if self.rotation is not None:
      k_rot, key = jax.random.split(key)
      rot = _rotation(self.rotation, k_rot, w.shape[0])
      w, h = rot.forward(w), rot.rotate_hessian(h)
    spec = _spec(self.name)
    config = self.config
    if scalars is None and spec.split is not None:  # every call takes the split path: one program per structure
      parts = spec.split(config, w.shape[0], w.shape[1], rate_bits)
      if parts is not None:
        (config, scalars), rate_bits = parts, None
    extra = {} if scalars is None else {"scalars": scalars}
    if spec.normalize(config):
      w_n, e = _normalize(w)
      q_n, rep = spec.core(w_n, h, config, key=key, rate_bits=rate_bits, **extra)
      q, rep = _times_pow2(q_n, e), _rescale_report(rep, e)
    else:
      q, rep = spec.core(w, h, config, key=key, rate_bits=rate_bits, **extra)
    if rot is not None:
      q = rot.inverse(q)
    # The inputs were checked finite: a non-finite Ŵ is the algorithm's failure, never a result.
    require(jnp.all(jnp.isfinite(q)), f"layer algorithm {self.name!r} produced {{}} non-finite entries of Ŵ from "
            "finite W and H (e.g. an H too ill-conditioned for its damping); raise percdamp or check H", jnp.sum(~jnp.isfinite(q)))
    return q, rep


# ----------------------------------------------------------------------------- scale normalization
def _pow2(e):
  """Exact ``2^e`` in float32 for integer ``e ∈ [−126, 127]`` (built from the exponent bits)."""
  e = jnp.clip(jnp.asarray(e, jnp.int32), -126, 127)
  return jax.lax.bitcast_convert_type((e + 127) << 23, jnp.float32)


def _times_pow2(x, e):
  """``x · 2^e`` exactly (two factors, so |e| up to 252 stays representable)."""
  e = jnp.asarray(e, jnp.int32)
  e1 = e // 2
  return x * _pow2(e1) * _pow2(e - e1)


def _normalize(w):
  """``(W/2^e, e)`` with ``2^{e−1} ≤ RMS(W) < 2^e`` (exact; e = 0 for W = 0)."""
  _, e1 = jnp.frexp(jnp.max(jnp.abs(w)))  # max|W| first: squaring tiny or huge W under/overflows
  w1 = _times_pow2(w, -e1)
  _, e2 = jnp.frexp(jnp.sqrt(jnp.mean(w1 * w1)))
  e = (e1 + e2).astype(jnp.int32)
  return _times_pow2(w, -e), e


def _rescale_report(rep: LayerReport, e) -> LayerReport:
  extras = {k: _times_pow2(v, EXTRAS_WEIGHT_POWER[k] * e) if k in EXTRAS_WEIGHT_POWER else v
            for k, v in rep.extras.items()}
  return rep._replace(
      d_per_entry=_times_pow2(rep.d_per_entry, 2 * e),
      feature_scale=_times_pow2(rep.feature_scale, e),
      extras=extras,
  )


# ----------------------------------------------------------------------------- rotation
def _rotation(kind: str, key, n: int):
  """The input-basis rotation of ``rdq.layer.lattice_sic`` (dense Haar or randomized Hadamard)."""
  from rdq.layer.lattice_sic import _rotation as rotation

  return rotation(kind, key, n)


# ----------------------------------------------------------------------------- builders
def _grid(grid, bits, sym, group_size, rate_bits, registry_names: bool):
  if isinstance(grid, (MinMaxGrid, UniformGrid)):
    return grid
  if isinstance(grid, Mapping):  # a Hydra node {kind: minmax, bits: 4, ...}
    opts = dict(grid)
    kind = opts.pop("kind", "minmax")
    args = [opts.pop(k, v) for k, v in (("bits", bits), ("sym", sym), ("group_size", group_size), ("rate_bits", rate_bits))]
    return _bad_grid(grid) if opts else _grid(kind, *args, registry_names)
  if grid == "minmax":
    return MinMaxGrid(bits=bits, sym=sym, group_size=group_size)
  if grid == "uniform":
    return UniformGrid(rate_bits)
  if registry_names and isinstance(grid, str):
    return grid  # RTNConfig validates the quantizer name
  return _bad_grid(grid)


def _bad_grid(grid):
  raise ValueError(f"grid={grid!r} must be 'minmax', 'uniform', a MinMaxGrid/UniformGrid (or, for rtn, a quantizer name)")


def _build_rtn(
    grid="minmax", bits: int = 4, sym: bool = True, group_size: int | None = None, rate_bits: float = 4.0,
    rate_iters: int = 0,
):
  return RTNConfig(_grid(grid, bits, sym, group_size, rate_bits, registry_names=True), rate_iters)


def _build_gptq(
    grid="minmax", bits: int = 4, sym: bool = True, group_size: int | None = None, rate_bits: float = 4.0, **options
):
  return GPTQConfig(grid=_grid(grid, bits, sym, group_size, rate_bits, registry_names=False), **options)


def _uniform(config) -> bool:
  grid = config.quantizer if isinstance(config, RTNConfig) else config.grid
  return isinstance(grid, UniformGrid)


def _register_builtin() -> None:
  from rdq.layer.lattice_sic import LatticeSICConfig, lattice_sic_traced
  from rdq.layer.lattice_sic import _check as _lattice_check
  from rdq.layer.lattice_sic import _split as _lattice_split

  register("rtn", LayerSpec(RTNConfig, _build_rtn, rtn_traced, _rtn_check,
                        lambda c: "entropy" if _uniform(c) else "nominal", _uniform,
                        normalize=lambda c: not isinstance(c.quantizer, str), split=_rtn_split))
  register("gptq", LayerSpec(GPTQConfig, _build_gptq, gptq_traced, _gptq_check,
                         lambda c: "entropy" if _uniform(c) else "nominal", _uniform, split=_gptq_split))
  register("watersic", LayerSpec(WaterSICConfig, WaterSICConfig, watersic_traced, _watersic_check,
                             lambda c: "entropy", lambda c: True))
  register("gptvq", LayerSpec(GPTVQConfig, GPTVQConfig, gptvq_traced, _gptvq_check,
                          lambda c: "nominal", lambda c: False))
  register("lattice_sic", LayerSpec(LatticeSICConfig, LatticeSICConfig, lattice_sic_traced, _lattice_check,
                                lambda c: "nominal", lambda c: False, normalize=lambda c: False,
                                split=_lattice_split))


def get(name: str, *, rotation: str | None = None, **options) -> LayerAlgorithm:
  """The layer algorithm ``name`` with its config built from ``options`` (module docstring).

  Raises:
    ValueError: unknown name, or a config value its dataclass rejects.
    TypeError: an option the config does not have.
  """
  spec = _spec(name)
  try:
    config = spec.build(**options)
  except TypeError as err:
    if "unexpected keyword" in str(err) or "got an unexpected" in str(err):
      fields = [f.name for f in dataclasses.fields(spec.config_type)]
      raise TypeError(f"{name}: unknown option in {sorted(options)}; config fields: {fields} ({err})") from None
    raise
  return LayerAlgorithm(name, config, rotation)


_register_builtin()
