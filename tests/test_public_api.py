"""The public API: each public module's ``__all__`` is pinned here.

A name added to or removed from a public module is a change users see; it must be made here too,
on purpose. Every listed name must import, and no private name may be exported.
"""

import importlib
import pathlib
import re

import pytest

PUBLIC = {
    "rdq": [
        "Estimate",
        "MatmulSetup",
        "covariance",
        "estimate",
        "layer",
        "limits",
        "matmul_distortion",
        "montecarlo",
        "quantizers",
        "rate",
    ],
    "rdq.checks": [
        "check_float_dtype",
        "check_key",
        "checked",
        "eager_jit",
        "is_concrete",
        "require",
    ],
    "rdq.covariance": [
        "AR1",
        "BlockDiagonal",
        "FAMILIES",
        "Isotropic",
        "LDLSpread",
        "PowerLaw",
        "Spiked",
        "Wishart",
        "check_covariance",
        "from_data",
        "haar_orthogonal",
        "make_family",
        "sample",
    ],
    "rdq.layer": [
        "GPTQConfig",
        "GPTVQConfig",
        "GPTVQ_STAGES",
        "LatticeSICConfig",
        "LayerAlgorithm",
        "LayerReport",
        "LayerSpec",
        "MinMaxGrid",
        "RTNConfig",
        "StepGrid",
        "UniformGrid",
        "VQBits",
        "WaterSICConfig",
        "damp_hessian",
        "get",
        "gptq",
        "gptq_traced",
        "gptvq",
        "gptvq_bits",
        "gptvq_for_budget",
        "gptvq_tiles",
        "gptvq_traced",
        "high_rate_step",
        "inverse_cholesky_upper",
        "lattice_for_budget",
        "lattice_sic",
        "lattice_sic_traced",
        "layer_distortion",
        "names",
        "register",
        "rtn",
        "rtn_traced",
        "sic",
        "vq_decode",
        "watersic",
        "watersic_max_rate_bits",
        "watersic_traced",
    ],
    "rdq.limits": [
        "ECSQ_GAP",
        "ECSQ_GAP_BITS",
        "G_SPHERE_LIMIT",
        "PUBLISHED_G",
        "UNIVERSALITY_GAP_BITS",
        "WaterfillResult",
        "critical_rate",
        "ecsq_distortion",
        "g_dn",
        "g_sphere",
        "gaussian_rate",
        "gaussian_rd",
        "generic_matmul",
        "generic_matmul_rate",
        "naive_matmul_distortion",
        "random_coding_rate",
        "rate_gap_bits",
        "universal_distortion",
        "universal_gap",
        "universal_rate",
        "waterfill",
        "waterfill_gap_bits",
        "waterfill_high_rate",
        "waterfill_rate",
    ],
    "rdq.matmul_mc": [
        "MatmulSetup",
        "NORMAL_GENERATOR",
        "matmul_distortion",
        "matmul_error",
        "matmul_sample",
        "standard_normal",
    ],
    "rdq.models": [
        "CalibrationStats",
        "EVAL_PLAYS",
        "GGUF_SHA256",
        "LLAMA_PACKAGE",
        "Llama",
        "LlamaConfig",
        "MODEL_PACKAGE",
        "MiniLM",
        "MiniLMConfig",
        "ModelNotInstalledError",
        "Perplexity",
        "SAFETENSORS_SHA256",
        "STDLIB_MODULES",
        "TextSplits",
        "capture_inputs",
        "docstring_text",
        "embed",
        "embed_sentences",
        "from_gguf",
        "from_pretrained",
        "linear_kernels",
        "linear_names",
        "load_config",
        "load_gguf",
        "load_splits",
        "load_tokenizer",
        "load_weights",
        "model_dir",
        "perplexity",
        "pick_windows",
        "play_splits",
        "replace_linears",
        "second_moments",
        "second_moments_of_batches",
        "shared_inputs",
        "stdlib_passages",
        "text_windows",
        "token_nll",
        "tokenize",
    ],
    "rdq.montecarlo": [
        "Estimate",
        "estimate",
    ],
    "rdq.plot": [
        "COLORS",
        "DISTORTION_LABEL_LAYER",
        "DISTORTION_LABEL_MATMUL",
        "DISTORTION_LABEL_WEIGHT",
        "LABELS",
        "LIMIT_STYLE",
        "MARKERS",
        "RATE_LABEL",
        "REFERENCE_STYLE",
        "color",
        "figure",
        "label",
        "label_points",
        "marker",
        "save",
        "style",
    ],
    "rdq.quantized_matmul": [
        "codebook_decode",
        "codebook_matmul_reference",
        "dequant_matmul",
        "w8a8_matmul_reference",
        "zero_point_decode",
        "zero_point_matmul",
    ],
    "rdq.quantizers": [
        "Codebook",
        "DnDualLattice",
        "DnLattice",
        "E8Lattice",
        "FORMATS",
        "FPCode",
        "FPFormat",
        "FPQuantizer",
        "IntCode",
        "IntQuantizer",
        "KMeansResult",
        "Lattice",
        "LearnConfig",
        "NestedCode",
        "NestedLatticeQuantizer",
        "ProductCodebook",
        "Quantizer",
        "Rate",
        "VQCode",
        "VQQuantizer",
        "VoronoiCode",
        "ZnLattice",
        "gaussian_codebook",
        "get",
        "kmeanspp_init",
        "lattice_codebook",
        "lattice_from_name",
        "learn_minimax_codebook",
        "leech_codebook",
        "names",
        "nested_dot",
        "normalized_second_moment",
        "quantize_codebook_int8",
        "rate_gap",
        "register",
        "round_to_format",
        "search_betas",
        "sphere_codebook",
        "weighted_kmeans",
    ],
    "rdq.rate": [
        "CodedSize",
        "GAUSSIAN_MODEL_BITS",
        "ans_coded_bits",
        "empirical_entropy_bits",
        "fixed_length_bits",
        "gaussian_code_bits",
    ],
    "rdq.kernels": [
        "Config",
        "PackedCodebook",
        "PackedE8",
        "PackedFP4",
        "PackedInt",
        "bytes_of",
        "choose_blocks",
        "codebook_matmul",
        "e8_matmul",
        "fp4_matmul",
        "int_matmul",
        "pack_activations",
        "pack_codebook",
        "pack_e8",
        "pack_fp4",
        "pack_int",
        "pack_int_zero_point",
        "resolve_blocks",
        "w8a8_matmul",
    ],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_all_is_pinned(module):
  mod = importlib.import_module(module)
  assert sorted(mod.__all__) == PUBLIC[module]
  assert len(set(mod.__all__)) == len(mod.__all__), "duplicate names in __all__"


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_every_public_name_imports(module):
  mod = importlib.import_module(module)
  missing = [n for n in mod.__all__ if not hasattr(mod, n)]
  assert not missing, f"{module}.__all__ lists names it does not define: {missing}"
  private = [n for n in mod.__all__ if n.startswith("_")]
  assert not private, f"{module} exports private names: {private}"


_ROOT = pathlib.Path(__file__).resolve().parents[1]
# ``from rdq.x import _y``, ``from rdq.x._y import z`` and ``rdq.x._y``.
_PRIVATE = re.compile(r"from rdq[\w.]* import [^#\n]*\b_[a-z]\w*|(?<![\w.])rdq(\.\w+)*\._[a-z]\w*")
# The apps share their own skeleton (rdq.experiments._sweep, ._store, ._group); everything else is public.
_OWN_SKELETON = re.compile(r"rdq\.experiments(\.__main__|\._sweep|\._store|\._group)\b")


def test_apps_benchmarks_and_notebooks_use_only_public_names():
  offenders = []
  for folder in ("rdq/experiments", "benchmarks", "notebooks", "paper_figures"):
    for path in sorted((_ROOT / folder).rglob("*.py")):
      for i, line in enumerate(path.read_text().splitlines(), 1):
        if _PRIVATE.search(_OWN_SKELETON.sub("", line)):
          offenders.append(f"{path.relative_to(_ROOT)}:{i}: {line.strip()}")
  assert not offenders, "private rdq names used outside their module:\n" + "\n".join(offenders)


def test_imports_point_one_way():
  # DESIGN.md: limits are closed forms of rate (and Σ); predictions of concrete quantizers live
  # in rdq.quantizers (scalar_prediction), so no module of rdq.limits imports rdq.quantizers.
  pattern = re.compile(r"^\s*(from rdq\.quantizers\b|import rdq\.quantizers\b|from rdq import quantizers\b)")
  offenders = [
      f"{path.relative_to(_ROOT)}:{i}"
      for path in sorted((_ROOT / "rdq" / "limits").rglob("*.py"))
      for i, line in enumerate(path.read_text().splitlines(), 1)
      if pattern.search(line)
  ]
  assert not offenders, f"rdq.limits imports rdq.quantizers at {offenders}"
  # and the core library never imports the apps (rdq.experiments) or the kernels (rdq.kernels)
  pattern = re.compile(r"^\s*((from|import) rdq\.(experiments|kernels)\b|from rdq import (experiments|kernels)\b)")
  offenders = [
      f"{path.relative_to(_ROOT)}:{i}"
      for path in sorted((_ROOT / "rdq").rglob("*.py"))
      if path.relative_to(_ROOT).parts[1] not in ("experiments", "kernels")
      for i, line in enumerate(path.read_text().splitlines(), 1)
      if pattern.search(line)
  ]
  assert not offenders, f"core rdq imports rdq.experiments or rdq.kernels at {offenders}"
