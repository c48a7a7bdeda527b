"""Sharded params over an 8-device CPU mesh (in a fresh process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.numerics
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


# One test reads the script's result, so that `pytest -n 2` runs the script
# (~60 s) once, on one worker; a failure names every method and check that failed.
def test_every_method_shards_like_one_device(result):
  failed = {}
  for method in METHODS:
    r = result[method]
    checks = {
        # The sharded update and state equal the single-device ones to
        # within the float32 error model's bound for two reduction orders
        # (tests/tolerance.py: gamma(terms) per norm, relative to the
        # weights); where a float64 reference exists, each float32 run is
        # within one bound of it, so the bound is checked, not assumed.
        # (A sharded norm that missed a shard is off by O(1): ~1e3 bounds.)
        "matches single device": all(
            ratio <= 1 for ratio in r["bound_ratios"].values()),
        "updates and params keep the params' sharding":
            r["updates_keep_param_sharding"] and r["params_keep_sharding"],
        # Norms need cross-shard sums (all-reduce of scalars / per-unit
        # vectors); nothing is gathered to one device.
        "no all-gather": r["all_gather"] == 0,
        "norms all-reduced": r["all_reduce"] >= 1,
    }
    if bad := [name for name, ok in checks.items() if not ok]:
      failed[method] = (bad, {k: r[k] for k in (
          "max_abs_diff", "bound_ratios", "all_gather", "all_reduce")})
  assert not failed, failed
  # One norm per tensor: a replicated scalar. One norm per output unit: the
  # (1, out) vector stays split over the 'model' axis like the kernels' outputs.
  for spec in result["lawn_adam"]["target_specs"].values():
    assert spec == "P()"
  for method in ("lawn_sgd_unit_tangent", "wrs"):
    specs = result[method]["target_specs"]
    assert len(specs) == 3
    assert all(s == "P(None, 'model')" for s in specs.values()), specs
