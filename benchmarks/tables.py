"""How results are shown: the Markdown tables and figures of the accuracy
benchmarks, written from their results (JSON-able dicts).

Presentation only: nothing here changes a number, so this module is left
out of the results' code hash (``benchmarks.common.NOT_HASHED``) and can be
improved without making a committed table stale.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks import protocol
from benchmarks.protocol import PROTOCOL_TEXT

DIFFERENCE_TEXT = (
    "Pooled: per seed, the difference averaged over the studies that report "
    "that seed; mean and 95% t-interval over the seeds. Studies: each "
    "study's mean difference over its own report seeds, marked ▲/▼ where its "
    "own interval excludes 0.")


def studies_text(results: dict[str, Any]) -> str:
  """How the table's numbers were pooled, from a results file."""
  seeds, studies = results["seeds"], results["studies"]
  sel = ", ".join("-".join(map(str, st["selection_seeds"])) for st in studies)
  return (f"every configuration ran on seeds {seeds}; {len(studies)} studies "
          f"each select on validation over their own seeds ({sel}) and report "
          f"test on the other {len(seeds) - len(studies[0]['selection_seeds'])}"
          "; per seed, the test metric of the studies that report it is "
          "averaged, and the table gives mean ± std over the seeds.")


def difference_text(c: dict[str, Any], scale: float, higher: str,
                    lower: str, digits: int = 2) -> str:
  """``+1.66 [+0.74, +2.57] **wins** (studies +1.2▲ +1.9▲ ...)``."""
  reading = {"higher": higher, "lower": lower,
             "unstable": "**unstable**"}.get(c["verdict"], c["verdict"])
  marks = {"higher": "▲", "lower": "▼"}
  per = " ".join(f"{scale * st['mean']:+.{max(digits - 1, 1)}f}"
                 f"{marks.get(st['verdict'], '')}" for st in c["studies"])
  f = f"+.{digits}f"
  return (f"{scale * c['mean']:{f}} [{scale * c['low']:{f}}, "
          f"{scale * c['high']:{f}}] {reading} (studies {per})")



def sensitivity_figure(panels: Sequence[tuple[str, dict[str, Any]]],
                       path: str, ylabel: str, scale: float = 1.0,
                       higher_is_better: bool = True) -> str:
  """One panel per cell: test metric vs learning rate, one line per method
  at its chosen knob value, mean over seeds with a 95% band (LAWN variants
  solid, the rest dashed). ``panels``: (title, {method: record})."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8),
                           squeeze=False)
  for ax, (title, records) in zip(axes[0], panels):
    for i, (m, rec) in enumerate(records.items()):
      sens = protocol.sensitivity(rec, higher_is_better=higher_is_better)
      mean = scale * np.asarray(sens["mean"])
      half = scale * np.asarray(sens["half_width"])
      ax.plot(sens["lr"], mean, marker="o", ms=3, color=f"C{i}",
              ls="-" if m.startswith("lawn") else "--",
              label=f"{m} ({sens['knob']}={number(sens['knob_value'])})")
      ax.fill_between(sens["lr"], mean - half, mean + half, color=f"C{i}",
                      alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=6)
  _save(fig, path, 110)
  return path



# -- generalization ---------------------------------------------------------

def _cell_text(c: dict[str, Any]) -> str:
  return (f"{100 * c['test_mean']:.1f} ± {100 * c['test_std']:.1f} "
          f"(L {np.mean(c['final_train_loss']):.2g}, "
          f"z {np.mean(c['final_logit_norm']):.3g})")


def _save(fig: Any, path: str, dpi: int) -> None:
  """Lay out, write and close a figure (every plot here ends so)."""
  import matplotlib.pyplot as plt
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def generalization_table(results: dict[str, Any], metric: str) -> str:
  """Test metric per method and batch size (per seed averaged over the
  studies that report it; mean ± std over seeds, with the final train loss L
  and logit norm z: the regime), then the paired differences: pooled
  interval, reading, and each study's mean difference."""
  names = list(results["cells"])
  batches = sorted({c["batch_size"] for n in names
                    for c in results["cells"][n]})
  lines = ["| optimizer | " + " | ".join(f"B={b}" for b in batches) + " |",
           "|" + "---|" * (len(batches) + 1)]
  rows = [(n, cs) for n, cs in results["cells"].items()]
  rows += [(f"{n} †", cs) for n, cs in
           results.get("reduced_budget_cells", {}).items()]
  for n, cs in rows:
    by_b = {c["batch_size"]: c for c in cs}
    lines.append(f"| {n} | " + " | ".join(
        _cell_text(by_b[b]) if b in by_b else "" for b in batches) + " |")
  if results.get("reduced_budget_cells"):
    lines += ["", "† free_steps='auto' at its default threshold: "
              "lawn-adam-auto's learning rates only (a third of the other "
              "methods' tuning budget), selected and reported like them."]
  lines += ["", f"Test {metric} (%): {studies_text(results)} "
            "L: final train loss, z: final mean logit norm (averaged alike). "
            f"Schedule: {results.get('schedule')}, {results['epochs']} epochs "
            f"at every batch size. {PROTOCOL_TEXT}"]
  comps = results.get("comparisons", [])
  if comps:
    pairs = list(dict.fromkeys((c["a"], c["b"]) for c in comps))
    lines += ["", "| paired difference (points) | " + " | ".join(
        f"B={b}" for b in batches) + " |", "|" + "---|" * (len(batches) + 1)]
    for a, b_ in pairs:
      row = []
      for b in batches:
        c = next((x for x in comps if (x["a"], x["b"], x["batch_size"]) ==
                  (a, b_, b)), None)
        row.append("" if c is None else difference_text(
            c, 100, f"**{a} wins**", f"**{a} loses**"))
      lines.append(f"| {a} − {b_} | " + " | ".join(row) + " |")
    lines += ["", DIFFERENCE_TEXT]
  lines += _regime_lines(results)
  lines += _edge_lines(results)
  return "\n".join(lines)


# LAWN acts once the training loss is small (the papers' regime): a cell
# whose every method ends above this train loss has not asked its question.
SMALL_LOSS = 0.05


def _regime_lines(results: dict[str, Any]) -> list[str]:
  """A line per batch size whose cells all stop above ``SMALL_LOSS``."""
  out = []
  cells = [c for cs in results["cells"].values() for c in cs]
  for b in sorted({c["batch_size"] for c in cells}):
    losses = [float(np.mean(c["final_train_loss"])) for c in cells
              if c["batch_size"] == b]
    if min(losses) > SMALL_LOSS:
      steps = next(c["steps"] for c in cells if c["batch_size"] == b)
      out.append(f"Not in the small-loss regime: at B={b} ({steps} steps) "
                 f"every method ends at a train loss of {min(losses):.2g}–"
                 f"{max(losses):.2g} (> {SMALL_LOSS}), where LAWN's claim is "
                 "about training into it; the regime map "
                 "(`python -m benchmarks.regime`) asks that question.")
  return [""] + out if out else []


def edge_cells(results: dict[str, Any]
               ) -> list[tuple[str, int, str, float, int, int]]:
  """Every study's choice that sits at an edge of its grid once the
  extensions ran out, as ``(method, batch, axis, value, studies that chose
  it, studies)``."""
  if "batches" in results:   # the language model's layout
    cells = [(m, c, b["batch_size"]) for b in results["batches"]
             for m, c in b["cells"].items()]
  else:
    cells = [(m, c, c["batch_size"]) for m, cs in results["cells"].items()
             for c in cs]
  out = []
  for method, c, batch in cells:
    for axis in ("lr", c["knob"]):
      values = sorted(set(c["grid"][axis]))
      at = [st["selected"][axis] for st in c["studies"]
            if st["selected"][axis] in (values[0], values[-1])]
      out += [(method, batch, axis, v, at.count(v), len(c["studies"]))
              for v in sorted(set(at))]
  return out


def number(value: float) -> str:
  """A grid value with the digits that tell it from its neighbours
  (``:g`` prints b2 = 0.9999999 as 1)."""
  return f"{value:.10g}"


def edge_choices(results: dict[str, Any]) -> list[str]:
  """:func:`edge_cells` as ``"method B=b axis=value (n of N studies)"``."""
  return [f"{method} B={batch} {axis}={number(v)} ({n} of {total} studies)"
          for method, batch, axis, v, n, total in edge_cells(results)]


def _edge_lines(results: dict[str, Any]) -> list[str]:
  edges = edge_choices(results)
  if not edges:
    return []
  return ["", "**Still at a grid edge after the last extension** (the axis "
          "is flat there; the choice may lie beyond the grid): "
          + "; ".join(edges) + "."]


def _freeze_epoch(cell: dict[str, Any]) -> float | None:
  """Where the configuration chosen on every seed froze (mean epoch)."""
  steps = cell["per_config"].get("frozen_at", [[]])[cell["selected_index"]]
  steps = [s for s in steps if s >= 0]
  if not steps:
    return None
  return float(np.mean(steps)) / cell["steps"] * cell["epochs"]


def auto_freeze_figure(results: dict[str, Any], path: str,
                       loss_key: str = "train_loss",
                       x_of=lambda cell, n: np.arange(1, n + 1),
                       x_label: str = "epoch") -> str | None:
  """Where ``free_steps="auto"`` (at its default) froze against where the
  tuned free fraction froze, on the training-loss curve of each batch size
  (configurations chosen on every seed, mean over seeds)."""
  reduced = results.get("reduced_budget_cells", {})
  if not reduced:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  (auto_name, autos), = reduced.items()
  tuned = {c["batch_size"]: c for c in results["cells"].get("lawn-adam", [])}
  fig, axes = plt.subplots(1, len(autos), figsize=(5.5 * len(autos), 3.8),
                           squeeze=False)
  for ax, auto in zip(axes[0], autos):
    b = auto["batch_size"]
    for cell, color, label in ((auto, "C2", "auto (default)"),
                               (tuned.get(b), "C1", "tuned free fraction")):
      if cell is None:
        continue
      y = cell["curves_selected"][loss_key]
      ax.plot(x_of(cell, len(y)), y, color=color, label=label)
      freeze = _freeze_epoch(cell)
      if freeze is not None:
        ax.axvline(freeze, color=color, ls=":", lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel(x_label)
    ax.set_ylabel(loss_key.replace("_", " "))
    ax.set_title(f"{results.get('dataset', '')} B={b}: freeze points dotted")
    ax.legend(fontsize=7)
  _save(fig, path, 110)
  return path


def generalization_plots(results: dict[str, Any], path_prefix: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = list(results["cells"])
  # One colour per base optimizer, whether or not its plain run is present.
  bases = list(dict.fromkeys(n.removeprefix("lawn-") for n in names))
  fig, ax = plt.subplots(figsize=(6, 4))
  for i, n in enumerate(bases):
    for variant, style in ((n, "--"), (f"lawn-{n}", "-")):
      if variant not in results["cells"]:
        continue
      cells = sorted(results["cells"][variant], key=lambda c: c["batch_size"])
      b = [c["batch_size"] for c in cells]
      m = np.array([c["test_mean"] for c in cells])
      s = np.array([c["test_std"] for c in cells])
      ax.errorbar(b, 100 * m, 100 * s, ls=style, color=f"C{i}", marker="o",
                  capsize=3, label=variant)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("batch size")
  ax.set_ylabel(f"test {results['metric']} (%)")
  ax.set_title(f"{results['dataset']}: base (dashed) vs LAWN (solid)")
  ax.legend(fontsize=8)
  out = [f"{path_prefix}_metric_vs_batch.png"]
  _save(fig, out[0], 120)

  biggest = max(c["batch_size"] for n in names for c in results["cells"][n])
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for n in names:
    cell = next((c for c in results["cells"][n] if c["batch_size"] == biggest),
                None)
    if cell is None:
      continue
    ep = np.arange(1, cell["epochs"] + 1)
    base_i = bases.index(n.removeprefix("lawn-"))
    style = "-" if n.startswith("lawn-") else "--"
    for ax, key in zip(axes, ("train_loss", "logit_norm", "head_norm")):
      ax.plot(ep, cell["curves_selected"][key], style, color=f"C{base_i}",
              label=n)
    freeze = _freeze_epoch(cell)
    if freeze is not None:
      for ax in axes:
        ax.axvline(freeze, color=f"C{base_i}", ls=":", lw=1)
  for ax, title in zip(axes, ("train loss", "mean logit norm",
                              "final-layer kernel norm")):
    ax.set_title(title)
    ax.set_xlabel("epoch")
  axes[0].set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{results['dataset']}, batch {biggest}: freeze points dotted")
  out.append(f"{path_prefix}_norms.png")
  _save(fig, out[1], 120)
  batches = sorted({c["batch_size"] for n in names
                    for c in results["cells"][n]})
  panels = [(f"{results['dataset']}, B={b}",
             {n: c for n in names for c in results["cells"][n]
              if c["batch_size"] == b}) for b in batches]
  out.append(sensitivity_figure(
      panels, f"{path_prefix}_sensitivity.png",
      f"test {results['metric']} (%)", 100.0))
  auto = auto_freeze_figure(results, f"{path_prefix}_auto_freeze.png")
  return out + ([auto] if auto else [])



# -- language model ---------------------------------------------------------

def language_model_table(results: dict[str, Any]) -> str:
  lines = ["| method | " + " | ".join(
      f"B={b['batch_size']}: test bpc | train bpc | max logit | val rise"
      for b in results["batches"]) + " |",
           "|---|" + "---|---|---|---|" * len(results["batches"])]
  methods = list(results["batches"][0]["cells"])
  reduced = list(results["batches"][0].get("reduced_budget_cells", {}))
  for m in methods + reduced:
    row = []
    for b in results["batches"]:
      c = b["cells"].get(m) or b["reduced_budget_cells"][m]
      row += [f"{c['test_mean']:.3f} ± {c['test_std']:.3f}",
              f"{np.mean(c['final_train_bpc']):.3f}",
              f"{np.mean(c['final_max_abs_logit']):.1f}",
              f"{np.mean(c['val_rise']):.3f}"]
    lines.append(f"| {m}{' †' if m in reduced else ''} | "
                 + " | ".join(row) + " |")
  if reduced:
    lines += ["", "† free_steps='auto' at its default threshold: "
              "lawn-adam-auto's learning rates only (a third of the other "
              "methods' tuning budget), selected and reported like them."]
  lines += ["", "| comparison | " + " | ".join(
      f"B={b['batch_size']}: Δ test bpc, pooled [95% CI], reading (studies)"
      for b in results["batches"]) + " |",
            "|---|" + "---|" * len(results["batches"])]
  keys = [(r["a"], r["b"]) for r in results["batches"][0]["comparisons"]]
  for a, bname in keys:
    row = []
    for b in results["batches"]:
      r = next(x for x in b["comparisons"] if (x["a"], x["b"]) == (a, bname))
      row.append(difference_text(r, 1.0, f"**{a} worse**",
                                          f"**{a} better**", digits=3))
    lines.append(f"| {a} − {bname} | " + " | ".join(row) + " |")
  lines += ["", f"Test bits per character (lower is better): "
            f"{studies_text(results)} Train bpc, max |logit| and val "
            "rise (final minus lowest validation-probe bpc during training: "
            "> 0 when validation turned up) at the end of training, averaged "
            f"alike. {PROTOCOL_TEXT}", "",
            DIFFERENCE_TEXT]
  lines += _edge_lines(results)
  return "\n".join(lines)


def _lm_auto_freeze_figure(results: dict[str, Any], path: str) -> str | None:
  """The LM's version of :func:`auto_freeze_figure`: training bpc against
  the step, where ``free_steps="auto"`` froze and where the tuned free
  fraction froze."""
  batches = [b for b in results["batches"] if b.get("reduced_budget_cells")]
  if not batches:
    return None
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 3.8),
                           squeeze=False)
  for ax, b in zip(axes[0], batches):
    (auto,) = b["reduced_budget_cells"].values()
    for cell, color, label in ((auto, "C2", "auto (default)"),
                               (b["cells"].get("lawn-adam"), "C1",
                                "tuned free fraction")):
      if cell is None:
        continue
      y = cell["curves_selected"]["train_bpc"]
      x = b["log_every"] * np.arange(1, len(y) + 1)
      ax.plot(x, y, color=color, label=label)
      steps = [s for s in cell["per_config"]["frozen_at"][
          cell["selected_index"]] if s >= 0]
      if steps:
        ax.axvline(float(np.mean(steps)), color=color, ls=":", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("train bpc")
    ax.set_title(f"char-LM B={b['batch_size']}: freeze points dotted")
    ax.legend(fontsize=7)
  _save(fig, path, 110)
  return path


def language_model_plots(results: dict[str, Any], prefix: str) -> list[str]:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  keys = [("train_bpc", "train bpc"), ("val_probe_bpc", "validation bpc"),
          ("max_abs_logit", "max |logit|"),
          ("mean_logit_norm", "mean logit norm"),
          ("head_norm", "head kernel norm"),
          ("final_norm_scale_norm", "final norm scale norm")]
  out = []
  for b in results["batches"]:
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for i, (m, c) in enumerate(b["cells"].items()):
      curves = np.array([c["curves_selected"][k] for k, _ in keys])
      x = b["log_every"] * np.arange(1, curves.shape[1] + 1)
      for ax, y, (_, title) in zip(axes.flat, curves, keys):
        ax.plot(x, y, color=f"C{i}", label=m,
                ls="-" if m.startswith("lawn") else "--")
        ax.set_title(title)
        ax.set_xlabel("step")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"Austen char-LM, batch {b['batch_size']} x "
                 f"{results['config']['seq']}: the configurations chosen on "
                 "every seed, mean over seeds")
    out.append(f"{prefix}_B{b['batch_size']}_curves.png")
    _save(fig, out[-1], 110)
  fig, ax = plt.subplots(figsize=(6, 4))
  methods = list(results["batches"][0]["cells"])
  for i, m in enumerate(methods):
    bs = [b["batch_size"] for b in results["batches"]]
    ms = [(b["cells"][m]["test_mean"], b["cells"][m]["test_std"])
          for b in results["batches"]]
    ax.errorbar(bs, [v[0] for v in ms], [v[1] for v in ms], marker="o",
                capsize=3, color=f"C{i}", label=m,
                ls="-" if m.startswith("lawn") else "--")
  ax.set_xscale("log", base=2)
  ax.set_xlabel("batch size (sequences)")
  ax.set_ylabel("test bpc")
  ax.legend(fontsize=7)
  out.append(f"{prefix}_test_vs_batch.png")
  _save(fig, out[-1], 110)
  out.append(sensitivity_figure(
      [(f"B={b['batch_size']}", b["cells"]) for b in results["batches"]],
      f"{prefix}_sensitivity.png", "test bpc", higher_is_better=False))
  auto = _lm_auto_freeze_figure(results, f"{prefix}_auto_freeze.png")
  return out + ([auto] if auto else [])




# -- the regime map (benchmarks/regime.py) ----------------------------------

# What two runs of one method in one cell must share to be the same run.
_SAME_RUN = ("grid", "val_mean_per_config", "test_mean_per_config",
             "selected", "test", "final_train_loss")


def regime_cells(files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Every cell of the regime JSON files given, by batch size then steps.
  A cell run by several files (another command adding methods) is one cell
  with the union of their methods and comparisons; a method two files share
  must have the same selected configuration and test accuracy per seed
  (the runs are bit-reproducible), else this raises."""
  merged: dict[tuple[int, int], dict[str, Any]] = {}
  for r in files:
    for c in r["cells"]:
      key = (c["batch_size"], c["steps"])
      if key not in merged:
        merged[key] = {**c, "methods": dict(c["methods"]),
                       "comparisons": list(c["comparisons"])}
        continue
      cell = merged[key]
      for name, m in c["methods"].items():
        seen = cell["methods"].setdefault(name, m)
        if any(seen.get(k) != m.get(k) for k in _SAME_RUN):
          raise ValueError(f"regime cell B={key[0]} x {key[1]} steps: "
                           f"{name} differs between two files")
      known = {(x["a"], x["b"]) for x in cell["comparisons"]}
      cell["comparisons"] += [x for x in c["comparisons"]
                              if (x["a"], x["b"]) not in known]
  return [merged[k] for k in sorted(merged)]


def regime_loss(cell: dict[str, Any]) -> float:
  """A regime cell's selected Adam configuration's final train loss,
  seed-averaged: the regime a cell is in."""
  return float(np.mean(cell["methods"]["adam"]["final_train_loss"]))


def _comparison(cell: dict[str, Any], a: str, b: str) -> dict[str, Any] | None:
  return next((x for x in cell["comparisons"] if (x["a"], x["b"]) == (a, b)),
              None)


def _pairs(cells: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
  return list(dict.fromkeys((c["a"], c["b"]) for cell in cells
                            for c in cell["comparisons"]))


def regime_table(cells: Sequence[dict[str, Any]]) -> str:
  """One row per (batch size, steps) cell: the selected Adam
  configuration's final train loss (the regime), each method's test
  accuracy, and LAWN's paired differences with their verdicts."""
  pairs = _pairs(cells)
  names = list(dict.fromkeys(n for c in cells for n in c["methods"]))
  lines = ["| batch | steps (epochs) | Adam's final train loss | "
           + " | ".join(f"{n} (%)" for n in names) + " | "
           + " | ".join(f"{a} − {b} (points)" for a, b in pairs) + " |",
           "|" + "---|" * (3 + len(names) + len(pairs))]
  for cell in cells:
    accs = [f"{100 * cell['methods'][n]['test_mean']:.1f}" if n in
            cell["methods"] else "" for n in names]
    diffs = []
    for a, b in pairs:
      c = _comparison(cell, a, b)
      diffs.append("" if c is None else difference_text(
          c, 100, f"**{a} wins**", f"**{a} loses**", digits=1))
    loss = regime_loss(cell)
    lines.append(f"| {cell['batch_size']} | {cell['steps']} ({cell['epochs']})"
                 f" | {loss:.3g}{' ✓' if loss <= SMALL_LOSS else ''} | "
                 + " | ".join(accs + diffs) + " |")
  lines += ["", "✓: in the small-loss regime (Adam's selected configuration "
            f"ends at a train loss ≤ {SMALL_LOSS}, seed-averaged). "
            + DIFFERENCE_TEXT]
  return "\n".join(lines)


def _cell_label(cell: dict[str, Any]) -> str:
  regime = " ✓" if regime_loss(cell) <= SMALL_LOSS else ""
  return f"B={cell['batch_size']} × {cell['steps']} steps{regime}"


def _where(cells: Sequence[dict[str, Any]], a: str, b: str,
           keep: Any) -> list[str]:
  """The cells whose (a, b) comparison passes ``keep``, with its mean."""
  out = []
  for cell in cells:
    c = _comparison(cell, a, b)
    if c is not None and keep(c, cell):
      out.append(f"{_cell_label(cell)} ({100 * c['mean']:+.1f})")
  return out


def regime_reading(cells: Sequence[dict[str, Any]]) -> str:
  """The map's reading for a practitioner, from the verdicts only (no
  claim beyond a cell): each LAWN pair's cells by verdict, then where
  LAWN-Adam stands in for AdamW's decay (beats Adam, no difference to
  AdamW) and where LAWN adds to decay (LAWN-AdamW beats AdamW)."""
  names = {"higher": "higher", "lower": "lower",
           "no difference": "no difference",
           "unstable": "unstable (the studies disagree)"}
  sentences = []
  for a, b in _pairs(cells):
    by = [f"{names[v]} at {', '.join(w)}" for v in names
          if (w := _where(cells, a, b, lambda c, cell, v=v:
                          c["verdict"] == v))]
    sentences.append(f"{a} − {b}: " + "; ".join(by))
  def stands_in(c, cell):
    w = _comparison(cell, "lawn-adam", "adamw")
    return c["verdict"] == "higher" and w is not None and (
        w["verdict"] == "no difference")
  sentences.append("LAWN-Adam stands in for AdamW's decay (beats Adam, no "
                   "difference to AdamW) at " + (", ".join(_where(
                       cells, "lawn-adam", "adam", stands_in)) or "no cell"))
  if ("lawn-adamw", "adamw") in _pairs(cells):
    sentences.append("LAWN adds to decay (LAWN-AdamW beats AdamW) at " + (
        ", ".join(_where(cells, "lawn-adamw", "adamw",
                         lambda c, cell: c["verdict"] == "higher"))
        or "no cell"))
  return ("**Reading, from these cells only** (difference in points; ✓ in "
          "the small-loss regime). " + ". ".join(sentences) + ".")


def regime_figure(cells: Sequence[dict[str, Any]], path: str) -> str:
  """Heat maps (batch size × steps), one per LAWN pair, on one colour
  scale: colour the mean difference in points, text the difference, the
  verdict and Adam's final train loss L."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  pairs = _pairs(cells)
  batches = sorted({c["batch_size"] for c in cells})
  steps = sorted({c["steps_target"] for c in cells})
  # One colour scale for every panel, three panels a row.
  lim = max([1.0] + [abs(100 * c["mean"]) for cell in cells
                     for c in cell["comparisons"]])
  cols = min(3, len(pairs))
  rows = -(-len(pairs) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows),
                           squeeze=False)
  for ax in axes.flat[len(pairs):]:
    ax.axis("off")
  for ax, (a, b) in zip(axes.flat, pairs):
    grid = np.full((len(batches), len(steps)), np.nan)
    for cell in cells:
      c = _comparison(cell, a, b)
      if c is None:
        continue
      i, j = batches.index(cell["batch_size"]), steps.index(
          cell["steps_target"])
      grid[i, j] = 100 * c["mean"]
      loss = regime_loss(cell)
      ax.text(j, i, f"{100 * c['mean']:+.1f}\n{c['verdict']}\nL {loss:.2g}",
              ha="center", va="center", fontsize=7,
              color="white" if abs(100 * c["mean"]) > lim / 2 else "black")
    ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim, origin="lower",
              aspect="auto")
    ax.set_xticks(range(len(steps)), [str(s) for s in steps])
    ax.set_yticks(range(len(batches)), [str(x) for x in batches])
    ax.set_xlabel("steps (target)")
    ax.set_ylabel("batch size")
    ax.set_title(f"{a} − {b} (points; blue: {a} better)", fontsize=9)
  _save(fig, path, 110)
  return path
