"""The comparison protocol shared by the accuracy benchmarks.

One *cell* is (dataset or corpus, batch size); inside it every method gets

* the same tuning budget: ``len(lrs) x len(knob values)`` configurations,
  where the knob is the method's own second hyper-parameter (Adam's beta2,
  SGD's momentum, a weight-decay strength, LAWN's free fraction, the z-loss
  coefficient, ...): an equally sized second axis for everyone;
* a learning-rate grid of >= 6 log-spaced values; while a method's chosen
  learning rate sits at an edge of its grid, the grid grows by one value on
  that side (up to ``max_extensions`` rounds). Every method gets the same
  number of extra values: one not at an edge spends its extension on the side
  nearer its choice. Extensions are recorded;
* warmup + cosine decay (:func:`warmup_cosine`), the same for everyone;
* selection on validation over ``selection_seeds``, then the chosen
  configuration is retrained on ``report_seeds`` (disjoint from the selection
  seeds) and its test metric reported;
* LAWN vs its base is reported as the paired difference over report seeds
  (same seed = same initialisation and data order) with a 95% t-interval
  (:func:`paired_interval`); a cell is a win or a loss only when the interval
  excludes 0.

Runs are described as ``Run(method, config, seed)``; a benchmark supplies
``run_many(runs) -> list[dict]`` that trains them (in one vmapped program
when it can) and returns each run's metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lawn_optax as lo

# Two-sided 95% Student-t quantiles t_{0.975, df}, df = 1..30 (standard tables;
# tests/test_protocol.py checks them against scipy).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
         2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
         2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

PROTOCOL_TEXT = (
    "Protocol: every method gets the same tuning budget (>= 6 log-spaced "
    "learning rates x 2 values of its own second hyper-parameter); a grid is "
    "extended while the chosen learning rate sits at its edge (every method "
    "gets as many extra values); warmup + cosine decay for everyone; "
    "selection on validation with seeds disjoint from the reported ones; "
    "differences paired by seed with 95% t-intervals, called a win or a loss "
    "only when the interval excludes 0.")


class MethodGrid(NamedTuple):
  """A method's tuning grid: learning rates x one knob, plus fixed settings."""
  lrs: tuple[float, ...]
  knob: str                      # the name of the second axis
  knob_values: tuple[float, ...]
  fixed: dict[str, float] = {}   # settings every configuration shares


class Run(NamedTuple):
  method: str
  config: dict[str, float]
  seed: int


def log_grid(low: float, high: float, num: int) -> tuple[float, ...]:
  """``num`` log-spaced values from ``low`` to ``high`` (rounded to 3 digits)."""
  if num < 2 or not 0 < low < high:
    raise ValueError(f"log_grid needs 0 < low < high and num >= 2, got "
                     f"{low}, {high}, {num}")
  return tuple(float(f"{v:.3g}") for v in np.geomspace(low, high, num))


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05,
                  schedule: str = "cosine") -> optax.Schedule:
  """The multiplier of every method's learning rate: linear warmup over
  ``warmup_fraction`` of the steps, then cosine decay to 0; ``schedule=
  "constant"`` (the recorded ablation) returns 1 throughout."""
  if schedule == "constant":
    return optax.constant_schedule(1.0)
  if schedule != "cosine":
    raise ValueError(f"schedule must be 'cosine' or 'constant', got "
                     f"{schedule!r}")
  warmup = max(1, round(warmup_fraction * total_steps))
  return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup,
                                            max(total_steps, warmup + 1), 0.0)


def t_quantile_975(df: int) -> float:
  if df < 1:
    raise ValueError("a paired interval needs at least 2 seeds")
  return _T975[df - 1] if df <= len(_T975) else 1.96


def paired_interval(a: Sequence[float], b: Sequence[float]
                    ) -> dict[str, Any]:
  """Mean of ``a - b`` (paired by position) and its 95% t-interval."""
  d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
  if d.ndim != 1 or d.size < 2:
    raise ValueError(f"paired_interval needs two equal-length sequences of "
                     f">= 2 values, got shapes {np.shape(a)}, {np.shape(b)}")
  mean = float(d.mean())
  if not np.all(np.isfinite(d)):
    return {"mean": mean, "low": float("nan"), "high": float("nan"),
            "verdict": "undefined (non-finite)"}
  half = t_quantile_975(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
  low, high = mean - half, mean + half
  return {"mean": mean, "low": low, "high": high,
          "verdict": verdict(low, high)}


def verdict(low: float, high: float) -> str:
  if low > 0:
    return "higher"
  if high < 0:
    return "lower"
  return "no difference"


def _configs(grid: MethodGrid, lrs: Sequence[float]) -> list[dict[str, float]]:
  return [{"lr": float(lr), grid.knob: float(k), **grid.fixed}
          for k in grid.knob_values for lr in lrs]


def _score(values: Sequence[float], higher_is_better: bool) -> float:
  m = float(np.mean(values))
  if not math.isfinite(m):   # a diverged configuration loses
    return -math.inf
  return m if higher_is_better else -m


def tune_and_report(grids: dict[str, MethodGrid],
                    run_many: Callable[[list[Run]], list[dict[str, Any]]],
                    selection_metric: str, report_metrics: Sequence[str],
                    selection_seeds: Sequence[int],
                    report_seeds: Sequence[int], *, higher_is_better: bool,
                    max_extensions: int = 4,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
  """Tune every method of one cell on the selection seeds, then retrain each
  chosen configuration on the report seeds.

  Returns ``{method: cell}`` where a cell holds the whole grid with every
  configuration's selection score, the extensions made, the chosen
  configuration, and the report runs' metrics (lists over report seeds).
  """
  if set(selection_seeds) & set(report_seeds):
    raise ValueError(f"selection seeds {list(selection_seeds)} and report "
                     f"seeds {list(report_seeds)} must be disjoint")
  sizes = {m: (len(g.lrs), len(g.knob_values)) for m, g in grids.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f"unequal tuning budgets: {sizes}")
  lrs = {m: sorted(g.lrs) for m, g in grids.items()}
  scores: dict[str, dict[tuple, float]] = {m: {} for m in grids}
  extensions: dict[str, list[dict[str, Any]]] = {m: [] for m in grids}
  pending = {m: _configs(g, lrs[m]) for m, g in grids.items()}
  for round_ in range(max_extensions + 1):
    runs = [Run(m, c, s) for m, cs in pending.items() for c in cs
            for s in selection_seeds]
    out = run_many(runs)
    per: dict[tuple, list[float]] = {}
    for r, o in zip(runs, out):
      per.setdefault((r.method, tuple(sorted(r.config.items()))), []).append(
          float(o[selection_metric]))
    for (m, key), vals in per.items():
      scores[m][key] = _score(vals, higher_is_better)
    best = {m: dict(max(scores[m], key=scores[m].get)) for m in grids}
    at_edge = {m: ("low" if best[m]["lr"] == lrs[m][0] else
                   "high" if best[m]["lr"] == lrs[m][-1] else None)
               for m in grids}
    if round_ == max_extensions or not any(at_edge.values()):
      break
    pending = {}
    for m, g in grids.items():
      side = at_edge[m]
      if side is None:   # spend the equal extension on the nearer side
        i = lrs[m].index(best[m]["lr"])
        side = "low" if i < len(lrs[m]) - 1 - i else "high"
      ratio = lrs[m][1] / lrs[m][0]
      new = float(f"{(lrs[m][0] / ratio if side == 'low' else lrs[m][-1] * ratio):.3g}")
      extensions[m].append({"round": round_ + 1, "side": side, "lr": new,
                            "chosen_at_edge": at_edge[m] is not None})
      lrs[m] = sorted([*lrs[m], new])
      pending[m] = _configs(g, [new])
      log(f"  {m}: chosen lr {best[m]['lr']:.3g} "
          f"{'at the ' + at_edge[m] + ' edge' if at_edge[m] else 'inside'}; "
          f"grid extended ({side}) with {new:.3g}")
  runs = [Run(m, best[m], s) for m in grids for s in report_seeds]
  out = run_many(runs)
  cells: dict[str, Any] = {}
  for m, g in grids.items():
    mine = [o for r, o in zip(runs, out) if r.method == m]
    configs = list(scores[m])
    edge = ("low" if best[m]["lr"] == lrs[m][0] else
            "high" if best[m]["lr"] == lrs[m][-1] else None)
    cells[m] = {
        "grid": {k: [float(dict(c)[k]) for c in configs]
                 for k in ("lr", g.knob)},
        "fixed": dict(g.fixed),
        "val_mean_per_config": [scores[m][c] if higher_is_better
                                else -scores[m][c] for c in configs],
        "num_configs": len(configs),
        "extensions": extensions[m],
        "selected": best[m],
        "selected_at_edge": edge,
        "selection_seeds": list(selection_seeds),
        "report_seeds": list(report_seeds),
        **{k: [float(o[k]) for o in mine] for k in report_metrics},
        "report_runs": mine,
    }
  return cells


def summarize(values: Sequence[float]) -> tuple[float, float]:
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


# ----------------------------------------------------------------------------
# One optimizer program per base family, every hyper-parameter traced, so
# that all methods and configurations of a cell train in one vmapped program.

# A step count no run reaches: a method without LAWN is LAWN never switched on
# (its gate runs the base update only, bit for bit; tests/test_protocol.py).
NEVER = 2**30
HP_DEFAULTS = {"lr": 1e-3, "b2": 0.999, "momentum": 0.9, "wd": 0.0,
               "free_frac": 0.5, "lawn": 0.0, "decay_constrained": 1.0,
               "zloss": 0.0, "softcap": 0.0}
FAMILIES = ("adam", "sgdm", "lamb")


def _decay(wd: jax.Array, factors: Any) -> optax.GradientTransformation:
  def update(updates, state, params):
    if params is None:
      raise ValueError("weight decay needs params")
    return jax.tree.map(lambda u, p, f: u + wd * f * p, updates, params,
                        factors), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def build_optimizer(family: str, hp: dict[str, jax.Array], mask: Any,
                    decay_mask: Any, total_steps: int,
                    schedule: optax.Schedule, **lawn_kwargs: Any
                    ) -> optax.GradientTransformation:
  """The optimizer of one run, its hyper-parameters ``hp`` traced.

  ``family``: ``adam`` (Adam/AdamW: decoupled decay ``wd * lr``), ``sgdm``
  (SGD with momentum, L2 decay added to the gradient as in SGD practice) or
  ``lamb`` (LAMB, decay inside the trust ratio). LAWN is on when
  ``hp["lawn"] == 1``: it freezes the norms of ``mask``'s leaves after
  ``round(free_frac * total_steps)`` steps; with ``decay_constrained == 0``
  the decay spares those leaves (LAWN-AdamW). ``decay_mask`` (bools) says
  which leaves any decay touches; ``lawn_kwargs`` go to :func:`lawn_optax.lawn`
  (``retraction``, ``granularity``, ``tangent_projection``).
  """
  if family not in FAMILIES:
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
  spare = hp["lawn"] * (1.0 - hp["decay_constrained"])
  factors = jax.tree.map(lambda d, m: jnp.float32(d) * (1.0 - spare * m),
                         decay_mask, mask)
  decay = _decay(hp["wd"], factors)
  lr = optax.scale_by_learning_rate(lambda c: hp["lr"] * schedule(c))
  if family == "adam":
    base = optax.chain(optax.scale_by_adam(b2=hp["b2"]), decay, lr)
  elif family == "sgdm":
    base = optax.chain(decay, optax.trace(decay=hp["momentum"]), lr)
  else:
    base = optax.chain(optax.scale_by_adam(b2=hp["b2"], eps=1e-6), decay,
                       optax.scale_by_trust_ratio(), lr)
  free = jnp.where(hp["lawn"] > 0,
                   jnp.round(hp["free_frac"] * total_steps), NEVER)
  return lo.lawn(base, free_steps=free.astype(jnp.int32), mask=mask,
                 **lawn_kwargs)


def stack_hps(configs: Sequence[dict[str, float]]) -> dict[str, jax.Array]:
  """Configurations -> one float32 array per hyper-parameter (defaults fill
  what a configuration does not name)."""
  unknown = {k for c in configs for k in c} - set(HP_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown hyper-parameters {sorted(unknown)}")
  return {k: jnp.asarray([c.get(k, d) for c in configs], jnp.float32)
          for k, d in HP_DEFAULTS.items()}


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


class PaddedProgram:
  """Calls a vmapped program ``fn(hps, seeds, *extra)`` on a list of runs:
  pads them to one width on an accelerator (:func:`pad_width`, one
  compilation), times the call, and returns NumPy ``(final, logs)`` whose
  first ``len(runs)`` rows are the runs asked for. ``extra(padded_runs)``
  supplies any further per-run arguments."""

  def __init__(self, fn: Callable[..., Any]):
    self.fn = fn
    self.width: int | None = None
    self.seconds: list[float] = []

  def __call__(self, runs: list[Run],
               extra: Callable[[list[Run]], tuple] = lambda _: ()) -> Any:
    self.width = pad_width(self.width, len(runs))
    padded = pad_runs(runs, self.width)
    hps = stack_hps([r.config for r in padded])
    seeds = jnp.asarray([r.seed for r in padded])
    t0 = time.perf_counter()
    out = jax.block_until_ready(self.fn(hps, seeds, *extra(padded)))
    self.seconds.append(time.perf_counter() - t0)
    return jax.tree.map(np.asarray, out)
