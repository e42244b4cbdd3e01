"""Per-point result store: atomic, keyed by a hash of the point's config, resumable.

Every sweep point is written to ``<root>/points/<key>.json`` through a temporary file and
``os.replace`` (atomic on POSIX), so a killed sweep loses no finished point and a rerun
skips every key already present. ``results.json`` is an aggregate rebuilt from the points.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from tqdm.auto import tqdm

__all__ = ["PointStore", "config_key", "env_info", "run_points", "write_json_atomic"]

log = logging.getLogger(__name__)

# Fields of a result that vary between identical runs (excluded from determinism checks).
TIMING_FIELDS = ("wall_time_s", "finished_at")


def _canonical(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(config: Mapping[str, Any]) -> str:
  """First 20 hex digits of SHA-256 of the config's canonical JSON."""
  return hashlib.sha256(_canonical(config).encode()).hexdigest()[:20]


def write_json_atomic(path: Path, obj: Any) -> Path:
  """Write JSON to ``path`` via a temp file in the same directory and ``os.replace``."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=1, sort_keys=True, default=str)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


class PointStore:
  """Directory of finished sweep points, ``<root>/points/<config_key>.json``."""

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)
    self.points_dir = self.root / "points"

  def path(self, config: Mapping[str, Any]) -> Path:
    return self.points_dir / f"{config_key(config)}.json"

  def has(self, config: Mapping[str, Any]) -> bool:
    return self.path(config).exists()

  def get(self, config: Mapping[str, Any]) -> dict | None:
    p = self.path(config)
    if not p.exists():
      return None
    return json.loads(p.read_text())

  def put(self, config: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
    record = {"key": config_key(config), "config": dict(config), "result": dict(result)}
    return write_json_atomic(self.path(config), record)

  def all(self) -> list[dict]:
    """Every finished point, sorted by key (stable order for aggregation)."""
    if not self.points_dir.exists():
      return []
    out = []
    for p in sorted(self.points_dir.glob("*.json")):
      out.append(json.loads(p.read_text()))
    return out


def run_points(
    store: PointStore,
    configs: Iterable[Mapping[str, Any]],
    compute: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    desc: str = "points",
) -> list[dict]:
  """Compute every config not yet in ``store``; return the records of all of them.

  Each finished point is written atomically before the next one starts. ``compute`` gets
  the config and returns a JSON-able dict; ``wall_time_s`` and ``finished_at`` are added.
  """
  configs = list(configs)
  todo = [c for c in configs if not store.has(c)]
  log.info("%s: %d points, %d already done, %d to run", desc, len(configs), len(configs) - len(todo), len(todo))
  for config in tqdm(todo, desc=desc, disable=None):
    t0 = time.perf_counter()
    result = dict(compute(config))
    result["wall_time_s"] = time.perf_counter() - t0
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    store.put(config, result)
  return [store.get(c) for c in configs]


def _git_commit() -> str | None:
  try:
    here = Path(__file__).resolve().parent
    out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    return None


def env_info() -> dict:
  """Versions and devices, recorded in every results.json."""
  import jax
  import jaxlib

  import rdq

  devices = jax.devices()
  return {
      "rdq": rdq.__version__,
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "python": platform.python_version(),
      "device_kind": devices[0].device_kind,
      "device_count": len(devices),
      "git_commit": _git_commit(),
  }
