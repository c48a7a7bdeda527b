"""What LAWN (and FixNorm, WRS, the tangent projection) cost per step, jitted.

    python -m benchmarks.overhead            # CPU-sized cells (~1M-24M params)
    python -m benchmarks.overhead --full     # + LAMB, a 25M-param CNN (GPU)

For each model and base optimizer (Adam, SGD-momentum, LAMB) it compiles,
with donated params and optimizer state, (a) ``update + apply_updates``
and (b) a full train step (forward, backward, update, apply) for the base
optimizer and every variant:

  lawn-tensor / lawn-unit      LAWN (``free_steps=1``), constrained phase: the
                               base update recomputed inside the gate for the
                               norm (``constrain_norms_after``), per tensor /
                               per output unit
  lawn-free                    the free phase (before ``free_steps``)
  lawn-stored / -stored-free   the same with the update stored instead
                               (``named_chain(base, constrain_norms)``, the
                               previous default), both phases
  lawn-static0                 ``free_steps=0``: no gate, update stored
  lawn-lazy / lawn-lazy-free   the one-pass lazy retraction, both phases
  lawn-tangent                 exact + tangent projection, constrained phase
  fixnorm / wrs / wrs-between  FixNorm; WRS on an active step (period 1, no
                               gate) and between periods (period 2)

It records XLA's compiled ``bytes accessed`` (a figure that does not depend
on machine noise; a ``lax.cond`` counts both branches, so gated variants
over-count), XLA's temporary buffer size (``memory_analysis``: an
update-sized temporary is what costs most on a CPU), the minor page faults
per call (a fresh temporary is mapped, and zero-filled, on every call), and
wall-clock times: variants interleaved round-robin after compilation and
warm-up, ``block_until_ready`` (on an accelerator each repeat is ``--inner``
calls dispatched back to back, so Python's dispatch overlaps the device's
work), every repeat kept; the JSON has each repeat (per call),
the median and the inter-quartile range, and ratios to the base measured in
the same run. A ratio below 0.98 for strictly more work is flagged as noise.
Results go to ``--out`` (default ``~/lawn_optax_results``;
``benchmarks/results`` only when asked).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lawn_optax as lo
from benchmarks import common, models

BASES = {
    "adam": lambda: optax.adam(1e-3),
    "sgdm": lambda: optax.sgd(1e-2, momentum=0.9),
    "lamb": lambda: optax.lamb(1e-3, weight_decay=0.0),
}
NEVER = 10**9  # free_steps that are never reached: the free phase


def _variants(mask):
  lawn = lambda base, **kw: lo.lawn(base, mask=mask, **kw)
  stored = lambda base, start: optax.named_chain(
      ("base", base), ("lawn", lo.constrain_norms(mask, start_step=start)))
  # Timed from the state after one update, so free_steps=1 is constrained.
  return {
      "base": lambda base: base,
      "lawn-tensor": lambda base: lawn(base, free_steps=1),
      "lawn-unit": lambda base: lawn(base, free_steps=1, granularity="unit"),
      "lawn-free": lambda base: lawn(base, free_steps=NEVER),
      "lawn-stored": lambda base: stored(base, 1),
      "lawn-stored-free": lambda base: stored(base, NEVER),
      "lawn-static0": lambda base: lawn(base, free_steps=0),
      "lawn-lazy": lambda base: lawn(base, free_steps=1, retraction="lazy"),
      "lawn-lazy-free": lambda base: lawn(base, free_steps=NEVER,
                                          retraction="lazy"),
      "lawn-tangent": lambda base: lawn(base, free_steps=1,
                                        tangent_projection=True),
      "fixnorm": lambda base: lo.fixnorm(base, mask=mask),
      "wrs": lambda base: lo.weight_rescaling(base, mask=mask, period=1),
      # Advanced one step below, so period=2 is on an inactive step.
      "wrs-between": lambda base: lo.weight_rescaling(base, mask=mask,
                                                      period=2),
  }


# (model, width): the MLP 784-w-w-w/4-10 at ~1M, ~4M and the 24M-parameter
# 784-4096-4096-1024-10; the CNN (ResNet-style, BatchNorm) at ~1M (and ~25M
# with --full), every kernel (conv and dense) constrained.
SIZES = {
    "quick": [("mlp", 512), ("mlp", 1280), ("mlp", 4096), ("cnn", 56)],
    # The 24M MLP first: cells are written as they finish, so a run cut
    # short on a lent accelerator keeps the rows the README needs.
    "full": [("mlp", 4096), ("cnn", 290), ("cnn", 56), ("mlp", 1280),
             ("mlp", 512)],
}
OPTIMIZERS = {"quick": {"mlp:4096": ["adam", "sgdm", "lamb"]},
              "full": {"mlp:4096": ["adam", "sgdm", "lamb"]}}
BATCH = {"mlp": 256, "cnn": 8}


def build(kind: str, width: int, batch: int):
  if kind == "mlp":
    model = models.MLP((width, width, width // 4), 10)
    in_shape: tuple[int, ...] = (784,)
  else:
    model = models.ResNet((width, 2 * width, 4 * width), 10, (32, 32, 3))
    in_shape = (32 * 32 * 3,)
  key = jax.random.key(0)
  x = jax.random.normal(key, (batch, *in_shape), jnp.float32)
  y = jax.random.randint(key, (batch,), 0, 10)
  variables = model.init(key, x[:2], train=True)
  params = variables["params"]
  rest = {k: v for k, v in variables.items() if k != "params"}

  def loss(p):
    if rest:
      logits, _ = model.apply({"params": p, **rest}, x, train=True,
                              mutable=list(rest))
    else:
      logits = model.apply({"params": p}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, loss, lo.masks.kernels(params)


def _bytes(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost.get("bytes accessed", float("nan")))


def _temp_bytes(compiled) -> int:
  return int(compiled.memory_analysis().temp_size_in_bytes)


def _minor_faults() -> int:
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def time_cell(kind: str, width: int, base: str, batch: int, repeats: int,
              inner: int = 1):
  params, loss, mask = build(kind, width, batch)
  n_params = int(sum(x.size for x in jax.tree.leaves(params)))
  n_masked = int(sum(x.size for x, f in zip(jax.tree.leaves(params),
                                            jax.tree.leaves(mask)) if f))
  grads = jax.grad(loss)(params)
  compiled, inputs, nbytes, temps, extra = {}, {}, {}, {}, {}
  variants = _variants(mask)
  base_state_bytes = None
  for name, make in variants.items():
    tx = make(BASES[base]())
    state = tx.init(params)
    # One step: LAWN's norms are captured (free_steps=0), WRS period 2 is
    # then between periods.
    _, state = jax.jit(tx.update)(grads, state, params)
    size = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
    base_state_bytes = size if name == "base" else base_state_bytes
    extra[name] = size - base_state_bytes

    def update_apply(p, s, g, tx=tx):
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    def train_step(p, s, tx=tx):
      u, s = tx.update(jax.grad(loss)(p), s, p)
      return optax.apply_updates(p, u), s

    fu = jax.jit(update_apply, donate_argnums=(0, 1)).lower(
        params, state, grads).compile()
    fs = jax.jit(train_step, donate_argnums=(0, 1)).lower(
        params, state).compile()
    compiled[name] = {"update": fu, "step": fs}
    nbytes[name] = {"update": _bytes(fu), "step": _bytes(fs)}
    temps[name] = {"update": _temp_bytes(fu), "step": _temp_bytes(fs)}
    inputs[name] = {"update": (_copy(params), _copy(state)),
                    "step": (_copy(params), _copy(state))}

  def call(name, what, n=1):
    # n calls back to back, blocking once: on an accelerator the dispatch of
    # call i+1 overlaps call i, so a repeat times the device, not Python.
    out = inputs[name][what]
    for _ in range(n):
      p, s = out
      if what == "update":
        out = compiled[name][what](p, s, grads)
      else:
        out = compiled[name][what](p, s)
    inputs[name][what] = jax.block_until_ready(out)

  for name in variants:  # warm-up
    for what in ("update", "step"):
      for _ in range(2):
        call(name, what)
  times = {n: {"update": [], "step": []} for n in variants}
  faults = {n: {"update": 0, "step": 0} for n in variants}
  for _ in range(repeats):
    for name in variants:  # interleaved
      for what in ("update", "step"):
        f0 = _minor_faults()
        t0 = time.perf_counter()
        call(name, what, inner)
        times[name][what].append((time.perf_counter() - t0) / inner)
        faults[name][what] += (_minor_faults() - f0) / inner

  rows = {}
  for name in variants:
    rows[name] = {}
    for what in ("update", "step"):
      t = np.asarray(times[name][what])
      base_med = float(np.median(times["base"][what]))
      med = float(np.median(t))
      q1, q3 = np.percentile(t, [25, 75])
      ratio = med / base_med
      rows[name][what] = {
          "times_s": t.tolist(), "median_s": med,
          "iqr_s": [float(q1), float(q3)], "ratio": ratio,
          "bytes": nbytes[name][what],
          "bytes_ratio": nbytes[name][what] / nbytes["base"][what],
          "temp_bytes": temps[name][what],
          "minor_faults_per_call": faults[name][what] / repeats,
          "noise": bool(name != "base" and ratio < 0.98),
      }
  return {"model": kind, "width": width, "params": n_params,
          "constrained_params": n_masked, "optimizer": base, "batch": batch,
          "repeats": repeats, "calls_per_repeat": inner, "variants": rows,
          "extra_state_bytes": extra}


def table(cells) -> str:
  out = ["| model | params (constrained) | opt | variant | update+apply: "
         "bytes ratio | update+apply: temp MiB (faults/call) | update+apply: "
         "time ratio [IQR] | full step: time ratio | extra state (B) |",
         "|---|---|---|---|---|---|---|---|---|"]
  for c in cells:
    base = c["variants"]["base"]
    for name, r in c["variants"].items():
      if name == "base":
        continue
      u, s = r["update"], r["step"]
      lo_q, hi_q = (q / base["update"]["median_s"] for q in u["iqr_s"])
      flag = lambda x: " (noise)" if x["noise"] else ""
      out.append(
          f"| {c['model']}-{c['width']} | {c['params'] / 1e6:.1f}M "
          f"({100 * c['constrained_params'] / c['params']:.0f}%) | "
          f"{c['optimizer']} | {name} | {u['bytes_ratio']:.2f} | "
          f"{u['temp_bytes'] / 2**20:.1f} ({u['minor_faults_per_call']:.0f})"
          f" | {u['ratio']:.2f} [{lo_q:.2f}-{hi_q:.2f}]{flag(u)} | "
          f"{s['ratio']:.2f}{flag(s)} | {c['extra_state_bytes'][name]} |")
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true")
  mode.add_argument("--full", action="store_true")
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--sizes", nargs="+", help="e.g. mlp:4096 cnn:56")
  p.add_argument("--optimizers", nargs="+",
                 help="default: adam and sgdm, all three on the 24M MLP")
  p.add_argument("--out", default=str(common.DEFAULT_OUT))
  p.add_argument("--tag", default="")
  p.add_argument("--inner", type=int,
                 help="calls per timed repeat (times are per call); default "
                      "1 on CPU, 20 on an accelerator")
  args = p.parse_args(argv)
  if args.inner is not None and args.inner < 1:
    p.error(f"--inner must be >= 1, got {args.inner}")
  inner = args.inner or (1 if jax.default_backend() == "cpu" else 20)
  preset = "full" if args.full else "quick"
  sizes = SIZES[preset]
  if args.sizes:
    sizes = [(s.split(":")[0], int(s.split(":")[1])) for s in args.sizes]
  from tqdm import tqdm
  cells: list[dict] = []
  plan = [(k, w, o) for k, w in sizes
          for o in (args.optimizers or OPTIMIZERS[preset].get(
              f"{k}:{w}", ["adam", "sgdm"]))]
  payload = {"environment": common.environment(), "cells": cells,
             "complete": False,
             "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
             "note": "ratios are variant / base from the same run, "
                     "interleaved, donated params and state; "
                     f"{inner} call(s) per timed repeat, blocking once; "
                     "bytes from XLA's cost analysis (a lax.cond counts both "
                     "branches); temp from XLA's memory analysis; minor page "
                     "faults per call from getrusage."}
  out = Path(args.out)
  for kind, width, opt in tqdm(plan, desc="cells"):
    cells.append(time_cell(kind, width, opt, BATCH[kind], args.repeats,
                           inner))
    path = common.write_json(f"overhead{args.tag}", payload, out)
  payload["complete"] = True
  payload.update(common.provenance_of_code())
  path = common.write_json(f"overhead{args.tag}", payload, out)
  text = table(cells)
  (out / f"overhead{args.tag}.md").write_text(text + "\n")
  env = payload["environment"]
  print(f"jax {env['jax']} on {env['device_kind']} ({env['backend']})")
  print(text)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
