"""Exact vs lazy retraction: test accuracy, paired by seed.

    python -m benchmarks.retraction [--batch-sizes 512 2048] [--seeds 0 1 2 3 4]

LAWN-Adam on MNIST-1D (the generalization benchmark's task and MLP), one
fixed configuration for both modes (learning rate, free fraction), the same
seeds (same init and data order): the per-seed difference lazy - exact with
its 95% t-interval. Results go to ``--out`` (default ``~/lawn_optax_results``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from benchmarks import common, generalization, protocol


def spec(lr: float, free_frac: float) -> generalization.OptSpec:
  return generalization.OptSpec("adam", {"lr": [lr], "free_frac": [free_frac],
                                         "lawn": [1.0]})


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--batch-sizes", nargs="+", type=int, default=[512, 2048])
  ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
  ap.add_argument("--epochs", type=int, default=100)
  ap.add_argument("--lr", type=float, default=3e-3)
  ap.add_argument("--free-frac", type=float, default=0.2)
  ap.add_argument("--schedule", choices=["cosine", "constant"],
                  default="constant", help="constant: as the committed run")
  ap.add_argument("--out", default=str(common.DEFAULT_OUT))
  args = ap.parse_args(argv)
  task = generalization.make_task("mnist1d", (128, 128))
  rows = []
  for batch in args.batch_sizes:
    cells = {mode: generalization.run_cell(
        task, spec(args.lr, args.free_frac), batch, args.epochs, args.seeds,
        args.schedule, retraction=mode) for mode in ("exact", "lazy")}
    d = protocol.paired_interval(cells["lazy"]["test"], cells["exact"]["test"])
    mean, lo_, hi = d["mean"], d["low"], d["high"]
    rows.append({"batch_size": batch, "exact": cells["exact"]["test"],
                 "lazy": cells["lazy"]["test"],
                 "diff_mean": mean, "diff_ci95": [lo_, hi],
                 "final_train_loss": {m: c["curves_selected"]["train_loss"][-1]
                                      for m, c in cells.items()},
                 "seconds": {m: c["seconds"] for m, c in cells.items()}})
    print(f"B={batch}: exact {100 * np.mean(cells['exact']['test']):.2f} %, "
          f"lazy {100 * np.mean(cells['lazy']['test']):.2f} %, lazy - exact "
          f"{100 * mean:+.2f} points, 95% CI [{100 * lo_:+.2f}, "
          f"{100 * hi:+.2f}]")
  payload = {"environment": common.environment(), "task": "mnist1d MLP 2x128",
             "optimizer": "lawn-adam", "lr": args.lr,
             "free_frac": args.free_frac, "epochs": args.epochs,
             "schedule": args.schedule,
             "seeds": args.seeds, "rows": rows}
  path = common.write_json("retraction_mnist1d", payload, Path(args.out))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
