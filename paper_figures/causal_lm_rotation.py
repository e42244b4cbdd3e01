"""Rotation claim, layer by layer: GPTQ after a Haar rotation (entropy-coded) vs WaterSIC on SmolLM2's H.

``python paper_figures/causal_lm_rotation.py [blocks ...] [--bits 1 2 3]`` prints, per layer type,
the mean gap to reverse waterfilling (bits per weight) of ``gptq_ec``, ``gptq_rot_ec`` and
``watersic`` (the rows of ``rdq.experiments.causal_lm``, quick-default config) on the reference
model's calibration H of the given blocks (parallel H: no perplexity, no sequential pass), and
the difference rotated-GPTQ − WaterSIC: the claim of arXiv 2605.13768 is ≤ 0.1 bit.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("blocks", nargs="*", type=int, default=[3, 15, 27])
  ap.add_argument("--bits", nargs="+", type=float, default=[1.0, 2.0, 3.0])
  args = ap.parse_args(argv)
  from pathlib import Path

  import jax.numpy as jnp
  from hydra import compose, initialize_config_dir

  from rdq.experiments import causal_lm as C
  from rdq.models import from_gguf, pick_windows, play_splits, text_windows
  from rdq.models.llama import load_tokenizer
  from rdq.models.sequential import quantize_model

  t0 = time.perf_counter()
  C._single_thread_blas()
  conf = Path(C.__file__).resolve().parent / "conf"
  with initialize_config_dir(version_base="1.3", config_dir=str(conf)):
    cfg = compose(config_name="causal_lm", overrides=["out_dir=/tmp/unused"])
  model, tok = from_gguf(), load_tokenizer()
  calib, ev = play_splits(tuple(cfg.data.eval_plays))
  cal = pick_windows(text_windows(tok, calib.texts, int(cfg.data.window), model.config), int(cfg.data.n_calibration))
  held = pick_windows(text_windows(tok, ev.texts, int(cfg.data.window), model.config), int(cfg.data.n_heldout_h))
  keep = {f"layer{b}" for b in args.blocks}
  layers = {}

  def grab(batch):
    for n in batch.names:
      if n.split(".")[0] in keep:
        layers[n] = (batch.w[n], batch.h[n])
    return {n: batch.w[n] for n in batch.names}

  quantize_model(model, cal, held, grab, sequential=False, chunk=int(cfg.data.batch_size))
  print(f"H of {len(layers)} layers from {cal.size} calibration tokens ({time.perf_counter() - t0:.0f} s)", flush=True)
  rows = ("gptq_ec", "gptq_rot_ec", "watersic")
  eigs = {n: np.linalg.eigvalsh(h.astype(np.float32)).astype(np.float64) for n, (_, h) in layers.items()}
  gaps: dict = {}
  for b in args.bits:
    for a in rows:
      algo, budget = C.algorithm(a, b, cfg)
      fn = C._jitted(algo, None if algo.traced_rate else budget)
      for n, (w, h) in layers.items():
        w_hat, rep = fn(jnp.asarray(w)[None], jnp.asarray(h, jnp.float32)[None], C.layer_key(0, n)[None],
                        jnp.float32(budget))
        d = C.distortion(w, np.asarray(w_hat[0]), h)
        gaps[(b, a, n)] = (C.waterfill_gap(w, eigs[n], float(rep.rate_bits[0]), d), float(rep.rate_bits[0]))
      print(f"{a} at b = {b:g} done ({time.perf_counter() - t0:.0f} s)", flush=True)
  types = C.LAYER_TYPES
  print(f"\nblocks {args.blocks}, reference-model H; mean gap to waterfilling (bits per weight); rate = mean achieved")
  print("| b | row | rate | " + " | ".join(types) + " | all |")
  print("|---|---|---|" + "---|" * (len(types) + 1))
  for b in args.bits:
    per = {}
    for a in rows:
      g = {t: np.mean([gaps[(b, a, n)][0] for n in layers if n.split(".")[1] == t]) for t in types}
      g["all"] = np.mean([gaps[(b, a, n)][0] for n in layers])
      rate = np.mean([gaps[(b, a, n)][1] for n in layers])
      per[a] = g
      print(f"| {b:g} | {a} | {rate:.3f} | " + " | ".join(f"{g[t]:.3f}" for t in (*types, "all")) + " |")
    print(f"| {b:g} | gptq_rot_ec − watersic | | " + " | ".join(
        f"{per['gptq_rot_ec'][t] - per['watersic'][t]:+.3f}" for t in (*types, "all")) + " |")
  print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
  main()
