"""Run in a fresh process with 8 simulated CPU devices (see test_sharding.py).

Prints one JSON line: per method, the max difference between the sharded and
single-device updates/states, that difference as a fraction of the bound
the float32 error model allows (tests/tolerance.py), the same fraction for
each float32 run against a float64 NumPy reference where one exists, the
output shardings, and collective counts.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

import lawn_optax as lo  # noqa: E402
from tests import reference as ref  # noqa: E402
from tests import registry, tolerance  # noqa: E402

assert jax.device_count() == 8, jax.devices()
mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
SIZES = [(16, 32), (32, 32), (32, 8)]
rng = np.random.default_rng(0)
params = {f"Dense_{i}": {"kernel": jnp.asarray(rng.normal(size=s), jnp.float32),
                         "bias": jnp.asarray(rng.normal(size=s[1]), jnp.float32)}
          for i, s in enumerate(SIZES)}
grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                           jnp.float32), params)
spec = {k: {"kernel": P("data", "model"), "bias": P("model")} for k in params}
shard = jax.tree.map(lambda s: NamedSharding(mesh, s), spec,
                     is_leaf=lambda x: isinstance(x, P))
kmask = lo.masks.kernels(params)

METHODS = {m.name: (lambda m=m: m.factory(m.learning_rate, kmask))
           for m in registry.METHODS}


STEPS = 3
# The error model's bound (tests/tolerance.py): the largest reduction has as
# many terms as the largest tensor (per-tensor norms, LAMB's trust ratio);
# at most three reductions enter one step of any method here (LAMB: ||w||,
# ||u|| and the retraction's ||w + u||).
TERMS = max(int(np.prod(s)) for s in SIZES)
REDUCTIONS = 3


def run(tx, p, g, method, steps=STEPS):
  state = jax.jit(tx.init)(p)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p))
  apply = jax.jit(lambda p, u, s: registry.apply(method, p, u, s))
  history = [p]
  for _ in range(steps):
    u, state = step(g, state, p)
    p = apply(p, u, state)
    history.append(p)
  return u, state, p, step, history


def amax(x):
  """The largest finite magnitude (a curvature state may hold NaN)."""
  x = np.abs(np.asarray(x, np.float64))
  return float(np.max(x[np.isfinite(x)], initial=0.0))


def secant_condition(history):
  """How much the secant estimate ``||g_t - g_{t-1}|| / ||w_t - w_{t-1}||``
  magnifies an error of the weights: ``max ||w_t|| / ||w_t - w_{t-1}||``
  (the step is a difference of two weight-sized numbers)."""
  worst = 1.0
  for a, b in zip(history, history[1:]):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
      step = np.linalg.norm(y - x)
      if step > 0:
        worst = max(worst, np.linalg.norm(y) / step)
  return worst


# Methods whose estimate divides by a difference of consecutive weights.
CANCELLING = {"cblr_secant"}


def bound_ratio(pairs, condition):
  """The largest ``|a - b| / (2 * bound)`` over leaf pairs ``(a, b, scale)``:
  at most 1 when the two float32 results agree as the error model says
  they must, whatever order each reduced in."""
  worst = 0.0
  for a, b, scale in pairs:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.array_equal(np.isnan(a), np.isnan(b)):
      return np.inf  # a NaN on one side only
    diff = amax(np.where(np.isnan(a), 0.0, a - b))
    bound = condition * tolerance.reduction_bound(
        TERMS, scale, reductions=REDUCTIONS, steps=STEPS)
    worst = max(worst, diff / (2 * bound) if bound > 0 else
                (0.0 if diff == 0 else np.inf))
  return worst


def leaf_pairs(one, other, p0):
  """(one-device leaf, sharded leaf, scale): updates and params relative to
  the weights they change (a retracted update is a difference of weights),
  state leaves to their own magnitude."""
  (u1, s1, p1), (u8, s8, p8) = one, other
  pairs = []
  for a, b, w0, w1 in zip(jax.tree.leaves(u1), jax.tree.leaves(u8),
                          jax.tree.leaves(p0), jax.tree.leaves(p1)):
    pairs.append((a, b, max(amax(w0), amax(w1))))
  for a, b, w0 in zip(jax.tree.leaves(p1), jax.tree.leaves(p8),
                      jax.tree.leaves(p0)):
    pairs.append((a, b, max(amax(a), amax(w0))))
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    pairs.append((a, b, amax(a)))
  return pairs


# Float64 references (tests/reference.py) for the methods they describe: the
# weights after STEPS steps of the same constant gradients.
REFERENCES = {
    "lawn_adam": lambda lr: (lambda: ref.Adam(lr)),
    "lawn_lamb": lambda lr: (lambda: ref.Lamb(lr)),
    "lawn_adam_projection": lambda lr: (lambda: ref.Adam(lr)),
}


def float64_params(name):
  flat = {f"{k}/{n}": np.asarray(v, np.float64)
          for k, leaf in params.items() for n, v in leaf.items()}
  flat_grads = {f"{k}/{n}": np.asarray(v, np.float64)
                for k, leaf in grads.items() for n, v in leaf.items()}
  mask = {f"{k}/{n}": n == "kernel" for k in params for n in params[k]}
  history, _ = ref.lawn_trajectory(
      flat, lambda w, t: flat_grads, REFERENCES[name](
          registry.BY_NAME[name].learning_rate),
      free_steps=registry.FREE, mask=mask, steps=STEPS)
  return {k: {n: history[-1][f"{k}/{n}"] for n in params[k]} for k in params}


out = {}
for name, make in METHODS.items():
  tx = make()
  method = registry.BY_NAME[name]
  u1, s1, p1, _, history = run(tx, params, grads, method)
  sp = jax.device_put(params, shard)
  sg = jax.device_put(grads, shard)
  u8, s8, p8, step, _ = run(tx, sp, sg, method)
  diff = max(amax(np.where(np.isnan(a), 0.0, np.asarray(a, np.float64) - b))
             for a, b in zip(jax.tree.leaves((u1, s1, p1)),
                             jax.tree.leaves((u8, s8, p8))))
  condition = secant_condition(history) if name in CANCELLING else 1.0
  ratios = {"sharded vs one device": bound_ratio(
      leaf_pairs((u1, s1, p1), (u8, s8, p8), params), condition)}
  if name in REFERENCES:
    exact = float64_params(name)
    for label, got in (("one device vs float64", p1),
                       ("sharded vs float64", p8)):
      # One float32 run against the exact value: within one bound (the
      # ratio is to two bounds, hence the factor 2).
      ratios[label] = 2 * bound_ratio(
          [(a, b, max(amax(b), amax(w0))) for a, b, w0 in zip(
              jax.tree.leaves(got), jax.tree.leaves(exact),
              jax.tree.leaves(params))], condition)
  # The update's program; on the projection path the whole step (the norms
  # are taken in project_norms, after apply_updates).
  def whole(g, s, p, tx=tx, method=method):
    u, s = tx.update(g, s, p)
    return registry.apply(method, p, u, s), s
  hlo = (jax.jit(whole) if method.projected else step).lower(
      sg, s8, sp).compile().as_text()
  found = lo.frozen_norms(s8)
  targets = {} if found is None else {
      jax.tree_util.keystr(k): str(v.sharding.spec)
      for k, v in jax.tree_util.tree_leaves_with_path(found)}
  out[name] = {
      "max_abs_diff": diff,
      "bound_ratios": ratios,
      "condition": condition,
      "updates_keep_param_sharding": all(
          u.sharding.is_equivalent_to(s, u.ndim) for u, s in zip(
              jax.tree.leaves(u8), jax.tree.leaves(shard))),
      "params_keep_sharding": all(
          x.sharding.is_equivalent_to(s, x.ndim) for x, s in zip(
              jax.tree.leaves(p8), jax.tree.leaves(shard))),
      "target_specs": targets,
      "all_gather": len(re.findall(r"\ball-gather(-start)?\(", hlo)),
      "all_reduce": len(re.findall(r"\ball-reduce(-start)?\(", hlo)),
  }
print("RESULT " + json.dumps(out))
