"""Orbax checkpoints mid free phase and mid constrained phase: a run restored
in a fresh process continues bit-identically (every method)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

SCRIPT = Path(__file__).parent / "scripts" / "checkpoint_check.py"
ENV = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[2]))
from tests import registry  # noqa: E402

METHODS = [m.name for m in registry.METHODS] + ["lawn_multisteps", "inject"]


def _run(*args):
  proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                        capture_output=True, text=True, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


# Checkpoints mid free phase (step 3) and mid constrained phase (step 8).
PHASES = {"free_phase": 3, "constrained_phase": 8}


# One test, so that `pytest -n 2` runs the two scripts (~50 s) once, on one
# worker; a failure names every method, phase and array that differ.
def test_restore_continues_bit_identically(tmp_path):
  _run(tmp_path, "run", *PHASES.values())
  _run(tmp_path, "resume", *PHASES.values())
  differ = {}
  for method in METHODS:
    a = np.load(tmp_path / f"final_run_{method}.npz")
    assert a.files, method
    for phase, step in PHASES.items():
      b = np.load(tmp_path / f"final_resume_{step}_{method}.npz")
      assert sorted(a.files) == sorted(b.files), (method, phase)
      if bad := [k for k in a.files if not np.array_equal(
          a[k], b[k], equal_nan=a[k].dtype.kind in "fc")]:
        differ[method, phase] = bad
  assert not differ, differ
