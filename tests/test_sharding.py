"""Sharded params over an 8-device CPU mesh (in a fresh process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Under `pytest -n 2` (addopts: --dist loadgroup) one worker runs the 8-device script (a module fixture, ~60 s) and all its tests, instead of each worker running it.
pytestmark = pytest.mark.xdist_group("sharding")
SCRIPT = Path(__file__).parent / "scripts" / "sharding_check.py"


@pytest.fixture(scope="module")
def result():
  env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[2]))
  proc = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True,
                        text=True, env=env, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
  return json.loads(line[len("RESULT "):])


from tests import registry  # noqa: E402

METHODS = [m.name for m in registry.METHODS]


@pytest.mark.parametrize("method", METHODS)
def test_sharded_update_matches_single_device(result, method):
  r = result[method]
  assert r["max_abs_diff"] < 1e-5
  assert r["updates_keep_param_sharding"] and r["params_keep_sharding"]


@pytest.mark.parametrize("method", METHODS)
def test_no_gather_only_norm_reductions(result, method):
  # Norms need cross-shard sums (all-reduce of scalars / per-unit vectors);
  # nothing is gathered to one device.
  r = result[method]
  assert r["all_gather"] == 0
  assert r["all_reduce"] >= 1


def test_state_shardings_follow_the_norm_granularity(result):
  # One norm per tensor: a replicated scalar. One norm per output unit: the
  # (1, out) vector stays split over the 'model' axis like the kernels' outputs.
  for spec in result["lawn_adam"]["target_specs"].values():
    assert spec == "P()"
  for method in ("lawn_sgd_unit_tangent", "wrs"):
    specs = result[method]["target_specs"]
    assert len(specs) == 3
    assert all(s == "P(None, 'model')" for s in specs.values()), specs
