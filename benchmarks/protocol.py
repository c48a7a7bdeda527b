"""The comparison protocol shared by the accuracy benchmarks.

One *cell* is (dataset or corpus, batch size); inside it every method gets

* the same tuning budget: ``len(lrs) x len(knob values)`` configurations,
  where the knob is the method's own second hyper-parameter (Adam's beta2,
  SGD's momentum, a weight-decay strength, LAWN's free fraction, the z-loss
  coefficient, ...): an equally sized second axis for everyone;
* a learning-rate grid of >= 6 log-spaced values and a knob grid of >= 3;
* warmup + cosine decay (:func:`warmup_cosine`), the same for everyone;
* **every configuration on every seed** (>= 8): the whole matrix of
  validation and test metrics is kept, so any selection can be recomputed;
* **repeated studies** (AlgoPerf's remedy for a noisy tuning step): study
  ``k`` selects each method's configuration on validation over its own
  selection seeds (disjoint from every other study's) and reports test on the
  seeds it did not select on, paired by seed (same seed = same
  initialisation and data order for every method);
* grids that contain the optimum: while the value of *either* axis chosen by
  any study (or by the all-seed selection the figures use) sits at an edge of
  its grid, that axis grows by one value for every method (a method not at
  that edge spends the extension on the side nearer its choice), so budgets
  stay equal. Extensions are recorded;
* a verdict that survives the tuning step (:func:`verdict_of_studies`): a
  *win* or a *loss* only when every study says so and the pooled interval
  (per seed, the difference averaged over the studies that report that seed;
  95% t-interval over seeds) excludes 0; *unstable* when studies disagree.

Runs are described as ``Run(method, config, seed)``; a benchmark supplies
``run_many(runs) -> list[dict]`` that trains them (in one vmapped program
when it can) and returns each run's metrics.
"""

from __future__ import annotations

import math
import os
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
    "learning rates x >= 3 values of its own second hyper-parameter) and "
    "warmup + cosine decay; every configuration runs on every seed; each of "
    "several studies selects on validation over its own seeds (disjoint "
    "between studies; within one standard error of the best, the second "
    "knob nearest its default) and reports test on the other seeds, paired "
    "by seed; "
    "a grid is extended while any study's choice of either axis sits at its "
    "edge (every method gets as many extra values); a difference is a win or "
    "a loss only when every study agrees and the pooled 95% interval "
    "excludes 0, and unstable when studies disagree.")

KNOB_SCALES = ("log", "log1m", "logit")


class MethodGrid(NamedTuple):
  """A method's tuning grid: learning rates x one knob, plus fixed settings.

  ``knob_scale`` says how the knob's grid grows past an edge: ``"log"``
  (decays, coefficients: geometric), ``"log1m"`` (``1 - x`` geometric:
  Adam's beta2, momentum) or ``"logit"`` (fractions in (0, 1))."""
  lrs: tuple[float, ...]
  knob: str                      # the name of the second axis
  knob_values: tuple[float, ...]
  fixed: dict[str, float] = {}   # settings every configuration shares
  knob_scale: str = "log"


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


def _to_line(x: float, scale: str) -> float:
  if scale == "log":
    return math.log(x)
  if scale == "log1m":
    return -math.log(1.0 - x)
  return math.log(x / (1.0 - x))


def _from_line(t: float, scale: str) -> float:
  if scale == "log":
    return math.exp(t)
  if scale == "log1m":
    return 1.0 - math.exp(-t)
  return 1.0 / (1.0 + math.exp(-t))


def extend_grid(values: Sequence[float], side: str, scale: str = "log"
                ) -> float | None:
  """The next value past the ``side`` (``"low"``/``"high"``) edge of a
  sorted grid, one outermost step further on the knob's ``scale``; rounded
  to 3 significant digits (of ``1 - x`` near 1). ``"log1m"`` knobs (betas,
  momentum) live in [0, 1): a step below 0 stops at 0.0, and ``None`` says
  the low side is exhausted (the grid already holds 0.0)."""
  if scale not in KNOB_SCALES:
    raise ValueError(f"scale must be one of {KNOB_SCALES}, got {scale!r}")
  if side not in ("low", "high"):
    raise ValueError(f"side must be 'low' or 'high', got {side!r}")
  v = sorted(values)
  if len(v) < 2:
    raise ValueError("a grid needs >= 2 values to be extended")
  a, b = (v[0], v[1]) if side == "low" else (v[-1], v[-2])
  ta, tb = _to_line(a, scale), _to_line(b, scale)
  t = ta + (ta - tb)
  if scale == "log1m" and t < 0.0:   # below x = 0, the domain's end
    if a <= 0.0:
      return None
    t = 0.0
  new = _from_line(t, scale)
  # Round to 3 significant digits of the distance to the domain's end that
  # matters (1 - x for betas: 0.9999 stays 0.9999, not 1.0).
  if scale == "log1m":
    return 1.0 - float(f"{1.0 - new:.3g}")
  if scale == "logit" and new > 0.5:
    return 1.0 - float(f"{1.0 - new:.3g}")
  return float(f"{new:.3g}")


def _extend(values: Sequence[float], side: str, scale: str
            ) -> tuple[str, float]:
  """``extend_grid`` on ``side``, or on the other side where ``side`` has
  reached the domain's end (the method keeps its equal budget)."""
  new = extend_grid(values, side, scale)
  if new is None:
    side = "high" if side == "low" else "low"
    new = extend_grid(values, side, scale)
  assert new is not None   # a domain has at most one closed end
  return side, new


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


def mean_interval(d: Sequence[float]) -> dict[str, Any]:
  """Mean of ``d`` and its 95% t-interval, with :func:`verdict`."""
  d = np.asarray(d, np.float64)
  if d.ndim != 1 or d.size < 2:
    raise ValueError(f"an interval needs >= 2 values (2 seeds), got shape "
                     f"{d.shape}")
  mean = float(d.mean())
  if not np.all(np.isfinite(d)):
    return {"mean": mean, "low": float("nan"), "high": float("nan"),
            "verdict": "undefined (non-finite)"}
  half = t_quantile_975(d.size - 1) * float(d.std(ddof=1)) / math.sqrt(d.size)
  low, high = mean - half, mean + half
  return {"mean": mean, "low": low, "high": high,
          "verdict": verdict(low, high)}


def paired_interval(a: Sequence[float], b: Sequence[float]
                    ) -> dict[str, Any]:
  """Mean of ``a - b`` (paired by position) and its 95% t-interval."""
  if np.shape(a) != np.shape(b):
    raise ValueError(f"paired_interval needs two equal-length sequences of "
                     f">= 2 values, got shapes {np.shape(a)}, {np.shape(b)}")
  return mean_interval(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def verdict(low: float, high: float) -> str:
  if low > 0:
    return "higher"
  if high < 0:
    return "lower"
  return "no difference"


def verdict_of_studies(studies: Sequence[str], pooled: str) -> str:
  """The cell's reading: the studies' common verdict when they agree (a
  difference only if the pooled interval agrees too), ``"unstable"`` when
  they disagree (or when they agree on a difference the pooled interval
  does not show)."""
  kinds = set(studies)
  if len(kinds) != 1:
    return "unstable"
  (common,) = kinds
  if common in ("higher", "lower") and pooled != common:
    return "unstable"
  return common


def make_studies(seeds: Sequence[int], num_studies: int,
                 per_study: int) -> list[dict[str, list[int]]]:
  """``num_studies`` studies with disjoint selection sets of ``per_study``
  seeds (consecutive in ``seeds``); each reports on every other seed."""
  seeds = list(seeds)
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"seeds must be distinct, got {seeds}")
  if num_studies < 1 or per_study < 1 or num_studies * per_study > len(seeds):
    raise ValueError(f"{num_studies} studies x {per_study} selection seeds "
                     f"need that many distinct seeds; got {len(seeds)}")
  if len(seeds) - per_study < 2:
    raise ValueError("each study needs >= 2 report seeds for an interval")
  out = []
  for k in range(num_studies):
    sel = seeds[k * per_study:(k + 1) * per_study]
    out.append({"selection_seeds": sel,
                "report_seeds": [s for s in seeds if s not in sel]})
  return out


def _configs(grid: MethodGrid, lrs: Sequence[float],
             knobs: Sequence[float]) -> list[dict[str, float]]:
  return [{"lr": float(lr), grid.knob: float(k), **grid.fixed}
          for k in knobs for lr in lrs]


def _score(values: Sequence[float], higher_is_better: bool) -> float:
  m = float(np.mean(values))
  if not math.isfinite(m):   # a diverged configuration loses
    return -math.inf
  return m if higher_is_better else -m


class Tuning(NamedTuple):
  """Every configuration of every method on every seed (see :func:`tune`).

  ``metrics[method][key]`` is a ``[config][seed]`` list of lists for every
  scalar metric ``run_many`` returned; ``outputs[method][config][seed]`` the
  whole output dicts (curves included) while in memory."""
  grids: dict[str, MethodGrid]
  configs: dict[str, list[dict[str, float]]]
  metrics: dict[str, dict[str, list[list[float]]]]
  outputs: dict[str, list[list[dict[str, Any]]]]
  extensions: dict[str, list[dict[str, Any]]]
  seeds: list[int]
  studies: list[dict[str, list[int]]]
  selection_metric: str
  higher_is_better: bool


def _select(configs: list[dict], vals: list[list[float]], seed_idx: list[int],
            higher_is_better: bool, grid: MethodGrid | None = None) -> int:
  """Index of the configuration chosen on the seeds at ``seed_idx``.

  By the one-standard-error rule: among the configurations whose mean
  validation metric is within one standard error of the best, the one whose
  knob is nearest (in grid steps) the middle of ``grid``'s initial knob
  values, and the best mean at that knob (the nearer-to-best one when two
  knob values are equally near). A knob leaves its default only when the
  data says so beyond the noise: on a flat axis (a decay too small to act)
  the best mean sits at an edge by luck, and chasing it extends the grid for
  ever. The standard error is the median over configurations of the
  seed-to-seed standard deviation, over sqrt(number of seeds); with one
  seed, or no ``grid``, the best mean is chosen. Diverged ones lose."""
  scores = [_score([v[j] for j in seed_idx], higher_is_better) for v in vals]
  best = int(np.argmax(scores))
  if grid is None or len(seed_idx) < 2 or not math.isfinite(scores[best]):
    return best
  spreads = [float(np.std([v[j] for j in seed_idx], ddof=1))
             for v, s in zip(vals, scores) if math.isfinite(s)]
  se = float(np.median(spreads)) / math.sqrt(len(seed_idx))
  knobs = sorted({c[grid.knob] for c in configs})
  middle = sorted(grid.knob_values)[len(grid.knob_values) // 2]
  centre = knobs.index(min(knobs, key=lambda k: abs(k - middle)))
  rank = {k: abs(i - centre) for i, k in enumerate(knobs)}
  tied = [i for i, s in enumerate(scores) if s >= scores[best] - se]
  return min(tied, key=lambda i: (rank[configs[i][grid.knob]], -scores[i], i))


def selections(t: Tuning) -> dict[str, dict[str, int]]:
  """Per method, the configuration each study chooses (``"study k"``) and
  the one chosen on every seed (``"all"``, for figures and curves)."""
  pos = {s: j for j, s in enumerate(t.seeds)}
  out = {}
  for m, cfgs in t.configs.items():
    vals = t.metrics[m][t.selection_metric]
    g = t.grids[m]
    choice = {f"study {k}": _select(cfgs, vals, [pos[s] for s in
                                                 st["selection_seeds"]],
                                    t.higher_is_better, g)
              for k, st in enumerate(t.studies)}
    choice["all"] = _select(cfgs, vals, list(range(len(t.seeds))),
                            t.higher_is_better, g)
    out[m] = choice
  return out


def _edges(values: list[float], chosen: list[float]) -> set[str]:
  if len(set(values)) == 1:  # an axis fixed for every method: no edges
    return set()
  lo_, hi_ = min(values), max(values)
  return {("low" if c == lo_ else "high") for c in chosen if c in (lo_, hi_)}


def _extension_side(values: list[float], chosen: list[float],
                    edges: set[str]) -> str:
  """The side a method extends: the edge its choices sit at (the higher one
  if both, the other following next round); else the side nearer the median
  choice."""
  if edges:
    return "high" if "high" in edges else "low"
  v = sorted(set(values))
  i = v.index(sorted(chosen)[len(chosen) // 2])
  return "low" if i < len(v) - 1 - i else "high"


def _edge_text(at: dict[str, Any], knob: str) -> str:
  """Whose choice caused an extension, for the log."""
  edges = [f"{axis} at its {'/'.join(sorted(at[axis]))} edge"
           for axis in ("lr", knob) if at[axis]]
  if edges:
    return "a study chose " + " and ".join(edges)
  return ("every choice inside (extended for an equal budget: another "
          "method's choice sat at an edge)")


def tune(grids: dict[str, MethodGrid],
         run_many: Callable[[list[Run]], list[dict[str, Any]]],
         selection_metric: str, seeds: Sequence[int],
         studies: Sequence[dict[str, list[int]]], *, higher_is_better: bool,
         max_extensions: int = 4,
         log: Callable[[str], None] = print) -> Tuning:
  """Runs every configuration of every method on every seed, growing the
  grids (equally for every method) while a study's choice of the learning
  rate or of the knob sits at an edge, for at most ``max_extensions``
  rounds."""
  sizes = {m: (len(g.lrs), len(g.knob_values)) for m, g in grids.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f"unequal tuning budgets: {sizes}")
  for m, g in grids.items():
    if g.knob_scale not in KNOB_SCALES:
      raise ValueError(f"{m}: knob_scale must be one of {KNOB_SCALES}")
  seeds = list(seeds)
  for st in studies:
    if set(st["selection_seeds"]) & set(st["report_seeds"]) or not set(
        st["selection_seeds"]) | set(st["report_seeds"]) <= set(seeds):
      raise ValueError(f"a study's selection seeds {st['selection_seeds']} "
                       f"and report seeds {st['report_seeds']} must be "
                       f"disjoint and among the seeds {seeds}")
  sel_sets = [set(st["selection_seeds"]) for st in studies]
  if any(a & b for i, a in enumerate(sel_sets) for b in sel_sets[i + 1:]):
    raise ValueError("the studies' selection seeds must be disjoint")
  lrs = {m: sorted(g.lrs) for m, g in grids.items()}
  knobs = {m: sorted(g.knob_values) for m, g in grids.items()}
  t = Tuning(dict(grids), {m: [] for m in grids}, {m: {} for m in grids},
             {m: [] for m in grids}, {m: [] for m in grids}, seeds,
             list(studies), selection_metric, higher_is_better)
  pending = {m: _configs(g, lrs[m], knobs[m]) for m, g in grids.items()}
  for round_ in range(max_extensions + 1):
    runs = [Run(m, c, s) for m, cs in pending.items() for c in cs
            for s in seeds]
    log(f"  round {round_}: {len(runs)} runs ({sum(map(len, pending.values()))}"
        f" configurations x {len(seeds)} seeds)")
    out = iter(run_many(runs))
    for m, cs in pending.items():
      for c in cs:
        outs = [next(out) for _ in seeds]
        t.configs[m].append(c)
        t.outputs[m].append(outs)
        for key, v in outs[0].items():
          if isinstance(v, (int, float)):
            t.metrics[m].setdefault(key, []).append([float(o[key])
                                                     for o in outs])
    chosen = selections(t)
    at = {}
    for m, g in grids.items():
      picks = [t.configs[m][i] for i in chosen[m].values()]
      at[m] = {"lr": _edges(lrs[m], [p["lr"] for p in picks]),
               g.knob: _edges(knobs[m], [p[g.knob] for p in picks]),
               "picks": picks}
    grow_lr = any(a["lr"] for a in at.values())
    grow_knob = any(at[m][g.knob] for m, g in grids.items())
    if round_ == max_extensions or not (grow_lr or grow_knob):
      break
    pending = {}
    for m, g in grids.items():
      new_lrs, new_knobs = [], []
      if grow_lr:
        side = _extension_side(lrs[m], [p["lr"] for p in at[m]["picks"]],
                               at[m]["lr"])
        side, new_lr = _extend(lrs[m], side, "log")
        new_lrs = [new_lr]
        t.extensions[m].append({"round": round_ + 1, "axis": "lr",
                                "side": side, "value": new_lrs[0],
                                "chosen_at_edge": bool(at[m]["lr"])})
      if grow_knob:
        side = _extension_side(knobs[m], [p[g.knob] for p in at[m]["picks"]],
                               at[m][g.knob])
        side, new_knob = _extend(knobs[m], side, g.knob_scale)
        new_knobs = [new_knob]
        t.extensions[m].append({"round": round_ + 1, "axis": g.knob,
                                "side": side, "value": new_knobs[0],
                                "chosen_at_edge": bool(at[m][g.knob])})
      # New lrs with every knob value (old and new), and the new knob value
      # with the old lrs: the grid stays a full product.
      pending[m] = (_configs(g, new_lrs, knobs[m] + new_knobs)
                    + _configs(g, lrs[m], new_knobs))
      lrs[m] = sorted(lrs[m] + new_lrs)
      knobs[m] = sorted(knobs[m] + new_knobs)
      log(f"  {m}: {_edge_text(at[m], g.knob)}; adds lr {new_lrs or '-'}, "
          f"{g.knob} {new_knobs or '-'}")
  return t


def report(t: Tuning, metric: str,
           pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
  """Each study's choices and test results, and every pair's differences:
  per study (paired over its report seeds) and pooled (per seed, the
  difference averaged over the studies that report that seed), with the
  cell's reading (:func:`verdict_of_studies`). Lower-is-better metrics read
  the same way: ``"higher"`` means ``a``'s metric is higher."""
  chosen = selections(t)
  pos = {s: j for j, s in enumerate(t.seeds)}
  values = t.metrics
  per_method = {}
  for m in t.configs:
    studies = []
    for k, st in enumerate(t.studies):
      i = chosen[m][f"study {k}"]
      studies.append({**st, "selected": t.configs[m][i], "selected_index": i,
                      "test": [values[m][metric][i][pos[s]]
                               for s in st["report_seeds"]]})
    per_method[m] = studies
  comparisons = []
  for a, b in pairs:
    if a not in per_method or b not in per_method:
      continue
    by_study, per_seed = [], {s: [] for s in t.seeds}
    for sa, sb in zip(per_method[a], per_method[b]):
      d = np.subtract(sa["test"], sb["test"])
      by_study.append(paired_interval(sa["test"], sb["test"]))
      for s, x in zip(sa["report_seeds"], d):
        per_seed[s].append(float(x))
    pooled = mean_interval([np.mean(v) for v in per_seed.values() if v])
    comparisons.append({
        "a": a, "b": b, **pooled, "pooled_verdict": pooled["verdict"],
        "verdict": verdict_of_studies([s["verdict"] for s in by_study],
                                      pooled["verdict"]),
        "studies": by_study})
  return {"studies": per_method, "comparisons": comparisons,
          "selections": chosen}


def with_subset(t: Tuning, method: str, knob_value: float, name: str
                ) -> Tuning:
  """``t`` plus a method ``name``: ``method`` restricted to the
  configurations whose knob is ``knob_value`` (its learning rates only: a
  method used at a default of its second knob, tuned at a third of the
  budget). Every selection then runs over that subset."""
  grid = t.grids[method]
  keep = [i for i, c in enumerate(t.configs[method])
          if c[grid.knob] == knob_value]
  if not keep:
    raise ValueError(f"{method} has no configuration with {grid.knob}="
                     f"{knob_value}")
  pick = lambda rows: [rows[i] for i in keep]
  return t._replace(
      grids={**t.grids, name: grid._replace(knob_values=(knob_value,))},
      configs={**t.configs, name: pick(t.configs[method])},
      metrics={**t.metrics, name: {k: pick(v) for k, v in
                                   t.metrics[method].items()}},
      outputs={**t.outputs, name: pick(t.outputs[method])},
      extensions={**t.extensions, name: [
          e for e in t.extensions[method] if e["axis"] == "lr"]})


def subset_report(t: Tuning, method: str, knob_value: float, name: str,
                  metric: str, regime: Sequence[str],
                  against: Sequence[str]) -> tuple[dict[str, Any], list]:
  """The record of ``method`` restricted to one knob value
  (:func:`with_subset`) and its paired comparisons with ``against``."""
  sub = with_subset(t, method, knob_value, name)
  record = method_records(sub, metric, regime)[name]
  pairs = [(name, b) for b in against if b in t.configs]
  return record, report(sub, metric, pairs)["comparisons"]


def seed_averaged(t: Tuning, method: str, key: str) -> list[float]:
  """Per seed, ``key`` of the configurations the studies reporting that seed
  chose, averaged over those studies (what the tables show)."""
  chosen = selections(t)[method]
  pos = {s: j for j, s in enumerate(t.seeds)}
  per_seed: dict[int, list[float]] = {s: [] for s in t.seeds}
  for k, st in enumerate(t.studies):
    i = chosen[f"study {k}"]
    for s in st["report_seeds"]:
      per_seed[s].append(t.metrics[method][key][i][pos[s]])
  return [float(np.mean(v)) for v in per_seed.values() if v]


def method_records(t: Tuning, test_metric: str,
                   regime: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
  """Per method, what a results file keeps of a :class:`Tuning`: the grid,
  every configuration's metrics on every seed, each study's choice and test
  results, the seed-averaged test metric and regime figures (``regime``:
  metric names, e.g. the final train loss), the configuration chosen on
  every seed and its curves (mean over seeds), and the extensions."""
  chosen = selections(t)
  out = {}
  for m, cfgs in t.configs.items():
    knob, fixed = t.grids[m].knob, dict(t.grids[m].fixed)
    metrics = t.metrics[m]
    best = chosen[m]["all"]
    curves = [o["curves"] for o in t.outputs[m][best] if "curves" in o]
    test = seed_averaged(t, m, test_metric)
    mean, std = summarize(test)
    vals = np.asarray(metrics[t.selection_metric], np.float64)
    lrs, ks = [c["lr"] for c in cfgs], [c[knob] for c in cfgs]
    out[m] = {
        "knob": knob, "fixed": fixed, "test_metric": test_metric,
        "grid": {"lr": lrs, knob: ks},
        "num_configs": len(cfgs),
        "seeds": list(t.seeds),
        "per_config": {k: v for k, v in metrics.items()},
        "val_mean_per_config": np.nanmean(vals, axis=1).tolist()
        if vals.size else [],
        "test_mean_per_config": np.mean(metrics[test_metric], axis=1).tolist(),
        "studies": [{**st, "selected": cfgs[chosen[m][f"study {k}"]],
                     "selected_index": chosen[m][f"study {k}"]}
                    for k, st in enumerate(t.studies)],
        "selected": cfgs[best], "selected_index": best,
        "selected_at_edge": sorted(
            f"{axis} {side}" for axis, vs, v in (("lr", lrs, cfgs[best]["lr"]),
                                                 (knob, ks, cfgs[best][knob]))
            for side in _edges(vs, [v])),
        "extensions": t.extensions[m],
        "test": test, "test_mean": mean, "test_std": std,
        **{k: seed_averaged(t, m, k) for k in regime},
        "curves_selected": ({k: np.mean([c[k] for c in curves],
                                        axis=0).tolist() for k in curves[0]}
                            if curves else {}),
    }
  return out


def sensitivity(record: dict[str, Any], metric_key: str | None = None,
                higher_is_better: bool = True) -> dict[str, Any]:
  """Test metric vs learning rate at the method's chosen knob value (the
  all-seed choice, ``record["selected"]``; without one, the knob whose best
  learning rate has the best validation mean over every seed): learning
  rates, mean over seeds and the 95% t-band of that mean."""
  knob, grid = record["knob"], record["grid"]
  if "selected" in record:
    best_knob = record["selected"][knob]
  else:
    val = np.asarray(record["val_mean_per_config"])
    score = val if higher_is_better else -val
    score = np.where(np.isfinite(score), score, -np.inf)
    best_knob = grid[knob][int(np.argmax(score))]
  idx = sorted((i for i, k in enumerate(grid[knob]) if k == best_knob),
               key=lambda i: grid["lr"][i])
  metric_key = metric_key or record["test_metric"]
  rows = np.asarray(record["per_config"][metric_key], np.float64)[idx]
  n = rows.shape[1]
  half = (t_quantile_975(n - 1) * rows.std(axis=1, ddof=1) / math.sqrt(n)
          if n > 1 else np.zeros(len(idx)))
  return {"knob": knob, "knob_value": best_knob,
          "lr": [grid["lr"][i] for i in idx], "mean": rows.mean(1).tolist(),
          "half_width": np.asarray(half).tolist()}


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
               "zloss": 0.0, "softcap": 0.0, "auto": 0.0,
               "auto_threshold": lo.AutoFreeze().threshold}
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
  ``round(free_frac * total_steps)`` steps, or, with ``hp["auto"] == 1``,
  when ``free_steps="auto"``'s rule decides (``lawn_optax.AutoFreeze`` with
  ``auto_threshold``, its default ``every``); with ``decay_constrained == 0``
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
  auto = (hp["lawn"] > 0) & (hp["auto"] > 0)
  free = jnp.where((hp["lawn"] > 0) & ~auto,
                   jnp.round(hp["free_frac"] * total_steps), NEVER)
  rule = lo.AutoFreeze(threshold=jnp.where(auto, hp["auto_threshold"], 0.0),
                       latest=free.astype(jnp.int32))
  return lo.lawn(base, free_steps=rule, mask=mask, **lawn_kwargs)


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


class Progress:
  """Progress of a benchmark's programs on stdout: runs done of those
  planned, elapsed time and an estimate of what is left (from the rate so
  far; extension rounds add runs, and the estimate with them)."""

  def __init__(self, planned: int, log: Callable[[str], None] = print):
    self.planned, self.done, self.log = planned, 0, log
    self.t0 = time.perf_counter()

  def add_planned(self, n: int) -> None:
    self.planned += n

  def __call__(self, what: str, n: int, seconds: float) -> None:
    self.done += n
    self.planned = max(self.planned, self.done)
    elapsed = time.perf_counter() - self.t0
    left = elapsed / self.done * (self.planned - self.done)
    self.log(f"    {what}: {n} runs in {seconds:.0f} s; {self.done}/"
             f"{self.planned} runs, {elapsed / 60:.1f} min elapsed, about "
             f"{left / 60:.1f} min left")


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
