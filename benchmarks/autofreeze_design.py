"""``free_steps="auto"``'s default threshold, judged on design data only.

    python -m benchmarks.generalization --preset mnist1d \\
        --optimizers lawn-adam lawn-adam-auto --batch-sizes 64 \\
        --seeds 100 101 102 103 104 105 106 107 \\
        --out benchmarks/results/design --tag _design_b64
    python -m benchmarks.autofreeze_design \\
        benchmarks/results/design/generalization_*.json

A generalization run that tunes ``lawn-adam-auto`` (learning rate x the
rule's threshold) beside ``lawn-adam`` (learning rate x free fraction) holds
every configuration on every seed, so any fixed threshold can be read from
it as "auto at that default": the threshold's learning rates alone (a third
of the budget, as the tables report the shipped default), each study
selecting on its own seeds, against LAWN with its free fraction tuned, paired
by seed (:func:`benchmarks.protocol.subset_report`). A default *does not
lose* where no cell's verdict is ``lower``.

The runs use seeds 100 and up: the tables' seeds (0-7) never inform the
default. Output: a table on stdout, and ``--out``'s JSON (the inputs' names,
commands and code hashes, every threshold's comparison in every cell).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import generalization, protocol

AUTO, TUNED = "lawn-adam-auto", "lawn-adam"
DESIGN_SEEDS_FROM = 100   # the tables use seeds 0-7


def tuning_of_cell(results: dict[str, Any], index: int,
                   methods: tuple[str, ...] = (AUTO, TUNED)
                   ) -> protocol.Tuning:
  """The :class:`benchmarks.protocol.Tuning` behind cell ``index`` (one
  batch size) of a generalization results file, for ``methods``: every
  configuration's metrics on every seed, the grids as they were before any
  extension (the selection rule's tie-break reads their middle)."""
  grids = {m: g for family in generalization.method_grids(list(methods))
           .values() for m, g in family.items()}
  configs, metrics, outputs, extensions = {}, {}, {}, {}
  for m in methods:
    cell = results["cells"][m][index]
    knob, fixed = grids[m].knob, grids[m].fixed
    lrs, knobs = cell["grid"]["lr"], cell["grid"][knob]
    configs[m] = [{"lr": lr, knob: k, **fixed} for lr, k in zip(lrs, knobs)]
    metrics[m] = cell["per_config"]
    outputs[m] = [[{} for _ in cell["seeds"]] for _ in configs[m]]
    extensions[m] = cell["extensions"]
  studies = [{"selection_seeds": s["selection_seeds"],
              "report_seeds": s["report_seeds"]} for s in results["studies"]]
  return protocol.Tuning(grids, configs, metrics, outputs, extensions,
                         list(results["seeds"]), studies,
                         f"val_{results['metric']}", True)


def threshold_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Per cell and per threshold on the auto grid: auto at that threshold
  (learning rates only) minus LAWN with its free fraction tuned."""
  rows = []
  metric = f"test_{results['metric']}"
  for index, cell in enumerate(results["cells"][AUTO]):
    t = tuning_of_cell(results, index)
    for threshold in sorted(set(cell["grid"]["auto_threshold"])):
      name = f"auto@{threshold:g}"
      record, comps = protocol.subset_report(t, AUTO, threshold, name,
                                             metric, (), (TUNED,))
      c = comps[0]
      rows.append({
          "dataset": results["dataset"], "batch_size": cell["batch_size"],
          "steps": cell["steps"], "threshold": threshold,
          "selected_lrs": [s["selected"]["lr"] for s in record["studies"]],
          "mean": c["mean"], "low": c["low"], "high": c["high"],
          "verdict": c["verdict"],
          "studies": [s["verdict"] for s in c["studies"]]})
  return rows


def check_design_seeds(results: dict[str, Any], path: str) -> None:
  low = min(results["seeds"])
  if low < DESIGN_SEEDS_FROM:
    raise ValueError(f"{path}: seeds {results['seeds']} include the tables' "
                     f"seeds (below {DESIGN_SEEDS_FROM}); a default is "
                     "designed on seeds >= 100 only")


def table(rows: list[dict[str, Any]], scale: float = 100.0) -> str:
  head = ("| dataset | batch | steps | threshold | auto − tuned LAWN (points) "
          "| verdict (studies) | lrs chosen |\n|---|---|---|---|---|---|---|")
  lines = [head]
  for r in rows:
    lines.append(
        f"| {r['dataset']} | {r['batch_size']} | {r['steps']} | "
        f"{r['threshold']:g} | {scale * r['mean']:+.2f} "
        f"[{scale * r['low']:+.2f}, {scale * r['high']:+.2f}] | "
        f"{r['verdict']} ({', '.join(r['studies'])}) | "
        f"{', '.join(f'{lr:g}' for lr in r['selected_lrs'])} |")
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("results", nargs="+", help="generalization JSON files run "
                 "on design seeds with lawn-adam and lawn-adam-auto")
  p.add_argument("--out", help="write the comparison here (JSON)")
  args = p.parse_args(argv)
  rows, inputs = [], []
  for path in args.results:
    results = json.loads(Path(path).read_text())
    check_design_seeds(results, path)
    rows += threshold_rows(results)
    inputs.append({"file": Path(path).name,
                   "command": results["environment"]["command"],
                   "git_commit": results["environment"]["git_commit"],
                   "code_hash": results.get("code_hash")})
  print(table(rows))
  out = {"inputs": inputs, "rows": rows,
         "rule": "a default does not lose where no cell's verdict is "
                 "'lower'"}
  if args.out:
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
  return out


if __name__ == "__main__":
  main()
