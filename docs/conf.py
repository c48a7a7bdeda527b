"""Sphinx configuration: the lawn_optax docs site.

Built by ``.ci/run`` with warnings as errors:
``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
Generated at build time (never hand-copied): the notebooks (executed from
``notebooks/`` in their small mode, ``LAWN_NOTEBOOK_SMALL=1``, by
``execute_notebook.py``, all four at once, so the site shows their outputs
and a failing cell fails the build), the
``explain`` output on the mask guide (run here), and the results page with
its figures (from ``benchmarks/results``).
"""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
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
# The notebooks run at build time, small (the CI step that executes them), in
# _generate below, all at once; myst-nb renders the outputs they wrote.
nb_execution_mode = "off"
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
  env = dict(os.environ, PYTHONPATH=str(ROOT), LAWN_NOTEBOOK_SMALL="1")
  # Each notebook in its own process, all at once: on CI's two cores the four
  # take as long as the two longest instead of their sum.
  jobs = [[sys.executable, str(DOCS / "execute_notebook.py"), str(nb),
           str(notebooks / nb.name)]
          for nb in sorted((ROOT / "notebooks").glob("*.ipynb"))]
  jobs.append([sys.executable, str(DOCS / "make_examples.py")])
  with ThreadPoolExecutor(len(jobs)) as pool:
    done = list(pool.map(lambda cmd: subprocess.run(
        cmd, capture_output=True, text=True, env=env, cwd=ROOT), jobs))
  failed = [(" ".join(cmd[1:]), p.stderr[-4000:]) for cmd, p in zip(jobs, done)
            if p.returncode]
  if failed:
    raise RuntimeError("\n\n".join(f"{what} failed:\n{err}" for what, err in failed))
  (GENERATED / "explain.txt").write_text(done[-1].stdout)
  subprocess.run([sys.executable, "-m", "benchmarks.report", "--docs",
                  str(GENERATED / "results.md")], check=True, env=env,
                 cwd=ROOT)


_generate()
