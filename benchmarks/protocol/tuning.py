"""The tuning loop (every configuration on every seed, grids grown while a
choice sits at an edge) and the reports read from it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from benchmarks.protocol.grids import KNOB_SCALES, MethodGrid, Run, _extend
from benchmarks.protocol.statistics import (
  mean_interval,
  paired_interval,
  summarize,
  t_quantile_975,
  verdict_of_studies,
)

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


def _check_inputs(grids: dict[str, MethodGrid], seeds: list[int],
                  studies: Sequence[dict[str, list[int]]]) -> None:
  """Equal budgets, known knob scales, disjoint studies among the seeds."""
  sizes = {m: (len(g.lrs), len(g.knob_values)) for m, g in grids.items()}
  if len(set(sizes.values())) > 1:
    raise ValueError(f"unequal tuning budgets: {sizes}")
  for m, g in grids.items():
    if g.knob_scale not in KNOB_SCALES:
      raise ValueError(f"{m}: knob_scale must be one of {KNOB_SCALES}")
  for st in studies:
    if set(st["selection_seeds"]) & set(st["report_seeds"]) or not set(
        st["selection_seeds"]) | set(st["report_seeds"]) <= set(seeds):
      raise ValueError(f"a study's selection seeds {st['selection_seeds']} "
                       f"and report seeds {st['report_seeds']} must be "
                       f"disjoint and among the seeds {seeds}")
  sel_sets = [set(st["selection_seeds"]) for st in studies]
  if any(a & b for i, a in enumerate(sel_sets) for b in sel_sets[i + 1:]):
    raise ValueError("the studies' selection seeds must be disjoint")


def _record(t: Tuning, pending: dict[str, list[dict[str, float]]],
            outputs: list[dict[str, Any]]) -> None:
  """Files one round's outputs (``pending``'s runs, every seed) in ``t``."""
  out = iter(outputs)
  for m, cs in pending.items():
    for c in cs:
      outs = [next(out) for _ in t.seeds]
      t.configs[m].append(c)
      t.outputs[m].append(outs)
      for key, v in outs[0].items():
        if isinstance(v, (int, float)):
          t.metrics[m].setdefault(key, []).append([float(o[key])
                                                   for o in outs])


def _grow(axis: str, values: list[float], picks: list[float],
          edges: set[str], scale: str, round_: int,
          extensions: list[dict[str, Any]]) -> list[float]:
  """One value added to an axis (the side its choices sit at, else the
  nearer one), recorded in ``extensions``."""
  side = _extension_side(values, picks, edges)
  side, value = _extend(values, side, scale)
  extensions.append({"round": round_ + 1, "axis": axis, "side": side,
                     "value": value, "chosen_at_edge": bool(edges)})
  return [value]


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
  seeds = list(seeds)
  _check_inputs(grids, seeds, studies)
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
    _record(t, pending, run_many(runs))
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
      picks = at[m]["picks"]
      new_lrs = _grow("lr", lrs[m], [p["lr"] for p in picks], at[m]["lr"],
                      "log", round_, t.extensions[m]) if grow_lr else []
      new_knobs = _grow(g.knob, knobs[m], [p[g.knob] for p in picks],
                        at[m][g.knob], g.knob_scale, round_,
                        t.extensions[m]) if grow_knob else []
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
