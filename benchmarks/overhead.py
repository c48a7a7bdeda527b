"""What LAWN costs per step: base optimizer vs its LAWN variants, jitted.

    python -m benchmarks.overhead            # --quick: CPU-sized models (~1M-25M params)
    python -m benchmarks.overhead --full     # adds the 25M-param CNN (meant for a GPU)

For Adam, SGD-momentum and LAMB, and for an MLP and a ResNet-style CNN at
several sizes, it times (a) the jitted optimizer update alone and (b) a full
jitted train step (forward + backward + update + apply), for the base
optimizer and for LAWN per tensor / per unit, with and without tangent
projection, all in the constrained phase (``free_steps=0``: the costly one).
Compile time is measured separately; after a warm-up, variants are timed
interleaved (round-robin) and the median of the repeats is reported, with
``block_until_ready``. It reports the ratio LAWN/base, the extra optimizer
state in bytes, the jax version and device, to JSON and a printed table.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import lawn_optax as lo
from benchmarks import common, models

BASES = {
    "adam": lambda: optax.adam(1e-3),
    "sgdm": lambda: optax.sgd(1e-2, momentum=0.9),
    "lamb": lambda: optax.lamb(1e-3),
}
VARIANTS = {
    "base": None,
    "lawn-tensor": dict(granularity="tensor", tangent_projection=False),
    "lawn-unit": dict(granularity="unit", tangent_projection=False),
    "lawn-tensor-tangent": dict(granularity="tensor", tangent_projection=True),
    "lawn-unit-tangent": dict(granularity="unit", tangent_projection=True),
}


def mlp(width: int, depth: int = 3):
  return models.MLP((width,) * depth, 10), (784,)


def cnn(width: int):
  return models.ResNet((width, 2 * width, 4 * width), 10, (32, 32, 3)), (
      32 * 32 * 3,)


# (model, width): ~1M, ~4M and ~25M parameters for the MLP; ~1M, ~5M (and
# ~25M with --full) for the CNN.
SIZES = {
    "quick": [("mlp", 512), ("mlp", 1280), ("mlp", 3300),
              ("cnn", 56), ("cnn", 128)],
    "full": [("mlp", 512), ("mlp", 1280), ("mlp", 3300),
             ("cnn", 56), ("cnn", 128), ("cnn", 290)],
}
BATCH = {"mlp": 64, "cnn": 8}


def make_tx(base: str, variant: str, mask):
  tx = BASES[base]()
  if VARIANTS[variant] is None:
    return tx
  return lo.lawn(tx, free_steps=0, mask=mask, **VARIANTS[variant])


def state_bytes(state) -> int:
  return int(sum(np.asarray(x).nbytes for x in jax.tree.leaves(state)))


def build(kind: str, width: int, batch: int):
  model, in_shape = mlp(width) if kind == "mlp" else cnn(width)
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

  # The final homogeneous sub-network (biases ignored): all MLP kernels; the
  # CNN's dense head.
  fn = lambda p, x: (model.apply({"params": p, **rest}, x, train=True,
                                 mutable=list(rest))[0] if rest
                     else model.apply({"params": p}, x))
  mask = lo.masks.final_homogeneous(fn, params, x[:2], biases="ignore")
  return params, loss, mask


def time_cell(kind, width, base, batch, repeats):
  params, loss, mask = build(kind, width, batch)
  n_params = int(sum(x.size for x in jax.tree.leaves(params)))
  grads = jax.grad(loss)(params)
  fns, args, compile_s, extra = {}, {}, {}, {}
  base_bytes = None
  for variant in VARIANTS:
    tx = make_tx(base, variant, mask)
    state = tx.init(params)
    # Advance one step so LAWN's norms are frozen (constrained phase).
    _, state = jax.jit(tx.update)(grads, state, params)
    nbytes = state_bytes(state)
    base_bytes = nbytes if variant == "base" else base_bytes
    extra[variant] = nbytes - base_bytes

    def update_only(g, s, p, tx=tx):
      return tx.update(g, s, p)

    def train_step(p, s, tx=tx):
      g = jax.grad(loss)(p)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s

    t0 = time.perf_counter()
    fu = jax.jit(update_only).lower(grads, state, params).compile()
    t1 = time.perf_counter()
    ft = jax.jit(train_step).lower(params, state).compile()
    t2 = time.perf_counter()
    compile_s[variant] = {"update": t1 - t0, "step": t2 - t1}
    fns[variant] = (fu, ft)
    args[variant] = state
  times = {v: {"update": [], "step": []} for v in VARIANTS}
  for v in VARIANTS:  # warm-up
    for _ in range(2):
      jax.block_until_ready(fns[v][0](grads, args[v], params))
      jax.block_until_ready(fns[v][1](params, args[v]))
  for _ in range(repeats):
    for v in VARIANTS:  # interleaved
      for what, call in (("update", lambda: fns[v][0](grads, args[v], params)),
                         ("step", lambda: fns[v][1](params, args[v]))):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        times[v][what].append(time.perf_counter() - t0)
  med = {v: {w: float(np.median(t)) for w, t in d.items()}
         for v, d in times.items()}
  return {
      "model": kind, "width": width, "params": n_params, "optimizer": base,
      "batch": batch, "repeats": repeats,
      "constrained_leaves": int(sum(jax.tree.leaves(mask))),
      "median_s": med,
      "ratio": {v: {w: med[v][w] / med["base"][w] for w in med[v]}
                for v in VARIANTS},
      "extra_state_bytes": extra, "compile_s": compile_s,
  }


def table(rows) -> str:
  out = ["| model | params | opt | variant | update ratio | step ratio | "
         "extra state (B) |", "|---|---|---|---|---|---|---|"]
  for r in rows:
    for v in VARIANTS:
      if v == "base":
        continue
      out.append(
          f"| {r['model']}-{r['width']} | {r['params'] / 1e6:.1f}M | "
          f"{r['optimizer']} | {v} | {r['ratio'][v]['update']:.3f} | "
          f"{r['ratio'][v]['step']:.3f} | {r['extra_state_bytes'][v]} |")
  return "\n".join(out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  mode = p.add_mutually_exclusive_group()
  mode.add_argument("--quick", action="store_true")
  mode.add_argument("--full", action="store_true")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--batch", type=int, help="default: 64 (MLP), 8 (CNN)")
  p.add_argument("--optimizers", nargs="+", default=list(BASES))
  p.add_argument("--sizes", nargs="+", help="e.g. mlp:512 cnn:48")
  p.add_argument("--out", default=str(common.RESULTS))
  p.add_argument("--tag", default="")
  args = p.parse_args(argv)
  sizes = SIZES["full" if args.full else "quick"]
  if args.sizes:
    sizes = [(s.split(":")[0], int(s.split(":")[1])) for s in args.sizes]
  from tqdm import tqdm
  rows = []
  cells = [(k, w, o) for k, w in sizes for o in args.optimizers]
  for kind, width, opt in tqdm(cells, desc="cells"):
    rows.append(time_cell(kind, width, opt, args.batch or BATCH[kind],
                          args.repeats))
  from pathlib import Path
  payload = {"environment": common.environment(), "rows": rows,
             "note": "ratios are LAWN median / base median from the same run,"
                     " interleaved; constrained phase (free_steps=0)."}
  path = common.write_json(f"overhead{args.tag}", payload, Path(args.out))
  text = table(rows)
  (Path(args.out) / f"overhead{args.tag}.md").write_text(text + "\n")
  env = payload["environment"]
  print(f"jax {env['jax']} on {env['device_kind']} ({env['backend']})")
  print(text)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
