"""LAWN for a character-level transformer LM, against today's logit fixes.

    python -m benchmarks.language_model                  # --quick: Adam vs LAWN-Adam, small
    python -m benchmarks.language_model --cpu            # the committed over-fitting comparison
    python -m benchmarks.language_model --preset cpu-12k # the same on 3x the text
    python -m benchmarks.language_model --full     # sized for one GPU

A small pre-LN GPT (``benchmarks.models.gpt``, flax.nnx, untied head) learns
Jane Austen byte by byte (``benchmarks.data.austen``: train on the start of
four novels, validate/test on alternate chapters of the other two). The
training corpus is small on purpose: several epochs over it reach the regime
LAWN is for, where the train loss keeps falling, validation turns up and the
logits grow.

Methods (all Adam-based, warmup + cosine, the same token budget at every batch
size; :mod:`benchmarks.protocol` for tuning, selection and intervals):
``adam``; ``adamw`` (decoupled decay on matrices); ``adam+zloss`` (PaLM's
``coef * logsumexp^2``); ``adam+softcap`` (Gemma 2's ``c * tanh(z / c)``);
``lawn-adam`` (LAWN on the mask ``masks.final_homogeneous`` finds: the final
norm and the head); ``lawn-adamw`` (decay on the unconstrained matrices
only). Every method and configuration of one batch size trains in one
vmapped program. Metrics are bits per character (bpc).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lawn_optax as lo
from benchmarks import common, data, models, protocol
from benchmarks.protocol import MethodGrid

VOCAB = 256
LN2 = math.log(2.0)


def method_grids(lrs: tuple[float, ...]) -> dict[str, MethodGrid]:
  """Each method: the learning rates x its own second axis of 3 values
  (equal budgets; each axis grows past an edge a study chose)."""
  lm = {"b2": 0.95}   # the LM convention; Adam alone tunes it
  return {
      "adam": MethodGrid(lrs, "b2", (0.9, 0.95, 0.99), {}, "log1m"),
      "adamw": MethodGrid(lrs, "wd", (0.3, 1.0, 3.0), lm),
      "adam+zloss": MethodGrid(lrs, "zloss", (1e-4, 1e-3, 1e-2), lm),
      "adam+softcap": MethodGrid(lrs, "softcap", (3.0, 10.0, 30.0), lm),
      "lawn-adam": MethodGrid(lrs, "free_frac", (0.25, 0.5, 0.75),
                              {**lm, "lawn": 1.0}, "logit"),
      "lawn-adamw": MethodGrid(lrs, "wd", (0.3, 1.0, 3.0),
                               {**lm, "lawn": 1.0, "free_frac": 0.5,
                                "decay_constrained": 0.0}),
      # free_steps="auto", its threshold as the second axis (default 0.3
      # in the middle: "auto at its default" is the lr-only subset).
      "lawn-adam-auto": MethodGrid(lrs, "auto_threshold", (0.1, 0.3, 0.623),
                                   {**lm, "lawn": 1.0, "auto": 1.0},
                                   "logit"),
  }


AUTO_DEFAULT = "lawn-adam-auto (default, lr only)"
AUTO_AGAINST = ("lawn-adam", "adam", "adamw")


SEEDS = list(range(8))
PRESETS: dict[str, dict[str, Any]] = {
    # Adam vs LAWN-Adam, a tiny model: the smoke test of the study.
    "quick": dict(d=32, depth=1, heads=2, seq=32, train_chars=20_000,
                  epochs=12, batch_sizes=[8, 64], methods=["adam", "lawn-adam"],
                  lrs=protocol.log_grid(3e-4, 3e-2, 6), seeds=SEEDS,
                  studies=4, eval_chars=20_000, logs=12),
    # The committed over-fitting comparison, sized for this project's 2-core
    # CPU under the protocol (every configuration on 8 seeds, ~40 min): a
    # one-layer d=32 GPT, 30 epochs over 3k characters at batch 8 (351
    # steps), where it over-fits; every method, with free_steps="auto".
    # (The large-batch question is the 12k run's; ~6.5 ms per run and step
    # at batch 8 on 2 cores: both batch sizes here would take 80 min.)
    "cpu": dict(d=32, depth=1, heads=2, seq=32, train_chars=3_000, epochs=30,
                batch_sizes=[8],
                methods=["adam", "adamw", "adam+zloss", "adam+softcap",
                         "lawn-adam", "lawn-adam-auto"],
                lrs=protocol.log_grid(5e-4, 5e-2, 6), seeds=SEEDS, studies=4,
                eval_chars=30_000, logs=15, max_runs=432),
    # The same model on 12k characters for 7 epochs (less over-fitting) at
    # batch 8 and 64 (the same tokens: 328 and 41 steps), three methods
    # (~40 min).
    "cpu-12k": dict(d=32, depth=1, heads=2, seq=32, train_chars=12_000,
                    epochs=7, batch_sizes=[8, 64],
                    methods=["adam", "adamw", "lawn-adam"],
                    lrs=protocol.log_grid(5e-4, 5e-2, 6), seeds=SEEDS,
                    studies=4, eval_chars=30_000, logs=15, max_runs=432,
                    tag="_12k"),
    # One GPU: a wider, deeper model on 4x the text.
    "full": dict(d=128, depth=4, heads=4, seq=128, train_chars=400_000,
                 epochs=10, batch_sizes=[8, 64], methods=list(method_grids(())),
                 lrs=protocol.log_grid(1e-4, 1e-2, 6), seeds=SEEDS, studies=4,
                 eval_chars=None, logs=25),
}


# ----------------------------------------------------------------------------
# Model, loss, metrics.


def build_model(cfg: dict[str, Any], seed: int = 0):
  from flax import nnx
  return models.gpt(VOCAB, cfg["d"], cfg["depth"], cfg["heads"], cfg["seq"],
                    rngs=nnx.Rngs(seed))


def windows(stream: np.ndarray, seq: int, max_chars: int | None = None
            ) -> np.ndarray:
  """Non-overlapping windows of ``seq + 1`` bytes (inputs and targets)."""
  s = stream[:max_chars] if max_chars else stream
  n = (len(s) - 1) // seq
  if n < 1:
    raise ValueError(f"text of {len(s)} bytes is shorter than one window of "
                     f"{seq + 1}")
  idx = np.arange(n)[:, None] * seq + np.arange(seq + 1)[None]
  return s[idx].astype(np.int32)


def output_logits(logits: jax.Array, hp: dict[str, jax.Array]) -> jax.Array:
  """Soft-capped when ``hp["softcap"] > 0`` (Gemma 2), unchanged otherwise."""
  c = hp["softcap"]
  safe = jnp.where(c > 0, c, 1.0)   # no 0/0 in the branch that is not taken
  return jnp.where(c > 0, safe * jnp.tanh(logits / safe), logits)


def token_losses(logits: jax.Array, targets: jax.Array):
  lse = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return lse - picked, lse


def _norm(tree: Any) -> jax.Array:
  return optax.tree.norm(tree)


class Study:
  """Everything one batch size's programs need: data on device, the model's
  graph, the LAWN mask, the step count."""

  def __init__(self, corpus: data.Corpus, cfg: dict[str, Any], batch: int,
               progress=None):
    from flax import nnx
    self.cfg, self.batch, self.seq = cfg, batch, cfg["seq"]
    self.train = jnp.asarray(corpus.train, jnp.int32)
    if len(corpus.train) <= self.seq + 1:
      raise ValueError("training text shorter than one window")
    self.val = jnp.asarray(windows(corpus.val, self.seq, cfg["eval_chars"]))
    self.test = jnp.asarray(windows(corpus.test, self.seq, cfg["eval_chars"]))
    self.probe = self.val[: min(32, len(self.val))]
    tokens = cfg["epochs"] * len(corpus.train)
    self.steps = max(1, tokens // (batch * self.seq))
    self.log_every = max(1, self.steps // cfg["logs"])
    self.steps = self.log_every * (self.steps // self.log_every)
    model = build_model(cfg)
    # Plain nested dicts of arrays (nnx.State's Variables would not line up
    # with the masks' bools); nnx.merge accepts them back.
    self.graphdef, state = nnx.split(model, nnx.Param)
    params = state.to_pure_dict()
    self.mask = lo.masks.final_homogeneous(
        model, self.probe[:1, :-1]).to_pure_dict()
    self.num_params = int(sum(x.size for x in jax.tree.leaves(params)))
    # Decoupled decay on matrices only (embeddings, kernels), nanoGPT-style.
    self.decay_mask = jax.tree.map(lambda x: x.ndim >= 2, params)
    self.schedule = protocol.warmup_cosine(self.steps,
                                           schedule=cfg.get("schedule",
                                                            "cosine"))
    self.program = protocol.PaddedProgram(
        jax.jit(jax.vmap(self.train_one)), cfg.get("max_runs"),
        f"B={batch} program", progress, cfg.get("memory_bytes"))

  def init(self, seed: int):
    from flax import nnx
    return nnx.split(build_model(self.cfg, seed), nnx.Param)[1].to_pure_dict()

  def logits(self, params, tokens, hp):
    from flax import nnx
    raw = nnx.merge(self.graphdef, params)(tokens)
    return output_logits(raw.astype(jnp.float32), hp)

  def loss(self, params, batch, hp):
    ce, lse = token_losses(self.logits(params, batch[:, :-1], hp),
                           batch[:, 1:])
    return ce.mean() + hp["zloss"] * jnp.mean(lse ** 2), ce.mean()

  def bpc(self, params, wins, hp, chunk: int = 64):
    pad = (-len(wins)) % chunk
    padded = jnp.concatenate([wins, jnp.zeros((pad, wins.shape[1]),
                                              wins.dtype)])
    weights = jnp.concatenate([jnp.ones(len(wins)), jnp.zeros(pad)])

    def one(args):
      w, m = args
      ce, _ = token_losses(self.logits(params, w[:, :-1], hp), w[:, 1:])
      return jnp.sum(ce.mean(-1) * m)

    total = jax.lax.map(one, (padded.reshape(-1, chunk, wins.shape[1]),
                              weights.reshape(-1, chunk))).sum()
    return total / len(wins) / LN2

  def diagnostics(self, params, hp):
    z = self.logits(params, self.probe[:, :-1], hp)
    ce, _ = token_losses(z, self.probe[:, 1:])
    return {"val_probe_bpc": ce.mean() / LN2,
            "max_abs_logit": jnp.max(jnp.abs(z)),
            "mean_logit_norm": jnp.mean(jnp.linalg.norm(z, axis=-1)),
            "head_norm": _norm(params["head"]),
            "final_norm_scale_norm": _norm(params["final_norm"]["scale"])}

  def train_one(self, hp, seed, params):
    tx = protocol.build_optimizer("adam", hp, self.mask, self.decay_mask,
                                  self.steps, self.schedule)
    state = tx.init(params)
    key = jax.random.key(seed)
    offsets = jnp.arange(self.seq + 1)
    hi = self.train.shape[0] - self.seq - 1

    def step(carry, i):
      params, state = carry
      starts = jax.random.randint(jax.random.fold_in(key, i), (self.batch,),
                                  0, hi)
      batch = self.train[starts[:, None] + offsets[None]]
      (_, ce), g = jax.value_and_grad(self.loss, has_aux=True)(params, batch,
                                                                hp)
      u, state = tx.update(g, state, params)
      return (optax.apply_updates(params, u), state), ce

    def chunk(carry, j):
      carry, ce = jax.lax.scan(step, carry,
                               j * self.log_every + jnp.arange(self.log_every))
      return carry, {"train_bpc": ce.mean() / LN2,
                     **self.diagnostics(carry[0], hp)}

    (params, state), logs = jax.lax.scan(
        chunk, (params, state), jnp.arange(self.steps // self.log_every))
    final = {"val_bpc": self.bpc(params, self.val, hp),
             "test_bpc": self.bpc(params, self.test, hp),
             "frozen_at": lo.frozen_at(state)}
    return final, logs

  def initial_params(self, padded: list[protocol.Run]) -> tuple:
    """The program's extra argument: each run's initial params, stacked."""
    inits = {s: self.init(s) for s in sorted({r.seed for r in padded})}
    return (jax.tree.map(lambda *xs: jnp.stack(xs),
                         *[inits[r.seed] for r in padded]),)

  def run_many(self, runs: list[protocol.Run]) -> list[dict[str, Any]]:
    final, logs = self.program(runs, self.initial_params)
    out = []
    for i in range(len(runs)):
      curves = {k: v[i].tolist() for k, v in logs.items()}
      best = int(np.argmin(curves["val_probe_bpc"]))
      out.append({**{k: float(v[i]) for k, v in final.items()},
                  "final_train_bpc": curves["train_bpc"][-1],
                  "final_max_abs_logit": curves["max_abs_logit"][-1],
                  "min_val_probe_bpc": curves["val_probe_bpc"][best],
                  "val_rise": (curves["val_probe_bpc"][-1]
                               - curves["val_probe_bpc"][best]),
                  "step_of_min_val_probe": (best + 1) * self.log_every,
                  "curves": curves})
    return out


REGIME = ("final_train_bpc", "final_max_abs_logit", "val_rise",
          "step_of_min_val_probe")


def pairs(methods: list[str]) -> list[tuple[str, str]]:
  """Every method against Adam, LAWN-Adam against every other method, and
  LAWN-AdamW against AdamW."""
  out = [(m, "adam") for m in methods if m != "adam"]
  out += [("lawn-adam", m) for m in methods
          if m not in ("adam", "lawn-adam", "lawn-adam-auto")]
  out += [("lawn-adamw", "adamw"), ("lawn-adam-auto", "lawn-adam"),
          ("lawn-adam-auto", "adamw")]
  return [p for p in dict.fromkeys(out) if set(p) <= set(methods)]


def run(cfg: dict[str, Any], corpus: data.Corpus, log=print,
        on_batch=None) -> dict[str, Any]:
  """The study: every batch size of ``cfg`` under the protocol. After each
  batch size, ``on_batch(results)`` gets the results so far (``"complete":
  False`` until the last), so a caller can write them."""
  grids = {m: g for m, g in method_grids(tuple(cfg["lrs"])).items()
           if m in cfg["methods"]}
  unknown = set(cfg["methods"]) - set(grids)
  if unknown:
    raise ValueError(f"unknown methods {sorted(unknown)}; choose from "
                     f"{sorted(method_grids(()))}")
  seeds = list(cfg["seeds"])
  studies = protocol.make_studies(seeds, cfg["studies"],
                                  cfg.get("seeds_per_study", 2))
  batches = []
  progress = protocol.Progress(len(grids) * len(cfg["lrs"]) * 3 * len(seeds)
                               * len(cfg["batch_sizes"]))
  for batch in cfg["batch_sizes"]:
    study = Study(corpus, cfg, batch, progress)
    log(f"batch {batch}: {study.steps} steps, {study.num_params} params")
    tuning = protocol.tune(grids, study.run_many, "val_bpc", seeds, studies,
                           higher_is_better=False,
                           max_extensions=cfg.get("max_extensions", 2),
                           log=log)
    cells = protocol.method_records(tuning, "test_bpc", REGIME)
    comparisons = protocol.report(tuning, "test_bpc",
                                  pairs(list(grids)))["comparisons"]
    reduced = {}
    if "lawn-adam-auto" in cells:
      record, comps = protocol.subset_report(
          tuning, "lawn-adam-auto", float(lo.AutoFreeze().threshold),
          AUTO_DEFAULT, "test_bpc", REGIME, AUTO_AGAINST)
      reduced[AUTO_DEFAULT] = {**record, "reduced_budget": True}
      comparisons += comps
    batches.append({"batch_size": batch, "steps": study.steps,
                    "log_every": study.log_every,
                    "tokens": study.steps * batch * study.seq,
                    "cells": cells, "comparisons": comparisons,
                    "reduced_budget_cells": reduced,
                    "seconds": study.program.seconds,
                    "runs": sum(c["num_configs"] * len(seeds)
                                for c in cells.values())})
    log(f"  trained in {sum(study.program.seconds):.0f} s")
    if study.program.sizing:
      batches[-1]["memory_sizing"] = study.program.sizing
    results = _results(cfg, corpus, seeds, studies, study, batches)
    if on_batch is not None:
      on_batch(results)
  return results


def _results(cfg, corpus, seeds, studies, study, batches) -> dict[str, Any]:
  mask = lo.masks.explain(build_model(cfg), study.probe[:1, :-1],
                          print_fn=None)
  return {"benchmark": "language_model", "config": cfg,
          "num_params": study.num_params, "seeds": seeds, "studies": studies,
          "corpus": {"source": corpus.source, "train_bytes": len(corpus.train),
                     "val_bytes": len(corpus.val),
                     "test_bytes": len(corpus.test),
                     "split": "train: start of Pride and Prejudice, Sense and "
                              "Sensibility, Emma, Mansfield Park (in that "
                              "order, cut to train_chars); validation: even "
                              "chapters of Persuasion and Northanger Abbey; "
                              "test: their odd chapters"},
          "lawn_mask": str(mask), "schedule": cfg.get("schedule", "cosine"),
          "max_extensions": cfg.get("max_extensions", 2),
          "batches": batches, "environment": common.environment(),
          "complete": len(batches) == len(cfg["batch_sizes"])}


def main(argv=None):
  common.pin_cpu_threads()  # the same bits on any machine (common.py)
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true", help="default")
  mode.add_argument("--cpu", action="store_true")
  mode.add_argument("--full", action="store_true")
  mode.add_argument("--preset", choices=list(PRESETS))
  p.add_argument("--data", help="folder of janeaustenr's Rdata.rdx/.rdb")
  p.add_argument("--schedule", choices=["cosine", "constant"],
                 default="cosine")
  p.add_argument("--out", default=str(common.DEFAULT_OUT))
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)
  mode = args.preset or ("full" if args.full else "cpu" if args.cpu else
                         "quick")
  cfg = {**PRESETS[mode], "mode": mode, "schedule": args.schedule}
  print(f"writing to {args.out} (pass --out to change)", flush=True)
  corpus = data.austen(args.data, max_train_chars=cfg["train_chars"])
  t0 = time.perf_counter()
  out_dir = Path(args.out)
  name = f"language_model_{mode.split('-')[0]}{cfg.get('tag', '')}{args.tag}"
  # Written after every batch size ("complete": false until the last).
  write = lambda r: common.write_json(name, {**r, **common.provenance_of_code()},
                                      out_dir)
  results = run(cfg, corpus, lambda line: print(line, flush=True), write)
  results["seconds_total"] = time.perf_counter() - t0
  results.update(common.provenance_of_code())
  path = common.write_json(name, results, out_dir)
  from benchmarks import tables
  table = tables.language_model_table(results)
  (out_dir / f"{name}.md").write_text(table + "\n")
  pngs = tables.language_model_plots(results, str(out_dir / name))
  print(table)
  print(f"\nwrote {path}, {', '.join(pngs)} in {results['seconds_total']:.0f} s")
  return results


if __name__ == "__main__":
  main()
