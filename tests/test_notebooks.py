"""Notebook hygiene: badge, install cell, knobs, outputs stripped in git.

(The docs build executes them, in their small mode: docs/conf.py.)"""

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
