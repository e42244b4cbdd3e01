"""Per-point result store: atomic, keyed by a hash of the point's config, resumable, shared.

Every sweep point is written to ``<root>/points/<key>.json`` through a temporary file and
``os.replace`` (atomic on POSIX), so a killed sweep loses no finished point and a rerun
skips every key already present. ``results.json`` is an aggregate rebuilt from the points
(``rdq.experiments._sweep``).

Robustness rules:

* **Damaged points.** A point file is trusted only if it parses as JSON and holds the record
  of its own key (``key``, ``config`` with that hash, ``result``). Anything else (truncated by a
  full disk, half-copied by rsync, edited by hand) is named in a warning, moved to
  ``points/damaged/`` and recomputed.
* **Concurrent sweeps.** Before computing a point a sweep claims it with
  ``points/<key>.lock`` (created with ``O_EXCL``; it records host and pid and its mtime is
  refreshed every ``HEARTBEAT_S`` seconds while the point runs). A second sweep on the same
  ``out_dir`` computes the points it can claim and then waits for the others, so each point
  is computed once. A lock is stale, and taken over, when its process is gone (same host) or
  its heartbeat is older than ``STALE_AFTER_S`` (any host, e.g. a killed cluster job).
* **Orphan temporary files** (``.<name>~<host>~<pid>~*.tmp``) of a dead writer on this host,
  or older than ``STALE_AFTER_S``, are removed when a store is opened.
* Files are created with mode ``0666 & ~umask`` (``0644`` usually), readable by collaborators.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from tqdm.auto import tqdm

__all__ = ["PointStore", "config_key", "env_info", "run_points", "write_json_atomic", "write_text_atomic"]

log = logging.getLogger(__name__)

# Fields of a result that vary between identical runs (excluded from determinism checks).
TIMING_FIELDS = ("wall_time_s", "finished_at")
HEARTBEAT_S = 30.0       # a running point refreshes its lock this often
STALE_AFTER_S = 300.0    # a lock or temp file untouched this long belongs to a dead process
POLL_S = 0.2             # how often a sweep checks points claimed by another sweep
_HOST = socket.gethostname()


def _canonical(obj: Any) -> str:
  return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_key(config: Mapping[str, Any]) -> str:
  """First 20 hex digits of SHA-256 of the config's canonical JSON."""
  return hashlib.sha256(_canonical(config).encode()).hexdigest()[:20]


def _file_mode() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return 0o666 & ~mask


def _write_atomic(path: Path, write: Callable[[Any], None], binary: bool) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~{_HOST}~{os.getpid()}~", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb" if binary else "w") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _file_mode())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def write_json_atomic(path: Path, obj: Any) -> Path:
  """Write JSON to ``path`` via a temp file in the same directory and ``os.replace``."""
  return _write_atomic(path, lambda f: json.dump(obj, f, indent=1, sort_keys=True, default=str), binary=False)


def write_text_atomic(path: Path, text: str) -> Path:
  """Write ``text`` to ``path`` atomically (tables, reports)."""
  return _write_atomic(path, lambda f: f.write(text), binary=False)


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _owner_dead(host: str, pid: int, mtime: float) -> bool:
  """True when the process that wrote a lock/temp file is gone (or silent too long)."""
  if time.time() - mtime > STALE_AFTER_S:
    return True
  return host == _HOST and not _pid_alive(pid)


def clean_orphans(directory: Path) -> int:
  """Remove temp files of dead writers in ``directory``; returns how many."""
  removed = 0
  for p in Path(directory).glob(".*.tmp"):
    parts = p.name.split("~")  # .<name>~<host>~<pid>~<random>.tmp
    try:
      host, pid = parts[-3], int(parts[-2])
      stale = _owner_dead(host, pid, p.stat().st_mtime)
    except (IndexError, ValueError):  # an old-style temp name: by age only
      try:
        stale = time.time() - p.stat().st_mtime > STALE_AFTER_S
      except FileNotFoundError:
        continue
    except FileNotFoundError:
      continue
    if stale:
      try:
        p.unlink()
        removed += 1
      except FileNotFoundError:
        pass
  if removed:
    log.info("removed %d orphan temporary files in %s", removed, directory)
  return removed


class _Heartbeat:
  """Refreshes a lock file's mtime while a point runs."""

  def __init__(self, path: Path):
    self.path, self._stop = path, threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.wait(HEARTBEAT_S):
      try:
        os.utime(self.path)
      except FileNotFoundError:
        return

  def __enter__(self):
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()


class PointStore:
  """Directory of finished sweep points, ``<root>/points/<config_key>.json``."""

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)
    self.points_dir = self.root / "points"
    self.damaged_dir = self.points_dir / "damaged"
    for d in (self.root, self.points_dir):
      if d.exists():
        clean_orphans(d)

  def path(self, config: Mapping[str, Any]) -> Path:
    return self.points_dir / f"{config_key(config)}.json"

  def lock_path(self, config: Mapping[str, Any]) -> Path:
    return self.points_dir / f"{config_key(config)}.lock"

  # ------------------------------------------------------------------ reading, validated
  def _quarantine(self, p: Path, reason: str) -> None:
    self.damaged_dir.mkdir(parents=True, exist_ok=True)
    dest = self.damaged_dir / f"{p.name}.{time.strftime('%Y%m%d-%H%M%S')}.{os.getpid()}"
    try:
      os.replace(p, dest)
    except FileNotFoundError:  # another sweep moved it first
      return
    log.warning("damaged point file %s (%s): moved to %s; the point will be recomputed", p, reason, dest)

  def _load(self, p: Path, key: str | None) -> dict | None:
    """The record in ``p`` if it is valid (and of ``key``), else None after moving it aside."""
    try:
      text = p.read_text()
    except FileNotFoundError:
      return None
    try:
      rec = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      self._quarantine(p, f"not valid JSON: {e}")
      return None
    if not (isinstance(rec, dict) and isinstance(rec.get("config"), dict) and isinstance(rec.get("result"), dict)):
      self._quarantine(p, "not a point record {key, config, result}")
      return None
    want = p.stem if key is None else key
    if rec.get("key") != want or config_key(rec["config"]) != want:
      self._quarantine(p, f"its config hashes to {config_key(rec['config'])}, not {want}")
      return None
    return rec

  def has(self, config: Mapping[str, Any]) -> bool:
    """True if a valid record of ``config`` is stored (a damaged one is moved aside)."""
    return self.get(config) is not None

  def get(self, config: Mapping[str, Any]) -> dict | None:
    return self._load(self.path(config), config_key(config))

  def get_key(self, key: str) -> dict | None:
    return self._load(self.points_dir / f"{key}.json", key)

  def put(self, config: Mapping[str, Any], result: Mapping[str, Any]) -> Path:
    record = {"key": config_key(config), "config": dict(config), "result": dict(result)}
    return write_json_atomic(self.path(config), record)

  def all(self) -> list[dict]:
    """Every valid finished point, sorted by key (damaged files are moved aside)."""
    if not self.points_dir.exists():
      return []
    out = []
    for p in sorted(self.points_dir.glob("*.json")):
      rec = self._load(p, None)
      if rec is not None:
        out.append(rec)
    return out

  # ------------------------------------------------------------------ claims
  def claim(self, config: Mapping[str, Any]) -> bool:
    """Try to become the one process computing ``config``; False if another live one is."""
    lock = self.lock_path(config)
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
      try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _file_mode())
      except FileExistsError:
        if not self._lock_stale(lock):
          return False
        log.warning("taking over the stale claim %s", lock)
        try:
          lock.unlink()
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, "w") as f:
        json.dump({"host": _HOST, "pid": os.getpid(), "started": time.time()}, f)
      return True
    return False

  def _lock_stale(self, lock: Path) -> bool:
    try:
      mtime = lock.stat().st_mtime
      info = json.loads(lock.read_text() or "{}")
    except FileNotFoundError:
      return True
    except (json.JSONDecodeError, OSError):
      info = {}  # being written right now, or damaged: judge by age
    return _owner_dead(str(info.get("host", "")), int(info.get("pid", -1)), mtime) if info else \
        time.time() - mtime > STALE_AFTER_S

  def release(self, config: Mapping[str, Any]) -> None:
    try:
      self.lock_path(config).unlink()
    except FileNotFoundError:
      pass


def run_points(
    store: PointStore,
    configs: Iterable[Mapping[str, Any]],
    compute: Callable[[Mapping[str, Any]], Mapping[str, Any]],
    desc: str = "points",
    wait: bool = True,
) -> list[dict]:
  """Compute every config not yet in ``store``; return the records of all of them.

  Each finished point is written atomically before the next one starts. ``compute`` gets
  the config and returns a JSON-able dict; ``wall_time_s`` and ``finished_at`` are added.
  Points claimed by another live sweep on the same store are waited for, not recomputed;
  ``wait=False`` leaves them to it and returns only the records already stored (a helper
  process sharing one sweep's points, e.g. ``rdq.experiments.causal_lm``'s ``workers``).
  """
  configs = list(configs)
  todo = [c for c in configs if not store.has(c)]
  log.info("%s: %d points, %d already done, %d to run", desc, len(configs), len(configs) - len(todo), len(todo))

  def one(config):
    try:
      if store.has(config):  # finished by another sweep between our check and our claim
        return
      t0 = time.perf_counter()
      with _Heartbeat(store.lock_path(config)):
        result = dict(compute(config))
      result["wall_time_s"] = time.perf_counter() - t0
      result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
      store.put(config, result)
    finally:
      store.release(config)

  waiting = []
  bar = tqdm(total=len(todo), desc=desc, disable=None)
  for config in todo:
    if store.claim(config):
      one(config)
      bar.update()
    else:
      waiting.append(config)
  if waiting and not wait:
    bar.close()
    return [r for r in (store.get(c) for c in configs) if r is not None]
  if waiting:
    log.info("%s: waiting for %d points claimed by another sweep on %s", desc, len(waiting), store.root)
  while waiting:
    still = []
    for config in waiting:
      if store.has(config):
        bar.update()
      elif store.claim(config):  # the other sweep died: take over
        one(config)
        bar.update()
      else:
        still.append(config)
    waiting = still
    if waiting:
      time.sleep(POLL_S)
  bar.close()
  records = [store.get(c) for c in configs]
  missing = [config_key(c) for c, r in zip(configs, records) if r is None]
  if missing:
    raise RuntimeError(f"{desc}: points {missing[:3]} vanished from {store.points_dir} after they were computed")
  return records


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
