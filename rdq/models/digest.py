"""File digests of the model files rdq knows, so a damaged checkpoint never loads silently.

A bit flip in a safetensors or GGUF file still parses and gives finite, wrong numbers (an
embedding cosine of 0.01–0.06 to the true model was observed): the loaders therefore compare the
file's SHA-256 with the digest recorded for the package version rdq was tested with.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

__all__ = ["check_sha256", "file_sha256"]


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
  """SHA-256 of a file, computed once per (path, size, mtime) per process."""
  st = os.stat(path)
  return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def check_sha256(path: str | os.PathLike, expected: str) -> None:
  """Raise ``ValueError`` naming the file and both digests unless ``sha256(path) == expected``."""
  got = file_sha256(path)
  if got != expected:
    raise ValueError(f"{path} has sha256 {got}, expected {expected}: the file is corrupted or a different model")
