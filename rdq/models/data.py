"""Offline calibration and evaluation text: docstrings of the Python standard library.

Source. The docstrings of a fixed list of pure-Python standard-library modules
(``STDLIB_MODULES``), read from the interpreter's own ``Lib/`` directory with ``ast`` (no
module is imported, nothing is downloaded). Every module, class, function and method
docstring contributes its first paragraph, with whitespace collapsed. A paragraph is kept
when it has ``min_words``–``max_words`` words, at least 70 % letters and spaces, and no
doctest prompt (``>>>``). Exact duplicates are dropped. CPython 3.11.7 yields 1,912
passages (median 9 words); the count varies by a few percent between Python versions, since
the stdlib's docstrings change, so ``TextSplits.digest`` identifies the exact text used and
experiments record it.

Splits. Each passage gets the key ``sha256(f"{seed}:{passage}")``; passages sorted by key
are dealt out as the first ``n_calibration`` (calibration) and the next ``n_eval``
(evaluation). The splits are therefore disjoint by construction, fixed for a given seed and
Python version, and independent of the order in which files are read.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import re
import sysconfig
from pathlib import Path

__all__ = ["STDLIB_MODULES", "TextSplits", "load_splits", "stdlib_passages"]

# Pure-Python stdlib modules (paths relative to Lib/, without .py). Missing ones are skipped.
STDLIB_MODULES = (
    "_pydatetime", "_pydecimal", "argparse", "ast", "base64", "bisect", "calendar",
    "collections/__init__", "configparser", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "difflib", "email/message", "enum", "fractions", "ftplib", "functools",
    "gettext", "glob", "gzip", "heapq", "hmac", "http/client", "http/server", "imaplib",
    "inspect", "ipaddress", "json/__init__", "json/decoder", "json/encoder",
    "logging/__init__", "logging/handlers", "mailbox", "mimetypes", "operator", "optparse",
    "pickle", "pprint", "queue", "random", "shlex", "shutil", "smtplib", "socket",
    "statistics", "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "tokenize", "trace", "traceback", "typing", "unittest/case", "urllib/parse", "uuid",
    "warnings", "weakref", "xml/dom/minidom", "zipfile", "zipfile/__init__",
)

_WS = re.compile(r"\s+")


def _docstrings(tree: ast.AST):
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node, clean=True)
      if doc:
        yield doc


def stdlib_passages(min_words: int = 6, max_words: int = 64) -> list[str]:
  """Filtered, de-duplicated first paragraphs of stdlib docstrings, in a canonical order.

  Args:
    min_words: shortest passage kept, in whitespace-separated words.
    max_words: longest passage kept.

  Returns:
    Sorted list of unique passages (parsing is cached per argument pair).
  """
  return list(_passages(min_words, max_words))


@functools.lru_cache(maxsize=4)
def _passages(min_words: int, max_words: int) -> tuple[str, ...]:
  if not (isinstance(min_words, int) and isinstance(max_words, int) and 1 <= min_words <= max_words):
    raise ValueError(f"need integers 1 ≤ min_words ≤ max_words; got {min_words=}, {max_words=}")
  lib = Path(sysconfig.get_paths()["stdlib"])
  seen: set[str] = set()
  for mod in STDLIB_MODULES:
    file = lib / f"{mod}.py"
    if not file.is_file():
      continue
    try:
      tree = ast.parse(file.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, OSError):
      continue
    for doc in _docstrings(tree):
      para = _WS.sub(" ", doc.split("\n\n", 1)[0]).strip()
      words = para.split(" ")
      if not (min_words <= len(words) <= max_words) or ">>>" in para:
        continue
      letters = sum(c.isalpha() or c == " " for c in para)
      if letters < 0.7 * len(para):
        continue
      seen.add(para)
  return tuple(sorted(seen))


@dataclasses.dataclass(frozen=True)
class TextSplits:
  """Disjoint calibration and evaluation passages.

  Attributes:
    calibration: passages for estimating H = E[x xᵀ] of each linear layer.
    evaluation: passages for end-to-end metrics (cosine to fp32, retrieval agreement).
    seed: the split seed.
    num_available: passages available before the split.
    digest: first 16 hex digits of SHA-256 over both splits (identifies the exact text).
  """

  calibration: tuple[str, ...]
  evaluation: tuple[str, ...]
  seed: int
  num_available: int
  digest: str


def load_splits(n_calibration: int = 512, n_eval: int = 512, seed: int = 0) -> TextSplits:
  """Fixed, seeded, disjoint calibration and evaluation splits of ``stdlib_passages()``.

  Args:
    n_calibration: passages in the calibration split.
    n_eval: passages in the evaluation split.
    seed: integer seed of the hash that orders the passages.

  Raises:
    ValueError: if the sizes are not positive integers or exceed the passages available.
  """
  for name, v in (("n_calibration", n_calibration), ("n_eval", n_eval), ("seed", seed)):
    if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "seed" else 1):
      raise ValueError(f"{name}={v!r} must be a {'non-negative' if name == 'seed' else 'positive'} integer")
  passages = stdlib_passages()
  if n_calibration + n_eval > len(passages):
    raise ValueError(
        f"{n_calibration=} + {n_eval=} exceeds the {len(passages)} stdlib passages available"
    )
  key = lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()  # noqa: E731
  ordered = sorted(passages, key=key)
  cal = tuple(ordered[:n_calibration])
  ev = tuple(ordered[n_calibration : n_calibration + n_eval])
  digest = hashlib.sha256("\x00".join(cal + ("\x01",) + ev).encode()).hexdigest()[:16]
  return TextSplits(calibration=cal, evaluation=ev, seed=seed, num_available=len(passages), digest=digest)
