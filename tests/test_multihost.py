"""LAWN on JAX's multi-process runtime (benchmarks/multihost.py).

Two real processes x 4 CPU devices (gloo collectives) form one 2x4 mesh with
params and optimizer state sharded FSDP-style; a free phase then a
constrained phase. The result must equal the same global run in one process
with 8 devices, every process must hold the same frozen norms, and the
compiled update+apply must gather no parameter.
"""

import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(args, out, timeout=240):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.multihost", *args,
                         "--out", str(out)], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.mark.parametrize("method,granularity", [
    ("lawn", "tensor"), ("lawn", "unit"), ("fixnorm", "tensor"),
    ("wrs", "unit")])
def test_two_processes_equal_one(tmp_path, method, granularity):
  common = ["--method", method, "--granularity", granularity, "--steps", "12",
            "--free-steps", "5"]
  subprocess.run([sys.executable, "-m", "benchmarks.multihost", "launch",
                  "--processes", "2", "--local-devices", "4", "--port",
                  str(_free_port()), "--", *common, "--out",
                  str(tmp_path / "multi")], cwd=ROOT, check=True,
                 capture_output=True, timeout=240)
  _run(["run", "--local-devices", "8", *common], tmp_path / "single")
  multi = [np.load(tmp_path / "multi" / f"result_{i}.npz") for i in (0, 1)]
  single = np.load(tmp_path / "single" / "result_0.npz")
  assert sorted(multi[0].files) == sorted(single.files)
  assert any(k.startswith("frozen/") for k in single.files)
  for key in single.files:
    # The same frozen norms and params on every process, bit for bit.
    np.testing.assert_array_equal(multi[0][key], multi[1][key], err_msg=key)
    np.testing.assert_allclose(multi[0][key], single[key], rtol=1e-5,
                               atol=1e-6, err_msg=key)
  hlo = (tmp_path / "multi" / "hlo.txt").read_text()
  units = max(int(np.prod(single[k].shape)) for k in single.files
              if k.startswith("frozen/"))
  for line in hlo.splitlines():
    m = re.search(r"= f32\[([\d,]*)\]\S* all-gather\(", line)
    if m:  # only norms or scales: never a parameter
      size = int(np.prod([int(d) for d in m.group(1).split(",") if d]))
      assert size <= units, line[:200]
  if granularity == "tensor":  # sharded kernels: the norms are all-reduced
    assert "all-reduce" in hlo
