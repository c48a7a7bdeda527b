"""The fused design of :func:`lawn_optax.constrain_norms_after` (private):
the base update recomputed inside the gate for the norms, instead of stored.

The constrained step needs ``||w + u||`` before any weight is written. The
stored design writes ``u`` to a buffer and reads it twice. Here the gate
holds only the scalars: its branch runs the base update once more, fused
into one reduction over the gradient, the base state and the weights; then
the base update runs once and the rescale ``k u + (k - 1) w`` fuses with it
(and with ``optax.apply_updates``). Only elementwise base updates are
recomputed (:func:`cheap_to_recompute`); the others keep the stored chain.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from lawn_optax import _gating, _tree

# Primitives that make an update more than one elementwise pass (matrix
# products, factorisations, loops, reductions, collectives: recomputing it
# would repeat every pass) or that must not run twice (callbacks).
NOT_RECOMPUTED = frozenset({
    "dot_general", "conv_general_dilated", "while", "scan", "fft", "eigh",
    "svd", "qr", "cholesky", "lu", "triangular_solve", "schur", "eig",
    "custom_linear_solve", "sort", "top_k", "argmax", "argmin",
    "pure_callback", "io_callback", "debug_callback", "callback",
    "custom_call"})
_NOT_RECOMPUTED_PREFIXES = ("reduce_", "cum", "psum", "pmax", "pmin",
                            "all_gather", "all_to_all", "ppermute",
                            "pbroadcast")


def cheap_to_recompute(jaxpr: Any) -> bool:
  """Whether a jaxpr is elementwise (no reduction, product, loop or
  callback, recursively): one fused pass that is cheap to run twice."""
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if (name in NOT_RECOMPUTED or "callback" in name
        or name.startswith(_NOT_RECOMPUTED_PREFIXES)):
      return False
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns") and not cheap_to_recompute(inner):
          return False
  return True


def fused_update(c: Any, base: optax.GradientTransformation,
                 chain: optax.GradientTransformation, names: list[str],
                 name: str) -> Any:
  """The ``update`` of ``named_chain(*base's steps, (name, c))`` with the
  base update recomputed inside ``c``'s gate (see the module doc); the
  chain's own update where the base is not elementwise."""

  def update_fn(updates, state, params=None, **extra_args):
    if not isinstance(state, dict) or not set(names + [name]) <= set(state):
      raise _tree.swapped_state_error(state, f"a dict with keys "
                                      f"{names + [name]}")
    base_state = {n: state[n] for n in names}
    base_update = lambda g, s: base.update(g, s, params, **extra_args)
    if not cheap_to_recompute(
        jax.make_jaxpr(base_update)(updates, base_state).jaxpr):
      return chain.update(updates, state, params, **extra_args)
    c_state = state[name]
    sel, idx, w, _, _ = c.select(updates, params)
    ws = [w[i] for i in idx]
    active, trigger = c.phase(c_state, ws)
    t_all, ts = c.targets(c_state, sel, idx, ws, active)

    def scales(operands):
      u, _ = base_update(*operands)
      u = jax.tree.leaves(u, is_leaf=_tree.is_masked_node)
      ks = [c.scale(t, c.norm(wi, u[i], t)) for t, wi, i in zip(ts, ws, idx)]
      return ks, _gating.order_token(ks)

    skip = lambda _: ([jnp.ones_like(t) for t in ts], jnp.ones([], bool))
    ks, token = _gating.branch(active, scales, skip, (updates, base_state))
    g, g_def = jax.tree.flatten(updates, is_leaf=_tree.is_masked_node)
    updates = jax.tree.unflatten(g_def, _gating.with_leaves(
        g, idx, [_gating.after(g[i], token) for i in idx]))
    u, new_base_state = base_update(updates, base_state)
    u, u_def = jax.tree.flatten(u, is_leaf=_tree.is_masked_node)
    u = _gating.with_leaves(u, idx, [
        _gating.rescaled_when(active, wi, u[i], k)
        for wi, i, k in zip(ws, idx, ks)])
    new_state = dict(new_base_state)
    new_state[name] = c.new_state(c_state, sel, idx, t_all, ts, active,
                                  trigger)
    return jax.tree.unflatten(u_def, u), type(state)(new_state)

  return update_fn
