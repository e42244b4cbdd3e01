"""A notebook that draws with rdq.plot shows its figure inline (rdq never picks the backend)."""

import os

import nbformat
import pytest
from nbclient import NotebookClient


def test_notebook_figure_is_inline_png(tmp_path):
  nb = nbformat.v4.new_notebook()
  nb.cells = [nbformat.v4.new_code_cell(
      "from rdq import plot\n"
      "import matplotlib\n"
      "fig, ax = plot.figure()\n"
      "ax.plot([0, 1], [1, 0], color=plot.color('int'), label=plot.label('int'))\n"
      "ax.legend()\n"
      "backend = matplotlib.get_backend()\n"
      "print(backend)")]
  env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # as a user's Jupyter starts
  client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
  try:
    client.execute(env=env)
  except TypeError:  # older nbclient: env through the kernel manager
    pytest.skip(reason="nbclient-env: this nbclient cannot pass an environment")
  outputs = nb.cells[0].outputs
  text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
  assert "inline" in text.lower(), f"backend: {text!r}"
  pngs = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
  assert len(pngs) == 1, [o.output_type for o in outputs]
