"""Sphinx configuration: the lawn_optax docs site.

Built by ``.ci/run`` with warnings as errors:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Generated at build time (never hand-copied): the notebooks (copied from
``notebooks/`` and executed here in their small mode, ``LAWN_NOTEBOOK_SMALL=1``,
so the site shows their outputs and a failing cell fails the build), the
``explain`` output on the mask guide (run here), and the results page with
its figures (from ``benchmarks/results``).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import lawn_optax  # noqa: E402

project = "lawn_optax"
release = version = lawn_optax.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon",
              "sphinx.ext.mathjax", "myst_nb"]
myst_enable_extensions = ["dollarmath", "amsmath"]
# The notebooks run at build time, small (the CI step that executes them).
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
os.environ["LAWN_NOTEBOOK_SMALL"] = "1"
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
exclude_patterns = ["_build", "_generated/*.txt", "README.md"]
html_theme = "alabaster"
suppress_warnings = ["myst.header"]

GENERATED = DOCS / "_generated"


def _generate() -> None:
  GENERATED.mkdir(exist_ok=True)
  notebooks = GENERATED / "notebooks"
  shutil.rmtree(notebooks, ignore_errors=True)
  notebooks.mkdir()
  for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
    shutil.copy(nb, notebooks / nb.name)
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  out = subprocess.run([sys.executable, str(DOCS / "make_examples.py")],
                       capture_output=True, text=True, env=env, check=True)
  (GENERATED / "explain.txt").write_text(out.stdout)
  subprocess.run([sys.executable, "-m", "benchmarks.report", "--docs",
                  str(GENERATED / "results.md")], check=True, env=env,
                 cwd=ROOT)


_generate()
