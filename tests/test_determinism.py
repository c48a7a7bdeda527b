"""Bit-reproducible studies (issue 38): a small study run in two fresh
processes that differ only in what must not matter (PYTHONHASHSEED, the
CPUs the process may use, another process loading the cores) gives the same
per-configuration, per-seed metrics, bit for bit.

The cause it guards against, measured: XLA:CPU splits a large contraction's
sum across one thread per CPU the process sees, so the same study at 1 and
2 CPUs differed in 77 of its per-seed metrics (last bits of the training
loss, amplified by training); the hash seed and the load changed none.
``benchmarks.common.pin_cpu_threads`` pins every study to one CPU before
JAX starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = ["-m", "benchmarks.generalization", "--dataset", "digits",
         "--optimizers", "adam", "lawn-adam", "--batch-sizes", "1024",
         "--epochs", "3", "--seeds", "0", "1", "2", "--studies", "1",
         "--seeds-per-study", "1", "--max-extensions", "0"]


def _start(out, hash_seed, cpus, threads=None):
  env = dict(os.environ, PYTHONHASHSEED=str(hash_seed))
  if threads is not None:
    env["LAWN_OPTAX_CPU_THREADS"] = str(threads)
  prefix = ["taskset", "-c", ",".join(map(str, cpus))]
  return subprocess.Popen([*prefix, sys.executable, *STUDY, "--out", str(out)],
                          cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _metrics(out):
  """Everything the study measured (every cell's per-config, per-seed
  metrics and the comparisons), without its timings and provenance."""
  r = json.loads((out / "generalization_digits_quick.json").read_text())
  for cells in r["cells"].values():
    for c in cells:
      c.pop("program_seconds")
  return r["cells"], r["comparisons"], r["environment"]


def _two_runs(tmp_path, threads=None):
  cpus = sorted(os.sched_getaffinity(0))
  # Side by side, so each loads the other's cores; one sees every CPU, the
  # other only the last one.
  procs = [_start(tmp_path / "a", 1, cpus, threads),
           _start(tmp_path / "b", 2, cpus[-1:], threads)]
  for p in procs:
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
  return _metrics(tmp_path / "a"), _metrics(tmp_path / "b")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"),
                    reason="needs Linux CPU affinity (taskset)")
def test_fresh_processes_give_the_same_bits(tmp_path):
  (cells_a, comps_a, env_a), (cells_b, comps_b, env_b) = _two_runs(tmp_path)
  assert env_a["cpu_threads"] == env_b["cpu_threads"] == 1, env_a
  assert cells_a == cells_b  # floats from JSON: equal means the same bits
  assert comps_a == comps_b


@pytest.mark.slow  # the negative control: ~1 min on 2 cores
@pytest.mark.skipif(len(getattr(os, "sched_getaffinity", lambda _: [])(0)) < 2,
                    reason="needs 2 CPUs to run with 2 threads")
def test_without_the_pin_thread_count_changes_the_bits(tmp_path):
  """What the pin is for: unpinned, 2 CPUs and 1 CPU give other bits (so the
  test above can fail)."""
  (cells_a, _, env_a), (cells_b, _, _) = _two_runs(tmp_path, threads=0)
  assert env_a["cpu_threads"] is None
  assert cells_a != cells_b


@pytest.mark.slow  # the main job itself: ~7 min on 2 idle cores
def test_main_job_reprints_the_committed_table(tmp_path):
  """README's first command, re-run, writes the committed table byte for
  byte (and the same per-seed metrics as the committed JSON), on a host
  with the instruction set the table was made with (another one gives
  other bits: README, "Same command, same bits")."""
  from benchmarks import common, report
  name = "generalization_mnist1d_quick"
  committed = ROOT / "benchmarks" / "results"
  made_on = report.instruction_set(json.loads(
      (committed / f"{name}.json").read_text())["environment"]["cpu_flags"])
  here = report.instruction_set(common.cpu_flags())
  if made_on != here:
    pytest.skip(f"the committed table was made on an {made_on} host, this "
                f"one is {here}: bits are promised only on the same "
                "instruction set")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.generalization",
                         "--out", str(tmp_path)], cwd=ROOT, text=True,
                        capture_output=True, timeout=3600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert ((tmp_path / f"{name}.md").read_text()
          == (committed / f"{name}.md").read_text())
  got, want = (json.loads((d / f"{name}.json").read_text())
               for d in (tmp_path, committed))
  for r in (got, want):
    for cells in r["cells"].values():
      for c in cells:
        c.pop("program_seconds")
  assert got["cells"] == want["cells"]
  assert got["comparisons"] == want["comparisons"]
