"""What LAWN buys: test metric vs batch size, base optimizers with and without LAWN.

    python -m benchmarks.generalization            # --quick: MNIST-1D, ~5 min on 2 CPU cores
    python -m benchmarks.generalization --full     # every optimizer, wide batch sweep (GPU)
    python -m benchmarks.generalization --dataset fashion_mnist|movielens|digits

Protocol (per dataset, optimizer and batch size = one *cell*):
  * the same epoch budget at every batch size;
  * a validation split is carved from the training set; every hyper-parameter
    configuration (learning rate; weight decay for AdamW; LAWN's free fraction)
    is trained on the rest, for every seed, all configurations and seeds
    ``vmap``-ed into one jitted ``lax.scan``;
  * the configuration with the best mean validation metric is selected, and
    its test metric is reported as mean +- std over seeds (test is never used
    to choose anything).
Outputs: ``results/generalization_<dataset>.json`` (with command, git commit,
seeds, versions), a Markdown table, and plots (metric vs batch size; weight
and logit norms over training for the selected configurations).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lawn_optax as lo
from benchmarks import common, data, models

# ----------------------------------------------------------------------------
# Tasks: a model, its loss on a batch of training indices, its eval metrics.


class Task(NamedTuple):
  name: str
  metric: str                      # the selection metric, higher is better
  num_train: int
  init: Callable[[jax.Array], Any]
  loss: Callable[[Any, jax.Array, jax.Array], jax.Array]  # params, idx, key
  evaluate: Callable[[Any], dict[str, jax.Array]]         # val_/test_ metrics
  diagnostics: Callable[[Any], dict[str, jax.Array]]      # logged per epoch
  mask: Any                                               # LAWN mask
  head: tuple[str, ...]                                   # path of final kernel


def _split_val(x, y, fraction, seed=0):
  order = np.random.default_rng(seed).permutation(len(y))
  n_val = int(len(y) * fraction)
  v, t = order[:n_val], order[n_val:]
  return (x[t], y[t]), (x[v], y[v])


def classification_task(name: str, ds: data.Classification,
                        hidden: tuple[int, ...], val_fraction: float = 0.2,
                        max_train: int | None = None) -> Task:
  (xtr, ytr), (xva, yva) = _split_val(ds.x, ds.y, val_fraction)
  if max_train:
    xtr, ytr = xtr[:max_train], ytr[:max_train]
  xtr, ytr, xva, yva, xte, yte = map(jnp.asarray, (xtr, ytr, xva, yva,
                                                   ds.x_test, ds.y_test))
  model = models.MLP(hidden, ds.num_classes)
  params0 = model.init(jax.random.key(0), xtr[:1])["params"]
  probe = xtr[:512]

  def loss(params, idx, key):
    del key
    logits = model.apply({"params": params}, xtr[idx])
    return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                           ytr[idx]).mean()

  def accuracy(params, x, y):
    return jnp.mean(model.apply({"params": params}, x).argmax(-1) == y)

  def evaluate(params):
    return {"val_accuracy": accuracy(params, xva, yva),
            "test_accuracy": accuracy(params, xte, yte),
            "train_accuracy": accuracy(params, xtr, ytr)}

  def diagnostics(params):
    logits = model.apply({"params": params}, probe)
    return {
        "train_loss": optax.softmax_cross_entropy_with_integer_labels(
            logits, ytr[:512]).mean(),
        "logit_norm": jnp.mean(jnp.linalg.norm(logits, axis=-1)),
        "head_norm": jnp.linalg.norm(params[f"Dense_{len(hidden)}"]["kernel"]),
    }

  return Task(name, "accuracy", int(xtr.shape[0]),
              lambda key: model.init(key, xtr[:1])["params"], loss, evaluate,
              diagnostics, lo.masks.kernels(params0),
              (f"Dense_{len(hidden)}", "kernel"))


def hit_rate_ndcg(scores: jax.Array, k: int = 10) -> tuple[jax.Array, jax.Array]:
  """HR@k and NDCG@k when column 0 of ``scores`` is the held-out positive.

  The positive's rank counts every candidate not scored strictly below it:
  ties and NaNs count against the model, so a collapsed (constant) or
  diverged model scores 0, not 1.
  """
  rank = jnp.sum(~(scores[:, 1:] < scores[:, :1]), axis=1)
  hit = rank < k
  return jnp.mean(hit), jnp.mean(jnp.where(hit, 1 / jnp.log2(rank + 2.0), 0.0))


def recommender_task(split: data.LeaveOneOut, dim: int = 32) -> Task:
  """NCF on implicit feedback: each positive pairs with one fresh random
  negative per step; HR@10 and NDCG@10 against 99 sampled negatives."""
  model = models.NCF(split.num_users, split.num_items, dim)
  users, items = jnp.asarray(split.train_user), jnp.asarray(split.train_item)
  val, test = jnp.asarray(split.val), jnp.asarray(split.test)
  eval_users = jnp.asarray(split.eval_users)
  params0 = model.init(jax.random.key(0), users[:1], items[:1])["params"]
  # Kernels of the MLP tower and output layer; embedding tables stay free.
  mask = lo.masks.kernels(params0)

  def loss(params, idx, key):
    u = users[idx]
    neg = jax.random.randint(key, idx.shape, 0, split.num_items)
    logits = model.apply({"params": params}, jnp.concatenate([u, u]),
                         jnp.concatenate([items[idx], neg]))
    labels = jnp.concatenate([jnp.ones_like(idx), jnp.zeros_like(idx)])
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean()

  def evaluate(params):
    out = {}
    for name, cand in (("val", val), ("test", test)):
      u = jnp.broadcast_to(eval_users[:, None], cand.shape)
      scores = model.apply({"params": params}, u.ravel(),
                           cand.ravel()).reshape(cand.shape)
      hr, ndcg = hit_rate_ndcg(scores, 10)
      out[f"{name}_hr10"], out[f"{name}_ndcg10"] = hr, ndcg
    return out

  def diagnostics(params):
    s = model.apply({"params": params}, users[:512], items[:512])
    return {"train_loss": optax.sigmoid_binary_cross_entropy(
        s, jnp.ones_like(s)).mean(), "logit_norm": jnp.mean(jnp.abs(s)),
            "head_norm": jnp.linalg.norm(params["Dense_3"]["kernel"])}

  return Task("movielens", "hr10", int(users.shape[0]),
              lambda key: model.init(key, users[:1], items[:1])["params"],
              loss, evaluate, diagnostics, mask, ("Dense_3", "kernel"))


# ----------------------------------------------------------------------------
# Optimizers: base and LAWN variants, each with its tuning grid.


class OptSpec(NamedTuple):
  grid: dict[str, list[float]]  # hyper-parameter -> candidate values
  build: Callable[[dict[str, jax.Array], Any, int], optax.GradientTransformation]


def _base(name, lr, wd=None):
  if name == "sgdm":
    return optax.sgd(lr, momentum=0.9)
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  if name == "lamb":
    return optax.lamb(lr, weight_decay=0.0)
  raise ValueError(name)


LR_GRID = {"sgdm": [0.01, 0.03, 0.1], "adam": [1e-3, 3e-3, 1e-2],
           "adamw": [1e-3, 3e-3, 1e-2], "lamb": [1e-3, 3e-3, 1e-2]}
WD_GRID = [1e-4, 1e-3, 1e-2]
FREE_GRID = [0.2, 0.5]  # fraction of the total steps spent free


def optimizer_specs(names, lr_grid=None, free_grid=None, wd_grid=None,
                    tangent=False, granularity="tensor"):
  lr_grid = lr_grid or LR_GRID
  specs = {}
  for name in names:
    base = name.removeprefix("lawn-")
    grid = {"lr": lr_grid[base]}
    if name.startswith("lawn-"):
      grid["free_frac"] = free_grid or FREE_GRID

      def build(hp, mask, total, base=base):
        free = jnp.round(hp["free_frac"] * total).astype(jnp.int32)
        return lo.lawn(_base(base, hp["lr"]), free_steps=free, mask=mask,
                       tangent_projection=tangent, granularity=granularity)
    else:
      if base == "adamw":
        grid["wd"] = wd_grid or WD_GRID
      build = lambda hp, mask, total, base=base: _base(base, hp["lr"],
                                                       hp.get("wd"))
    specs[name] = OptSpec(grid, build)
  return specs


# ----------------------------------------------------------------------------
# Training: all configurations x seeds of one cell in one jitted program.


def _grid_points(grid):
  keys = list(grid)
  points = list(itertools.product(*(grid[k] for k in keys)))
  return keys, points


def run_cell(task: Task, spec: OptSpec, batch: int, epochs: int,
             seeds: list[int]):
  keys, points = _grid_points(spec.grid)
  hps = {k: jnp.asarray([p[i] for p in points], jnp.float32)
         for i, k in enumerate(keys)}
  steps_per_epoch = max(task.num_train // batch, 1)
  batch = min(batch, task.num_train)
  total = steps_per_epoch * epochs

  def one(hp, seed):
    key = jax.random.key(seed)
    k_init, k_data = jax.random.split(key)
    params = task.init(k_init)
    tx = spec.build(hp, task.mask, total)
    state = tx.init(params)

    def epoch(carry, ekey):
      perm = jax.random.permutation(ekey, task.num_train)

      def step(carry, i):
        params, state = carry
        idx = jax.lax.dynamic_slice(perm, (i * batch,), (batch,))
        g = jax.grad(task.loss)(params, idx, jax.random.fold_in(ekey, i))
        u, state = tx.update(g, state, params)
        return (optax.apply_updates(params, u), state), None

      carry, _ = jax.lax.scan(step, carry, jnp.arange(steps_per_epoch))
      return carry, task.diagnostics(carry[0])

    (params, _), logs = jax.lax.scan(epoch, (params, state),
                                     jax.random.split(k_data, epochs))
    return task.evaluate(params), logs

  fn = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, None)))
  t0 = time.perf_counter()
  metrics, logs = jax.block_until_ready(fn(hps, jnp.asarray(seeds)))
  seconds = time.perf_counter() - t0
  metrics = jax.tree.map(np.asarray, metrics)   # [configs, seeds]
  logs = jax.tree.map(np.asarray, logs)         # [configs, seeds, epochs]
  sel_key, test_key = f"val_{task.metric}", f"test_{task.metric}"
  best = int(np.argmax(metrics[sel_key].mean(axis=1)))
  return {
      "batch_size": batch, "epochs": epochs, "steps": total,
      "grid": {k: [float(p[i]) for p in points] for i, k in enumerate(keys)},
      "selected": {k: float(points[best][i]) for i, k in enumerate(keys)},
      "val_mean_per_config": metrics[sel_key].mean(axis=1).tolist(),
      "test_mean_per_config": metrics[test_key].mean(axis=1).tolist(),
      "test": metrics[test_key][best].tolist(),
      "test_mean": float(metrics[test_key][best].mean()),
      "test_std": float(metrics[test_key][best].std(ddof=1)) if len(seeds) > 1
      else 0.0,
      "all_metrics_selected": {k: v[best].tolist() for k, v in metrics.items()},
      "curves_selected": {k: v[best].mean(axis=0).tolist()
                          for k, v in logs.items()},
      "seconds": seconds,
  }


# ----------------------------------------------------------------------------
# Reporting.


def markdown_table(results: dict[str, Any], metric: str) -> str:
  names = list(results["cells"])
  batches = sorted({c["batch_size"] for n in names
                    for c in results["cells"][n]})
  head = "| optimizer | " + " | ".join(f"B={b}" for b in batches) + " |"
  lines = [head, "|" + "---|" * (len(batches) + 1)]
  for n in names:
    by_b = {c["batch_size"]: c for c in results["cells"][n]}
    row = [f"{100 * by_b[b]['test_mean']:.1f} ± {100 * by_b[b]['test_std']:.1f}"
           if b in by_b else "" for b in batches]
    lines.append(f"| {n} | " + " | ".join(row) + " |")
  lines.append("")
  lines.append(f"Test {metric} (%), mean ± std over seeds "
               f"{results['seeds']}, hyper-parameters chosen on validation.")
  lawn_rows = []
  for n in names:
    if n.startswith("lawn-") and n.removeprefix("lawn-") in results["cells"]:
      base = {c["batch_size"]: c for c in results["cells"][n.removeprefix(
          "lawn-")]}
      for c in results["cells"][n]:
        b = base.get(c["batch_size"])
        if b:
          d = 100 * (c["test_mean"] - b["test_mean"])
          pooled = 100 * np.sqrt((c["test_std"]**2 + b["test_std"]**2) / 2)
          lawn_rows.append(f"| {n} vs {n.removeprefix('lawn-')} | "
                           f"{c['batch_size']} | {d:+.2f} | {pooled:.2f} |")
  if lawn_rows:
    lines += ["", "| comparison | batch | Δ test (points) | pooled std |",
              "|---|---|---|---|", *lawn_rows]
  return "\n".join(lines)


def plot(results: dict[str, Any], path_prefix: str) -> list[str]:
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
  fig.tight_layout()
  out = [f"{path_prefix}_metric_vs_batch.png"]
  fig.savefig(out[0], dpi=120)
  plt.close(fig)

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
    if n.startswith("lawn-"):
      freeze = cell["selected"]["free_frac"] * cell["epochs"]
      for ax in axes:
        ax.axvline(freeze, color=f"C{base_i}", ls=":", lw=1)
  for ax, title in zip(axes, ("train loss", "mean logit norm",
                              "final-layer kernel norm")):
    ax.set_title(title)
    ax.set_xlabel("epoch")
  axes[0].set_yscale("log")
  axes[0].legend(fontsize=7)
  fig.suptitle(f"{results['dataset']}, batch {biggest}: freeze points dotted")
  fig.tight_layout()
  out.append(f"{path_prefix}_norms.png")
  fig.savefig(out[1], dpi=120)
  plt.close(fig)
  return out


# ----------------------------------------------------------------------------

PRESETS = {
    "quick": dict(dataset="mnist1d", optimizers=["adam", "lawn-adam", "sgdm",
                                                 "lawn-sgdm"],
                  batch_sizes=[32, 512, 4000], epochs=100, seeds=[0, 1, 2],
                  hidden=(128, 128)),
    "full": dict(dataset="mnist1d", optimizers=[
        "sgdm", "lawn-sgdm", "adam", "lawn-adam", "adamw", "lamb", "lawn-lamb"],
                 batch_sizes=[128, 512, 2048, 8192], epochs=300,
                 seeds=[0, 1, 2, 3, 4], hidden=(256, 256)),
}


def make_task(dataset: str, hidden, max_train=None) -> Task:
  if dataset == "mnist1d":
    return classification_task("mnist1d", data.mnist1d(num_samples=12500),
                               hidden, max_train=max_train)
  if dataset == "digits":
    return classification_task("digits", data.digits(), hidden,
                               max_train=max_train)
  if dataset == "fashion_mnist":
    return classification_task("fashion_mnist", data.fashion_mnist(), hidden,
                               val_fraction=1 / 6, max_train=max_train)
  if dataset == "movielens":
    return recommender_task(data.leave_one_out(data.movielens()))
  raise ValueError(f"unknown dataset {dataset!r}")


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="default; CPU-sized")
  mode.add_argument("--full", action="store_true", help="GPU-sized sweep")
  p.add_argument("--dataset", choices=["mnist1d", "digits", "fashion_mnist",
                                       "movielens"])
  p.add_argument("--optimizers", nargs="+")
  p.add_argument("--batch-sizes", nargs="+", type=int)
  p.add_argument("--epochs", type=int)
  p.add_argument("--seeds", nargs="+", type=int)
  p.add_argument("--max-train", type=int, help="subsample the training set")
  p.add_argument("--tangent", action="store_true",
                 help="LAWN with tangent projection")
  p.add_argument("--free-grid", nargs="+", type=float,
                 help=f"LAWN free fractions tried (default {FREE_GRID})")
  p.add_argument("--granularity", choices=["tensor", "unit"],
                 default="tensor", help="LAWN's norm granularity")
  p.add_argument("--out", default=str(common.DEFAULT_OUT),
                 help="output folder (default ~/lawn_optax_results; "
                      "benchmarks/results holds the committed runs)")
  p.add_argument("--tag", default="", help="suffix for output file names")
  args = p.parse_args(argv)
  cfg = dict(PRESETS["full" if args.full else "quick"])
  for k in ("dataset", "optimizers", "batch_sizes", "epochs", "seeds"):
    if getattr(args, k) is not None:
      cfg[k] = getattr(args, k)
  from tqdm import tqdm

  task = make_task(cfg["dataset"], tuple(cfg["hidden"]), args.max_train)
  specs = optimizer_specs(cfg["optimizers"], tangent=args.tangent,
                          granularity=args.granularity,
                          free_grid=args.free_grid)
  results = {"dataset": task.name, "metric": task.metric,
             "mode": "full" if args.full else "quick",
             "num_train": task.num_train, "seeds": cfg["seeds"],
             "epochs": cfg["epochs"], "tangent_projection": args.tangent,
             "granularity": args.granularity,
             "environment": common.environment(), "cells": {}}
  cells = [(n, b) for n in cfg["optimizers"] for b in cfg["batch_sizes"]]
  bar = tqdm(cells, desc="cells")
  for name, batch in bar:
    bar.set_postfix_str(f"{name} B={batch}")
    results["cells"].setdefault(name, []).append(
        run_cell(task, specs[name], batch, cfg["epochs"], cfg["seeds"]))
  name = f"generalization_{task.name}{args.tag}"
  from pathlib import Path
  out_dir = Path(args.out)
  path = common.write_json(name, results, out_dir)
  table = markdown_table(results, task.metric)
  (out_dir / f"{name}.md").write_text(table + "\n")
  pngs = plot(results, str(out_dir / name))
  print(table)
  print(f"\nwrote {path}, {out_dir / (name + '.md')}, {', '.join(pngs)}")
  return results


if __name__ == "__main__":
  main()
