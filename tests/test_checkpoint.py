"""Orbax checkpoints mid free phase and mid constrained phase: a run restored
in a fresh process continues bit-identically (every method)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

# Under `pytest -n 2` (addopts: --dist loadgroup) one worker runs the checkpoint scripts (module fixtures) once each, for all the tests that read them.
pytestmark = pytest.mark.xdist_group("checkpoint")
SCRIPT = Path(__file__).parent / "scripts" / "checkpoint_check.py"
ENV = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[2]))
from tests import registry  # noqa: E402

METHODS = [m.name for m in registry.METHODS] + ["lawn_multisteps", "inject"]


def _run(*args):
  proc = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)],
                        capture_output=True, text=True, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.fixture(scope="module", params=[3, 8], ids=["free_phase",
                                                    "constrained_phase"])
def runs(request, tmp_path_factory):
  d = tmp_path_factory.mktemp(f"ckpt{request.param}")
  _run(d, "run", request.param)
  _run(d, "resume", request.param)
  return d


@pytest.mark.parametrize("method", METHODS)
def test_restore_continues_bit_identically(runs, method):
  a = np.load(runs / f"final_run_{method}.npz")
  b = np.load(runs / f"final_resume_{method}.npz")
  assert sorted(a.files) == sorted(b.files) and a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
