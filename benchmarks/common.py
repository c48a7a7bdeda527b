"""Shared benchmark plumbing: run metadata, timing, output files."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

RESULTS = Path(__file__).resolve().parent / "results"
# Where a benchmark writes unless told otherwise: never over the committed
# results (pass --out benchmarks/results to update those).
DEFAULT_OUT = Path(os.environ.get("LAWN_OPTAX_RESULTS",
                                  Path.home() / "lawn_optax_results"))


def git_commit() -> str:
  # A copy of the tree without .git (an accelerator host) is told its commit.
  if os.environ.get("LAWN_OPTAX_GIT_COMMIT"):
    return os.environ["LAWN_OPTAX_GIT_COMMIT"] + " (copied tree)"
  try:
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                         text=True, cwd=Path(__file__).parent, check=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lawn_optax",
                            "benchmarks/*.py"], capture_output=True, text=True,
                           cwd=Path(__file__).resolve().parents[1]).stdout
    return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _version(module: str) -> str | None:
  from importlib import metadata
  try:
    return metadata.version(module)
  except metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
  """What a reader needs to reproduce or compare a run."""
  import jaxlib
  import optax
  dev = jax.devices()[0]
  return {
      "command": " ".join([os.path.basename(sys.executable), "-m",
                           _module_name()] + sys.argv[1:]),
      "git_commit": git_commit(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "optax": optax.__version__,
      "flax": _version("flax"),
      "numpy": _version("numpy"),
      "mnist1d": _version("mnist1d"),
      "python": platform.python_version(),
      "cpu_model": cpu_model(),
      "backend": jax.default_backend(),
      "device_kind": dev.device_kind,
      "device_count": jax.device_count(),
      "cpu_count": os.cpu_count(),
      "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
  }


def _module_name() -> str:
  main = sys.modules.get("__main__")
  spec = getattr(main, "__spec__", None)
  return spec.name if spec is not None else sys.argv[0]


def median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2,
                number: int = 1) -> float:
  """Median wall time of ``fn`` (already compiled), blocking on its result."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(number):
      out = fn()
    jax.block_until_ready(out)
    times.append((time.perf_counter() - t0) / number)
  return statistics.median(times)


def write_json(name: str, payload: dict[str, Any], out_dir: Path = RESULTS
               ) -> Path:
  out_dir.mkdir(parents=True, exist_ok=True)
  path = out_dir / f"{name}.json"
  path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
  return path
