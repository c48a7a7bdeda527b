"""The regime map: LAWN against Adam and AdamW by batch size and training length.

The papers claim that LAWN helps most at large batch sizes, once the
training loss is small and the logits grow. Every cell of the other tables
stops at a length set in epochs; this map sets it in **steps**, so that each
batch size is seen from "stopped early" to "trained into the small-loss
regime", and prints, beside each verdict, the final train loss of the
selected Adam configuration (the regime the cell is in).

Each (batch size, steps) cell runs the tables' protocol
(:mod:`benchmarks.protocol`: 6 log-spaced learning rates, grids extended
while a choice sits at an edge, every configuration on 8 seeds, 4 studies,
the verdict rule) with each method's second hyper-parameter fixed at one
value, the same rule for every method (a sensitivity study's budget, said in
the JSON): ``DEFAULT_KNOBS``. A length in steps is rounded to whole epochs
(``epochs_for``); the JSON records the steps run.

``python -m benchmarks.regime --batch-sizes 2048 --steps 1600`` runs one
cell; the JSON is written after every cell (``"complete": false`` until the
last), so a map can be built by several commands, each under 40 minutes on
2 cores, with ``--tag``. ``--preset fashion``: the same question on a second
task (Fashion-MNIST, 8,192 training images, batch 512, 400, 1,600 and 3,200
steps, 37 min on one core).
``--tiny``: the same code on scikit-learn's digits at toy sizes (CI).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks import common, generalization, protocol, tables

# Each method's second axis, fixed for the map: the optimizer's documented
# default where it has one (Adam's b2), else the middle of the tables' grid
# (AdamW's decay 0.1 x lr, LAWN's free fraction 0.5, the auto rule's
# threshold at lo.AutoFreeze's default).
DEFAULT_KNOBS = {"adam": 0.999, "adamw": 0.1, "lawn-adam": 0.5,
                 "lawn-adamw": 0.1,
                 "lawn-adam-auto": generalization.HP_AUTO_DEFAULT}
PRESETS: dict[str, dict[str, Any]] = {
    "mnist1d": dict(dataset="mnist1d", hidden=(128, 128),
                    optimizers=["adam", "adamw", "lawn-adam", "lawn-adamw",
                                "lawn-adam-auto"],
                    batch_sizes=[64, 512, 2048], steps=[100, 400, 1600],
                    seeds=generalization.SEEDS, studies=4),
    # The second task: 8,192 Fashion-MNIST training images (validation and
    # test in full), one hidden layer, batch 512. On 2,048 images (400 or
    # 800 steps) validation was flat over the learning rates and the
    # studies selected small ones, out of the regime (train loss 0.11-0.12);
    # on 8,192, with its b2 tuned, Adam reached 0.01 in 1,600 steps (a
    # full-protocol run, 47 min on one core: over the map's sizing); with
    # b2 fixed at 0.999, as here, the selected Adam ends at 0.066 after
    # 1,600 steps and at 0.002 after 3,200: the length that reaches the
    # regime within the map's sizing.
    "fashion": dict(dataset="fashion_mnist", hidden=(128,), max_train=8192,
                    optimizers=["adam", "adamw", "lawn-adam"],
                    batch_sizes=[512], steps=[400, 1600, 3200],
                    seeds=generalization.SEEDS, studies=4),
    "tiny": dict(dataset="digits", hidden=(32,),
                 optimizers=["adam", "lawn-adam"], batch_sizes=[64, 512],
                 steps=[36], seeds=[0, 1, 2, 3], studies=2),
}


def epochs_for(steps: int, num_train: int, batch: int) -> int:
  """Whole epochs closest to ``steps`` updates (at least one)."""
  per_epoch = max(num_train // min(batch, num_train), 1)
  return max(1, round(steps / per_epoch))


def run_cell(task: generalization.Task, cfg: dict[str, Any], batch: int,
             steps: int, progress: Any = None) -> dict[str, Any]:
  """One cell of the map: every method under the protocol at ``batch`` for
  about ``steps`` updates."""
  seeds = list(cfg["seeds"])
  studies = protocol.make_studies(seeds, cfg["studies"], 2)
  epochs = epochs_for(steps, task.num_train, batch)
  cells, comps, secs, _ = generalization.protocol_cells(
      task, cfg["optimizers"], batch, epochs, seeds, studies,
      progress=progress, log=lambda line: print(line, flush=True),
      memory_bytes=protocol.memory_limit(),
      knobs={n: DEFAULT_KNOBS[n] for n in cfg["optimizers"]})
  return {"batch_size": min(batch, task.num_train), "steps_target": steps,
          "steps": next(iter(cells.values()))["steps"], "epochs": epochs,
          "methods": cells, "comparisons": comps, "seconds": secs}


def summary(cell: dict[str, Any]) -> str:
  """One line per cell: its length, Adam's train loss, LAWN's verdicts (in
  points of the metric)."""
  head = (f"B={cell['batch_size']}, {cell['steps']} steps "
          f"({cell['epochs']} epochs): adam train loss "
          f"{tables.regime_loss(cell):.3g}")
  parts = [f"{c['a']} - {c['b']} {100 * c['mean']:+.2f} "
           f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}] points "
           f"{c['verdict']}" for c in cell["comparisons"]]
  return "; ".join([head] + parts)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  common.pin_cpu_threads()  # the same bits on any machine (common.py)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--preset", choices=list(PRESETS), default="mnist1d")
  p.add_argument("--tiny", action="store_true", help="--preset tiny")
  p.add_argument("--batch-sizes", nargs="+", type=int)
  p.add_argument("--steps", nargs="+", type=int)
  p.add_argument("--optimizers", nargs="+", choices=sorted(DEFAULT_KNOBS))
  p.add_argument("--out", default=str(common.DEFAULT_OUT))
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)
  preset = "tiny" if args.tiny else args.preset
  cfg = dict(PRESETS[preset])
  for key in ("batch_sizes", "steps", "optimizers"):
    if getattr(args, key):
      cfg[key] = getattr(args, key)
  task = generalization.make_task(cfg["dataset"], cfg["hidden"],
                                  cfg.get("max_train"))
  results: dict[str, Any] = {
      "dataset": task.name, "metric": task.metric, "mode": preset,
      "num_train": task.num_train, "model": f"MLP {list(cfg['hidden'])}",
      "optimizers": cfg["optimizers"], "seeds": list(cfg["seeds"]),
      "fixed_knobs": {n: DEFAULT_KNOBS[n] for n in cfg["optimizers"]},
      "protocol": protocol.PROTOCOL_TEXT, "complete": False,
      "environment": common.environment(), "cells": []}
  out, name = Path(args.out), f"regime_{task.name}{args.tag}"
  print(f"writing to {out / name}.json", flush=True)
  t0 = time.perf_counter()
  for batch in cfg["batch_sizes"]:
    for steps in cfg["steps"]:
      print(f"batch {batch}, about {steps} steps:", flush=True)
      results["cells"].append(run_cell(task, cfg, batch, steps))
      print("  " + summary(results["cells"][-1]), flush=True)
      results["wall_seconds"] = time.perf_counter() - t0
      common.write_json(name, results, out)
  results["complete"] = True
  results.update(common.provenance_of_code())
  path = common.write_json(name, results, out)
  print("\n".join(summary(c) for c in results["cells"]))
  print(f"wrote {path} in {results['wall_seconds']:.0f} s")
  return results


if __name__ == "__main__":
  main()
