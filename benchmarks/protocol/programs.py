"""Running many runs of one vmapped program: chunks sized to the device's
memory, padding on accelerators, timing and progress."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from benchmarks.protocol.grids import Run
from benchmarks.protocol.training import stack_hps


def pad_runs(runs: list[Run], width: int | None) -> list[Run]:
  """``runs`` padded to ``width`` with copies of the last one (so that every
  call of a program has one shape and compiles once; on an accelerator the
  extra runs cost little). Callers drop the padded results."""
  if width is None or len(runs) >= width:
    return runs
  return runs + [runs[-1]] * (width - len(runs))


def pad_width(previous: int | None, n: int) -> int | None:
  """The padded width on an accelerator (the largest call so far); ``None``
  (no padding) on a CPU, where padded runs would cost their full price."""
  if jax.default_backend() == "cpu":
    return None
  return max(previous or 0, n)


class Progress:
  """Progress of a benchmark's programs: a tqdm bar of runs done of those
  planned (extension rounds add runs: the total grows with them), the last
  chunk's time beside it."""

  def __init__(self, planned: int, **tqdm_kwargs: Any):
    self.bar = tqdm.tqdm(total=planned, unit="run", dynamic_ncols=True,
                         **tqdm_kwargs)

  def __call__(self, what: str, n: int, seconds: float) -> None:
    self.bar.total = max(self.bar.total, self.bar.n + n)
    self.bar.set_postfix_str(f"{what}: {n} runs in {seconds:.0f} s",
                             refresh=False)
    self.bar.update(n)

  def close(self) -> None:
    self.bar.close()


def memory_limit() -> int:
  """Bytes a program may use: ``$LAWN_OPTAX_MEMORY_LIMIT`` if set (a test's
  fake limit), else the device's ``memory_stats()["bytes_limit"]``, else
  (a CPU) the host's available memory."""
  if os.environ.get("LAWN_OPTAX_MEMORY_LIMIT"):
    return int(float(os.environ["LAWN_OPTAX_MEMORY_LIMIT"]))
  stats = jax.devices()[0].memory_stats() or {}
  if "bytes_limit" in stats:
    return int(stats["bytes_limit"])
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  raise RuntimeError("no memory limit known: set LAWN_OPTAX_MEMORY_LIMIT")


class PaddedProgram:
  """Calls a vmapped program ``fn(hps, seeds, *extra)`` on a list of runs:
  in chunks of at most ``max_runs`` (memory: every run's activations live at
  once) of near-equal sizes (at most two compilations), each padded to one
  width on an accelerator (:func:`pad_width`); times every call and returns
  NumPy ``(final, logs)`` for the runs asked for. ``extra(padded_runs)``
  supplies any further per-run arguments; ``progress(what, n, seconds)`` is
  told of every chunk.

  With ``memory_bytes``, the first call first sizes ``max_runs`` by the
  device itself: it compiles the program (no run) for the chunk and reads
  XLA's ``memory_analysis()``, halving the chunk until its temporary,
  argument and output bytes fit ``memory_fraction`` of ``memory_bytes``;
  ``sizing`` records each try."""

  def __init__(self, fn: Callable[..., Any], max_runs: int | None = None,
               name: str = "program",
               progress: Callable[[str, int, float], None] | None = None,
               memory_bytes: int | None = None,
               memory_fraction: float = 0.8):
    self.fn, self.max_runs, self.name = fn, max_runs, name
    self.progress = progress
    self.width: int | None = None
    self.seconds: list[float] = []
    self.memory_bytes, self.memory_fraction = memory_bytes, memory_fraction
    self.sizing: list[dict[str, int]] = []

  def program_bytes(self, runs: list[Run], extra: Callable[[list[Run]], tuple]
                    ) -> int:
    """Temporary + argument + output bytes of the compiled program for a
    chunk of ``runs`` (compiled, not run; ``extra`` is built for one run
    and widened as shapes only, so nothing chunk-sized is allocated)."""
    padded = pad_runs(runs, pad_width(None, len(runs)))
    widen = lambda x: jax.ShapeDtypeStruct((len(padded),) + x.shape[1:],
                                           x.dtype)
    args = (stack_hps([r.config for r in padded]),
            jnp.asarray([r.seed for r in padded]),
            *jax.tree.map(widen, extra(padded[:1])))
    m = self.fn.lower(*args).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes
               + m.output_size_in_bytes)

  def fit(self, runs: list[Run], extra: Callable[[list[Run]], tuple]) -> int:
    """The largest chunk (halving from ``max_runs`` or all ``runs``) whose
    program fits the memory budget."""
    budget = int(self.memory_fraction * self.memory_bytes)  # type: ignore[operator]
    n = min(len(runs), self.max_runs or len(runs))
    while True:
      need = self.program_bytes(runs[:n], extra)
      self.sizing.append({"runs": n, "bytes": need, "budget": budget})
      if need <= budget:
        return n
      if n == 1:
        raise MemoryError(f"{self.name}: one run needs {need:,} bytes, over "
                          f"the budget of {budget:,}")
      n = -(-n // 2)

  def __call__(self, runs: list[Run],
               extra: Callable[[list[Run]], tuple] = lambda _: ()) -> Any:
    if self.memory_bytes is not None and not self.sizing:
      self.max_runs = self.fit(runs, extra)
    n_chunks = 1 if not self.max_runs else -(-len(runs) // self.max_runs)
    size = -(-len(runs) // n_chunks)
    parts = [self._call(runs[i:i + size], extra)
             for i in range(0, len(runs), size)]
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)

  def _call(self, runs: list[Run], extra: Callable[[list[Run]], tuple]
            ) -> Any:
    self.width = pad_width(self.width, len(runs))
    padded = pad_runs(runs, self.width)
    hps = stack_hps([r.config for r in padded])
    seeds = jnp.asarray([r.seed for r in padded])
    t0 = time.perf_counter()
    out = jax.block_until_ready(self.fn(hps, seeds, *extra(padded)))
    self.seconds.append(time.perf_counter() - t0)
    if self.progress is not None:
      self.progress(self.name, len(runs), self.seconds[-1])
    return jax.tree.map(lambda x: np.asarray(x)[:len(runs)], out)
