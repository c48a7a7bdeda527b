"""Notebook hygiene: badge, install cell, knobs, outputs stripped in git.

(The docs build executes them, in their small mode: docs/conf.py; the
large-batch notebook there reads the committed results, and its live sweep
runs here, in the slow set.)"""

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_four_notebooks_exist():
  assert [p.name for p in NOTEBOOKS] == ["language_model.ipynb",
                                         "large_batch.ipynb",
                                         "methods_tour.ipynb",
                                         "quickstart.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_conventions(path):
  nb = nbformat.read(path, as_version=4)
  first = nb.cells[0]
  assert first.cell_type == "markdown" and first.source.startswith("# ")
  assert "colab.research.google.com/github/" in first.source
  assert path.name in first.source
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert "pip" in code[0].source and '"google.colab" in sys.modules' in (
      code[0].source)
  assert any("# @param" in c.source for c in code)
  assert any("LAWN_NOTEBOOK_SMALL" in c.source for c in code)
  for c in code:
    assert not c.get("outputs") and c.get("execution_count") is None, (
        "outputs must be stripped before committing")


@pytest.mark.slow   # ~80 s on 2 cores
def test_large_batch_live_sweep_runs(monkeypatch):
  """The docs show large_batch.ipynb on the committed results; its live sweep
  (what a user without them, or with recompute=True, runs) runs here, small,
  its code cells executed in order in this process."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  path = next(p for p in NOTEBOOKS if p.name == "large_batch.ipynb")
  monkeypatch.setenv("LAWN_NOTEBOOK_SMALL", "1")
  monkeypatch.setenv("LAWN_NOTEBOOK_RECOMPUTE", "1")
  monkeypatch.chdir(path.parent)
  scope: dict = {}
  for cell in nbformat.read(path, as_version=4).cells:
    if cell.cell_type == "code":
      exec(compile(cell.source, f"{path.name}", "exec"), scope)
  plt.close("all")
  assert scope["recompute"] and sorted(scope["sweep"]["cells"]) == ["adam",
                                                                    "lawn-adam"]
  assert [c["batch_size"] for c in scope["sweep"]["cells"]["adam"]] == [128, 4000]
  assert scope["free"]["cells"]["lawn-adam"][0]["grid"]["free_frac"]
