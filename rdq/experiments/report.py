"""``rdq-report <out_dir> [-o report.html] [--embed]``: one static HTML page of a sweep's results.

The page shows, for each family folder under ``out_dir`` (``outputs/<family>`` of the apps, a
cluster sweep directory, one family's ``out_dir``, or ``paper_figures/``): the metadata of its
``results.json`` (experiment, versions, git commit, device, runtime, jobs and their overrides,
number of points, config, the points' varying config fields), every figure (``*.png``, with a
link to the sibling ``*.pdf``) and every markdown table (``*.md``, rendered to HTML here).

Figures are referenced by **relative path** by default: the page stays small (a few kB) and
always shows the figures as they are now, which suits a sweep directory read in place (a file
browser, ``python -m http.server``, sshfs, Jupyter's file view). ``--embed`` inlines them as
base64 ``data:`` URIs (about 4/3 of the PNG bytes): one portable file to copy or mail. On
window load a script checks each image (``naturalWidth > 0``), marks it
``data-loaded="1"``/``"0"`` and names the ones that failed at the top of the page.

Nothing here needs JAX, Hydra or matplotlib: the report reads files and writes one.
A folder without ``results.json`` is shown with a note; a damaged one shows its error.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["find_families", "main", "markdown_to_html", "render_report", "write_report"]

FIGURE_SUFFIXES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
SKIP_DIRS = {"points", "hydra", "damaged", "__pycache__", "multirun"}  # never family folders
MAX_DEPTH = 3            # family folders are searched this deep below out_dir
MAX_POINT_ROWS = 500     # rows of the points table of one family
MAX_POINT_COLS = 14      # varying config fields shown in it
MAX_JSON_CHARS = 200_000  # a <pre> of config / extra fields is cut beyond this
KNOWN_FIELDS = ("experiment", "config", "jobs", "env", "wall_time_s", "points", "pooled_over_seeds")
DEFAULT_NAME = "report.html"
CSS_PX_PER_INCH = 125     # a 7-inch matplotlib figure shows 875 px wide (max: the page width)
DEFAULT_FIG_PX = 640      # width of a figure whose size is unknown (SVG, JPEG)
MD_OPEN_ROWS = 80         # a markdown file with more table rows starts folded


# ------------------------------------------------------------------------------ markdown
def esc(x: Any) -> str:
  """HTML-escape any value (quotes too, so it is safe inside attributes)."""
  return html.escape(str(x), quote=True)


_INLINE = re.compile(r"`([^`]+)`|\[([^\]]+)\]\(([^)\s]+)\)|\*\*([^*]+)\*\*")
_SAFE_URL = re.compile(r"^(https?:|mailto:|#)|^[^:]*$", re.IGNORECASE)  # no javascript:, data:, ...


def inline_md(text: str, link: Callable[[str], str] | None = None) -> str:
  """Escaped ``text`` with ```code```, ``[text](url)`` and ``**bold**`` as HTML."""
  out, pos = [], 0
  for m in _INLINE.finditer(text):
    out.append(esc(text[pos:m.start()]))
    code, label, url, bold = m.groups()
    if code is not None:
      out.append(f"<code>{esc(code)}</code>")
    elif label is not None:
      if _SAFE_URL.match(url):
        href = link(url) if link else url
        out.append(f'<a href="{esc(href)}">{inline_md(label, link)}</a>')
      else:
        out.append(esc(m.group(0)))
    else:
      out.append(f"<strong>{esc(bold)}</strong>")
    pos = m.end()
  out.append(esc(text[pos:]))
  return "".join(out)


_BULLET = re.compile(r"^\s*[-*]\s+")
_SEP_CELL = re.compile(r"^\s*:?-{1,}:?\s*$")


def split_row(line: str) -> list[str]:
  """Cells of a pipe-table row (``\\|`` is a literal bar)."""
  s = line.strip()
  if s.startswith("|"):
    s = s[1:]
  if s.endswith("|") and not s.endswith("\\|"):
    s = s[:-1]
  return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", s)]


def is_separator(line: str) -> bool:
  cells = split_row(line)
  return "|" in line and bool(cells) and all(_SEP_CELL.match(c) for c in cells)


def table_to_html(lines: list[str], link: Callable[[str], str] | None = None) -> str:
  """A markdown pipe table (header, separator, rows) as an HTML table; alignment from ``:--:``."""
  header, rows = split_row(lines[0]), [split_row(x) for x in lines[2:]]
  aligns = []
  for c in split_row(lines[1]):
    c = c.strip()
    left, right = c.startswith(":"), c.endswith(":")
    aligns.append("center" if left and right else "right" if right else "left" if left else "")
  width = max([len(header), *map(len, rows)])

  def cell(tag: str, i: int, text: str) -> str:
    a = aligns[i] if i < len(aligns) else ""
    style = f' style="text-align:{a}"' if a else ""
    return f"<{tag}{style}>{inline_md(text, link)}</{tag}>"

  head = "".join(cell("th", i, header[i] if i < len(header) else "") for i in range(width))
  body = "\n".join("<tr>" + "".join(cell("td", i, r[i] if i < len(r) else "") for i in range(width)) + "</tr>"
                   for r in rows)
  return (f'<div class="tablewrap"><table class="md"><thead><tr>{head}</tr></thead>\n'
          f"<tbody>\n{body}\n</tbody></table></div>")


def markdown_to_html(text: str, link: Callable[[str], str] | None = None, heading_offset: int = 2) -> str:
  """The markdown the apps write, as HTML: headings, pipe tables, paragraphs, ``-`` lists, fenced code.

  All text is escaped; ``link`` maps a link target (e.g. a relative path) to the ``href`` used.
  Headings are shifted down by ``heading_offset`` levels (``#`` inside a family section is an h3).
  """
  lines = text.replace("\r\n", "\n").split("\n")
  out: list[str] = []
  i, n = 0, len(lines)
  while i < n:
    line = lines[i]
    s = line.strip()
    if not s:
      i += 1
    elif s.startswith("```"):
      j = i + 1
      while j < n and not lines[j].strip().startswith("```"):
        j += 1
      out.append(f"<pre>{esc(chr(10).join(lines[i + 1:j]))}</pre>")
      i = j + 1
    elif m := re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", s):
      level = min(len(m[1]) + heading_offset, 6)
      out.append(f"<h{level}>{inline_md(m[2], link)}</h{level}>")
      i += 1
    elif "|" in s and i + 1 < n and is_separator(lines[i + 1]):
      j = i + 2
      while j < n and lines[j].strip() and "|" in lines[j]:
        j += 1
      out.append(table_to_html([x for x in lines[i:j]], link))
      i = j
    elif re.match(r"^[-*]\s+", s):
      items = []
      while i < n and (m := _BULLET.match(lines[i])):
        items.append(f"<li>{inline_md(lines[i][m.end():], link)}</li>")
        i += 1
      out.append("<ul>" + "".join(items) + "</ul>")
    else:
      para = []
      while i < n and lines[i].strip() and not re.match(r"^(#{1,6}\s|```|[-*]\s)", lines[i].strip()) and not (
          "|" in lines[i] and i + 1 < n and is_separator(lines[i + 1])):
        para.append(lines[i].strip())
        i += 1
      out.append(f"<p>{inline_md(' '.join(para), link)}</p>")
  return "\n".join(out)


# ------------------------------------------------------------------------------ discovery
@dataclass
class Family:
  """One folder of results: its figures, tables and (maybe) ``results.json``."""

  path: Path
  name: str
  figures: list[Path] = field(default_factory=list)
  tables: list[Path] = field(default_factory=list)
  results: dict | None = None
  error: str | None = None    # results.json exists but cannot be used
  num_point_files: int = 0    # points/*.json (a sweep without results.json has not finished)

  @property
  def has_results(self) -> bool:
    return (self.path / "results.json").exists()


def _is_family_dir(d: Path) -> bool:
  if (d / "results.json").exists() or (d / "points").is_dir():
    return True
  return any(p.is_file() and (p.suffix.lower() in FIGURE_SUFFIXES or p.suffix.lower() == ".md") for p in d.iterdir())


def find_families(out_dir: str | os.PathLike) -> list[Family]:
  """Folders at most ``MAX_DEPTH`` below ``out_dir`` (itself included) with results, figures or tables.

  ``points/``, ``hydra/`` and hidden folders are never entered. Families of the apps come in
  their ``rdq-sweep --help`` order, the others by path.
  """
  root = Path(out_dir)
  found: list[Path] = []

  def walk(d: Path, depth: int) -> None:
    try:
      if _is_family_dir(d):
        found.append(d)
      subdirs = sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in SKIP_DIRS)
    except OSError:  # unreadable folder: not ours to report on
      return
    if depth < MAX_DEPTH:
      for s in subdirs:
        walk(s, depth + 1)

  walk(root, 0)
  order = {f: i for i, f in enumerate(_family_descriptions())}
  fams = []
  for d in found:
    rel = d.relative_to(root).as_posix()
    fam = Family(path=d, name=root.resolve().name if rel == "." else rel)
    files = sorted(p for p in d.iterdir() if p.is_file())
    fam.figures = [p for p in files if p.suffix.lower() in FIGURE_SUFFIXES]
    tables = [p for p in files if p.suffix.lower() == ".md"]
    fam.tables = sorted(tables, key=lambda p: (p.name != "INDEX.md", p.name))
    if (d / "points").is_dir():
      fam.num_point_files = sum(1 for _ in (d / "points").glob("*.json"))
    _load_results(fam)
    fams.append(fam)
  return sorted(fams, key=lambda f: (f.path != root, order.get(f.path.name, len(order)), f.name))


def _load_results(fam: Family) -> None:
  p = fam.path / "results.json"
  if not p.exists():
    return
  try:
    data = json.loads(p.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    fam.error = f"{p.name} cannot be read: {type(e).__name__}: {e}"
    return
  if not isinstance(data, dict):
    fam.error = f"{p.name} is not an rdq results file: its top level is a JSON {type(data).__name__}, not an object"
    return
  fam.results = data


def _family_descriptions() -> dict[str, str]:
  try:
    from rdq.experiments.__main__ import FAMILIES
  except ImportError:  # pragma: no cover - a partial install
    return {}
  return dict(FAMILIES)


# ------------------------------------------------------------------------------ rendering helpers
def _duration(s: Any) -> str:
  if not isinstance(s, (int, float)) or isinstance(s, bool):
    return str(s)  # escaped by the caller
  if s < 60:
    return f"{s:.1f} s"
  m, sec = divmod(int(round(s)), 60)
  h, m = divmod(m, 60)
  return f"{s:.0f} s ({h} h {m:02d} min)" if h else f"{s:.0f} s ({m} min {sec:02d} s)"


def _json_pre(obj: Any) -> str:
  text = json.dumps(obj, indent=1, sort_keys=True, default=str, ensure_ascii=False)
  if len(text) > MAX_JSON_CHARS:
    text = text[:MAX_JSON_CHARS] + f"\n… ({len(text) - MAX_JSON_CHARS} more characters in results.json)"
  return f"<pre>{esc(text)}</pre>"


def _compact(v: Any) -> str:
  return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str, ensure_ascii=False)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
  if not isinstance(d, dict):
    return {prefix or "value": d}
  out: dict[str, Any] = {}
  for k, v in d.items():
    key = f"{prefix}.{k}" if prefix else str(k)
    if isinstance(v, dict) and v:
      out.update(_flatten(v, key))
    else:
      out[key] = v
  return out


def _slug(s: str) -> str:
  return re.sub(r"[^A-Za-z0-9_-]+", "-", s).strip("-") or "root"


def _kv_table(rows: list[tuple[str, str]]) -> str:
  body = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in rows)
  return f'<table class="kv">{body}</table>'


# ------------------------------------------------------------------------------ sections
class _Page:
  """Paths, links and figure sources of one report being written to ``output``."""

  def __init__(self, out_dir: Path, output: Path, embed: bool):
    self.out_dir, self.output, self.embed = out_dir, output, embed
    self.anchors: dict[Path, str] = {}

  def rel(self, p: Path) -> str:
    """``p`` as a URL relative to the report's folder (percent-escaped path segments)."""
    from urllib.parse import quote

    r = os.path.relpath(os.path.abspath(p), os.path.abspath(self.output.parent))
    return quote(Path(r).as_posix())

  def src(self, p: Path) -> str:
    if self.embed:
      try:
        data = base64.b64encode(p.read_bytes()).decode("ascii")
      except OSError:
        return self.rel(p)  # unreadable: the browser check names it
      return f"data:{FIGURE_SUFFIXES[p.suffix.lower()]};base64,{data}"
    return self.rel(p)

  def linker(self, base: Path) -> Callable[[str], str]:
    """Link targets of a markdown file in ``base``: a figure or table on this page -> its anchor."""

    def link(url: str) -> str:
      if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", url, re.IGNORECASE):
        return url
      target = Path(os.path.abspath(base / url.split("#")[0]))
      if target in self.anchors:
        return "#" + self.anchors[target]
      return self.rel(target) if target.exists() else url

    return link


def png_size(path: Path) -> tuple[int, int, float | None] | None:
  """(width, height, dots per inch or None) from a PNG's IHDR and pHYs chunks; None if not a PNG."""
  try:
    with open(path, "rb") as f:
      head = f.read(65536)
  except OSError:
    return None
  if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
    return None
  w, h = struct.unpack(">II", head[16:24])
  dpi, pos = None, 8
  while pos + 8 <= len(head):
    length, kind = struct.unpack(">I4s", head[pos:pos + 8])
    if kind == b"pHYs" and pos + 17 <= len(head):
      ppx, _, unit = struct.unpack(">IIB", head[pos + 8:pos + 17])
      dpi = ppx * 0.0254 if unit == 1 and ppx else None
      break
    if kind == b"IDAT":
      break
    pos += 12 + length
  return w, h, dpi


def display_size(path: Path) -> tuple[int, int]:
  """CSS size of a figure: its printed size (pixels / dpi, matplotlib's 100 dpi if unknown) at
  ``CSS_PX_PER_INCH``, so every figure shows its text at the same size; shrunk to the page."""
  info = png_size(path) if path.suffix.lower() == ".png" else None
  if info is None:
    return DEFAULT_FIG_PX, round(DEFAULT_FIG_PX * 0.75)
  w, h, dpi = info
  scale = CSS_PX_PER_INCH / (dpi or 100.0)
  return max(1, round(w * scale)), max(1, round(h * scale))


def _captions(fam: Family) -> dict[str, str]:
  """Figure name -> caption from an index table (``| figure | what | ...``), as in paper_figures/INDEX.md."""
  caps: dict[str, str] = {}
  for t in fam.tables:
    try:
      lines = t.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
      continue
    for i in range(len(lines) - 1):
      if "|" in lines[i] and is_separator(lines[i + 1]):
        head = [c.lower() for c in split_row(lines[i])]
        if "figure" in head and "what" in head:
          fi, wi = head.index("figure"), head.index("what")
          for row in lines[i + 2:]:
            if "|" not in row:
              break
            cells = split_row(row)
            if max(fi, wi) < len(cells):
              for name in re.findall(r"\[([^\]]+)\]\(", cells[fi]):
                caps.setdefault(name, cells[wi])
  return caps


def _metadata(fam: Family) -> str:
  r = fam.results or {}
  env = r.get("env") if isinstance(r.get("env"), dict) else {}
  rows: list[tuple[str, str]] = []
  if "experiment" in r:
    rows.append(("experiment", esc(r["experiment"])))
  commit = env.get("git_commit")
  if commit:
    rows.append(("git commit", f'<code title="{esc(commit)}">{esc(str(commit)[:12])}</code>'))
  versions = ", ".join(f"{k} {env[k]}" for k in ("rdq", "jax", "jaxlib", "python") if env.get(k) is not None)
  if versions:
    rows.append(("versions", esc(versions)))
  if env.get("device_kind") is not None:
    rows.append(("device", esc(f"{env.get('device_count', '?')} × {env['device_kind']}")))
  extra_env = {k: v for k, v in env.items()
               if k not in ("git_commit", "rdq", "jax", "jaxlib", "python", "device_kind", "device_count")}
  for k, v in extra_env.items():
    rows.append((k, esc(_compact(v))))
  if "wall_time_s" in r:
    rows.append(("runtime", esc(_duration(r["wall_time_s"]))))
  points = r.get("points")
  if isinstance(points, list):
    finished = sorted(str(p["result"]["finished_at"]) for p in points
                      if isinstance(p, dict) and isinstance(p.get("result"), dict) and p["result"].get("finished_at"))
    rows.append(("points", esc(f"{len(points)}" + (f" (last finished {finished[-1]})" if finished else ""))))
  pooled = r.get("pooled_over_seeds")
  if isinstance(pooled, list) and pooled:
    rows.append(("pooled over seeds", esc(f"{len(pooled)} groups of points that differ only in their seed")))
  jobs = r.get("jobs")
  if isinstance(jobs, list) and jobs:
    items = "".join(
        f"<li>job {esc(j.get('num', '?'))}: {esc(j.get('num_points', '?'))} points; "
        f"<code>{esc(' '.join(map(str, j.get('overrides', []))) or '(no overrides)')}</code></li>"
        if isinstance(j, dict) else f"<li>{esc(_compact(j))}</li>" for j in jobs)
    rows.append((f"jobs ({len(jobs)})", f'<ul class="jobs">{items}</ul>'))
  try:
    written = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime((fam.path / "results.json").stat().st_mtime))
    rows.append(("results.json written", esc(written)))
  except OSError:
    pass
  for k, v in r.items():
    if k not in KNOWN_FIELDS and not isinstance(v, (dict, list)):
      rows.append((k, esc(_compact(v))))
  parts = [_kv_table(rows)]
  details = []
  if "config" in r:
    details.append(("config", r["config"]))
  details += [(k, v) for k, v in r.items() if k not in KNOWN_FIELDS and isinstance(v, (dict, list))]
  for k, v in details:
    parts.append(f"<details><summary>{esc(k)}</summary>{_json_pre(v)}</details>")
  if isinstance(points, list) and points:
    parts.append(_points_table(points))
  return "\n".join(parts)


def _points_table(points: list) -> str:
  """The points' config fields that vary, their wall time and finish time (in a <details>)."""
  flat = [_flatten(p.get("config", {})) if isinstance(p, dict) else {"point": p} for p in points]
  keys = list(dict.fromkeys(k for f in flat for k in f))
  varying = [k for k in keys if len({_compact(f.get(k, "∅")) for f in flat}) > 1]
  if not varying:
    varying = keys[:1]
  shown = varying[:MAX_POINT_COLS]
  cols = [*shown, "wall_time_s", "finished_at"]
  head = "".join(f"<th>{esc(c)}</th>" for c in ["key", *cols])
  rows = []
  for p, f in list(zip(points, flat))[:MAX_POINT_ROWS]:
    res = p.get("result", {}) if isinstance(p, dict) and isinstance(p.get("result"), dict) else {}
    key = p.get("key", "") if isinstance(p, dict) else ""
    vals = [f.get(k, "") for k in shown]
    wt = res.get("wall_time_s", "")
    vals += [f"{wt:.2f}" if isinstance(wt, (int, float)) else wt, res.get("finished_at", "")]
    rows.append("<tr>" + f"<td><code>{esc(str(key)[:10])}</code></td>" +
                "".join(f"<td>{esc(_compact(v))}</td>" for v in vals) + "</tr>")
  notes = []
  if len(varying) > len(shown):
    notes.append(f"{len(varying) - len(shown)} more varying fields not shown")
  if len(points) > MAX_POINT_ROWS:
    notes.append(f"first {MAX_POINT_ROWS} of {len(points)} points")
  note = f'<p class="note">{esc("; ".join(notes))}</p>' if notes else ""
  return (f"<details><summary>points ({len(points)}): the config fields that vary</summary>{note}"
          f'<div class="tablewrap"><table class="md"><thead><tr>{head}</tr></thead><tbody>'
          + "\n".join(rows) + "</tbody></table></div></details>")


def _md_file(t: Path, page: _Page) -> str:
  """One markdown file as a folding block (open unless it has more than ``MD_OPEN_ROWS`` table rows)."""
  try:
    body = markdown_to_html(t.read_text(encoding="utf-8"), page.linker(t.parent))
  except (OSError, UnicodeDecodeError) as e:
    body = f'<div class="error">cannot read {esc(t.name)}: {esc(e)}</div>'
  rows = body.count("<tr>")
  fold = rows > MD_OPEN_ROWS
  aid = page.anchors.get(Path(os.path.abspath(t)), "")
  return (f'<details class="mdfile" id="{esc(aid)}"{"" if fold else " open"}><summary><code>{esc(t.name)}</code>'
          + (f" ({rows} table rows)" if fold else "") + f'</summary><div class="md">{body}</div></details>')


def _family_section(fam: Family, page: _Page, descriptions: dict[str, str]) -> str:
  sid = "fam-" + _slug(fam.name)
  exp = fam.results.get("experiment") if fam.results else None
  desc = descriptions.get(str(exp)) or descriptions.get(fam.path.name, "")
  parts = [f'<section class="family" id="{esc(sid)}"><h2>{esc(fam.name)}'
           + (f' <span class="desc">{esc(desc)}</span>' if desc else "") + "</h2>",
           f'<p class="path"><code>{esc(fam.path)}</code></p>']
  if fam.error:
    parts.append(f'<div class="error"><strong>results.json is damaged:</strong> {esc(fam.error)}. '
                 "The figures and tables below may not belong to a finished sweep.</div>")
  elif not fam.has_results:
    if fam.num_point_files:
      n = fam.num_point_files
      msg = (f"no results.json here, but {n} point{' is' if n == 1 else 's are'} stored in points/: the sweep has not "
             "finished (or a multirun's aggregate failed; rebuild it with "
             "python -m rdq.experiments._sweep <out_dir>/hydra/multirun-…).")
    elif any(t.name == "INDEX.md" for t in fam.tables):
      msg = "no results.json here: INDEX.md below lists each figure's command, runtime and commit."
    else:
      msg = "no results.json here: no run metadata (versions, commit, runtime) to show."
    parts.append(f'<div class="note">{esc(msg)}' + (" Figures and tables as found in the folder." if fam.figures
                                                     or fam.tables else "") + "</div>")
  else:
    try:
      parts.append(_metadata(fam))
    except Exception as e:  # an unexpected layout must not lose the rest of the page
      parts.append(f'<div class="error">results.json has an unexpected layout: {esc(type(e).__name__)}: {esc(e)}</div>')
  index = [t for t in fam.tables if t.name == "INDEX.md"]
  parts += [_md_file(t, page) for t in index]
  if fam.figures:
    caps = _captions(fam)
    rank = {name: i for i, name in enumerate(caps)}  # the index's order, then by name
    figs = []
    for p in sorted(fam.figures, key=lambda p: (rank.get(p.name, len(rank)), p.name)):
      fid = page.anchors[Path(os.path.abspath(p))]
      pdf = p.with_suffix(".pdf")
      links = f' · <a href="{esc(page.rel(pdf))}">pdf</a>' if pdf.exists() else ""
      cap = f'<span class="cap">{inline_md(caps[p.name])}</span>' if p.name in caps else ""
      w, h = display_size(p)
      src = page.src(p)
      figs.append(f'<figure id="{esc(fid)}" style="width:{w + 14}px">'
                  f'<a href="{esc(src) if not page.embed else "#" + esc(fid)}">'
                  f'<img class="fig" src="{esc(src)}" width="{w}" height="{h}" alt="{esc(p.name)}" '
                  f'data-name="{esc(fam.name)}/{esc(p.name)}"></a><figcaption><code>{esc(p.name)}</code>{links} {cap}'
                  f'<span class="broken-msg">did not load</span></figcaption></figure>')
    parts.append('<div class="figures">' + "\n".join(figs) + "</div>")
  parts += [_md_file(t, page) for t in fam.tables if t not in index]
  if not (fam.figures or fam.tables or fam.has_results):
    parts.append('<p class="note">no figures or tables in this folder.</p>')
  parts.append("</section>")
  return "\n".join(parts)


def _overview(fams: list[Family]) -> str:
  rows = []
  for f in fams:
    r = f.results or {}
    env = r.get("env") if isinstance(r.get("env"), dict) else {}
    pts = r.get("points")
    status = ("damaged results.json" if f.error else "ok" if f.results is not None
              else "unfinished (no results.json)" if f.num_point_files else "no results.json")
    cls = "bad" if f.error else "ok" if f.results is not None else "warn"
    rows.append(
        f'<tr><td><a href="#fam-{esc(_slug(f.name))}">{esc(f.name)}</a></td>'
        f'<td class="{cls}">{esc(status)}</td>'
        f"<td>{esc(len(pts)) if isinstance(pts, list) else (esc(f.num_point_files) + ' stored' if f.num_point_files else '')}</td>"
        f"<td>{esc(_duration(r['wall_time_s'])) if 'wall_time_s' in r else ''}</td>"
        f"<td><code>{esc(str(env.get('git_commit') or '')[:12])}</code></td>"
        f"<td>{len(f.figures)}</td><td>{len(f.tables)}</td></tr>")
  head = "".join(f"<th>{h}</th>" for h in ("family", "status", "points", "runtime", "commit", "figures", "tables"))
  return f'<table class="md overview"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


CSS = """
:root { --fg:#1d2126; --muted:#5b6470; --line:#d5dae0; --bg2:#f4f6f8; --accent:#1f4e8c; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 16px 24px 48px; max-width: 1500px; }
h1 { font-size: 22px; margin: 4px 0 6px; }
h2 { font-size: 19px; margin: 0 0 4px; border-bottom: 2px solid var(--accent); padding-bottom: 3px; }
h2 .desc { font-size: 14px; font-weight: normal; color: var(--muted); margin-left: 8px; }
h3 { font-size: 16px; margin: 14px 0 6px; } h4, h5, h6 { font-size: 14px; margin: 12px 0 4px; }
a { color: var(--accent); }
code { font: 12.5px/1.3 ui-monospace, "DejaVu Sans Mono", Menlo, monospace; }
pre { font: 12px/1.35 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--bg2); padding: 8px;
      overflow: auto; max-height: 420px; border: 1px solid var(--line); }
.meta, .path, .note { color: var(--muted); margin: 2px 0 8px; }
section.family { margin: 28px 0 0; padding-top: 4px; }
table { border-collapse: collapse; }
table.kv th { text-align: left; font-weight: 600; color: var(--muted); padding: 2px 14px 2px 0; vertical-align: top;
              white-space: nowrap; }
table.kv td { padding: 2px 0; }
ul.jobs { margin: 0; padding-left: 18px; }
.tablewrap { overflow-x: auto; max-width: 100%; margin: 6px 0 10px; }
table.md { font-size: 13px; font-variant-numeric: tabular-nums; }
table.md th, table.md td { border: 1px solid var(--line); padding: 3px 8px; text-align: left; vertical-align: top; }
table.md thead th { background: #e8edf3; position: sticky; top: 0; }
table.md tbody tr:nth-child(even) { background: var(--bg2); }
table.overview td.ok { color: #1b7a35; } table.overview td.warn { color: #9a6700; } table.overview td.bad { color: #b3261e; }
.figures { display: flex; flex-wrap: wrap; gap: 14px; align-items: flex-start; margin: 12px 0; }
figure { margin: 0; border: 1px solid var(--line); padding: 6px; background: #fff; max-width: 100%; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 4px; }
figcaption .cap { color: var(--fg); }
.broken-msg { display: none; }
figure.broken { border-color: #b3261e; }
figure.broken .broken-msg { display: inline; color: #b3261e; font-weight: 600; margin-left: 6px; }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--accent); }
details.mdfile > summary { font-weight: 600; }
div.md p { max-width: 110ch; }
.error { background: #fdecea; border: 1px solid #b3261e; color: #7a1a14; padding: 6px 10px; margin: 6px 0; }
div.note { background: #fff8e1; border: 1px solid #e0c36c; color: #5c4a00; padding: 6px 10px; margin: 6px 0; }
#img-status { margin: 6px 0; padding: 4px 10px; display: inline-block; }
#img-status.ok { background: #e7f5ea; color: #1b5e2b; } #img-status.bad { background: #fdecea; color: #7a1a14; }
"""

# Runs on window load: each <img class=fig> gets data-loaded="1" (decoded, naturalWidth > 0) or "0";
# #img-status gets data-total / data-failed and a sentence naming the figures that did not load.
SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll("img.fig")), bad = [];
  imgs.forEach(function (im) {
    var ok = im.complete && im.naturalWidth > 0;
    im.setAttribute("data-loaded", ok ? "1" : "0");
    if (!ok) { bad.push(im.getAttribute("data-name")); im.closest("figure").classList.add("broken"); }
  });
  var s = document.getElementById("img-status");
  s.setAttribute("data-total", String(imgs.length));
  s.setAttribute("data-failed", String(bad.length));
  s.className = bad.length ? "bad" : "ok";
  s.textContent = bad.length
    ? bad.length + " of " + imgs.length + " figures did not load: " + bad.join(", ") +
      " (figures are linked by relative path: open the page where it was written, or rebuild it with --embed)"
    : "all " + imgs.length + " figures loaded";
});
"""


def render_report(out_dir: str | os.PathLike, output: str | os.PathLike, embed: bool = False,
                  title: str | None = None) -> str:
  """The HTML text of the report of ``out_dir`` as it will be read from ``output``."""
  root, output = Path(out_dir), Path(output)
  fams = find_families(root)
  page = _Page(root, output, embed)
  for f in fams:
    for p in f.figures:
      page.anchors[Path(os.path.abspath(p))] = "fig-" + _slug(f"{f.name}/{p.stem}")
    for t in f.tables:
      page.anchors[Path(os.path.abspath(t))] = "md-" + _slug(f"{f.name}/{t.stem}")
  descriptions = _family_descriptions()
  title = title or f"rdq results: {root.resolve().name}"
  try:
    from rdq import __version__ as rdq_version
  except ImportError:  # pragma: no cover
    rdq_version = "?"
  n_fig = sum(len(f.figures) for f in fams)
  when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
  how = "embedded (base64)" if embed else "linked by relative path"
  head = [f'<header><h1>{esc(title)}</h1><p class="meta">{esc(root.resolve())} · {len(fams)} result folders, '
          f"{n_fig} figures ({esc(how)}) · written {esc(when)} by rdq-report (rdq {esc(rdq_version)})</p>",
          f'<div id="img-status" data-total="{n_fig}">checking {n_fig} figures…</div>']
  if fams:
    head.append(_overview(fams))
  else:
    head.append('<div class="note">no results under this folder: no results.json, figures (*.png) or tables '
                "(*.md) at most three levels down (points/ and hydra/ are not searched).</div>")
  head.append("</header>")
  body = [_family_section(f, page, descriptions) for f in fams]
  return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
          '<meta name="viewport" content="width=device-width, initial-scale=1">'
          f"<title>{esc(title)}</title><style>{CSS}</style></head>\n<body>\n"
          + "\n".join(head) + "\n" + "\n".join(body)
          + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def _write_text(path: Path, text: str) -> None:
  """Atomic write (temp file + ``os.replace``), mode ``0666 & ~umask`` like the sweep's files."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}~", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    mask = os.umask(0o022)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_report(out_dir: str | os.PathLike, output: str | os.PathLike | None = None, embed: bool = False,
                 title: str | None = None) -> Path:
  """Write the report of ``out_dir`` to ``output`` (default ``<out_dir>/report.html``); return its path."""
  root = Path(out_dir)
  if not root.exists():
    raise FileNotFoundError(f"out_dir {str(root)!r} does not exist (give the folder a sweep wrote, "
                            "e.g. outputs or outputs/<family>)")
  if not root.is_dir():
    raise NotADirectoryError(f"out_dir {str(root)!r} is not a folder (give the folder a sweep wrote, "
                             "e.g. outputs or outputs/<family>)")
  out = Path(output) if output is not None else root / DEFAULT_NAME
  if out.is_dir():
    raise IsADirectoryError(f"-o {str(out)!r} is a folder; give a file name such as {out / DEFAULT_NAME}")
  _write_text(out, render_report(root, out, embed=embed, title=title))
  return out


def main(argv: list[str] | None = None) -> None:
  """Console script ``rdq-report``."""
  ap = argparse.ArgumentParser(
      prog="rdq-report",
      description="Write one static HTML page with every figure, table and results.json metadata under out_dir.")
  ap.add_argument("out_dir", help="a sweep's output folder: outputs (every family), outputs/<family>, a cluster "
                                  "sweep directory, or paper_figures")
  ap.add_argument("-o", "--output", help=f"the HTML file to write (default: <out_dir>/{DEFAULT_NAME})")
  ap.add_argument("--embed", action="store_true",
                  help="inline the figures as base64 (one portable file, ~4/3 of the PNG bytes) instead of "
                       "linking them by relative path")
  ap.add_argument("--title", help="page title (default: rdq results: <out_dir name>)")
  args = ap.parse_args(argv)
  if not Path(args.out_dir).is_dir():
    ap.error(f"argument out_dir: {args.out_dir!r} " + ("is not a folder" if Path(args.out_dir).exists()
                                                       else "does not exist"))
  try:
    path = write_report(args.out_dir, args.output, embed=args.embed, title=args.title)
  except OSError as e:
    ap.error(f"cannot write the report: {e}")
  fams = find_families(args.out_dir)
  n_fig = sum(len(f.figures) for f in fams)
  bad = [f.name for f in fams if f.error]
  print(f"rdq-report: {path} ({path.stat().st_size / 1024:.0f} kB): {len(fams)} result folders, {n_fig} figures"
        + (f"; damaged results.json in {', '.join(bad)}" if bad else ""))
  if not fams:
    print(f"rdq-report: warning: nothing found under {args.out_dir} (no results.json, *.png or *.md)", file=sys.stderr)


if __name__ == "__main__":
  main()
