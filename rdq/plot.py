"""The house style for every rdq figure (the only rdq module that imports matplotlib).

Use ``figure()`` to get a styled figure; ``COLORS``, ``LABELS`` and ``MARKERS`` give every
family, algorithm and construction one colour, one legend label and one marker across all
figures; ``save(fig, stem)`` writes ``stem.png`` and ``stem.pdf`` atomically. Axis labels must
state units and the distortion convention (``DISTORTION_LABEL_*``).

This module never chooses a matplotlib backend: a notebook keeps its inline backend, a
script or Hydra app picks a non-interactive one itself (``rdq.experiments._sweep`` sets
``MPLBACKEND=Agg`` before matplotlib is imported).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.text
import matplotlib.transforms

__all__ = [
    "COLORS",
    "DISTORTION_LABEL_MATMUL",
    "DISTORTION_LABEL_LAYER",
    "DISTORTION_LABEL_WEIGHT",
    "LABELS",
    "LIMIT_STYLE",
    "MARKERS",
    "RATE_LABEL",
    "REFERENCE_STYLE",
    "color",
    "figure",
    "label_points",
    "label",
    "marker",
    "save",
    "style",
]

RATE_LABEL = "rate R [bits per entry, side information included]"
DISTORTION_LABEL_MATMUL = r"distortion $\mathbb{E}\|A^\top B-\hat A^\top \hat B\|_F^2/(n\,a\,b)$"
DISTORTION_LABEL_WEIGHT = r"distortion $\mathrm{tr}((W-\hat W)^\top\Sigma(W-\hat W))/(n\,m)$"
# The same with a layer's calibration second moment H = E[x xᵀ] in place of Σ_X.
DISTORTION_LABEL_LAYER = r"distortion $\mathrm{tr}((W-\hat W)^\top H\,(W-\hat W))/(n\,m)$"

# One colour per family / algorithm / construction, stable across all figures.
COLORS = {
    # limits and references
    "limit": "black",
    "gaussian": "0.45",
    # scalar and block formats (generic_matmul)
    "int": "#1f77b4",
    "fp": "#d62728",
    "mx": "#ff7f0e",
    "nv": "#2ca02c",
    "lattice": "#9467bd",
    "vq": "#8c564b",
    "other": "0.3",
    # lattices (lattice_nsm, generic_matmul's nested-lattice curves)
    "z": "#1f77b4",
    "dn": "#2ca02c",
    "dnstar": "#ff7f0e",
    "d4": "#2ca02c",
    "e8": "#9467bd",
    "bw16": "#8c564b",
    "leech": "#e377c2",
    # nested-lattice (Voronoi) codes of generic_matmul: shades of the "lattice" purple
    "nested_z": "#5254a3",
    "nested_d4": "#7b4173",
    "nested_e8": "#c5b0d5",
    "nested_bw16": "#9467bd",
    "nested_leech": "#393b79",
    # layer algorithms (weight_only, gptvq, real_model)
    "rtn": "#1f77b4",
    "gptq": "#d62728",
    "watersic": "#2ca02c",
    "gptvq": "#9467bd",
    "gptvq_d1": "#9467bd",
    "gptvq_d2": "#8c564b",
    "gptvq_d4": "#e377c2",
    "gptvq_d8": "#7f7f7f",
    "e8_rtn": "#e377c2",
    "e8_ldlq": "#8c564b",
    "leech_ldlq": "#393b79",
    "leech_qa_ldlq": "#17becf",
    "universal": "#17becf",
    # universal codebook constructions
    "cb_gaussian": "#1f77b4",
    "cb_sphere": "#ff7f0e",
    "cb_lattice": "#9467bd",
    "cb_product_gaussian": "#8c564b",
    "cb_product_lattice": "#e377c2",
    "cb_product_learned": "#7f7f7f",
    "cb_learned": "#17becf",
}

# One legend label per key of COLORS that appears in a legend.
LABELS = {
    "int": "absmax INT",
    "fp": "FP (elementwise)",
    "mx": "MX (e8m0 / 32)",
    "nv": "NVFP4",
    "lattice": "nested lattice",
    "other": "other",
    "z": r"$\mathbb{Z}^n$",
    "dn": r"$D_n$",
    "dnstar": r"$D_n^*$",
    "d4": r"$D_4$",
    "e8": r"$E_8$",
    "bw16": r"$\Lambda_{16}$ (BW16)",
    "leech": r"$\Lambda_{24}$ (Leech)",
    "nested_z": r"$\mathbb{Z}$ Voronoi code (NestQuant)",
    "nested_d4": r"$D_4$ Voronoi code (NestQuant)",
    "nested_e8": r"$E_8$ Voronoi code (NestQuant)",
    "nested_bw16": r"$\Lambda_{16}$ (BW16) Voronoi code (NestQuant)",
    "nested_leech": r"Leech $\Lambda_{24}$ Voronoi code (NestQuant)",
    "leech_ldlq": r"Leech $\Lambda_{24}$-nested LDLQ (RHT)",
    "leech_qa_ldlq": r"Leech $\Lambda_{24}$-nested QA-LDLQ (RHT)",
    "rtn": "RTN",
    "gptq": "GPTQ",
    "watersic": "WaterSIC",
    "gptvq": "GPTVQ (d=2)",
    "gptvq_d1": "GPTVQ d=1",
    "gptvq_d2": "GPTVQ d=2",
    "gptvq_d4": "GPTVQ d=4",
    "gptvq_d8": "GPTVQ d=8",
    "e8_rtn": "E8-nested RTN (rot.)",
    "e8_ldlq": "E8-nested LDLQ (rot.)",
    "cb_gaussian": "iid Gaussian",
    "cb_sphere": "uniform on sphere",
    "cb_lattice": "lattice shells (rotated)",
    "cb_product_gaussian": "product of 2 Gaussian blocks",
    "cb_product_lattice": "product of 2 lattice-shell blocks",
    "cb_product_learned": "product of 2 learned blocks",
    "cb_learned": "learned minimax (optax)",
}

MARKERS = {
    "int": "o", "fp": "s", "mx": "^", "nv": "D", "lattice": "P", "other": "x",
    "nested_z": "v", "nested_d4": "s", "nested_e8": "D", "nested_bw16": "*", "nested_leech": "X",
    "z": "s", "dn": "o", "dnstar": "D", "d4": "s", "e8": "*", "bw16": "P", "leech": "X",
    "rtn": "o", "gptq": "s", "watersic": "^", "gptvq": "D", "e8_rtn": "v", "e8_ldlq": "P",
    "gptvq_d1": "o", "gptvq_d2": "s", "gptvq_d4": "^", "gptvq_d8": "D",
    "cb_gaussian": "o", "cb_sphere": "s", "cb_lattice": "^", "cb_product_gaussian": "v",
    "cb_product_lattice": "D", "cb_product_learned": "X", "cb_learned": "*",
}

LIMIT_STYLE = dict(color="black", lw=1.6, zorder=5)
# Horizontal/vertical reference lines (e.g. ½log2(πe/6)): drawn above the data, never on a spine.
REFERENCE_STYLE = dict(color="0.35", ls="--", lw=0.9, zorder=4)


def color(key: str) -> str:
  """The colour of ``key`` (a family, algorithm or ``cb_<construction>``); grey if unknown."""
  return COLORS.get(key, COLORS["other"])


def label(key: str) -> str:
  """The legend label of ``key``; the key itself if none is defined."""
  return LABELS.get(key, key)


def marker(key: str) -> str:
  """The marker of ``key``; ``"o"`` if none is defined."""
  return MARKERS.get(key, "o")


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


def _overlap(a, b, pad: float = 1.0) -> bool:
  return not (a.x1 + pad < b.x0 or b.x1 + pad < a.x0 or a.y1 + pad < b.y0 or b.y1 + pad < a.y0)


def label_points(ax, points, fontsize: float = 5.0, color: str = "0.15", avoid=()) -> list:
  """Label data points without collisions: each label takes the nearest free spot.

  ``points`` is a sequence of ``(x, y, text)`` in data coordinates. Candidate offsets are
  tried ring by ring (8 directions, radius 4, 10, 17, 25, 34 pt); a label is placed where its
  box overlaps no placed label, no marker and no artist box in ``avoid`` (e.g. a legend)
  and stays inside the axes; rings beyond the first get a thin leader line. If no spot is
  free, the one with the fewest overlaps is used. Returns the annotation artists.
  """
  fig = ax.figure
  fig.canvas.draw()  # text extents need a renderer and the final layout
  renderer = fig.canvas.get_renderer()
  to_disp = ax.transData.transform
  ppt = fig.dpi / 72.0
  marks = []
  for x, y, _ in points:
    px, py = to_disp((x, y))
    marks.append(matplotlib.transforms.Bbox([[px - 3 * ppt, py - 3 * ppt], [px + 3 * ppt, py + 3 * ppt]]))
  blocked = [a.get_window_extent(renderer) for a in avoid]
  frame = ax.get_window_extent(renderer)
  dirs = [(1, 0.5), (1, -0.5), (-1, 0.5), (-1, -0.5), (0, 1), (0, -1), (1, 1.5), (-1, -1.5)]
  align = {1: "left", -1: "right", 0: "center"}
  placed, out = [], []
  order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
  for i in order:
    x, y, text = points[i]
    best = None
    for radius in (4, 10, 17, 25, 34):
      for dx, dy in dirs:
        ha = align[int(dx)]
        va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
        arrow = dict(arrowstyle="-", lw=0.3, color="0.5", shrinkA=0, shrinkB=2) if radius > 4 else None
        t = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius * 0.6), textcoords="offset points",
                        ha=ha, va=va, fontsize=fontsize, color=color, arrowprops=arrow, zorder=6)
        t.update_positions(renderer)
        bb = matplotlib.text.Text.get_window_extent(t, renderer)  # the text, without its leader line
        inside = frame.x0 <= bb.x0 and bb.x1 <= frame.x1 and frame.y0 <= bb.y0 and bb.y1 <= frame.y1
        hits = 3 * sum(_overlap(bb, o) for o in placed + blocked) + sum(  # text on text is worst
            _overlap(bb, m, 0.0) for j, m in enumerate(marks) if j != i) + (0 if inside else 100)
        if best is None or hits < best[0]:
          if best is not None:
            best[1].remove()
          best = (hits, t, bb)
        else:
          t.remove()
        if hits == 0:
          break
      if best[0] == 0:
        break
    placed.append(best[2])
    out.append(best[1])
  return out


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def save(fig, stem: str | Path, close: bool = True) -> list[Path]:
  """Write ``stem.png`` and ``stem.pdf`` (creating the directory); returns both paths.

  Each file is written to a temporary file in the same directory and moved into place with
  ``os.replace``, so a killed process leaves either the old figure or the new one, never a
  truncated file; files get the usual ``0666 & ~umask`` mode (``0644``), not ``mkstemp``'s 0600.
  ``close=False`` keeps the figure open (a notebook then shows it inline).
  """
  stem = Path(stem)
  stem.parent.mkdir(parents=True, exist_ok=True)
  paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
  mode = 0o666 & ~_umask()
  for p in paths:
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}~{socket.gethostname()}~{os.getpid()}~", suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        fig.savefig(f, format=p.suffix[1:], metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
        f.flush()
        os.fsync(f.fileno())
      os.chmod(tmp, mode)
      os.replace(tmp, p)
    except BaseException:
      if os.path.exists(tmp):
        os.unlink(tmp)
      raise
  if close:
    plt.close(fig)
  return paths
