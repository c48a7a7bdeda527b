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

from tests import tolerance

pytestmark = pytest.mark.numerics
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def assert_two_orders_agree(got, want, steps, err_msg=""):
  """Two runs of benchmarks.multihost that reduce in different orders (two
  processes vs one, another mesh): within twice the float32 error model's
  bound (tests/tolerance.py). The largest reduction is a kernel gradient's
  batch x fan-in sum (32 x 64 terms); three reductions enter a step (the
  forward and backward contractions and the norm); relative to the
  largest weight. It assumes Adam's m / sqrt(v) is well conditioned (no
  gradient entry at its own rounding level), as in these smooth runs."""
  bound = tolerance.reduction_bound(32 * 64, float(np.max(np.abs(want))),
                                    reductions=3, steps=steps)
  np.testing.assert_allclose(got, want, rtol=0, atol=2 * bound,
                             err_msg=err_msg)


def _run(args, out, timeout=240):
  proc = subprocess.run([sys.executable, "-m", "benchmarks.multihost", *args,
                         "--out", str(out)], cwd=ROOT, capture_output=True,
                        text=True, timeout=timeout, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


# One case in the default run; the rest (~50 s each on 2 cores) are slow.
@pytest.mark.parametrize("method,granularity", [
    ("lawn", "tensor"),
    pytest.param("lawn", "unit", marks=pytest.mark.slow),
    pytest.param("fixnorm", "tensor", marks=pytest.mark.slow),
    pytest.param("wrs", "unit", marks=pytest.mark.slow)])
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
    assert_two_orders_agree(multi[0][key], single[key], 12, err_msg=key)
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


def _launch(args, port, timeout=240):
  return subprocess.run([sys.executable, "-m", "benchmarks.multihost",
                         "launch", "--processes", "2", "--local-devices", "4",
                         "--port", str(port), "--", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        check=False)


COMMON = ["--method", "lawn", "--steps", "12", "--free-steps", "5"]


@pytest.mark.slow   # ~220 s on 2 cores
def test_checkpoint_across_topologies_and_crash_resume(tmp_path):
  """Checkpoints at the freeze step (5) and after it (8); restore 2 -> 1
  processes; SIGKILL one process after step 9 and resume both from 8."""
  full = _launch([*COMMON, "--out", str(tmp_path / "full")], _free_port())
  assert full.returncode == 0, full.stderr[-2000:]
  ckpt = tmp_path / "ckpt"
  saved = _launch([*COMMON, "--out", str(tmp_path / "saved"), "--ckpt-dir",
                   str(ckpt), "--save-at", "5", "8"], _free_port())
  assert saved.returncode == 0, saved.stderr[-2000:]
  assert sorted(p.name for p in ckpt.iterdir()) == ["5", "8"]
  reference = np.load(tmp_path / "full" / "result_0.npz")

  # 2 processes -> 1 process (8 devices): resharded on restore.
  _run(["run", "--local-devices", "8", *COMMON, "--ckpt-dir", str(ckpt),
        "--resume"], tmp_path / "one")
  one = np.load(tmp_path / "one" / "result_0.npz")
  for key in reference.files:
    assert_two_orders_agree(one[key], reference[key], 12, err_msg=key)
    if key.startswith("frozen/"):  # the LAWN phase survives the round trip
      np.testing.assert_array_equal(one[key], reference[key], err_msg=key)

  # A process dies (SIGKILL) after step 9; all restart from step 8.
  crashed_dir = tmp_path / "crash"
  crash = _launch([*COMMON, "--out", str(crashed_dir), "--ckpt-dir",
                   str(tmp_path / "ckpt2"), "--save-at", "5", "8",
                   "--kill-at", "9"], _free_port())
  assert crash.returncode != 0 and not (crashed_dir / "result_0.npz").exists()
  resumed = _launch([*COMMON, "--out", str(tmp_path / "resumed"),
                     "--ckpt-dir", str(tmp_path / "ckpt2"), "--resume"],
                    _free_port())
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  for i in (0, 1):
    got = np.load(tmp_path / "resumed" / f"result_{i}.npz")
    for key in reference.files:  # same topology: bit for bit
      np.testing.assert_array_equal(got[key], reference[key], err_msg=key)

  # 1 process -> 2 processes: save in one, resume in two.
  _run(["run", "--local-devices", "8", *COMMON, "--ckpt-dir",
        str(tmp_path / "ckpt3"), "--save-at", "8"], tmp_path / "single")
  up = _launch([*COMMON, "--out", str(tmp_path / "up"), "--ckpt-dir",
                str(tmp_path / "ckpt3"), "--resume"], _free_port())
  assert up.returncode == 0, up.stderr[-2000:]
  single = np.load(tmp_path / "single" / "result_0.npz")
  got = np.load(tmp_path / "up" / "result_0.npz")
  for key in single.files:
    assert_two_orders_agree(got[key], single[key], 12, err_msg=key)


@pytest.mark.slow   # ~75 s on 2 cores
def test_nan_on_one_shard_and_a_mismatched_mask(tmp_path):
  # A NaN in one process's shard of the batch at step 7 (after the freeze):
  # apply_if_finite skips that step on every process alike.
  nan = _launch([*COMMON, "--nan-at", "7", "--out", str(tmp_path / "nan")],
                _free_port())
  assert nan.returncode == 0, nan.stderr[-2000:]
  clean = _launch(["--method", "lawn", "--steps", "11", "--free-steps", "5",
                   "--nan-at", "99", "--out", str(tmp_path / "clean")],
                  _free_port())
  assert clean.returncode == 0, clean.stderr[-2000:]
  ref = np.load(tmp_path / "clean" / "result_0.npz")
  for i in (0, 1):
    got = np.load(tmp_path / "nan" / f"result_{i}.npz")
    for key in ref.files:
      np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
  # One process's mask misses a leaf: every process fails at init, with the
  # same message, instead of one failing and the other hanging.
  bad = _launch([*COMMON, "--bad-mask-on-last", "--out", str(tmp_path / "b")],
                _free_port(), timeout=120)
  assert bad.returncode != 0
  expected = ("ValueError: the mask does not match the params on every "
              "process: process 1: mask does not match the params: params "
              "leaf 'Dense_2/bias' has no entry")
  assert bad.stderr.count(expected) == 2, bad.stderr[-3000:]
