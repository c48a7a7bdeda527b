"""constrain_norms_after: the chain, one engine.

Issue 41: the update was once run by one of two engines, chosen at trace
time (the stored chain, or the base update recomputed inside the gate). It
is now ``named_chain(*steps, (name, constrain_norms(...)))`` with its state
checked, so the checks are: the same bits as that chain, built by hand,
for every base and setting; inactive steps are the base step; the gate
stays a branch in XLA; the base runs once per step; derivatives through
``update`` are the chain's (and plain optax's in the free phase).
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from lawn_optax import _gating

pytestmark = pytest.mark.numerics


def _params(rng, dtype=jnp.float32):
  return {"k1": jnp.asarray(rng.normal(size=(6, 5)), dtype),
          "b1": jnp.asarray(rng.normal(size=(5,)), dtype),
          "k2": jnp.asarray(rng.normal(size=(5, 3)), dtype)}


MASK = {"k1": True, "b1": False, "k2": True}

BASES = {
    "adam": lambda: optax.adam(0.05),
    "sgdm": lambda: optax.sgd(0.1, momentum=0.9),
    "lamb": lambda: optax.lamb(0.05),
    "clip+adamw": lambda: optax.chain(optax.clip_by_global_norm(1.0),
                                      optax.adamw(0.05, weight_decay=0.1)),
}

SETTINGS = {
    "lawn": dict(start_step=3),
    "lawn-unit": dict(start_step=3, granularity="unit"),
    "wrs": dict(target=2.0, period=3, granularity="unit"),
    "traced-start": dict(start_step=jnp.asarray(2)),
}


def _run(tx, params, grads, steps):
  step = jax.jit(tx.update)
  state = tx.init(params)
  out = []
  for g in grads[:steps]:
    u, state = step(g, state, params)
    params = optax.apply_updates(params, u)
    out.append((u, params, state))
  return out


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("base", BASES)
def test_the_same_bits_as_the_chain_built_by_hand(base, setting):
  rng = np.random.default_rng(0)
  params = _params(rng)
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                              x.dtype), params)
           for _ in range(10)]
  kw = SETTINGS[setting]
  after = lo.constrain_norms_after([("base", BASES[base]())], "c", MASK, **kw)
  chain = optax.named_chain(("base", BASES[base]()),
                            ("c", lo.constrain_norms(MASK, **kw)))
  got, want = _run(after, params, grads, 10), _run(chain, params, grads, 10)
  for step, step_ref in zip(got, want):
    chex.assert_trees_all_equal(step, step_ref)
  # The constraint acted (so the comparison is not of two base steps).
  norms = lo.weight_norms(got[-1][1], MASK, kw.get("granularity", "tensor"))
  chex.assert_trees_all_close(norms, got[-1][2]["c"].targets, rtol=1e-5)


def test_inactive_steps_are_the_base_step():
  """SGD's update is one multiply: on inactive steps it must come out bit
  for bit, and the unconstrained leaves on every step."""
  rng = np.random.default_rng(1)
  params = _params(rng)
  lr = 0.1
  tx = lo.lawn(optax.sgd(lr), free_steps=4, mask=MASK)
  step = jax.jit(tx.update)
  state = tx.init(params)
  for t in range(8):
    g = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                           x.dtype), params)
    u, state = step(g, state, params)
    for k in params:
      if t < 4 or not MASK[k]:
        np.testing.assert_array_equal(u[k], -lr * g[k], err_msg=f"{k} {t}")
    params = optax.apply_updates(params, u)


def _hlo_computations(text: str) -> dict[str, list[str]]:
  """An HLO module's text: each computation's name -> its instruction lines."""
  comps: dict[str, list[str]] = {}
  name = None
  for line in text.splitlines():
    head = re.match(r"(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if head and not line.startswith("HloModule"):
      name = head.group(1)
      comps[name] = []
    elif line.startswith("}"):
      name = None
    elif name is not None and " = " in line:
      comps[name].append(line)
  return comps


def _opcode(line: str) -> str:
  return re.search(r" = .*?([a-z][a-z0-9\-]*)\(", line).group(1)


GATED = {
    "lawn": lambda: lo.lawn(optax.adam(0.05), free_steps=jnp.asarray(5),
                            mask=MASK),
    "lawn-sgdm-unit": lambda: lo.lawn(optax.sgd(0.1, momentum=0.9),
                                      free_steps=5, granularity="unit",
                                      mask=MASK),
    "lawn-lazy": lambda: lo.lawn(optax.adam(0.05), free_steps=5, mask=MASK,
                                 retraction="lazy"),
    "lawn-tangent": lambda: lo.lawn(optax.adam(0.05), free_steps=5,
                                    mask=MASK, tangent_projection=True),
    "wrs": lambda: lo.weight_rescaling(optax.sgd(0.1), mask=MASK, period=3),
}


@pytest.mark.parametrize("make", GATED.values(), ids=list(GATED))
def test_the_gate_stays_a_branch_in_xla(make):
  """XLA's conditional simplifier turns a conditional whose branches hold
  only elementwise ops and reductions into both branches computed and a
  select (XLA:GPU did: on an H200 LAWN-Adam's free phase cost 1.61x Adam's
  update, as much as the constrained phase). Each gate that skips a
  reduction must hold an op the simplifier keeps (the optimization
  barrier of ``_gating.branch``). Checked on the HLO XLA is handed,
  which is the same for every backend."""
  tx = make()
  params = _params(np.random.default_rng(0))
  state = tx.init(params)
  text = jax.jit(tx.update).lower(params, state, params).as_text(
      dialect="hlo")
  comps = _hlo_computations(text)
  conds = [line for lines in comps.values() for line in lines
           if _opcode(line) == "conditional"]
  assert conds, "no conditional: the test checks nothing"
  gates = 0
  for line in conds:
    listed = re.search(r"branch_computations=\{([^}]*)\}", line)
    names = ([n.strip().lstrip("%") for n in listed.group(1).split(",")]
             if listed else
             re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", line))
    ops = {n: {_opcode(x) for x in comps[n]} for n in names}
    assert len(ops) == 2, line
    if any("reduce" in o for o in ops.values()):
      gates += 1
      assert any("opt-barrier" in o for o in ops.values()), (line, ops)
  assert gates >= 1


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_after_keeps_the_bits(dtype):
  x = jnp.asarray([np.nan, -0.0, 0.0, np.inf, 1e-40, -2.5], dtype)
  bits = f"uint{8 * jnp.dtype(dtype).itemsize}"
  with jax.numpy_dtype_promotion("strict"):
    got = jax.jit(_gating.after)(x, jnp.asarray(True))
  np.testing.assert_array_equal(np.asarray(got).view(bits),
                                np.asarray(x).view(bits))


def test_the_base_runs_once_per_step():
  """A base with an effect (a callback) runs once per step, in both phases
  (the recomputing engine ran elementwise bases twice on constrained
  steps)."""
  calls = []

  def noted(g, state, params=None):
    jax.debug.callback(lambda: calls.append(1))
    return g, state

  params = _params(np.random.default_rng(2))
  g = jax.tree.map(jnp.ones_like, params)
  tx = lo.lawn(optax.GradientTransformation(lambda p: optax.EmptyState(),
                                            noted), free_steps=2, mask=MASK)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(4):
    u, state = step(g, state, params)
    params = optax.apply_updates(params, u)
  jax.effects_barrier()
  assert len(calls) == 4


def test_inactive_tangent_projection_keeps_float64():
  with jax.enable_x64(True):
    w = {"w": jnp.asarray([[1.0, 2.0], [3.0, 4.0]], jnp.float64)}
    g = {"w": jnp.asarray([[1.0 + 1e-12, -0.0], [np.nan, 5.0]], jnp.float64)}
    tx = lo.project_to_tangent(True, start_step=5)
    got, _ = tx.update(g, tx.init(w), w)
    assert got["w"].dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(got["w"]).view("uint64"),
                                  np.asarray(g["w"]).view("uint64"))


@pytest.mark.parametrize("start", [1, 5])
@pytest.mark.parametrize("base", ["adam", "sgdm"])
def test_derivatives_through_the_update_match_the_chain(base, start):
  """Differentiating through ``update`` (meta-learning, hypergradients) gives
  the chain's derivatives (the recomputing engine's bit-level ordering once
  dropped the gradient's tangent: d/dg was 0 for constrained leaves in the
  free phase). Independent checks: in the free phase the derivative is plain
  optax's; for SGD-m (smooth enough for it) central finite differences
  agree."""
  rng = np.random.default_rng(3)
  made = {"after": lo.constrain_norms_after(
              [("base", BASES[base]())], "lawn", MASK, start_step=start),
          "chain": optax.named_chain(
              ("base", BASES[base]()),
              ("lawn", lo.constrain_norms(MASK, start_step=start))),
          "plain": BASES[base]()}
  grads, losses = {}, {}
  with jax.enable_x64(True):
    params = _params(rng, jnp.float64)
    g0 = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
    for name, tx in made.items():
      state = tx.init(params)
      _, state = tx.update(g0, state, params)  # step 1: constrained if start 1

      def loss(g, tx=tx, state=state):
        u, _ = tx.update(g, state, params)
        new = optax.apply_updates(params, u)
        return sum(jnp.sum(jnp.sin(x) * x) for x in jax.tree.leaves(new))

      grads[name], losses[name] = jax.grad(loss)(g0), loss
    # The norms are float32 by design (float64 params): rtol 1e-6.
    chex.assert_trees_all_close(grads["after"], grads["chain"], rtol=1e-6,
                                atol=1e-9)
    if start > 1:
      chex.assert_trees_all_close(grads["after"], grads["plain"], rtol=1e-12)
    if base == "sgdm":
      d = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), g0)
      h = 1e-2  # float32 norms: smaller steps measure their rounding
      shift = lambda s: jax.tree.map(lambda a, b: a + s * b, g0, d)
      fd = (losses["after"](shift(h)) - losses["after"](shift(-h))) / (2 * h)
      ad = sum(jnp.vdot(a, b) for a, b in
               zip(jax.tree.leaves(grads["after"]), jax.tree.leaves(d)))
      np.testing.assert_allclose(float(ad), float(fd), rtol=1e-3)
