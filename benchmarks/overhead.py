"""What LAWN (and FixNorm, WRS, the tangent projection) cost per step, jitted.

    python -m benchmarks.overhead            # CPU-sized cells (~1M-24M params)
    python -m benchmarks.overhead --full     # + LAMB, a 25M-param CNN (GPU)

For each model and base optimizer (Adam, SGD-momentum, LAMB) it compiles,
with donated params and optimizer state, (a) ``update + apply_updates``
and (b) a full train step (forward, backward, update, apply) for the base
optimizer and every variant:

  lawn-tensor / lawn-unit      LAWN (``free_steps=1``), constrained phase: the
                               chain ``named_chain(base, constrain_norms)``,
                               the update stored and read twice, per tensor /
                               per output unit
  lawn-free                    the free phase (before ``free_steps``)
  lawn-static0                 ``free_steps=0``: no gate
  lawn-lazy / lawn-lazy-free   the one-pass lazy retraction, both phases
  lawn-tangent                 exact + tangent projection, constrained phase
  fixnorm / wrs / wrs-between  FixNorm; WRS on an active step (period 1, no
                               gate) and between periods (period 2)
  lawn-projection / -free       ``retraction="projection"``: the base update,
                               ``optax.apply_updates``, then
                               ``lo.project_norms``; both phases
  peer                         the projection a user would write: the base
                               update, ``optax.apply_updates``, then
                               ``w <- c w / ||w||`` on the masked leaves (exact,
                               per tensor), into the donated parameter buffer
  peer-capture                 the same, by hand for LAWN: the norms taken
                               from the weights on the freeze step (a
                               ``where``, every step), then projected

``--suite device`` (one accelerator session, ``benchmarks/device_run.sh
step_cost``): the 24M MLP with Adam, SGD-m and LAMB, then models people
train, full train step only: a GPT-2-small-shaped nnx LM (124M parameters,
context 1024, bf16 compute) with LAWN on the mask ``final_homogeneous``
finds and on every matrix, and a BatchNorm ResNet (stages 64-128-256-512)
at batch 256 with every conv kernel constrained (FixNorm, WRS, LAWN).
``--tiny`` runs the same suite at toy sizes (CI runs it on the CPU).

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
from typing import Any

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
  # Timed from the state after one update, so free_steps=1 is constrained.
  return {
      "base": lambda base: base,
      "lawn-tensor": lambda base: lawn(base, free_steps=1),
      "lawn-unit": lambda base: lawn(base, free_steps=1, granularity="unit"),
      "lawn-free": lambda base: lawn(base, free_steps=NEVER),
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
      "lawn-projection": lambda base: Projected(lawn(
          base, free_steps=1, retraction="projection")),
      "lawn-projection-free": lambda base: Projected(lawn(
          base, free_steps=NEVER, retraction="projection")),
      "peer": lambda base: Peer(base, mask),
      "peer-capture": lambda base: Peer(base, mask, freeze_at=1),
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
BATCH = {"mlp": 256, "cnn": 8, "resnet": 256, "gpt": 8, "gpt-tiny": 4}
# One accelerator session (issue 26), in the order its results matter:
# (kind, width, optimizer, programs, batch). --tiny: the same at toy sizes.
_MLP_CELLS = ("base", "lawn-tensor", "lawn-unit", "lawn-free", "lawn-lazy",
              "lawn-lazy-free", "lawn-projection", "lawn-projection-free",
              "fixnorm", "wrs", "peer", "peer-capture")
DEVICE_SUITE = [
    ("mlp", 4096, "adam", ("update", "step"), 256, _MLP_CELLS),
    ("gpt", 768, "adam", ("step",), 8, None),
    ("resnet", 64, "sgdm", ("step",), 256, None),
    ("mlp", 4096, "sgdm", ("update", "step"), 256, _MLP_CELLS),
    ("mlp", 4096, "lamb", ("update", "step"), 256, _MLP_CELLS),
]
# CI: each kind of cell once, few variants (every compile costs seconds).
TINY_SUITE = [
    ("mlp", 64, "adam", ("update", "step"), 16, ("base", "lawn-tensor",
                                                  "lawn-projection", "peer")),
    ("gpt-tiny", 32, "adam", ("step",), 4, ("base", "lawn-auto-mask",
                                             "peer-all")),
    ("resnet", 4, "sgdm", ("step",), 8, ("base", "fixnorm", "peer-all")),
]


class Peer:
  """The hand-written projection a user would write after
  ``optax.apply_updates``: ``w <- c w / ||w||`` on the masked leaves, ``c``
  their norms when it was set up (exact, per tensor). Its state is the base
  optimizer's and the norms. With ``freeze_at``, LAWN by hand: ``c`` is
  taken from the weights on update ``freeze_at`` (a ``where``, no branch)
  and the projection acts from then on."""

  def __init__(self, base: optax.GradientTransformation, mask,
               freeze_at: int | None = None):
    self.base, self.mask, self.freeze_at = base, mask, freeze_at

  def init(self, params):
    norms = jax.tree.map(lambda w, m: jnp.linalg.norm(w) if m else None,
                         params, self.mask)
    return self.base.init(params), norms, jnp.zeros([], jnp.int32)

  def update(self, grads, state, params):
    u, base_state = self.base.update(grads, state[0], params)
    norms, count = state[1], state[2]
    if self.freeze_at is not None:
      norms = jax.tree.map(
          lambda w, m, c: jnp.where(count == self.freeze_at,
                                    jnp.linalg.norm(w), c) if m else c,
          params, self.mask, norms)
    return u, (base_state, norms, count + 1)

  def project(self, params, state):
    on = True if self.freeze_at is None else state[2] > self.freeze_at
    return jax.tree.map(
        lambda w, m, c: (jnp.where(on, w * (c / jnp.linalg.norm(w)).astype(
            w.dtype), w) if m else w), params, self.mask, state[1])


class Projected:
  """A transform built with ``retraction="projection"``, with the library's
  projection after ``optax.apply_updates`` (:func:`lawn_optax.project_norms`)."""

  def __init__(self, tx: optax.GradientTransformation):
    self.init, self.update = tx.init, tx.update

  @staticmethod
  def project(params, state):
    return lo.project_norms(params, state)


def _people_variants(masks):
  """Variants timed on the models people train (full step only)."""
  lawn = lambda base, mask, **kw: lo.lawn(base, mask=mask, **kw)
  out = {"base": lambda base: base}
  if "auto" in masks:   # the LM: LAWN on its final homogeneous set
    out["lawn-auto-mask"] = lambda base: lawn(base, masks["auto"],
                                              free_steps=1)
    out["lawn-auto-mask-free"] = lambda base: lawn(base, masks["auto"],
                                                   free_steps=NEVER)
  all_ = masks["all"]
  out.update({
      "lawn-all": lambda base: lawn(base, all_, free_steps=1),
      "lawn-all-lazy": lambda base: lawn(base, all_, free_steps=1,
                                         retraction="lazy"),
      "peer-all": lambda base: Peer(base, all_),
  })
  if "auto" not in masks:   # the BN CNN: the FixNorm / WRS use
    out["fixnorm"] = lambda base: lo.fixnorm(base, mask=all_)
    out["wrs"] = lambda base: lo.weight_rescaling(base, mask=all_, period=1)
  return out


def build_gpt(d: int, batch: int, tiny: bool = False):
  """A GPT-2-small-shaped nnx LM (d=768: 12 layers, 12 heads, context 1024,
  vocabulary 50257; ``tiny``: 2 layers, context 16, vocabulary 128) with
  bf16 compute; its loss, and masks: what ``final_homogeneous`` finds
  (``"auto"``) and every matrix (``"all"``)."""
  from flax import nnx
  vocab, depth, heads, seq = ((128, 2, 2, 16) if tiny else
                              (50257, 12, 12, 1024))
  model = models.gpt(vocab, d, depth, heads, seq, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model, nnx.Param)
  params = state.to_pure_dict()
  tokens = jax.random.randint(jax.random.key(0), (batch, seq + 1), 0, vocab)
  auto = lo.masks.final_homogeneous(model, tokens[:1, :-1]).to_pure_dict()
  every = jax.tree.map(lambda x: x.ndim >= 2, params)

  def loss(p):
    p16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), p)
    logits = nnx.merge(graphdef, p16)(tokens[:, :-1]).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, tokens[:, 1:]).mean()

  return params, loss, {"auto": auto, "all": every}


def build(kind: str, width: int, batch: int):
  if kind in ("gpt", "gpt-tiny"):
    return build_gpt(width, batch, tiny=kind == "gpt-tiny")
  if kind == "resnet":
    model = models.ResNet((width, 2 * width, 4 * width, 8 * width), 10,
                          (32, 32, 3))
    in_shape: tuple[int, ...] = (32 * 32 * 3,)
  elif kind == "mlp":
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

  if kind == "resnet":   # every conv kernel (the FixNorm / WRS use)
    convs = lo.masks.by_path(params, r"(.*/)?Conv_\d+/kernel")
    return params, loss, {"all": convs}
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


def _programs(tx, loss):
  """update+apply and the full step of ``tx`` (a Peer projects after the
  apply)."""
  post = tx.project if isinstance(tx, (Peer, Projected)) else (
      lambda p, s: p)

  def update_apply(p, s, g):
    u, s = tx.update(g, s, p)
    return post(optax.apply_updates(p, u), s), s

  def train_step(p, s):
    u, s = tx.update(jax.grad(loss)(p), s, p)
    return post(optax.apply_updates(p, u), s), s

  return {"update": update_apply, "step": train_step}


def time_cell(kind: str, width: int, base: str, batch: int, repeats: int,
              inner: int = 1, what=("update", "step"), only=None):
  params, loss, masks = build(kind, width, batch)
  people = isinstance(masks, dict) and "all" in masks
  mask = masks["all"] if people else masks
  n_params = int(sum(x.size for x in jax.tree.leaves(params)))
  n_masked = int(sum(x.size for x, f in zip(jax.tree.leaves(params),
                                            jax.tree.leaves(mask)) if f))
  grads = jax.grad(loss)(params)
  variants = _people_variants(masks) if people else _variants(mask)
  if only:
    variants = {n: v for n, v in variants.items() if n in only}
  whats = tuple(what)
  cells = _compile(variants, BASES[base], params, grads, loss, whats)
  times, faults = _time_interleaved(cells, grads, whats, repeats, inner)
  rows: dict = {}
  for name, cell in cells.items():
    rows[name] = {}
    for w in whats:
      t = np.asarray(times[name][w])
      med = float(np.median(t))
      q1, q3 = np.percentile(t, [25, 75])
      ratio = med / float(np.median(times["base"][w]))
      rows[name][w] = {
          "times_s": t.tolist(), "median_s": med,
          "iqr_s": [float(q1), float(q3)], "ratio": ratio,
          "bytes": cell["bytes"][w],
          "bytes_ratio": cell["bytes"][w] / cells["base"]["bytes"][w],
          "temp_bytes": cell["temp_bytes"][w],
          "minor_faults_per_call": faults[name][w] / repeats,
          "noise": bool(name != "base" and ratio < 0.98),
      }
  return {"model": kind, "width": width, "params": n_params,
          "programs": list(whats),
          "constrained_params": n_masked, "optimizer": base, "batch": batch,
          "repeats": repeats, "calls_per_repeat": inner, "variants": rows,
          "extra_state_bytes": {n: c["extra_state_bytes"]
                                for n, c in cells.items()}}


def _compile(variants, make_base, params, grads, loss, whats
             ) -> dict[str, dict[str, Any]]:
  """Per variant: its programs compiled with donated buffers, their bytes,
  the inputs each is called on, and its state's bytes beyond the base's."""
  cells: dict[str, dict[str, Any]] = {}
  base_state_bytes = None
  for name, make in variants.items():
    tx = make(make_base())
    state = tx.init(params)
    # One step: LAWN's norms are captured (free_steps=0), WRS period 2 is
    # then between periods.
    _, state = jax.jit(tx.update)(grads, state, params)
    size = int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))
    base_state_bytes = size if name == "base" else base_state_bytes
    programs = _programs(tx, loss)
    cell: dict[str, Any] = {"extra_state_bytes": size - base_state_bytes,
                            "compiled": {}, "bytes": {}, "temp_bytes": {},
                            "inputs": {}}
    for w in whats:
      args = (params, state, grads) if w == "update" else (params, state)
      f = jax.jit(programs[w], donate_argnums=(0, 1)).lower(*args).compile()
      cell["compiled"][w], cell["bytes"][w] = f, _bytes(f)
      cell["temp_bytes"][w] = _temp_bytes(f)
      cell["inputs"][w] = (_copy(params), _copy(state))
    cells[name] = cell
  return cells


def _time_interleaved(cells, grads, whats, repeats: int, inner: int):
  """Seconds per call (and minor page faults) of every program, the
  variants interleaved within each repeat, after two warm-up calls."""

  def call(cell, what, n=1):
    # n calls back to back, blocking once: on an accelerator the dispatch of
    # call i+1 overlaps call i, so a repeat times the device, not Python.
    out = cell["inputs"][what]
    for _ in range(n):
      p, s = out
      if what == "update":
        out = cell["compiled"][what](p, s, grads)
      else:
        out = cell["compiled"][what](p, s)
    cell["inputs"][what] = jax.block_until_ready(out)

  for cell in cells.values():  # warm-up
    for what in whats:
      for _ in range(2):
        call(cell, what)
  times: dict = {n: {w: [] for w in whats} for n in cells}
  faults: dict = {n: {w: 0 for w in whats} for n in cells}
  for _ in range(repeats):
    for name, cell in cells.items():  # interleaved
      for what in whats:
        f0 = _minor_faults()
        t0 = time.perf_counter()
        call(cell, what, inner)
        times[name][what].append((time.perf_counter() - t0) / inner)
        faults[name][what] += (_minor_faults() - f0) / inner
  return times, faults


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
      s = r["step"]
      flag = lambda x: " (noise)" if x["noise"] else ""
      if "update" in r:
        u = r["update"]
        lo_q, hi_q = (q / base["update"]["median_s"] for q in u["iqr_s"])
        upd = (f"{u['bytes_ratio']:.2f} | {u['temp_bytes'] / 2**20:.1f} "
               f"({u['minor_faults_per_call']:.0f}) | {u['ratio']:.2f} "
               f"[{lo_q:.2f}-{hi_q:.2f}]{flag(u)}")
      else:
        upd = "(step only) | | "
      out.append(
          f"| {c['model']}-{c['width']} | {c['params'] / 1e6:.1f}M "
          f"({100 * c['constrained_params'] / c['params']:.0f}%) | "
          f"{c['optimizer']} | {name} | {upd} | "
          f"{s['ratio']:.2f}{flag(s)} | {c['extra_state_bytes'][name]} |")
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true")
  mode.add_argument("--full", action="store_true")
  p.add_argument("--suite", choices=["device"],
                 help="device: the accelerator session's cells (issue 26)")
  p.add_argument("--tiny", action="store_true",
                 help="with --suite: the same cells at toy sizes (CPU, CI)")
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
  plan = [(k, w, o, ("update", "step"), BATCH[k], None) for k, w in sizes
          for o in (args.optimizers or OPTIMIZERS[preset].get(
              f"{k}:{w}", ["adam", "sgdm"]))]
  if args.suite:
    plan = TINY_SUITE if args.tiny else DEVICE_SUITE
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
  for kind, width, opt, what, batch, only in tqdm(plan, desc="cells"):
    cells.append(time_cell(kind, width, opt, batch, args.repeats, inner,
                           what, only))
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
