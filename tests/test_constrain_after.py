"""constrain_norms_after: the chain's results without an update-sized buffer.

It recomputes the base update inside the gate instead of storing it, so the
checks are: same results and state as ``named_chain(..., constrain_norms)``;
inactive steps are the base step; XLA's compiled program really holds no
update-sized temporary (memory analysis); and bases that must not or should
not run twice fall back to the chain.
"""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lawn_optax as lo
from lawn_optax import _gating, _recompute
from tests import tolerance

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
def test_same_results_and_state_as_the_chain(base, setting):
  rng = np.random.default_rng(0)
  params = _params(rng)
  grads = [jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape),
                                              x.dtype), params)
           for _ in range(10)]
  kw = SETTINGS[setting]
  fused = lo.constrain_norms_after([("base", BASES[base]())], "c", MASK, **kw)
  chain = optax.named_chain(("base", BASES[base]()),
                            ("c", lo.constrain_norms(MASK, **kw)))
  assert fused is not chain
  got, want = _run(fused, params, grads, 10), _run(chain, params, grads, 10)
  # The two paths fuse (so round and reduce) differently: each step within
  # twice the float32 error model's bound (tests/tolerance.py). Largest
  # reduction: the global norm of clip_by_global_norm (all 50 weights); at
  # most four per step (that norm, LAMB's two, the retraction's); relative
  # to the weights (a retracted update is a difference of weights).
  scale = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(
      [p for _, p, _ in want]))
  for t, ((u, p, s), (u_ref, p_ref, s_ref)) in enumerate(zip(got, want)):
    atol = 2 * tolerance.reduction_bound(50, scale, reductions=4, steps=t + 1)
    chex.assert_trees_all_equal_structs(s, s_ref)
    chex.assert_trees_all_close(u, u_ref, rtol=0, atol=atol)
    chex.assert_trees_all_close(p, p_ref, rtol=0, atol=atol)
    chex.assert_trees_all_close(s["c"].targets, s_ref["c"].targets, rtol=0,
                                atol=atol)
  # The constraint holds on the fused path's own trajectory: the norm of the
  # retracted weight, recomputed, is its target to within two norms' error
  # (the retraction's and this one's) of 30 terms.
  last_p, last_s = got[-1][1], got[-1][2]
  norms = lo.weight_norms(last_p, MASK, kw.get("granularity", "tensor"))
  chex.assert_trees_all_close(norms, last_s["c"].targets, rtol=(
      tolerance.reduction_bound(30, 1.0, reductions=2)), atol=0)


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


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_inactive_rescale_is_the_identity_on_every_float(dtype):
  special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -3.5, 7.0])
  u = jnp.asarray(special, dtype)
  w = jnp.asarray(special[::-1], dtype)
  k = jnp.asarray(1.7, jnp.float32)
  with jax.numpy_dtype_promotion("strict"):  # library code: no implicit casts
    got = _gating.rescaled_when(jnp.asarray(False), w, u, k)
  bits = f"uint{8 * jnp.dtype(dtype).itemsize}"
  # Bit for bit, except a NaN's payload: XLA:GPU returns its own NaN
  # (0x7fffffff for float32 on an H200), still a NaN.
  assert np.isnan(np.asarray(got, np.float32)[0])
  np.testing.assert_array_equal(np.asarray(got).view(bits)[1:],
                                np.asarray(u).view(bits)[1:])
  active = _gating.rescaled_when(jnp.asarray(True), w[3:], u[3:], k)
  want = lo.numerics.rescaled_update(w[3:], u[3:], k)
  np.testing.assert_array_equal(np.asarray(active, np.float32),
                                np.asarray(want, np.float32))


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
    "stored-chain": lambda: optax.named_chain(
        ("base", optax.adam(0.05)),
        ("lawn", lo.constrain_norms(MASK, start_step=5))),
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


def _temp_bytes(tx, params, grads):
  state = tx.init(params)

  def update_apply(p, s, g):
    u, s = tx.update(g, s, p)
    return optax.apply_updates(p, u), s

  compiled = jax.jit(update_apply, donate_argnums=(0, 1)).lower(
      params, state, grads).compile()
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("free_steps", [0, 10**6])
@pytest.mark.parametrize("base", ["adam", "sgdm"])
def test_no_update_sized_temporary(base, free_steps, dtype):
  """XLA's memory analysis of update+apply (donated, as in training): the
  gated LAWN holds no buffer the size of a constrained weight (nor a float32
  copy of a bf16 one), in the constrained phase (traced start) and in the
  free phase; the chain it replaces holds one (so the check can fail).
  XLA:CPU's fusion: on an H200 (jax 0.11.2) the Adam cases at these shapes
  kept one ``w + u``-sized temporary (not at the 24M MLP's, see
  ``benchmarks/results/overhead_gpu.md``)."""
  key = jax.random.key(0)
  params = {"w": jax.random.normal(key, (512, 512), dtype),
            "b": jnp.zeros(512, dtype),
            "v": jax.random.normal(key, (512, 256), dtype)}
  grads = jax.tree.map(lambda x: 0.01 * jnp.ones_like(x), params)
  mask = {"w": True, "b": False, "v": True}
  smallest = 512 * 256 * jnp.dtype(dtype).itemsize
  start = jnp.asarray(free_steps)
  fused = lo.lawn(BASES[base](), free_steps=start, mask=mask)
  assert _temp_bytes(fused, params, grads) < smallest // 4
  chain = optax.named_chain(("base", BASES[base]()),
                            ("lawn", lo.constrain_norms(mask,
                                                        start_step=start)))
  if base == "adam":
    assert _temp_bytes(chain, params, grads) >= smallest


class _Rotate(optax.GradientTransformation):
  """A base with a matrix product in its update (like Muon or Shampoo)."""

  def __new__(cls):
    def update(g, state, params=None):
      del params
      return jax.tree.map(lambda x: x @ jnp.eye(x.shape[-1], dtype=x.dtype)
                          if x.ndim == 2 else x, g), state
    return super().__new__(cls, lambda p: optax.EmptyState(), update)


def test_expensive_or_effectful_bases_run_once():
  calls = []

  def noted(g, state, params=None):
    jax.debug.callback(lambda: calls.append(1))
    return g, state

  rng = np.random.default_rng(2)
  params = _params(rng)
  g = jax.tree.map(jnp.ones_like, params)
  for base, cheap in [(optax.adam(0.1), True), (_Rotate(), False),
                      (optax.GradientTransformation(
                          lambda p: optax.EmptyState(), noted), False)]:
    jaxpr = jax.make_jaxpr(lambda g, s, base=base: base.update(g, s, params))(
        g, base.init(params)).jaxpr
    assert _recompute.cheap_to_recompute(jaxpr) is cheap
  tx = lo.lawn(optax.GradientTransformation(lambda p: optax.EmptyState(),
                                            noted), free_steps=1, mask=MASK)
  state = tx.init(params)
  step = jax.jit(tx.update)
  for _ in range(4):
    u, state = step(g, state, params)
    params = optax.apply_updates(params, u)
  jax.effects_barrier()
  assert len(calls) == 4  # once per step, not twice on constrained steps
  # The fallback is the chain: same numbers as building it by hand.
  tx = lo.lawn(_Rotate(), free_steps=1, mask=MASK)
  ref = optax.named_chain(("base", _Rotate()),
                          ("lawn", lo.constrain_norms(MASK, start_step=1)))
  got, want = _run(tx, params, [g] * 3, 3), _run(ref, params, [g] * 3, 3)
  chex.assert_trees_all_close(got[-1][1], want[-1][1], rtol=1e-6)



def test_collectives_in_the_base_are_not_rerun():
  """A base that all-reduces the gradient (inside shard_map) keeps the
  stored update: rerunning it would repeat the all-reduce."""
  from jax.sharding import PartitionSpec as P
  mesh = jax.make_mesh((1,), ("d",))
  seen = []

  def body(g):
    jaxpr = jax.make_jaxpr(lambda x: jax.lax.pmean(x, "d") * 2.0)(g)
    seen.append(_recompute.cheap_to_recompute(jaxpr.jaxpr))
    return g

  jax.shard_map(body, mesh=mesh, in_specs=P(), out_specs=P())(jnp.ones(3))
  assert seen == [False]


def test_inactive_rescale_keeps_float64():
  """With x64 on, a float64 update passes through unrounded."""
  with jax.enable_x64(True):
    u = jnp.asarray([1.0 + 1e-12, np.nan, -0.0, 3.0], jnp.float64)
    w = jnp.ones(4, jnp.float64)
    got = _gating.rescaled_when(jnp.asarray(False), w, u,
                                    jnp.asarray(1.3, jnp.float32))
    assert got.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(got).view("uint64"),
                                  np.asarray(u).view("uint64"))


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
  the chain's derivatives: the bit-level ordering of ``_after`` must carry the
  gradient's tangent (it did not: d/dg flowed through the norms alone, and
  was 0 for constrained leaves in the free phase). Independent checks: in
  the free phase the derivative is plain optax's; for SGD-m (smooth enough
  for it) central finite differences agree."""
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
