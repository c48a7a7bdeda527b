"""Accelerator-sized comparisons that size themselves to a wall-time budget.

    python -m benchmarks.device_jobs fashion-cnn --budget 480 --data DIR --out OUT
    python -m benchmarks.device_jobs lm-gpu --budget 480 --data DIR --out OUT
    python -m benchmarks.device_jobs fashion-cnn --tiny --out /tmp/x   # CPU, CI

Each job runs under :mod:`benchmarks.protocol` (every configuration on 8
seeds, 4 repeated studies), measures one epoch (the CNN) or a few steps (the
LM) of its full vmapped program first, sizes the number of epochs so that
the whole study fits ``--budget`` seconds, and writes its JSON after every
batch size, so a run cut off by the device's time limit keeps what it
finished (``"complete": false`` until the end).

* ``fashion-cnn`` (issue 27): Fashion-MNIST, all 60k images, the BatchNorm
  ResNet with LAWN on what ``final_homogeneous`` finds after the last
  BatchNorm, Adam / AdamW / LAWN-Adam / LAWN-AdamW at batch 256 and 8192,
  the same epochs at both; writes ``generalization_fashion_mnist_cnn.json``.
* ``lm-gpu`` (issue 28): a >= 5M-parameter byte-level GPT (nnx, pre-LN,
  untied head; d=384, 4 layers) on the six Austen novels, Adam, AdamW,
  Adam + z-loss, Adam + soft-capping, LAWN-Adam, LAWN-AdamW and
  ``free_steps="auto"`` at two batch sizes 8x apart with one token budget,
  repeated over the training text for as many epochs as the budget allows;
  writes ``language_model_gpu.json``.

``--tiny`` runs the same code at toy sizes (scikit-learn digits, a
generated corpus) so that CI checks it on a CPU.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from benchmarks import common, data, generalization, protocol

SEEDS = list(range(8))


def size_epochs(seconds_per_epoch: float, budget_s: float, programs: int,
                rounds: float = 1.5, at_least: int = 1,
                at_most: int = 200) -> int:
  """Epochs such that ``programs`` full programs (one per batch size and
  family), each with ``rounds`` rounds' worth of runs (extensions), fit the
  budget.

  Example:
    >>> size_epochs(2.0, 600, programs=2, rounds=1.5)
    100
  """
  if seconds_per_epoch <= 0:
    raise ValueError("seconds_per_epoch must be positive")
  epochs = int(budget_s / (seconds_per_epoch * programs * rounds))
  return max(at_least, min(at_most, epochs))


def _calibrate(task, family: str, batch: int, runs: int,
               memory_bytes: int) -> tuple[float, int]:
  """Seconds of one epoch of ``runs`` vmapped runs, measured on the largest
  chunk that fits ``memory_bytes`` (sized by compiling, not running: see
  :class:`protocol.PaddedProgram`; compilation excluded: the chunk runs
  twice) and scaled; and that chunk's size."""
  runner = generalization.Runner(task, family, batch, 1,
                                 memory_bytes=memory_bytes)
  fake = [protocol.Run("adam", {"lr": 1e-3}, s % 8) for s in range(runs)]
  chunk = runner.program.fit(fake, lambda _: ())
  runner.program.max_runs = chunk
  runner(fake[:chunk])
  t0 = time.perf_counter()
  runner(fake[:chunk])
  return (time.perf_counter() - t0) * runs / chunk, chunk


def fashion_cnn(args) -> dict[str, Any]:
  tiny = args.tiny
  task = (generalization.make_task("digits", (), max_train=256, model="cnn")
          if tiny else generalization.make_task("fashion_mnist", (),
                                                path=args.data, model="cnn"))
  methods = ["adam", "lawn-adam"] if tiny else generalization.ADAM_FAMILY
  batches = [32, 128] if tiny else [256, 8192]
  seeds = SEEDS[:4] if tiny else SEEDS
  studies = protocol.make_studies(seeds, 2 if tiny else 4, 2 if not tiny
                                  else 1)
  configs = len(methods) * 18 * len(seeds)
  # Every run's activations live at once in a vmapped program: each program
  # sizes its chunks of runs by compiling them (XLA's memory analysis, 80% of
  # the device's bytes_limit; the host's available memory on a CPU).
  memory = protocol.memory_limit()
  # The calibration compiles and runs a chunk twice per batch size:
  # skipped at toy sizes (one epoch).
  calibrated = {} if tiny else {
      b: _calibrate(task, "adam", b, configs, memory) for b in batches}
  per_epoch = (sum(s for s, _ in calibrated.values()) / len(batches)
               if calibrated else 0.0)
  epochs = 1 if tiny else size_epochs(per_epoch, args.budget,
                                      programs=len(batches))
  print(f"one epoch of {configs} runs: {per_epoch:.1f} s -> {epochs} epochs",
        flush=True)
  results = {"dataset": task.name, "metric": task.metric, "mode": "device",
             "num_train": task.num_train, "model": "BatchNorm ResNet",
             "num_params": int(sum(x.size for x in jax.tree.leaves(
                 task.init(jax.random.key(0))[0]))),
             "dataset_source": generalization.DATA_SOURCES.get(
                 task.name.removesuffix("_cnn"), task.name),
             "seeds": seeds, "studies": studies, "schedule": "cosine",
             "warmup_fraction": 0.05, "epochs": epochs,
             "calibration": {"seconds_per_epoch": per_epoch, "runs": configs,
                             "budget_s": args.budget, "memory_bytes": memory,
                             "chunk_runs": {str(b): c for b, (_, c) in
                                            calibrated.items()}},
             "protocol": protocol.PROTOCOL_TEXT,
             "environment": common.environment(), "cells": {},
             "comparisons": [], "complete": False}
  name = "generalization_" + task.name + ("_tiny" if tiny else "")
  for batch in batches:
    cells, comps, secs, _ = generalization.protocol_cells(
        task, methods, batch, epochs, seeds, studies,
        max_extensions=0 if tiny else 2, memory_bytes=memory)
    for n, c in cells.items():
      results["cells"].setdefault(n, []).append(c)
    results["comparisons"] += comps
    results.update(common.provenance_of_code())
    common.write_json(name, results, Path(args.out))
  results["complete"] = True
  common.write_json(name, results, Path(args.out))
  return results


def lm_gpu(args) -> dict[str, Any]:
  from benchmarks import language_model as lm
  tiny = args.tiny
  corpus = (data.text_corpus(_tiny_novels(), max_train_chars=3000,
                             source="generated") if tiny else
            data.austen(args.data))
  cfg = dict(d=16, depth=1, heads=2, seq=16, batch_sizes=[4, 32],
             methods=["adam", "lawn-adam"], seeds=SEEDS[:3], studies=3,
             seeds_per_study=1, eval_chars=1000, logs=4, max_extensions=0,
             lrs=protocol.log_grid(1e-3, 3e-2, 6)) if tiny else dict(
                 d=384, depth=4, heads=6, seq=256, batch_sizes=[8, 64],
                 methods=list(lm.method_grids(())), seeds=SEEDS, studies=4,
                 eval_chars=None, logs=20, max_extensions=1,
                 lrs=protocol.log_grid(1e-4, 1e-2, 6))
  cfg["memory_bytes"] = protocol.memory_limit()  # chunks sized by compiling
  if tiny:
    cfg["train_chars"], cfg["epochs"], tokens_per_s = len(corpus.train), 2, 1.0
  else:
    cfg["train_chars"], cfg["epochs"] = len(corpus.train), 1
    tokens_per_s = _lm_tokens_per_second(corpus, cfg)
    # Tokens one run can afford (two batch sizes, 30% for extensions);
    # the training text is cut so that they make >= 20 epochs over it: the
    # repeated, data-constrained regime the study is about.
    per_run = args.budget * tokens_per_s / (2 * 1.3)
    chars = int(min(len(corpus.train), per_run / 20))
    corpus = data.austen(args.data, max_train_chars=chars)
    cfg["train_chars"] = len(corpus.train)
    cfg["epochs"] = max(1, int(per_run / len(corpus.train)))
  print(f"{tokens_per_s:.3g} tokens/s a run -> {cfg['train_chars']:,} "
        f"training characters, {cfg['epochs']} epochs", flush=True)
  calibration = {"tokens_per_second_all_runs": tokens_per_s,
                 "budget_s": args.budget}
  name = "language_model_gpu" + ("_tiny" if tiny else "")

  def write(results):  # after every batch size: "complete" says how far
    results.update(common.provenance_of_code(), calibration=calibration)
    common.write_json(name, results, Path(args.out))

  results = lm.run(cfg, corpus, on_batch=write)
  write(results)
  return results


def _lm_tokens_per_second(corpus, cfg) -> float:
  """Training tokens per second of one batch size's full vmapped program
  (every configuration on every seed), measured on a few steps."""
  from benchmarks import language_model as lm
  probe = dict(cfg, epochs=1, logs=1)
  study = lm.Study(corpus, probe, cfg["batch_sizes"][-1])
  grids = lm.method_grids(tuple(cfg["lrs"]))
  runs = [protocol.Run(m, {"lr": lr, **grids[m].fixed}, s)
          for m in cfg["methods"] for lr in cfg["lrs"] for _ in range(3)
          for s in cfg["seeds"]]
  chunk = runs[:study.program.fit(runs, study.initial_params)]  # what fits
  study.run_many(chunk)   # compiles
  t0 = time.perf_counter()
  study.run_many(chunk)
  # Tokens per second for one run when every run of the study shares the
  # device: the chunk's throughput divided by the number of runs.
  return study.steps * study.batch * study.seq * len(chunk) / (
      time.perf_counter() - t0) / len(runs)


def _tiny_novels():
  rng = np.random.default_rng(0)
  vocab = ["the", "a", "Mr.", "Darcy", "said", "she", "was", "not", "in",
           "love", "with", "him", "and", "walked", "home"]
  novels = {}
  for name in data.AUSTEN_NOVELS:
    lines = [name.upper(), "", "by Jane Austen", ""]
    for c in range(1, 5):
      lines += [f"CHAPTER {c}", "", " ".join(rng.choice(vocab, 60)), ""]
    novels[name] = lines
  return novels


JOBS = {"fashion-cnn": fashion_cnn, "lm-gpu": lm_gpu}


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("job", choices=list(JOBS))
  p.add_argument("--budget", type=float, default=480.0,
                 help="wall-time seconds for the whole study")
  p.add_argument("--tiny", action="store_true",
                 help="toy sizes on generated or bundled data (CI, CPU)")
  p.add_argument("--data", help="the dataset's folder")
  p.add_argument("--out", default=str(common.DEFAULT_OUT))
  args = p.parse_args(argv)
  print(f"writing to {args.out}", flush=True)
  JOBS[args.job](args)


if __name__ == "__main__":
  main()
