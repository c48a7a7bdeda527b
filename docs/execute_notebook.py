"""Executes one notebook in its small mode and writes it with its outputs.

``python docs/execute_notebook.py SRC DEST``. Called by ``docs/conf.py``,
which runs the four notebooks at once (Sphinx's own ``-j`` reads them in one
chunk, one after another); a failing cell exits non-zero, naming the cell, and
fails the docs build.
"""

import os
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(src: str, dest: str) -> None:
  os.environ["LAWN_NOTEBOOK_SMALL"] = "1"
  nb = nbformat.read(src, as_version=4)
  # Run where the notebook lives (notebooks/), as a user of the clone would.
  client = NotebookClient(nb, timeout=900, kernel_name="python3",
                          resources={"metadata": {"path": str(Path(src).parent)}})
  client.execute()
  nbformat.write(nb, dest)


if __name__ == "__main__":
  main(*sys.argv[1:])
