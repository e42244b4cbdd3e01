"""The house style for every rdq figure (the only rdq module that imports matplotlib).

Use ``figure()`` to get a styled figure, the ``COLORS``/``MARKERS`` maps for families, and
``save(fig, stem)`` to write ``stem.png`` and ``stem.pdf``. Axis labels must state units and
the distortion convention (``DISTORTION_LABEL_*``).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = [
    "COLORS",
    "DISTORTION_LABEL_MATMUL",
    "DISTORTION_LABEL_WEIGHT",
    "LIMIT_STYLE",
    "RATE_LABEL",
    "figure",
    "save",
    "style",
]

RATE_LABEL = "rate R [bits per entry, side information included]"
DISTORTION_LABEL_MATMUL = r"distortion $\mathbb{E}\|A^\top B-\hat A^\top \hat B\|_F^2/(n\,a\,b)$"
DISTORTION_LABEL_WEIGHT = r"distortion $\mathrm{tr}((W-\hat W)^\top\Sigma(W-\hat W))/(n\,m)$"

# Families get stable colours across all figures.
COLORS = {
    "limit": "black",
    "gaussian": "0.45",
    "int": "#1f77b4",
    "fp": "#d62728",
    "mx": "#ff7f0e",
    "nv": "#2ca02c",
    "lattice": "#9467bd",
    "vq": "#8c564b",
    "rtn": "#1f77b4",
    "gptq": "#d62728",
    "watersic": "#2ca02c",
    "gptvq": "#9467bd",
    "e8_rtn": "#e377c2",
    "e8_ldlq": "#8c564b",
    "universal": "#17becf",
}
LIMIT_STYLE = dict(color="black", lw=1.6, zorder=5)

_RC = {
    "figure.dpi": 120,
    "savefig.dpi": 200,
    "savefig.bbox": "tight",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 7.5,
    "legend.frameon": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "lines.markersize": 4,
    "errorbar.capsize": 2,
    "pdf.fonttype": 42,
}


def style() -> None:
  """Apply the house rcParams globally (idempotent)."""
  plt.rcParams.update(_RC)


def figure(width: str = "single", aspect: float = 0.72, ncols: int = 1, nrows: int = 1):
  """A styled ``(fig, axes)`` of width ``"single"`` (3.5 in) or ``"double"`` (7 in) and
  height ``aspect × width``, with constrained layout."""
  style()
  w = {"single": 3.5, "double": 7.0}[width]
  return plt.subplots(nrows, ncols, figsize=(w, w * aspect), layout="constrained")


def save(fig, stem: str | Path) -> list[Path]:
  """Write ``stem.png`` and ``stem.pdf`` (creating the directory); returns both paths."""
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  for p in paths:
    fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
  plt.close(fig)
  return paths
