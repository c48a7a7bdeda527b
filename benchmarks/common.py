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
    # Dirty only where code that changes a number changed (not the pages).
    pages = [f":(exclude){m.replace('.', '/')}.py" for m in sorted(NOT_HASHED)]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "lawn_optax",
                            "benchmarks/*.py", *pages], capture_output=True,
                           text=True,
                           cwd=Path(__file__).resolve().parents[1]).stdout
    return out.stdout.strip() + ("-dirty" if dirty.strip() else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


ROOT = Path(__file__).resolve().parents[1]
# Modules whose code never changes a number (how results are shown).
NOT_HASHED = frozenset({"benchmarks.report", "benchmarks.tables"})


def _normalized_source(path: Path) -> str:
  """The code of a module without docstrings and comments (an AST dump):
  edits to documentation do not make a result stale, edits to code do."""
  import ast
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    body = getattr(node, "body", None)
    if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)):
      node.body = body[1:] or [ast.Pass()]  # type: ignore[attr-defined]
  return ast.dump(tree, annotate_fields=False, include_attributes=False)


def code_files(modules: Any = None) -> list[str]:
  """Repository paths of the code that determines a run's numbers: every
  imported module of ``lawn_optax`` and ``benchmarks`` (but the results
  pages), sorted. ``modules``: module names (default: ``sys.modules``)."""
  names = sys.modules if modules is None else modules
  files = set()
  for key in names:
    mod = sys.modules.get(key)
    # `python -m benchmarks.x` runs x as "__main__": hash it by its real name.
    spec = getattr(mod, "__spec__", None)
    name = spec.name if key == "__main__" and spec is not None else key
    top = name.split(".")[0]
    if top not in ("lawn_optax", "benchmarks") or name in NOT_HASHED:
      continue
    path = getattr(mod, "__file__", None)
    if path and path.endswith(".py"):
      p = Path(path).resolve()
      if ROOT in p.parents:
        files.add(p.relative_to(ROOT).as_posix())
  return sorted(files)


def code_hashes(files: list[str]) -> dict[str, str]:
  """SHA-256 (16 hex digits) of each file's normalized code; ``"missing"``
  for a file that no longer exists."""
  import hashlib
  out = {}
  for f in files:
    path = ROOT / f
    out[f] = (hashlib.sha256(_normalized_source(path).encode()).hexdigest()[:16]
              if path.exists() else "missing")
  return out


def code_hash(hashes: dict[str, str]) -> str:
  """One hash over the per-file hashes."""
  import hashlib
  text = "\n".join(f"{f} {h}" for f, h in sorted(hashes.items()))
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def _all_code_files() -> list[str]:
  return sorted(p.relative_to(ROOT).as_posix()
                for top in ("lawn_optax", "benchmarks")
                for p in (ROOT / top).rglob("*.py"))


# The code as it was when the run started (this module is imported first):
# editing the tree while a run is in progress does not change what the run
# records, since the run executes the modules it imported at the start.
_CODE_AT_START = code_hashes(_all_code_files())


def provenance_of_code() -> dict[str, Any]:
  """``code_hash`` and ``code_files`` (file -> hash) for a results file:
  call it at the end of a run, when every module it used is imported. Each
  file's hash is the one it had when the run started."""
  names = code_files()
  now = [f for f in names if f not in _CODE_AT_START]
  files = {f: _CODE_AT_START[f] for f in names if f in _CODE_AT_START}
  files.update(code_hashes(now))
  return {"code_hash": code_hash(files), "code_files": files}


def stale_files(results: dict[str, Any]) -> list[str] | None:
  """The files whose code changed since ``results`` were produced (sorted),
  ``[]`` if none, ``None`` if the results record no code hash."""
  recorded = results.get("code_files")
  if not recorded:
    return None
  now = code_hashes(sorted(recorded))
  return sorted(f for f in recorded if now[f] != recorded[f])


# XLA:CPU splits a large contraction's sum (a weight gradient's sum over the
# batch) across its intra-op threads, one per CPU the process may run on, so
# a run's last bits depend on how many CPUs it sees: the same study at 1 and
# 2 CPUs differs in 130 of its per-seed metrics, while another
# PYTHONHASHSEED or another process loading the cores changes none
# (tests/test_determinism.py). No XLA flag sets that thread count
# (--xla_cpu_multi_thread_eigen=false does not), so a study pins itself to
# this many CPUs before JAX starts: the same numbers on every machine with
# at least that many, whatever else it has. 0 turns it off.
CPU_THREADS = int(os.environ.get("LAWN_OPTAX_CPU_THREADS", "1"))
_PINNED: dict[str, Any] = {"cpu_threads": None, "why": "not asked"}


def pin_cpu_threads(n: int = CPU_THREADS) -> dict[str, Any]:
  """Restrict this process to ``n`` CPUs before JAX's CPU backend starts
  (it sizes its thread pool then), and remember it for :func:`environment`.

  Returns ``{"cpu_threads": n, "why": ...}``; ``cpu_threads`` is None where
  nothing was pinned (``n == 0``, no ``sched_setaffinity``, or the backend
  had already started, as inside a test process) and ``why`` says so.
  """
  from jax._src import xla_bridge  # no public query for it
  allowed = sorted(os.sched_getaffinity(0)) if hasattr(
      os, "sched_getaffinity") else []
  if n <= 0:
    why = "LAWN_OPTAX_CPU_THREADS=0"
  elif not allowed or not hasattr(os, "sched_setaffinity"):
    why = "this OS cannot restrict a process's CPUs"
  elif xla_bridge.backends_are_initialized():
    why = "JAX's backend had already started"
  elif len(allowed) < n:
    why = f"only {len(allowed)} CPUs available"
  else:
    os.sched_setaffinity(0, set(allowed[:n]))
    _PINNED.update(cpu_threads=n, why="pinned before JAX started")
    return dict(_PINNED)
  _PINNED.update(cpu_threads=None, why=why)
  return dict(_PINNED)


def _cpuinfo_field(name: str) -> str | None:
  """The first ``name : value`` line of /proc/cpuinfo (None off Linux)."""
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith(name):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return None


def cpu_flags() -> list[str]:
  """The vector-instruction flags of this CPU that XLA:CPU compiles for
  (AVX2, FMA, the AVX-512 subsets, AMX): two machines that both say "AMD
  EPYC" can differ here, and so can their last bits."""
  return sorted(f for f in (_cpuinfo_field("flags") or "").split()
                if f in ("avx", "avx2", "fma", "f16c") or
                f.startswith(("avx512", "amx", "avx_vnni")))


def _version(module: str) -> str | None:
  from importlib import metadata
  try:
    return metadata.version(module)
  except metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  return (_cpuinfo_field("model name") or platform.processor()
          or platform.machine())


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
      "cpu_flags": cpu_flags(),
      "cpu_threads": _PINNED["cpu_threads"],
      "cpu_threads_note": _PINNED["why"],
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
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
