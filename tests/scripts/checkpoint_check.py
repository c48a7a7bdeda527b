"""Save/restore a full train state with orbax across processes.

usage: checkpoint_check.py DIR run|resume SAVE_STEP [SAVE_STEP ...]
  run:    for every method, train TOTAL steps from scratch, checkpoint after
          each SAVE_STEP steps, write the final params and state to
          DIR/final_run_METHOD.npz.
  resume: (fresh process) restore each method's checkpoint at each
          SAVE_STEP, train to TOTAL, write DIR/final_resume_SAVE_STEP_METHOD.npz.
One process per mode for all save steps: each method's step compiles once.
"""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import lawn_optax as lo
from tests import registry

TOTAL, FREE = 12, 5
directory, mode = sys.argv[1], sys.argv[2]
save_steps = [int(a) for a in sys.argv[3:]]

rng = np.random.default_rng(0)
X = jnp.asarray(rng.normal(size=(32, 6)), jnp.float32)
Y = jnp.asarray(rng.integers(0, 3, size=32))
params0 = {"Dense_0": {"kernel": jnp.asarray(rng.normal(size=(6, 8)),
                                             jnp.float32),
                       "bias": jnp.zeros(8, jnp.float32)},
           "Dense_1": {"kernel": jnp.asarray(rng.normal(size=(8, 3)),
                                             jnp.float32),
                       "bias": jnp.zeros(3, jnp.float32)}}
kmask = lo.masks.kernels(params0)
# Every registered method (tests/registry.py), and two wrappers whose state
# nests the method's.
TXS = {m.name: (lambda m=m: m.factory(m.learning_rate, kmask))
       for m in registry.METHODS}
TXS.update({
    "lawn_multisteps": lambda: optax.MultiSteps(
        lo.lawn_sgd(0.1, free_steps=2, mask=kmask, momentum=0.9), 2),
    "inject": lambda: optax.inject_hyperparams(
        lo.lawn_adam, static_args=("mask",))(learning_rate=1e-2,
                                             free_steps=FREE, mask=kmask),
})


def loss(p, t):
  idx = (jnp.arange(16) + 5 * t) % 32
  h = jax.nn.relu(X[idx] @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  logits = h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
  return optax.softmax_cross_entropy_with_integer_labels(logits, Y[idx]).mean()


def check(method):
  tx = TXS[method]()
  entry = registry.BY_NAME.get(method)

  @jax.jit
  def step(params, state, t):
    g = jax.grad(loss)(params, t)
    u, state = tx.update(g, state, params)
    if entry is None:
      return optax.apply_updates(params, u), state
    return registry.apply(entry, params, u, state), state

  ckpt = ocp.StandardCheckpointer()

  def path(save_step):
    return f"{directory}/ckpt_{method}_{save_step}"

  def train(params, state, start, save=()):
    for t in range(start, TOTAL):
      if t in save:
        ckpt.save(path(t), {"params": params, "opt_state": state,
                            "step": jnp.asarray(t, jnp.int32)})
        ckpt.wait_until_finished()
      params, state = step(params, state, jnp.asarray(t))
    return params, state

  def write(name, params, state):
    flat = {jax.tree_util.keystr(k): np.asarray(v)
            for k, v in jax.tree_util.tree_leaves_with_path((params, state))}
    np.savez(f"{directory}/{name}_{method}.npz", **flat)

  if mode == "run":
    write("final_run", *train(params0, tx.init(params0), 0, save_steps))
    return
  abstract = {"params": params0, "opt_state": tx.init(params0),
              "step": jnp.zeros([], jnp.int32)}
  for save_step in save_steps:
    restored = ckpt.restore(path(save_step), jax.tree.map(
        ocp.utils.to_shape_dtype_struct, abstract))
    assert int(restored["step"]) == save_step
    write(f"final_resume_{save_step}", *train(
        restored["params"], restored["opt_state"], save_step))


for name in TXS:
  check(name)
print("OK", mode)
