"""What LAWN buys: test metric vs batch size, base optimizers with and without LAWN.

    python -m benchmarks.generalization                  # the main job (preset "quick")
    python -m benchmarks.generalization --preset mnist1d # the committed MNIST-1D table
    python -m benchmarks.generalization --preset fashion-cpu|movielens-cpu|mnist1d-sgd-lamb
    python -m benchmarks.generalization --full           # every optimizer, wide batch sweep (GPU)

The main job trains Adam, AdamW and LAWN-Adam on MNIST-1D at batch 2048 under
the comparison protocol (:mod:`benchmarks.protocol`: 18 configurations per
method, every one on 8 seeds, 4 repeated studies), prints its progress, and
writes ``~/lawn_optax_results/generalization_mnist1d_quick.{json,md}`` and
its figures (or ``$LAWN_OPTAX_RESULTS``, or ``--out DIR``). Its committed twin
is ``benchmarks/results/generalization_mnist1d_quick.json``: the same
command gives the same numbers, bit for bit, on any machine with the same
instruction set and versions, since it pins itself to one CPU
(:func:`benchmarks.common.pin_cpu_threads`; checked: a run beside a test
suite at dd0518f and one alone at 16dc40b gave identical per-seed metrics).
About 16 minutes on this project's 2-core CPU (947 s alone; 35 epochs, one
extension round).

Protocol (per dataset and batch size = one *cell*): the same epoch budget at
every batch size; a validation split carved from the training set; every
configuration of every method on every seed, vmapped into one jitted
``lax.scan`` per base optimizer family; studies that each select on their own
seeds' validation metric and report test on the rest, paired by seed.
Outputs: ``generalization_<dataset><tag>.json`` (command, git commit, code
hash, seeds, studies, versions, every configuration's metrics on every
seed), a Markdown table, and figures (metric vs batch size; norms over
training; test metric vs learning rate).
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
from benchmarks import common, data, models, protocol
from benchmarks.protocol import MethodGrid

# ----------------------------------------------------------------------------
# Tasks: a model, its loss on a batch of training indices, its eval metrics.


class Task(NamedTuple):
  """A model and its data. ``state`` is the model's non-trained state
  (BatchNorm statistics; ``()`` for stateless models)."""
  name: str
  metric: str                      # the selection metric, higher is better
  num_train: int
  init: Callable[[jax.Array], tuple[Any, Any]]            # key -> params, state
  loss: Callable[..., tuple[jax.Array, Any]]  # params, state, idx, key -> loss, state
  evaluate: Callable[[Any, Any], dict[str, jax.Array]]    # val_/test_ metrics
  diagnostics: Callable[[Any, Any], dict[str, jax.Array]]  # logged per epoch
  mask: Any                                               # LAWN mask
  head: tuple[str, ...]                                   # path of final kernel
  validate: Callable[[Any, Any], jax.Array]               # val metric only
  decay_mask: Any                                         # leaves decay touches


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

  def loss(params, state, idx, key):
    del key
    logits = model.apply({"params": params}, xtr[idx])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, ytr[idx]).mean(), state

  def accuracy(params, x, y):
    return jnp.mean(model.apply({"params": params}, x).argmax(-1) == y)

  def evaluate(params, state):
    del state
    return {"val_accuracy": accuracy(params, xva, yva),
            "test_accuracy": accuracy(params, xte, yte),
            "train_accuracy": accuracy(params, xtr, ytr)}

  def diagnostics(params, state):
    del state
    logits = model.apply({"params": params}, probe)
    return {
        "train_loss": optax.softmax_cross_entropy_with_integer_labels(
            logits, ytr[:512]).mean(),
        "logit_norm": jnp.mean(jnp.linalg.norm(logits, axis=-1)),
        "head_norm": jnp.linalg.norm(params[f"Dense_{len(hidden)}"]["kernel"]),
    }

  return Task(name, "accuracy", int(xtr.shape[0]),
              lambda key: (model.init(key, xtr[:1])["params"], ()), loss,
              evaluate, diagnostics, lo.masks.kernels(params0),
              (f"Dense_{len(hidden)}", "kernel"),
              lambda params, state: accuracy(params, xva, yva),
              jax.tree.map(lambda _: True, params0))


def cnn_task(name: str, ds: data.Classification,
             widths: tuple[int, ...] = (16, 32, 64),
             image_shape: tuple[int, ...] = (28, 28, 1),
             val_fraction: float = 1 / 6, max_train: int | None = None,
             eval_chunk: int = 500) -> Task:
  """A BatchNorm ResNet (``benchmarks.models.ResNet``): its statistics are
  the task's state. LAWN constrains what ``masks.final_homogeneous`` finds
  after the last BatchNorm (the head; the conv kernels before it are
  scale-invariant, which is WRS's business, not LAWN's)."""
  (xtr, ytr), (xva, yva) = _split_val(ds.x, ds.y, val_fraction)
  if max_train:
    xtr, ytr = xtr[:max_train], ytr[:max_train]
  xtr, ytr, xva, yva, xte, yte = map(jnp.asarray, (xtr, ytr, xva, yva,
                                                   ds.x_test, ds.y_test))
  model = models.ResNet(widths, ds.num_classes, image_shape)
  init = lambda key: model.init(key, xtr[:1], train=False)
  variables = init(jax.random.key(0))
  params0, stats0 = variables["params"], variables["batch_stats"]
  probe = xtr[:512]
  apply = lambda params, stats, x: model.apply(
      {"params": params, "batch_stats": stats}, x, train=False)

  def loss(params, stats, idx, key):
    del key
    logits, new = model.apply({"params": params, "batch_stats": stats},
                              xtr[idx], train=True, mutable=["batch_stats"])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, ytr[idx]).mean(), new["batch_stats"]

  def accuracy(params, stats, x, y):
    # In chunks: a whole test set through a CNN at once, per vmapped run,
    # would not fit in memory.
    n = (len(y) // eval_chunk) * eval_chunk or len(y)
    chunk = min(eval_chunk, n)
    pred = jax.lax.map(lambda xb: apply(params, stats, xb).argmax(-1),
                       x[:n].reshape(n // chunk, chunk, *x.shape[1:]))
    return jnp.mean(pred.reshape(-1) == y[:n])

  def evaluate(params, stats):
    return {"val_accuracy": accuracy(params, stats, xva, yva),
            "test_accuracy": accuracy(params, stats, xte, yte),
            "train_accuracy": accuracy(params, stats, xtr[:10_000],
                                       ytr[:10_000])}

  def diagnostics(params, stats):
    logits = apply(params, stats, probe)
    return {
        "train_loss": optax.softmax_cross_entropy_with_integer_labels(
            logits, ytr[:512]).mean(),
        "logit_norm": jnp.mean(jnp.linalg.norm(logits, axis=-1)),
        "head_norm": jnp.linalg.norm(params["Dense_0"]["kernel"]),
    }

  mask = lo.masks.final_homogeneous(
      lambda p, x: apply(p, stats0, x), params0, xtr[:2])
  return Task(f"{name}_cnn", "accuracy", int(xtr.shape[0]),
              lambda key: (lambda v: (v["params"], v["batch_stats"]))(
                  init(key)), loss, evaluate, diagnostics, mask,
              ("Dense_0", "kernel"),
              lambda params, stats: accuracy(params, stats, xva, yva),
              jax.tree.map(lambda _: True, params0))


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

  def loss(params, state, idx, key):
    u = users[idx]
    neg = jax.random.randint(key, idx.shape, 0, split.num_items)
    logits = model.apply({"params": params}, jnp.concatenate([u, u]),
                         jnp.concatenate([items[idx], neg]))
    labels = jnp.concatenate([jnp.ones_like(idx), jnp.zeros_like(idx)])
    return optax.sigmoid_binary_cross_entropy(logits, labels).mean(), state

  def ranking(params, cand):
    u = jnp.broadcast_to(eval_users[:, None], cand.shape)
    scores = model.apply({"params": params}, u.ravel(),
                         cand.ravel()).reshape(cand.shape)
    return hit_rate_ndcg(scores, 10)

  def evaluate(params, state):
    del state
    out = {}
    for name, cand in (("val", val), ("test", test)):
      out[f"{name}_hr10"], out[f"{name}_ndcg10"] = ranking(params, cand)
    return out

  def diagnostics(params, state):
    del state
    s = model.apply({"params": params}, users[:512], items[:512])
    return {"train_loss": optax.sigmoid_binary_cross_entropy(
        s, jnp.ones_like(s)).mean(), "logit_norm": jnp.mean(jnp.abs(s)),
            "head_norm": jnp.linalg.norm(params["Dense_3"]["kernel"])}

  return Task("movielens", "hr10", int(users.shape[0]),
              lambda key: (model.init(key, users[:1], items[:1])["params"], ()),
              loss, evaluate, diagnostics, mask, ("Dense_3", "kernel"),
              lambda params, state: ranking(params, val)[0],
              jax.tree.map(lambda _: True, params0))


# ----------------------------------------------------------------------------
# Methods: each a base family (one program per family) and its tuning grid.

# name -> (family, second axis, its values, fixed settings, the axis's
# scale for extensions: protocol.KNOB_SCALES). Decoupled decay for the Adam
# family is ``wd * lr`` per step; SGD's is L2 (added to the gradient);
# LAMB's sits inside the trust ratio.
Method = tuple[str, str, tuple[float, ...], dict[str, float], str]
METHODS: dict[str, Method] = {
    "adam": ("adam", "b2", (0.9, 0.99, 0.999), {}, "log1m"),
    "adamw": ("adam", "wd", (0.01, 0.1, 1.0), {}, "log"),
    "lawn-adam": ("adam", "free_frac", (0.25, 0.5, 0.75), {"lawn": 1.0},
                  "logit"),
    # LAWN on AdamW as a user writes it, lo.lawn(optax.adamw(...)): the
    # decay acts on every leaf; after the freeze the retraction restores the
    # constrained norms. (Sparing the constrained leaves instead leaves only
    # the biases to decay in these MLPs, whose kernels are all constrained:
    # a second axis with nothing on it.)
    "lawn-adamw": ("adam", "wd", (0.01, 0.1, 1.0),
                   {"lawn": 1.0, "free_frac": 0.5}, "log"),
    # free_steps="auto": the rule's threshold is its second axis; its
    # default (0.3) in the middle, logit-spaced, so "auto at its default"
    # is a subset.
    "lawn-adam-auto": ("adam", "auto_threshold", (0.1, 0.3, 0.623),
                       {"lawn": 1.0, "auto": 1.0}, "logit"),
    "sgdm": ("sgdm", "momentum", (0.8, 0.9, 0.95), {}, "log1m"),
    "sgdm-wd": ("sgdm", "wd", (1e-4, 1e-3, 1e-2), {}, "log"),
    "lawn-sgdm": ("sgdm", "free_frac", (0.25, 0.5, 0.75), {"lawn": 1.0},
                  "logit"),
    "lamb": ("lamb", "b2", (0.9, 0.99, 0.999), {}, "log1m"),
    "lamb-wd": ("lamb", "wd", (0.01, 0.1, 1.0), {}, "log"),
    "lawn-lamb": ("lamb", "free_frac", (0.25, 0.5, 0.75), {"lawn": 1.0},
                  "logit"),
}
# Centred on the previous protocol runs' choices (Adam family 0.012-0.075,
# SGD-m 0.12-0.75, LAMB 0.005-0.075 across batch sizes), two decades each.
LR_GRIDS = {"adam": protocol.log_grid(1e-3, 1e-1, 6),
            "sgdm": protocol.log_grid(1e-2, 1.0, 6),
            "lamb": protocol.log_grid(1e-3, 1e-1, 6)}
# LAWN against its base and against the decay baseline a user would pick.
PAIRS = [("lawn-adam", "adam"), ("lawn-adam", "adamw"),
         ("lawn-adamw", "adamw"), ("lawn-adam-auto", "lawn-adam"),
         ("lawn-adam-auto", "adam"), ("lawn-adam-auto", "adamw"),
         ("lawn-sgdm", "sgdm"),
         ("lawn-sgdm", "sgdm-wd"), ("lawn-lamb", "lamb"),
         ("lawn-lamb", "lamb-wd")]


def method_grids(names, lr_grids=None, knobs=None
                 ) -> dict[str, dict[str, MethodGrid]]:
  """``{family: {method: grid}}`` for the methods named; ``knobs``
  (``{method: value}``, for every method named or None) fixes each
  method's second axis at one value (a sensitivity study's budget)."""
  unknown = set(names) - set(METHODS)
  if unknown:
    raise ValueError(f"unknown optimizers {sorted(unknown)}; choose from "
                     f"{sorted(METHODS)}")
  out: dict[str, dict[str, MethodGrid]] = {}
  for n in names:
    family, knob, values, fixed, scale = METHODS[n]
    if knobs is not None:
      values = (knobs[n],)
    out.setdefault(family, {})[n] = MethodGrid(
        tuple((lr_grids or LR_GRIDS)[family]), knob, values, fixed, scale)
  return out


# ----------------------------------------------------------------------------
# Training: many runs (configuration, seed) of one family in one program.


def train_program(task: Task, family: str, batch: int, epochs: int,
                  schedule: str = "cosine", **lawn_kwargs):
  """``jit(vmap(one))`` over runs: ``fn(hps, seeds) -> (final, logs)``, where
  ``final`` holds the task's metrics after training and ``logs`` the
  per-epoch diagnostics and validation metric."""
  batch = min(batch, task.num_train)
  steps_per_epoch = max(task.num_train // batch, 1)
  total = steps_per_epoch * epochs
  sched = protocol.warmup_cosine(total, schedule=schedule)

  def one(hp, seed):
    k_init, k_data = jax.random.split(jax.random.key(seed))
    params, model_state = task.init(k_init)
    tx = protocol.build_optimizer(family, hp, task.mask, task.decay_mask,
                                  total, sched, **lawn_kwargs)
    state = tx.init(params)

    def epoch(carry, ekey):
      perm = jax.random.permutation(ekey, task.num_train)

      def step(carry, i):
        params, model_state, state = carry
        idx = jax.lax.dynamic_slice(perm, (i * batch,), (batch,))
        g, model_state = jax.grad(task.loss, has_aux=True)(
            params, model_state, idx, jax.random.fold_in(ekey, i))
        u, state = tx.update(g, state, params)
        return (optax.apply_updates(params, u), model_state, state), None

      carry, _ = jax.lax.scan(step, carry, jnp.arange(steps_per_epoch))
      return carry, {**task.diagnostics(*carry[:2]),
                     "val_metric": task.validate(*carry[:2])}

    (params, model_state, state), logs = jax.lax.scan(
        epoch, (params, model_state, state), jax.random.split(k_data, epochs))
    return {**task.evaluate(params, model_state),
            "frozen_at": lo.frozen_at(state)}, logs

  return jax.jit(jax.vmap(one)), total


class Runner:
  """``run_many`` for :func:`protocol.tune`: trains a list of runs of one
  family in one program, ``max_runs`` at a time (compiled once per chunk
  size)."""

  def __init__(self, task: Task, family: str, batch: int, epochs: int,
               schedule: str = "cosine", max_runs: int | None = None,
               progress=None, memory_bytes: int | None = None, **lawn_kwargs):
    fn, self.total = train_program(task, family, batch, epochs, schedule,
                                   **lawn_kwargs)
    self.program = protocol.PaddedProgram(
        fn, max_runs, f"B={batch} {family} program", progress, memory_bytes)

  @property
  def seconds(self) -> list[float]:
    return self.program.seconds

  def __call__(self, runs: list[protocol.Run]) -> list[dict[str, Any]]:
    final, logs = self.program(runs)
    out = []
    for i in range(len(runs)):
      curves = {k: v[i].tolist() for k, v in logs.items()}
      best = int(np.argmax(np.nan_to_num(logs["val_metric"][i], nan=-np.inf)))
      out.append({**{k: float(v[i]) for k, v in final.items()},
                  "final_train_loss": curves["train_loss"][-1],
                  "final_logit_norm": curves["logit_norm"][-1],
                  "epochs_to_best_val": best + 1, "curves": curves})
    return out


REGIME = ("final_train_loss", "final_logit_norm", "epochs_to_best_val")


def protocol_cells(task: Task, names: list[str], batch: int, epochs: int,
                   seeds, studies, schedule: str = "cosine",
                   max_extensions: int = 4, lr_grids=None, log=print,
                   max_runs: int | None = None, progress=None,
                   memory_bytes: int | None = None, knobs=None):
  """Every method named, tuned and reported under :mod:`benchmarks.protocol`
  at one batch size (every configuration on every seed, repeated studies);
  returns (cells, paired comparisons, seconds, reduced-budget cells: the
  free_steps="auto" default, when lawn-adam-auto is among the methods and
  its threshold is tuned). ``knobs``: see :func:`method_grids`."""
  by_family = method_grids(names, lr_grids, knobs)
  runners = {f: Runner(task, f, batch, epochs, schedule, max_runs, progress,
                       memory_bytes) for f in by_family}

  def run_many(runs: list[protocol.Run]) -> list[dict[str, Any]]:
    # One program per family; the tuning rounds are joint, so that every
    # method of the cell, whatever its family, gets as many extensions.
    out: list[Any] = [None] * len(runs)
    for family, runner in runners.items():
      idx = [i for i, r in enumerate(runs) if METHODS[r.method][0] == family]
      if idx:
        for i, o in zip(idx, runner([runs[i] for i in idx])):
          out[i] = o
    return out

  grids = {n: g for fam in by_family.values() for n, g in fam.items()}
  tuning = protocol.tune(grids, run_many, f"val_{task.metric}", seeds, studies,
                         higher_is_better=True, max_extensions=max_extensions,
                         log=log)
  records = protocol.method_records(tuning, f"test_{task.metric}", REGIME)
  cells = {}
  for n, rec in records.items():
    runner = runners[METHODS[n][0]]
    cells[n] = {"batch_size": min(batch, task.num_train), "epochs": epochs,
                "steps": runner.total, **rec,
                "program_seconds": runner.seconds}
  seconds = sum(sum(r.seconds) for r in runners.values())
  comparisons = [{**c, "batch_size": cells[c["a"]]["batch_size"]}
                 for c in protocol.report(tuning, f"test_{task.metric}",
                                          PAIRS)["comparisons"]]
  reduced: dict[str, Any] = {}
  if "lawn-adam-auto" in cells and knobs is None:
    record, comps = protocol.subset_report(
        tuning, "lawn-adam-auto", HP_AUTO_DEFAULT, AUTO_DEFAULT,
        f"test_{task.metric}", REGIME, AUTO_AGAINST)
    keep = {k: cells["lawn-adam"]["batch_size"] if k == "batch_size" else
            cells["lawn-adam-auto"][k] for k in ("batch_size", "epochs",
                                                 "steps")}
    reduced[AUTO_DEFAULT] = {**keep, **record, "reduced_budget": True}
    comparisons += [{**c, "batch_size": keep["batch_size"]} for c in comps]
  return cells, comparisons, seconds, reduced


# free_steps="auto" at its default threshold: the lr-only subset of the
# lawn-adam-auto grid (a third of everyone's budget). Reported apart from
# the equal-budget table (results["reduced_budget_cells"]).
AUTO_DEFAULT = "lawn-adam-auto (default, lr only)"
HP_AUTO_DEFAULT = float(lo.AutoFreeze().threshold)
AUTO_AGAINST = ("lawn-adam", "adam", "adamw")


# The ablations' interface: a fixed grid, every configuration on every seed.
class OptSpec(NamedTuple):
  family: str
  grid: dict[str, list[float]]   # hyper-parameter -> candidate values


def run_cell(task: Task, spec: OptSpec, batch: int, epochs: int,
             seeds: list[int], schedule: str = "cosine", **lawn_kwargs):
  """Every configuration of ``spec.grid`` on every seed (no selection
  protocol: for ablations and sensitivity studies)."""
  keys, points = _grid_points(spec.grid)
  configs = [dict(zip(keys, map(float, p))) for p in points]
  runner = Runner(task, spec.family, batch, epochs, schedule, **lawn_kwargs)
  runs = [protocol.Run("", c, s) for c in configs for s in seeds]
  out = runner(runs)
  m = f"test_{task.metric}"
  test = np.array([o[m] for o in out]).reshape(len(configs), len(seeds))
  val = np.array([o[f"val_{task.metric}"] for o in out]).reshape(test.shape)
  best = int(np.argmax(val.mean(axis=1)))
  chosen = out[best * len(seeds):(best + 1) * len(seeds)]
  return {"batch_size": min(batch, task.num_train), "epochs": epochs,
          "steps": runner.total, "schedule": schedule,
          "grid": {k: [c[k] for c in configs] for k in keys},
          "selected": configs[best],
          "val_mean_per_config": val.mean(axis=1).tolist(),
          "test_mean_per_config": test.mean(axis=1).tolist(),
          "test": test[best].tolist(), "test_mean": float(test[best].mean()),
          "test_std": float(test[best].std(ddof=1)) if len(seeds) > 1 else 0.0,
          "curves_selected": {k: np.mean([o["curves"][k] for o in chosen],
                                         axis=0).tolist()
                              for k in chosen[0]["curves"]},
          "seconds": sum(runner.seconds)}


def _grid_points(grid):
  keys = list(grid)
  return keys, list(itertools.product(*(grid[k] for k in keys)))


# ----------------------------------------------------------------------------
# Reporting.


# ----------------------------------------------------------------------------

ADAM_FAMILY = ["adam", "adamw", "lawn-adam", "lawn-adamw"]
SGD_LAMB = ["sgdm", "sgdm-wd", "lawn-sgdm", "lamb", "lamb-wd", "lawn-lamb"]
PRESETS: dict[str, dict[str, Any]] = {
    # The main job, a newcomer's first command (<= 10 min on 2 CPU cores):
    # the large-batch question of the main table, three methods, 35 epochs
    # (40 took 10.1 min).
    # Committed as results/generalization_mnist1d_quick.json.
    "quick": dict(dataset="mnist1d", optimizers=["adam", "adamw", "lawn-adam"],
                  batch_sizes=[2048], epochs=35, hidden=(128, 128),
                  tag="_quick"),
    # The committed MNIST-1D tables, sized for this project's 2-core CPU
    # (~40 min each): the Adam family with free_steps="auto", and the SGD-m
    # and LAMB families (30 epochs).
    "mnist1d": dict(dataset="mnist1d",
                    optimizers=ADAM_FAMILY + ["lawn-adam-auto"],
                    batch_sizes=[64, 2048], epochs=40, hidden=(128, 128),
                    max_runs=400),
    "mnist1d-sgd-lamb": dict(dataset="mnist1d", optimizers=SGD_LAMB,
                             batch_sizes=[64, 2048], epochs=30,
                             hidden=(128, 128), max_runs=300,
                             tag="_sgd_lamb"),
    # Every optimizer, a wide batch sweep (sized for one GPU).
    "full": dict(dataset="mnist1d", optimizers=list(METHODS),
                 batch_sizes=[128, 512, 2048, 8192], epochs=200,
                 hidden=(256, 256)),
    "fashion": dict(dataset="fashion_mnist", optimizers=ADAM_FAMILY,
                    batch_sizes=[256, 8192], epochs=100, hidden=(256, 256)),
    # What this project's 2-core CPU affords under the protocol (~40 min):
    # 15,000 of the 50,000 training images (validation and test in full),
    # one hidden layer, 15 epochs, three methods, batches 256 and 4096.
    "fashion-cpu": dict(dataset="fashion_mnist",
                        optimizers=["adam", "adamw", "lawn-adam"],
                        batch_sizes=[256, 4096], epochs=15, hidden=(128,),
                        max_train=15_000, max_runs=144),
    # The BatchNorm ResNet on all 60k images: for one GPU (not run yet).
    "fashion-cnn": dict(dataset="fashion_mnist", model="cnn",
                        optimizers=ADAM_FAMILY, batch_sizes=[256, 4096],
                        epochs=30, hidden=(), tag="_cnn"),
    # MovieLens on this project's 2-core CPU under the protocol (~40 min):
    # 7 epochs.
    "movielens-cpu": dict(dataset="movielens",
                          optimizers=["adam", "adamw", "lawn-adam"],
                          batch_sizes=[256, 4096], epochs=7, hidden=(),
                          max_runs=216),
    "movielens": dict(dataset="movielens", optimizers=ADAM_FAMILY + [
        "sgdm", "sgdm-wd", "lawn-sgdm"], batch_sizes=[256, 4096], epochs=40,
                      hidden=()),
}
# Every configuration runs on every seed; study k selects on seeds
# SEEDS[2k:2k+2] and reports on the other six.
SEEDS = list(range(8))
NUM_STUDIES, SEEDS_PER_STUDY = 4, 2


def make_task(dataset: str, hidden, max_train=None, path=None,
              model: str = "mlp") -> Task:
  """``path``: where the dataset's files are (the loaders' defaults else);
  ``model="cnn"``: the BatchNorm ResNet on image datasets."""
  if model == "cnn":
    if dataset == "fashion_mnist":
      return cnn_task("fashion_mnist", data.fashion_mnist(path),
                      max_train=max_train)
    if dataset == "digits":
      return cnn_task("digits", data.digits(), (8, 16), (8, 8, 1),
                      val_fraction=0.2, max_train=max_train)
    raise ValueError(f"model='cnn' needs an image dataset, got {dataset!r}")
  if dataset == "mnist1d":
    return classification_task("mnist1d", data.mnist1d(num_samples=12500),
                               hidden, max_train=max_train)
  if dataset == "digits":
    return classification_task("digits", data.digits(), hidden,
                               max_train=max_train)
  if dataset == "fashion_mnist":
    return classification_task("fashion_mnist", data.fashion_mnist(path),
                               hidden,
                               val_fraction=1 / 6, max_train=max_train)
  if dataset == "movielens":
    return recommender_task(data.leave_one_out(data.movielens(path)))
  raise ValueError(f"unknown dataset {dataset!r}")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="default; CPU-sized")
  mode.add_argument("--full", action="store_true", help="GPU-sized sweep")
  mode.add_argument("--preset", choices=list(PRESETS))
  p.add_argument("--dataset", choices=["mnist1d", "digits", "fashion_mnist",
                                       "movielens"])
  p.add_argument("--optimizers", nargs="+", help=f"from {list(METHODS)}")
  p.add_argument("--batch-sizes", nargs="+", type=int)
  p.add_argument("--epochs", type=int)
  p.add_argument("--seeds", nargs="+", type=int,
                 help=f"every configuration runs on each (default {SEEDS})")
  p.add_argument("--studies", type=int, default=NUM_STUDIES,
                 help="repeated studies, each selecting on its own seeds")
  p.add_argument("--seeds-per-study", type=int, default=SEEDS_PER_STUDY)
  p.add_argument("--schedule", choices=["cosine", "constant"],
                 default="cosine", help="constant: the recorded ablation")
  p.add_argument("--max-extensions", type=int, default=None,
                 help="rounds of grid extension at most (default: the "
                      "preset's, else 2)")
  p.add_argument("--max-train", type=int, help="subsample the training set")
  p.add_argument("--data", help="the dataset's files (Fashion-MNIST folder, "
                 "MovieLens ratings.csv or Rdata prefix)")
  p.add_argument("--out", default=str(common.DEFAULT_OUT),
                 help="output folder (default ~/lawn_optax_results; "
                      "benchmarks/results holds the committed runs)")
  p.add_argument("--tag", default=None, help="suffix for output file names "
                 "(default: the preset's)")
  return p


def main(argv=None):
  common.pin_cpu_threads()  # the same bits on any machine (common.py)
  args = _parser().parse_args(argv)
  preset = args.preset or ("full" if args.full else "quick")
  cfg = dict(PRESETS[preset])
  for k in ("dataset", "optimizers", "batch_sizes", "epochs", "seeds",
            "max_train"):
    if getattr(args, k) is not None:
      cfg[k] = getattr(args, k)
  seeds = cfg.get("seeds", SEEDS)
  studies = protocol.make_studies(seeds, args.studies, args.seeds_per_study)
  tag = cfg.get("tag", "") if args.tag is None else args.tag
  if args.max_extensions is None:
    args.max_extensions = cfg.get("max_extensions", 2)
  from pathlib import Path
  out_dir = Path(args.out)
  print(f"writing to {out_dir} (pass --out to change)", flush=True)
  t0 = time.perf_counter()
  task = make_task(cfg["dataset"], tuple(cfg["hidden"]), cfg.get("max_train"),
                   args.data, cfg.get("model", "mlp"))
  results = _header(task, cfg, preset, args, seeds, studies)
  results["compute_seconds"] = _run_cells(task, cfg, args, seeds, studies,
                                          results)
  results["wall_seconds"] = time.perf_counter() - t0
  results.update(common.provenance_of_code())
  _write(results, f"generalization_{task.name}{tag}", task.metric, out_dir)
  return results


def _header(task: Task, cfg: dict[str, Any], preset: str, args, seeds,
            studies) -> dict[str, Any]:
  """A results file's description of its run, before any cell."""
  params0 = task.init(jax.random.key(0))[0]
  return {"dataset": task.name, "metric": task.metric, "mode": preset,
          "num_train": task.num_train,
          "num_params": int(sum(x.size for x in jax.tree.leaves(params0))),
          "model": ("NCF" if task.name == "movielens" else
                    "BatchNorm ResNet" if task.name.endswith("_cnn") else
                    f"MLP {list(cfg['hidden'])}"),
          "dataset_source": DATA_SOURCES.get(task.name, task.name),
          "seeds": seeds, "studies": studies,
          "schedule": args.schedule, "warmup_fraction": 0.05,
          "max_extensions": args.max_extensions,
          "epochs": cfg["epochs"], "protocol": protocol.PROTOCOL_TEXT,
          "environment": common.environment(), "cells": {},
          "comparisons": []}


def _run_cells(task: Task, cfg: dict[str, Any], args, seeds, studies,
               results: dict[str, Any]) -> float:
  """Every batch size's cell under the protocol, filed in ``results``;
  returns the programs' seconds."""
  configs = len(protocol.log_grid(1e-3, 1e-2, 6)) * 3
  progress = protocol.Progress(len(cfg["optimizers"]) * configs * len(seeds)
                               * len(cfg["batch_sizes"]))
  print(f"{len(cfg['optimizers'])} methods x {configs} configurations x "
        f"{len(seeds)} seeds at each of batch sizes {cfg['batch_sizes']}; "
        f"{len(studies)} studies", flush=True)
  seconds = 0.0
  for batch in cfg["batch_sizes"]:
    print(f"batch {batch}:", flush=True)
    cells, comps, secs, reduced = protocol_cells(
        task, cfg["optimizers"], batch, cfg["epochs"], seeds, studies,
        args.schedule, args.max_extensions, max_runs=cfg.get("max_runs"),
        progress=progress, log=lambda line: print(line, flush=True))
    for n, c in cells.items():
      results["cells"].setdefault(n, []).append(c)
    for n, c in reduced.items():
      results.setdefault("reduced_budget_cells", {}).setdefault(
          n, []).append(c)
    results["comparisons"] += comps
    seconds += secs
    print(f"  {secs:.0f} s", flush=True)
  progress.close()
  return seconds


def _write(results: dict[str, Any], name: str, metric: str, out_dir) -> None:
  """The JSON, its table and its figures."""
  path = common.write_json(name, results, out_dir)
  from benchmarks import tables
  table = tables.generalization_table(results, metric)
  (out_dir / f"{name}.md").write_text(table + "\n")
  pngs = tables.generalization_plots(results, str(out_dir / name))
  print(table)
  print(f"\nwrote {path}, {out_dir / (name + '.md')}, {', '.join(pngs)} "
        f"in {results['wall_seconds']:.0f} s")


DATA_SOURCES = {
    "mnist1d": "mnist1d package, generated offline (12,500 samples, seed 42)",
    "fashion_mnist": "Fashion-MNIST idx files (60k train incl. 10k "
                     "validation, 10k test), SHA-256 checked",
    "movielens": "MovieLens ml-latest-small (dslabs R data or ratings.csv)",
    "digits": "scikit-learn load_digits",
}


if __name__ == "__main__":
  main()
