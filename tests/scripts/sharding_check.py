"""Run in a fresh process with 8 simulated CPU devices (see test_sharding.py).

Prints one JSON line: per method, the max difference between the sharded and
single-device updates/states, the output shardings, and collective counts.
"""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")

import json  # noqa: E402
import re  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import Mesh, NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P

import lawn_optax as lo  # noqa: E402
from tests import registry  # noqa: E402

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


def run(tx, p, g, steps=3):
  state = jax.jit(tx.init)(p)
  step = jax.jit(lambda g, s, p: tx.update(g, s, p))
  for _ in range(steps):
    u, state = step(g, state, p)
    p = optax.apply_updates(p, u)
  return u, state, p, step


out = {}
for name, make in METHODS.items():
  tx = make()
  u1, s1, p1, _ = run(tx, params, grads)
  sp = jax.device_put(params, shard)
  sg = jax.device_put(grads, shard)
  u8, s8, p8, step = run(tx, sp, sg)
  diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(
      jax.tree.leaves((u1, s1, p1)), jax.tree.leaves((u8, s8, p8))))
  hlo = step.lower(sg, s8, sp).compile().as_text()
  found = lo.frozen_norms(s8)
  targets = {} if found is None else {
      jax.tree_util.keystr(k): str(v.sharding.spec)
      for k, v in jax.tree_util.tree_leaves_with_path(found)}
  out[name] = {
      "max_abs_diff": diff,
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
