"""Points estimated together: one compiled program for several sweep points.

Jitting each point's Monte Carlo estimate on its own pays XLA's fixed cost of a compilation
(and the eager set-up around it) once per point; for small programs — a scalar quantizer's
matmul sample, a lattice's closest point — that is most of the point's time. ``grouped_compute``
gives ``run_points`` a ``compute(config)`` that, at the first unfinished point of a group,
estimates it together with up to ``group_size − 1`` later unfinished points of the same group
in one call of ``estimate_group`` (the apps trace their per-point estimates inside one
``jax.jit``: each is the same computation as alone, so the numbers are bitwise those of separate
runs — tested per app) and keeps their estimates until their turn. Every point is still stored
on its own, so resuming, multirun jobs of one point and the store's locks work as before.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Mapping, Sequence

from rdq.experiments._store import config_key

__all__ = ["grouped_compute"]


def grouped_compute(
    configs: Sequence[Mapping[str, Any]],
    group_key: Callable[[Mapping[str, Any]], Hashable],
    estimate_group: Callable[[list], list],
    finish: Callable[[Mapping[str, Any], Any], Mapping[str, Any]],
    group_size: int,
    store,
) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
  """``compute(config)`` for ``run_points``.

  Args:
    configs: the sweep's point configs (in run order).
    group_key: points with equal keys may be estimated together.
    estimate_group: configs of one group → their estimates, in order.
    finish: ``(config, estimate) → result`` of one point.
    group_size: at most this many points per ``estimate_group`` call (≥ 1; 1 = one per point).
    store: the sweep's ``PointStore`` (finished points are not re-estimated).
  """
  if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
    raise ValueError(f"group_size={group_size!r} must be an integer ≥ 1")
  configs = list(configs)
  ready: dict[str, Any] = {}  # estimated, not yet asked for
  estimated: set[str] = set()

  def compute(config: Mapping[str, Any]) -> Mapping[str, Any]:
    key = config_key(config)
    if key not in ready:
      later = [c for c in configs if group_key(c) == group_key(config) and config_key(c) != key
               and config_key(c) not in estimated and not store.has(c)]
      group = [config, *later[: group_size - 1]]
      estimates = estimate_group(group)
      if len(estimates) != len(group):
        raise RuntimeError(f"estimate_group returned {len(estimates)} estimates for {len(group)} points")
      ready.update((config_key(c), e) for c, e in zip(group, estimates))
      estimated.update(config_key(c) for c in group)
    return finish(config, ready.pop(key))

  return compute
