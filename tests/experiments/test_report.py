"""rdq-report: the results browser, checked in headless Chromium (images load, the screenshot is not blank)."""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from rdq.experiments import report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EVIL = "<script>alert(1)</script>"


class _Tables(HTMLParser):
  """Rows of every <table> as lists of (tag, style, text) cells."""

  def __init__(self):
    super().__init__()
    self.tables, self._cell = [], None

  def handle_starttag(self, tag, attrs):
    if tag == "table":
      self.tables.append([])
    elif tag == "tr":
      self.tables[-1].append([])
    elif tag in ("td", "th"):
      self._cell = [tag, dict(attrs).get("style", ""), ""]

  def handle_endtag(self, tag):
    if tag in ("td", "th") and self._cell is not None:
      self.tables[-1][-1].append(tuple(self._cell))
      self._cell = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell[2] += data


def _tables(html_text):
  p = _Tables()
  p.feed(html_text)
  return p.tables


# ------------------------------------------------------------------------------ markdown and escaping
def test_markdown_pipe_table_cells_alignment_and_escaping():
  md = ("# Title <b>\n\nSome *text* with `a<b` and [a link](fig.png), [bad](javascript:alert(1)).\n\n"
        "| method | b | result \\| note |\n|:---|---:|:-:|\n| GPTQ <i> | 2 | 0.05 @ 2.1 |\n| RTN | 3 |\n\nafter\n")
  out = report.markdown_to_html(md, link=lambda u: "x/" + u)
  assert "<h3>Title &lt;b&gt;</h3>" in out  # '#' becomes h3 inside a family section
  assert "<code>a&lt;b</code>" in out and '<a href="x/fig.png">a link</a>' in out
  assert "javascript" not in re.sub(r">[^<]*<", "><", out)  # a javascript: URL is text, never an href
  assert "<i>" not in out and "&lt;i&gt;" in out
  (table,) = _tables(out)
  assert [c[2] for c in table[0]] == ["method", "b", "result | note"]  # \| is a literal bar
  assert [c[0] for c in table[0]] == ["th"] * 3
  assert [c[1] for c in table[1]] == ["text-align:left", "text-align:right", "text-align:center"]
  assert [c[2] for c in table[1]] == ["GPTQ <i>", "2", "0.05 @ 2.1"]
  assert [c[2] for c in table[2]] == ["RTN", "3", ""]  # a short row is padded
  assert out.rstrip().endswith("<p>after</p>")


def test_markdown_without_table_separator_is_a_paragraph():
  out = report.markdown_to_html("a | b\nc | d\n")
  assert "<table" not in out and out == "<p>a | b c | d</p>"
  assert report.split_row("| x | y \\| z |") == ["x", "y | z"]
  assert report.is_separator("|---|:--:|") and not report.is_separator("| a | b |")


# ------------------------------------------------------------------------------ a tiny out_dir
def _png(path, red=False, width_in=4.0):
  from matplotlib.figure import Figure  # no pyplot: no backend is chosen

  fig = Figure(figsize=(width_in, 3), dpi=100)
  ax = fig.subplots()
  x = np.linspace(0, 1, 50)
  if red:
    ax.fill_between(x, 0, 1, color="red")
  else:
    ax.plot(x, x**2, color="0.3")
  ax.set_title(path.stem)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path)


def _out_dir(root):
  """generic_matmul: finished (results.json, a red figure, a table); lattice_nsm: points but no
  results.json; gptvq: damaged results.json; a figure under hydra/ that must not be shown."""
  gm = root / "generic_matmul"
  points = [{"key": f"k{s}", "config": {"quantizer_a": "int8", "seed": s, "n": 256},
             "result": {"mean": 1e-4, "wall_time_s": 0.5 + s, "finished_at": f"2026-12-03T09:0{s}:00+0000"}}
            for s in (0, 1)]
  res = {"experiment": "generic_matmul", "config": {"out_dir": str(gm), "label": EVIL},
         "jobs": [{"num": 0, "overrides": ["seed=0,1", EVIL], "num_points": 2}],
         "env": {"rdq": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2", "python": "3.11.7", "device_kind": "cpu",
                 "device_count": 1, "git_commit": "0123456789abcdef0123"},
         "wall_time_s": 754.0, "distortion": f"E||A^T B||; {EVIL}", "pooled_over_seeds": [], "points": points}
  gm.mkdir(parents=True)
  (gm / "results.json").write_text(json.dumps(res))
  _png(gm / "generic_matmul.png", red=True)
  (gm / "generic_matmul.md").write_text("| q | D |\n|---|---|\n| int8 | 1.0e-4 |\n| " + EVIL + " | 2 |\n")
  _png(gm / "hydra" / "run-1" / "stale.png")
  ln = root / "lattice_nsm"
  _png(ln / "lattice_nsm.png", width_in=3.0)
  (ln / "points").mkdir()
  (ln / "points" / "abc.json").write_text("{}")
  gv = root / "gptvq"
  _png(gv / "gptvq_ablation.png", width_in=3.0)
  (gv / "results.json").write_text('{"experiment": "gptvq", "points": [')
  return root


def test_report_content_notes_errors_and_escaping(tmp_path):
  out = _out_dir(tmp_path / "out")
  path = report.write_report(out)
  assert path == out / "report.html"
  text = path.read_text()
  assert text.count("<script") == 1 and "alert(1)" in text  # the evil strings are shown, escaped, never run
  assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
  # families in rdq-sweep order; hydra/ never searched
  order = [m for m in re.findall(r'<section class="family" id="fam-([a-z_]+)"', text)]
  assert order == ["generic_matmul", "lattice_nsm", "gptvq"]
  assert "stale.png" not in text
  # metadata of the finished family
  assert "0123456789ab" in text and "rdq 0.1.0, jax 0.10.2, jaxlib 0.10.2, python 3.11.7" in text
  assert "754 s (12 min 34 s)" in text and "1 × cpu" in text
  assert "2 (last finished 2026-12-03T09:01:00+0000)" in text
  pts = [t for t in _tables(text) if t and [c[2] for c in t[0]][:2] == ["key", "seed"]]
  assert len(pts) == 1 and [r[1][2] for r in pts[0][1:]] == ["0", "1"]  # the varying field, nothing else
  # the unfinished and the damaged family: a note and an error, the page goes on
  assert "no results.json here, but 1 point is stored in points/" in text
  assert "results.json is damaged:</strong> results.json cannot be read: JSONDecodeError" in text
  # figures by relative path, with a printed-size width; the md table rendered
  srcs = re.findall(r'<img class="fig" src="([^"]+)" width="(\d+)"', text)
  assert srcs == [("generic_matmul/generic_matmul.png", "500"), ("lattice_nsm/lattice_nsm.png", "375"),
                  ("gptvq/gptvq_ablation.png", "375")]  # 4 in and 3 in at 125 px/in
  assert ["int8", "1.0e-4"] in [[c[2] for c in r] for t in _tables(text) for r in t]
  # --embed: one portable file
  emb = report.write_report(out, tmp_path / "portable" / "r.html", embed=True).read_text()
  assert emb.count('src="data:image/png;base64,') == 3 and 'src="generic_matmul/' not in emb
  # -o elsewhere: links relative to the page
  other = report.write_report(out, tmp_path / "elsewhere" / "r.html").read_text()
  assert 'src="../out/generic_matmul/generic_matmul.png"' in other


def test_unexpected_results_layout_and_odd_file_names(tmp_path):
  fam = tmp_path / "sweep"  # out_dir is one family folder
  fam.mkdir()
  (fam / "results.json").write_text(json.dumps({"env": "x", "points": {"a": 1}, "jobs": ["j", 3], "config": [1],
                                                "wall_time_s": "a&b", "pooled_over_seeds": 7}))
  _png(fam / "fig #1 & <b>.png", width_in=2.0)
  (fam / "latin1.md").write_bytes(b"\xff | a |\n")
  text = report.write_report(fam).read_text()
  assert "a&amp;b" in text and "&amp;amp;" not in text  # escaped once
  assert 'src="fig%20%231%20%26%20%3Cb%3E.png" width="250"' in text  # a URL, not a fragment or a tag
  assert "cannot read latin1.md: &#x27;utf-8&#x27; codec" in text
  assert re.findall(r'<section class="family" id="fam-([^"]+)"', text) == ["sweep"]


def test_missing_out_dir_names_the_argument(tmp_path, capsys):
  with pytest.raises(SystemExit) as e:
    report.main([str(tmp_path / "nope")])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "argument out_dir" in err and "nope" in err and "does not exist" in err
  with pytest.raises(FileNotFoundError, match="out_dir .*nope.* does not exist"):
    report.write_report(tmp_path / "nope")
  report.main([str(tmp_path)])  # an empty folder: a page that says so
  assert "no results under this folder" in (tmp_path / "report.html").read_text()


def test_paper_figures_report_uses_the_index(tmp_path):
  out = report.write_report(ROOT / "paper_figures", tmp_path / "paper.html").read_text()
  index = (ROOT / "paper_figures" / "INDEX.md").read_text()
  first = re.search(r"\[([^\]]+\.png)\]\(", index)[1]
  shown = re.findall(r'<img class="fig" src="[^"]*/([^/"]+)"', out)
  assert shown[0] == first and len(shown) == len(list((ROOT / "paper_figures").glob("*.png")))
  assert 'href="#fig-paper_figures-' in out  # INDEX.md's links point at the figures on the page


# ------------------------------------------------------------------------------ headless Chromium
def _chromium():
  exe = shutil.which("chromium") or shutil.which("chromium-browser")
  if exe:
    return exe
  if hasattr(os, "geteuid") and os.geteuid() != 0 and not os.environ.get("CI"):
    pytest.skip(reason="chromium is not installed and this is not root (make test installs it as root: "
                       "apt-get install chromium)")
  pytest.fail("chromium is not installed: `make test` installs it (apt-get install -y chromium) in its setup")


def _browser(exe, tmp_path, page, *args):
  cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}", *args, page.as_uri()]
  proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90, env=dict(os.environ, HOME=str(tmp_path)))
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout


def _loaded(dom):
  status = re.search(r'<div id="img-status"[^>]*>', dom)[0]
  flags = {m[1]: m[0] for m in re.findall(r'<img (?=[^>]*data-loaded="([01])")[^>]*data-name="([^"]+)"', dom)}
  failed = re.search(r'data-failed="(\d+)"', status)  # set by the page's load-time check only
  return flags, (int(failed[1]) if failed else None)


def _red_fraction(png):
  import matplotlib.image

  img = matplotlib.image.imread(png)[..., :3]  # float RGB in [0, 1]
  red = (img[..., 0] > 0.85) & (img[..., 1] < 0.2) & (img[..., 2] < 0.2)
  return float(red.mean()), float((img.min(axis=-1) < 0.9).mean()), float(img.std())


def test_report_renders_in_headless_chromium(tmp_path):
  exe = _chromium()
  out = _out_dir(tmp_path / "out")
  cli = Path(sys.executable).with_name("rdq-report")  # the console script of pyproject's [project.scripts]
  proc = subprocess.run([str(cli), str(out)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "3 result folders, 3 figures; damaged results.json in gptvq" in proc.stdout
  good = out / "report.html"
  # a second out_dir whose red figure is damaged: the check must see it fail
  bad_dir = tmp_path / "bad"
  shutil.copytree(out, bad_dir)
  (bad_dir / "generic_matmul" / "generic_matmul.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
  bad = report.write_report(bad_dir)

  flags, failed = _loaded(_browser(exe, tmp_path, good, "--dump-dom"))
  assert failed == 0 and flags == {"generic_matmul/generic_matmul.png": "1", "lattice_nsm/lattice_nsm.png": "1",
                                   "gptvq/gptvq_ablation.png": "1"}
  flags, failed = _loaded(_browser(exe, tmp_path, bad, "--dump-dom"))
  assert failed == 1 and flags["generic_matmul/generic_matmul.png"] == "0"
  assert flags["lattice_nsm/lattice_nsm.png"] == "1"

  shots = {}
  for name, page in (("good", good), ("bad", bad)):
    shots[name] = tmp_path / f"{name}.png"
    _browser(exe, tmp_path, page, "--window-size=1280,1400", f"--screenshot={shots[name]}")
  red, inked, std = _red_fraction(shots["good"])
  assert inked > 0.02 and std > 0.05  # text, tables and figures, not a blank page
  assert red > 0.03  # the red figure is on screen (its 500×375 px area is ~6 % of the window)
  red_bad, inked_bad, _ = _red_fraction(shots["bad"])
  assert red_bad < 0.002 and inked_bad > 0.01  # same page, figure missing: the check would fail
