"""The algorithms of the MiniLM experiment and their rate budgets, through ``rdq.layer.get``.

Each row of the experiment is a registry algorithm with options from its Hydra node
(``conf/real_model.yaml``: ``gptq``, ``watersic``, ``gptvq``, ``e8``) and a rate budget at
``bits`` (bits per weight, side information counted):

* ``rtn``, ``gptq``: GPTQ's symmetric min–max grid, one fp16 scale per output feature:
  budget ``bits + 16/n`` (fixed length; ``MinMaxGrid.for_budget`` gives ``bits``).
* ``watersic``: the same budget as an entropy-coded rate (plug-in entropy + 16-bit scales).
* ``gptvq``: ``bits`` index bits plus fp16 codebooks costing at most ``overhead_bits``
  (the paper's ``b + 0.125``): budget ``bits + overhead_bits`` (``rdq.layer.gptvq_for_budget``).
* ``e8_rtn``, ``e8_ldlq``: ``lattice_sic`` with the E8 Voronoi code of ``k`` β-scales and a bf16
  RMS scale per output feature, without / with the SIC feedback, in a rotated basis: the
  largest modulus q within ``bits + 16/n`` (``rdq.layer.lattice_for_budget``).

Not a row: the Leech code (``leech_nested_q<q>_k4_norm``, ``rdq.experiments.lattice_layers``),
whose exact 8192-coset decoder makes LDLQ ~10× slower than E8 on a layer (18.7 vs 1.9 s per
384×384 layer, same run on the loaded 2-core machine): all 36 layers would add minutes per
rate to the quick run.
"""

from __future__ import annotations

import functools
import math
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

import rdq.layer

ALGORITHMS = ("rtn", "gptq", "watersic", "gptvq", "e8_rtn", "e8_ldlq")
ALGO_LABELS = {
    "rtn": "RTN",
    "gptq": "GPTQ",
    "watersic": "WaterSIC",
    "gptvq": "GPTVQ (d=2)",
    "e8_rtn": "E8-nested RTN (rot.)",
    "e8_ldlq": "E8-nested LDLQ (rot.)",
}
# The code's defaults of the Hydra nodes (tests check that conf/real_model.yaml agrees).
DEFAULT_OPTIONS = {
    "gptq": {"percdamp": 0.01, "block_size": 128, "act_order": False},
    "watersic": {"percdamp": 1e-4, "rate_iters": 2, "rescale_iters": 4},
    "gptvq": {"dim": 2, "overhead_bits": 0.125, "em_iters": 10, "percdamp": 0.01},
    "e8": {"k": 4, "rotate": True, "percdamp": 0.01},
}


def options_from_config(cfg: Mapping[str, Any]) -> dict:
  """The four option nodes of a real_model config as plain dicts (app-only keys dropped)."""
  out = {}
  for node, defaults in DEFAULT_OPTIONS.items():
    src = cfg[node]
    out[node] = {k: type(v)(src[k]) for k, v in defaults.items()}
  return out


def e8_quantizer_name(bits: int, k: int = 4) -> str:
  """Registry name of the E8 Voronoi code within ``bits`` per weight before the scale.

  The largest integer ``q ≥ 2`` with ``log2 q + log2(k)/8 ≤ bits`` (β index: ``log2 k`` bits
  per 8-block), with one bf16 RMS scale per output feature (``_norm``, 16/n bits); the same
  q that ``rdq.layer.lattice_for_budget`` picks at ``bits + 16/n``.
  """
  if not isinstance(k, int) or k < 1:
    raise ValueError(f"e8 k={k!r} must be a positive integer")
  q = math.floor(2.0 ** (bits - math.log2(k) / 8) + 1e-9)
  if q < 2:
    raise ValueError(f"bits={bits} leaves no room for an E8 code with k={k} scales (need log2 2 + log2(k)/8 ≤ bits)")
  return f"e8_nested_q{q}_k{k}_norm"


def algorithm(name: str, bits: int, n: int, options: Mapping[str, Mapping] | None = None):
  """``(LayerAlgorithm, rate budget)`` of one row of the experiment at ``bits`` (module docstring)."""
  if name not in ALGORITHMS:
    raise ValueError(f"algorithm={name!r} must be one of {ALGORITHMS}")
  if not isinstance(bits, int) or not 2 <= bits <= 8:
    raise ValueError(f"bits={bits!r} must be an integer in [2, 8]")
  opts = {**DEFAULT_OPTIONS, **(options or {})}
  budget = bits + 16.0 / n  # the INT grid with one fp16 scale per output feature
  if name == "rtn":
    return rdq.layer.get("rtn", grid="minmax", sym=True), budget
  if name == "gptq":
    return rdq.layer.get("gptq", grid="minmax", sym=True, **opts["gptq"]), budget
  if name == "watersic":
    return rdq.layer.get("watersic", **opts["watersic"]), budget
  if name == "gptvq":
    o = dict(opts["gptvq"])
    overhead = o.pop("overhead_bits")
    return rdq.layer.get("gptvq", update=True, **o), bits + overhead
  e8 = opts["e8"]
  algo = rdq.layer.get(
      "lattice_sic", quantizer=f"e8_nested_q8_k{e8['k']}_norm", percdamp=e8["percdamp"],
      feedback=name == "e8_ldlq", rotate=e8["rotate"],
  )
  return algo, budget


@functools.lru_cache(maxsize=None)
def _batched(structure, budget: float | None):
  """Jitted ``vmap`` over layers of one algorithm structure (cached: one compile per shape).

  ``structure`` is a ``LayerAlgorithm.split`` structure; its traced options (``scalars``) and,
  with ``budget=None``, the budget (``algo.traced_rate``, e.g. WaterSIC) are arguments, so one
  program serves every bit width of RTN/GPTQ and LDLQ with or without feedback; otherwise the
  budget is a constant of the program (fixed-length codes whose size depends on it), one
  program per budget.
  """
  import jax

  def one(w, h, key, rate, scalars):
    return structure(w, h, key=key, rate_bits=budget if rate is None else rate, scalars=scalars)

  return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, None, None)))


def layer_key(seed: int, name: str):
  """PRNG key of one layer (GPTVQ seeding, E8 rotation): ``fold_in(key(seed), crc32(name))``."""
  import jax

  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(name.encode()) & 0x7FFFFFFF)


def quantize_layers(
    ws: Sequence[np.ndarray],
    hs: Sequence[np.ndarray],
    name: str,
    bits: int,
    options: Mapping[str, Mapping] | None = None,
    keys: Sequence[Any] | None = None,
) -> list[tuple[np.ndarray, float, Any]]:
  """Quantize same-shape layers at once (``vmap``); returns ``[(Ŵ, rate_bits, LayerReport)]``.

  ``rate_bits`` is ``report.rate_bits`` (fixed-length for RTN, GPTQ, GPTVQ and E8,
  entropy-coded for WaterSIC). ``keys``: one PRNG key per layer (default
  ``layer_key(0, f"layer{i}")``). ``H`` must already be validated (the app checks each H once).
  """
  import jax

  ws = np.stack([np.asarray(w, np.float32) for w in ws])
  hs = np.stack([np.asarray(h, np.float32) for h in hs])
  if ws.ndim != 3 or hs.shape != (ws.shape[0], ws.shape[1], ws.shape[1]):
    raise ValueError(f"need k layers of one shape: W (k, n, m) and H (k, n, n); got {ws.shape} and {hs.shape}")
  if keys is None:
    keys = [layer_key(0, f"layer{i}") for i in range(ws.shape[0])]
  if len(keys) != ws.shape[0]:
    raise ValueError(f"need one key per layer: {len(keys)} keys for {ws.shape[0]} layers")
  algo, budget = algorithm(name, bits, ws.shape[1], options)
  keys = jax.numpy.stack(list(keys))
  traced = algo.traced_rate
  structure, rate, scalars = algo.split(*ws.shape[1:], jax.numpy.float32(budget) if traced else budget)
  static = None if traced or rate is None else rate  # a budget left in the program (GPTVQ's code size)
  w_hat, rep = _batched(structure, static)(ws, hs, keys, rate if traced else None, scalars)
  w_hat = np.asarray(w_hat)
  reps = [jax.tree.map(lambda x, i=i: np.asarray(x[i]), rep) for i in range(ws.shape[0])]
  return [(w_hat[i], float(reps[i].rate_bits), reps[i]) for i in range(ws.shape[0])]


def quantize_layer(w: np.ndarray, h: np.ndarray, name: str, bits: int, options=None, key=None):
  """One layer: the eager checks of W and H, then ``quantize_layers([w], [h], …)[0]``."""
  if name not in ALGORITHMS:
    raise ValueError(f"algorithm={name!r} must be one of {ALGORITHMS}")
  algo, budget = algorithm(name, bits, np.shape(w)[0], options)
  key = layer_key(0, "layer0") if key is None else key
  algo.check(w, h, key=key, rate_bits=budget)
  return quantize_layers([w], [h], name, bits, options, [key])[0]
