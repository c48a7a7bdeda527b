"""Exact vs lazy retraction: test accuracy, paired by seed.

    python -m benchmarks.retraction            # at the protocol's choices
    python -m benchmarks.retraction --lr 3e-3 --free-frac 0.2 --from none

LAWN-Adam on MNIST-1D (the generalization benchmark's task and MLP). By
default each batch size runs at the configuration the comparison protocol
selected for LAWN-Adam in ``benchmarks/results/generalization_mnist1d.json``
(learning rate, free fraction, epochs, warmup + cosine schedule), so the
ablation is made where the main table's LAWN-Adam numbers come from; both
modes use it and the same seeds (same init and data order): the per-seed
difference lazy - exact with its 95% t-interval. Results go to ``--out``
(default ``~/lawn_optax_results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import common, generalization, protocol


def spec(lr: float, free_frac: float) -> generalization.OptSpec:
  return generalization.OptSpec("adam", {"lr": [lr], "free_frac": [free_frac],
                                         "lawn": [1.0]})


def _protocol_choices(path: Path) -> dict[int, dict]:
  """Batch size -> LAWN-Adam's selected configuration in a results file."""
  import json
  results = json.loads(path.read_text())
  # "selected": the configuration chosen on every seed's validation metric.
  return {c["batch_size"]: {"lr": c["selected"]["lr"],
                            "free_frac": c["selected"]["free_frac"],
                            "epochs": c["epochs"],
                            "schedule": results["schedule"]}
          for c in results["cells"]["lawn-adam"]}


def main(argv=None):
  common.pin_cpu_threads()  # the same bits on any machine (common.py)
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--from", dest="source",
                  default=str(common.RESULTS / "generalization_mnist1d.json"),
                  help="results whose LAWN-Adam choices to use, or 'none' "
                       "for the fixed --lr/--free-frac/--epochs")
  ap.add_argument("--batch-sizes", nargs="+", type=int,
                  help="default: those of --from (512 2048 without it)")
  ap.add_argument("--seeds", nargs="+", type=int,
                  default=list(range(8)))
  ap.add_argument("--epochs", type=int, default=100)
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--free-frac", type=float, default=0.2)
  ap.add_argument("--schedule", choices=["cosine", "constant"],
                  default="cosine")
  ap.add_argument("--out", default=str(common.DEFAULT_OUT))
  args = ap.parse_args(argv)
  fixed = {"lr": args.lr, "free_frac": args.free_frac,
           "epochs": args.epochs, "schedule": args.schedule}
  choices = ({} if args.source == "none"
             else _protocol_choices(Path(args.source)))
  batches = args.batch_sizes or sorted(choices) or [512, 2048]
  task = generalization.make_task("mnist1d", (128, 128))
  rows = []
  for batch in batches:
    cfg = choices.get(batch, fixed)
    cells = {mode: generalization.run_cell(
        task, spec(cfg["lr"], cfg["free_frac"]), batch, cfg["epochs"],
        args.seeds, cfg["schedule"], retraction=mode)
             for mode in ("exact", "lazy")}
    d = protocol.paired_interval(cells["lazy"]["test"], cells["exact"]["test"])
    mean, lo_, hi = d["mean"], d["low"], d["high"]
    rows.append({"batch_size": batch, "config": cfg,
                 "config_source": args.source if batch in choices else
                 "fixed flags",
                 "exact": cells["exact"]["test"],
                 "lazy": cells["lazy"]["test"],
                 "diff_mean": mean, "diff_ci95": [lo_, hi],
                 "final_train_loss": {m: c["curves_selected"]["train_loss"][-1]
                                      for m, c in cells.items()},
                 "final_logit_norm": {m: c["curves_selected"]["logit_norm"][-1]
                                      for m, c in cells.items()},
                 "seconds": {m: c["seconds"] for m, c in cells.items()}})
    print(f"B={batch} ({cfg}): exact "
          f"{100 * np.mean(cells['exact']['test']):.2f} %, lazy "
          f"{100 * np.mean(cells['lazy']['test']):.2f} %, lazy - exact "
          f"{100 * mean:+.2f} points, 95% CI [{100 * lo_:+.2f}, "
          f"{100 * hi:+.2f}]")
  payload = {"environment": common.environment(), "task": "mnist1d MLP 2x128",
             "optimizer": "lawn-adam", "seeds": args.seeds, "rows": rows,
             "note": "one configuration per batch size for both modes (the "
                     "protocol's LAWN-Adam choice unless config_source says "
                     "otherwise); differences lazy - exact paired by seed."}
  payload.update(common.provenance_of_code())
  path = common.write_json("retraction_mnist1d", payload, Path(args.out))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
