"""rdq's layer algorithms against their reference implementations, on identical inputs, same run.

Baselines (PyTorch, run on the CPU, imported at run time from a checkout given by ``--ref-root``;
nothing of them is copied into rdq; ``bash benchmarks/reference_env.sh`` makes the checkouts and
the separate ``.venv-ref`` with torch + NumPy, ``make bench-ref`` also runs this benchmark):

* **GPTQ**: IST-DASLab/gptq @ 2d65066eeb06a5c9ff5184d8cebdf33662c67faf, ``gptq.py:GPTQ.fasterquant``
  with ``quant.py:Quantizer`` (per-channel, ``blocksize=128``, ``percdamp=0.01``); against
  ``rdq.layer.gptq_traced`` with ``GPTQConfig(MinMaxGrid(bits, sym, group_size), 128, 0.01, act_order)``.
* **WaterSIC**: egorlifar/watersic @ f837398c4a3c0287a2296817791577c34fcbb5e9,
  ``quant_layerwise/methods/zsic.py:compress_zsic_with_binary_search`` (the secant rate search on
  10 % of the rows in float32, then ``compress_w2q`` in float64), ``percdamp=1e-4``; its rescalers
  are switched off (``compress_w2q(apply_rescaler=False)``, up to 1000 alternating least-squares
  rounds otherwise: more work, so the comparison favours the reference), as rdq's default
  (``rescale_iters=0``). Against ``rdq.layer.watersic_traced`` with ``WaterSICConfig(rate_bits)``.
* **GPTVQ**: Qualcomm-AI-research/gptvq @ fd8a3ced81f767018a28a51a91af96777f885f9f,
  ``gptq.py:GPTQ.fasterquant(use_vq=True, hessian_weighted_lookups=True)`` with
  ``vq_quant.py:VQQuantizer`` (Mahalanobis seeding, k-means EM, ``blocksize=128``,
  ``percdamp=0.01``); no M-step, fp32 codebooks. Against ``rdq.layer.gptvq_traced`` with the same
  d, bits, tile (``group_size`` input × ``group_outputs`` output features), ``init="mahalanobis"``,
  the same EM iterations, ``metric="diag"``, ``codebook_format="fp32"``, ``update=False``.

The reference files need no change: their module-level imports of ``transformers`` (used only
for ``isinstance(layer, transformers.Conv1D)``) get a stub module when transformers is missing,
and ``torch.cuda.synchronize`` is a no-op on a CPU-only torch. Their prints are discarded.

Inputs: for each shape ``(n, m) = (in_features, out_features)`` (MiniLM's FFN layers 384×1536
and 1536×384, and 1024×1024), ``W`` i.i.d. N(0, 1) and ``H`` a power-law spectrum in a random
basis (``rdq.covariance.PowerLaw``), both float32, written once to an ``.npz`` file that both
sides read (torch gets ``Wᵀ``, its ``(out, in)`` layout, and the same ``H``).

Timing: best of ``--repeats`` calls after a first call. The reference runs in a subprocess of
``--ref-python`` twice: ``torch.set_num_threads(1)`` and torch's default threads. rdq: the
jitted core, first call (compile + run) minus the best warm call = compilation, reported
separately. Process CPU time (``time.process_time``, all threads) is reported for both, since
the machine may be shared: "wall ×" and "CPU ×" are reference / rdq. BLAS is single-threaded on
both sides (``OPENBLAS_NUM_THREADS=1``, ``benchmarks/scaling.py`` says why); XLA's and torch's
own threads are left to the thread setting.

Same work: the distortion ``D = tr((W−Ŵ)ᵀH(W−Ŵ))/(nm)`` of both outputs under the undamped H,
and their rates: GPTQ/GPTVQ by construction (same bits and side information); WaterSIC's two
rate measures differ (the reference's entropy of all codes pooled into one histogram + 16/n +
16/m, rdq's mean per-input-feature entropy + 16/m), so both are computed on both code
matrices, and the distortion ratio is also given at equal pooled rate, ``D_ref/D_rdq ·
4^{R_ref − R_rdq}`` (high-rate slope, 6.02 dB per bit).

Usage:
  bash benchmarks/reference_env.sh
  python benchmarks/reference.py                                  # all three, default shapes
  python benchmarks/reference.py --algos watersic --shapes 384x1536 --threads 1
  python benchmarks/reference.py --ref-root .ref --ref-python .venv-ref/bin/python
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy/jax load BLAS
  if "--worker" not in sys.argv:  # the reference worker gets its threads from the parent's environment
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

COMMITS = {
    "gptq": ("IST-DASLab/gptq", "2d65066"),
    "watersic": ("egorlifar/watersic", "f837398"),
    "gptvq": ("Qualcomm-AI-research/gptvq", "fd8a3ce"),
}
REF_DIR = {"gptq": "gptq", "watersic": "watersic", "gptvq": "gptvq"}

# (name, config) per algorithm; the same dict drives both sides.
CONFIGS = {
    "gptq": [
        ("4b sym", dict(bits=4, sym=True, group=None, act_order=False)),
        ("4b asym g128 act", dict(bits=4, sym=False, group=128, act_order=True)),
    ],
    "watersic": [("4 bits", dict(rate=4.0))],
    "gptvq": [("d2 2b 128x16 em100", dict(dim=2, bits=2, group=128, rows=16, em_iters=100))],
}


# ============================================================================ reference worker
# Runs under the reference environment (torch + NumPy only; rdq and jax are not imported).
def _stub_transformers() -> None:
  try:
    import transformers  # noqa: F401
  except ImportError:
    import types

    mod = types.ModuleType("transformers")

    class Conv1D:  # only used in isinstance checks
      pass

    mod.Conv1D = Conv1D
    sys.modules["transformers"] = mod


def _ref_gptq(root: str, w_t, h, cfg):
  import torch

  sys.path.insert(0, os.path.join(root, REF_DIR["gptq"]))
  import gptq as ref  # noqa: E402
  import quant  # noqa: E402

  out_f, in_f = w_t.shape

  def prepare():
    layer = torch.nn.Linear(in_f, out_f, bias=False)
    layer.weight.data = w_t.clone()
    g = ref.GPTQ(layer)
    g.H = h.clone()
    g.quantizer = quant.Quantizer()
    g.quantizer.configure(cfg["bits"], perchannel=True, sym=cfg["sym"], mse=False)

    def go():
      g.fasterquant(blocksize=128, percdamp=0.01, groupsize=cfg["group"] or -1, actorder=cfg["act_order"])

    return go, lambda: {"q": layer.weight.data.numpy().copy()}

  return prepare


def _ref_watersic(root: str, w_t, h, cfg):
  import functools
  import importlib.util

  import torch

  path = os.path.join(root, REF_DIR["watersic"], "quant_layerwise", "methods", "zsic.py")
  spec = importlib.util.spec_from_file_location("zsic_reference", path)
  zsic = sys.modules["zsic_reference"] = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(zsic)
  zsic.compress_w2q = functools.partial(zsic.compress_w2q, apply_rescaler=False)
  rate = cfg["rate"]
  res = {}

  def prepare():
    def go():
      torch.manual_seed(0)  # the row subset of the rate search
      what, _, final_rate, frame = zsic.compress_zsic_with_binary_search(
          w_t, cfg=zsic.ZSICConfig(target_rate_bits=rate, binary_search=True), desired_rate=rate, Sig_X=h)
      res.update(q=what.numpy().copy(), z=frame["Z"].numpy().astype(np.int64), rate=np.float64(final_rate))

    return go, lambda: dict(res)

  return prepare


def _ref_gptvq(root: str, w_t, h, cfg):
  import torch

  sys.path.insert(0, os.path.join(root, REF_DIR["gptvq"]))
  import gptq as ref  # noqa: E402
  from vq_quant import VQQuantizer  # noqa: E402

  out_f, in_f = w_t.shape

  def prepare():
    layer = torch.nn.Linear(in_f, out_f, bias=False)
    layer.weight.data = w_t.clone()
    g = ref.GPTQ(layer)
    g.H = h.clone()
    g.quantizer = VQQuantizer(vq_dim=cfg["dim"], columns_per_group=cfg["group"], kmeans_init_method="mahalanobis",
                              kmeans_iters=cfg["em_iters"], codebook_bitwidth=None)
    g.quantizer.configure(cfg["bits"])

    def go():
      g.fasterquant(blocksize=128, percdamp=0.01, groupsize=cfg["group"] * cfg["rows"], use_vq=True,
                    hessian_weighted_lookups=True, include_m_step=False)

    return go, lambda: {"q": layer.weight.data.numpy().copy()}

  return prepare


def _worker(spec_path: str) -> None:
  import torch

  spec = json.load(open(spec_path))
  if spec["threads"] > 0:
    torch.set_num_threads(spec["threads"])
  if not torch.cuda.is_available():
    torch.cuda.synchronize = lambda *a, **k: None  # the reference code syncs its GPU
  _stub_transformers()
  make = {"gptq": _ref_gptq, "watersic": _ref_watersic, "gptvq": _ref_gptvq}[spec["algo"]]
  results = []
  for job in spec["jobs"]:
    data = np.load(job["inputs"])
    w_t, h = torch.from_numpy(data["w_t"]), torch.from_numpy(data["h"])
    prepare = make(spec["ref_root"], w_t, h, job["config"])
    walls, cpus = [], []
    for _ in range(1 + spec["repeats"]):
      go, outputs = prepare()
      with contextlib.redirect_stdout(io.StringIO()):
        t0, c0 = time.perf_counter(), time.process_time()
        go()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    np.savez(job["output"], **outputs())
    results.append(dict(first=walls[0], wall=min(walls[1:]), cpu=min(cpus[1:])))
  json.dump(dict(results=results, threads=torch.get_num_threads(), torch=torch.__version__), open(spec["result"], "w"))


# ============================================================================ rdq side
def _layer(n: int, m: int, seed: int = 0):
  import jax

  from rdq import covariance as cov

  w = jax.random.normal(jax.random.key(seed), (n, m))
  h = cov.PowerLaw(n)(jax.random.key(seed + 1), 1.0)
  return np.asarray(w, np.float32), np.asarray(h, np.float32)


def _rdq_fn(algo: str, cfg: dict):
  import jax

  from rdq.layer import GPTQConfig, GPTVQConfig, MinMaxGrid, WaterSICConfig, gptq_traced, gptvq_traced, watersic_traced

  if algo == "gptq":
    c = GPTQConfig(MinMaxGrid(cfg["bits"], cfg["sym"], cfg["group"]), 128, 0.01, cfg["act_order"])
    return jax.jit(lambda w, h: gptq_traced(w, h, c))
  if algo == "watersic":
    c = WaterSICConfig(rate_bits=cfg["rate"])
    return jax.jit(lambda w, h: watersic_traced(w, h, c))
  c = GPTVQConfig(dim=cfg["dim"], bits=cfg["bits"], group_size=cfg["group"], group_outputs=cfg["rows"],
                  init="mahalanobis", em_iters=cfg["em_iters"], metric="diag", codebook_format="fp32", update=False)
  key = jax.random.key(0)
  return jax.jit(lambda w, h: gptvq_traced(w, h, c, key))


def _time_rdq(fn, w, h, repeats: int):
  import jax

  t0 = time.perf_counter()
  out = jax.block_until_ready(fn(w, h))
  first = time.perf_counter() - t0
  walls, cpus = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(fn(w, h))
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  return dict(first=first, wall=min(walls), cpu=min(cpus)), out


def _distortion(w, q, h) -> float:
  e = np.asarray(w, np.float64) - np.asarray(q, np.float64)
  return float(np.sum(e * (np.asarray(h, np.float64) @ e)) / e.size)


def _pooled_entropy(z) -> float:
  _, c = np.unique(np.asarray(z), return_counts=True)
  p = c / c.sum()
  return float(-np.sum(p * np.log2(p)))


def _feature_entropy(z_feat_rows) -> float:
  """Mean over input features (rows of ``z``, rdq layout) of the plug-in entropy of its codes."""
  return float(np.mean([_pooled_entropy(r) for r in np.asarray(z_feat_rows)]))


def _run_reference(algo, jobs, threads, args, tmp):
  spec = dict(algo=algo, jobs=jobs, threads=threads, repeats=args.ref_repeats, ref_root=os.path.abspath(args.ref_root),
              result=os.path.join(tmp, f"{algo}_{threads}.json"))
  spec_path = os.path.join(tmp, f"{algo}_{threads}_spec.json")
  json.dump(spec, open(spec_path, "w"))
  env = dict(os.environ)
  env.pop("PYTHONPATH", None)
  if threads == 0:  # torch's default intra-op threads (it follows OMP_NUM_THREADS)
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
      env.pop(v, None)
  subprocess.run([args.ref_python, os.path.abspath(__file__), "--worker", spec_path], check=True, env=env)
  return json.load(open(spec["result"]))


def _load() -> str:
  """The 1/5/15-minute load averages (the machine may be shared: same-run ratios are the measure)."""
  return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main(argv=None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--algos", nargs="*", default=["gptq", "watersic", "gptvq"])
  ap.add_argument("--shapes", nargs="*", default=["384x1536", "1536x384", "1024x1024"], help="n x m = in x out")
  ap.add_argument("--threads", type=int, nargs="*", default=[1, 0], help="torch threads of the reference (0: default)")
  ap.add_argument("--repeats", type=int, default=3, help="warm rdq calls (best is reported)")
  ap.add_argument("--ref-repeats", type=int, default=2, help="reference calls after the first (best is reported)")
  ap.add_argument("--ref-root", default=os.environ.get("RDQ_REF_ROOT", ".ref"), help="checkouts of the references")
  ap.add_argument("--ref-python", default=os.environ.get("RDQ_REF_PYTHON", ".venv-ref/bin/python"))
  ap.add_argument("--worker", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    return _worker(args.worker)
  import jax

  shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
  print(f"jax {jax.__version__} ({jax.devices()[0].device_kind}), reference python {args.ref_python}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, load average {_load()}")
  with tempfile.TemporaryDirectory() as tmp:
    inputs = {}
    for n, m in shapes:
      w, h = _layer(n, m)
      path = os.path.join(tmp, f"in_{n}x{m}.npz")
      np.savez(path, w_t=np.ascontiguousarray(w.T), h=h)
      inputs[(n, m)] = (w, h, path)
    for algo in args.algos:
      repo, commit = COMMITS[algo]
      rows = [(name, cfg, n, m) for name, cfg in CONFIGS[algo] for n, m in shapes]
      rows = [r for r in rows if algo != "gptvq" or r[2] % r[1]["group"] == 0 and r[3] % r[1]["rows"] == 0]
      jobs = [dict(inputs=inputs[(n, m)][2], config=cfg, output=os.path.join(tmp, f"{algo}_{i}_ref.npz"))
              for i, (_, cfg, n, m) in enumerate(rows)]
      ref = {}
      for t in args.threads:
        res = _run_reference(algo, jobs, t, args, tmp)
        ref[t] = res
      tnames = {t: f"{ref[t]['threads']}t" for t in args.threads}
      print(f"\n{algo.upper()}: baseline {repo}@{commit} (torch {ref[args.threads[0]]['torch']}, CPU) vs rdq jit; "
            "times in s; wall × and CPU × are reference / rdq warm")
      head = f"{'config':>20s} {'n x m':>10s} | {'compile':>7s} {'rdq':>7s} {'rdq CPU':>7s}"
      for t in args.threads:
        head += f" | ref {tnames[t]:>3s} {'CPU':>6s} {'wall ×':>7s} {'CPU ×':>6s}"
      head += " | D rdq/ref"
      if algo == "watersic":
        head += f" | {'pooled R rdq':>12s} {'ref':>6s} | {'feat R rdq':>10s} {'ref':>6s} | D ratio @ equal R"
      print(head)
      for i, (name, cfg, n, m) in enumerate(rows):
        w, h, _ = inputs[(n, m)]
        tr, out = _time_rdq(_rdq_fn(algo, cfg), w, h, args.repeats)
        q, rep = out
        ref_out = np.load(jobs[i]["output"])
        q_ref = ref_out["q"].T
        d_rdq, d_ref = _distortion(w, q, h), _distortion(w, q_ref, h)
        line = f"{name:>20s} {n:>4d}x{m:<5d} | {tr['first'] - tr['wall']:>7.2f} {tr['wall']:>7.3f} {tr['cpu']:>7.3f}"
        for t in args.threads:
          rr = ref[t]["results"][i]
          line += f" | {rr['wall']:>7.3f} {rr['cpu']:>6.2f} {rr['wall'] / tr['wall']:>6.1f}x {rr['cpu'] / tr['cpu']:>5.1f}x"
        line += f" | {d_rdq / d_ref:>9.4f}"
        if algo == "watersic":
          z_rdq, z_ref = np.asarray(rep.codes), ref_out["z"].T
          side_pool = 16.0 / n + 16.0 / m
          rp_rdq, rp_ref = _pooled_entropy(z_rdq) + side_pool, _pooled_entropy(z_ref) + side_pool
          rf_rdq, rf_ref = _feature_entropy(z_rdq) + 16.0 / m, _feature_entropy(z_ref) + 16.0 / m
          eq = d_ref / d_rdq * 4.0 ** (rp_ref - rp_rdq)
          line += f" | {rp_rdq:>12.3f} {rp_ref:>6.3f} | {rf_rdq:>10.3f} {rf_ref:>6.3f} | {eq:>8.4f}"
        print(line, flush=True)
      print(f"load average after {algo}: {_load()}")


if __name__ == "__main__":
  main()
