"""One optimizer program per base family, every hyper-parameter traced, so
that all methods and configurations of a cell train in one vmapped program."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

import lawn_optax as lo


def warmup_cosine(total_steps: int, warmup_fraction: float = 0.05,
                  schedule: str = "cosine") -> optax.Schedule:
  """The multiplier of every method's learning rate: linear warmup over
  ``warmup_fraction`` of the steps, then cosine decay to 0; ``schedule=
  "constant"`` (the recorded ablation) returns 1 throughout."""
  if schedule == "constant":
    return optax.constant_schedule(1.0)
  if schedule != "cosine":
    raise ValueError(f"schedule must be 'cosine' or 'constant', got "
                     f"{schedule!r}")
  warmup = max(1, round(warmup_fraction * total_steps))
  return optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup,
                                            max(total_steps, warmup + 1), 0.0)


# A step count no run reaches: a method without LAWN is LAWN never switched on
# (its gate runs the base update only, bit for bit; tests/test_protocol.py).
NEVER = 2**30


HP_DEFAULTS = {"lr": 1e-3, "b2": 0.999, "momentum": 0.9, "wd": 0.0,
               "free_frac": 0.5, "lawn": 0.0, "decay_constrained": 1.0,
               "zloss": 0.0, "softcap": 0.0, "auto": 0.0,
               "auto_threshold": lo.AutoFreeze().threshold}


FAMILIES = ("adam", "sgdm", "lamb")


def _decay(wd: jax.Array, factors: Any) -> optax.GradientTransformation:
  def update(updates, state, params):
    if params is None:
      raise ValueError("weight decay needs params")
    return jax.tree.map(lambda u, p, f: u + wd * f * p, updates, params,
                        factors), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def build_optimizer(family: str, hp: dict[str, jax.Array], mask: Any,
                    decay_mask: Any, total_steps: int,
                    schedule: optax.Schedule, **lawn_kwargs: Any
                    ) -> optax.GradientTransformation:
  """The optimizer of one run, its hyper-parameters ``hp`` traced.

  ``family``: ``adam`` (Adam/AdamW: decoupled decay ``wd * lr``), ``sgdm``
  (SGD with momentum, L2 decay added to the gradient as in SGD practice) or
  ``lamb`` (LAMB, decay inside the trust ratio). LAWN is on when
  ``hp["lawn"] == 1``: it freezes the norms of ``mask``'s leaves after
  ``round(free_frac * total_steps)`` steps, or, with ``hp["auto"] == 1``,
  when ``free_steps="auto"``'s rule decides (``lawn_optax.AutoFreeze`` with
  ``auto_threshold``, its default ``every``); with ``decay_constrained == 0``
  the decay spares those leaves (LAWN-AdamW). ``decay_mask`` (bools) says
  which leaves any decay touches; ``lawn_kwargs`` go to :func:`lawn_optax.lawn`
  (``retraction``, ``granularity``, ``tangent_projection``).
  """
  if family not in FAMILIES:
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
  spare = hp["lawn"] * (1.0 - hp["decay_constrained"])
  factors = jax.tree.map(lambda d, m: jnp.float32(d) * (1.0 - spare * m),
                         decay_mask, mask)
  decay = _decay(hp["wd"], factors)
  lr = optax.scale_by_learning_rate(lambda c: hp["lr"] * schedule(c))
  if family == "adam":
    base = optax.chain(optax.scale_by_adam(b2=hp["b2"]), decay, lr)
  elif family == "sgdm":
    base = optax.chain(decay, optax.trace(decay=hp["momentum"]), lr)
  else:
    base = optax.chain(optax.scale_by_adam(b2=hp["b2"], eps=1e-6), decay,
                       optax.scale_by_trust_ratio(), lr)
  auto = (hp["lawn"] > 0) & (hp["auto"] > 0)
  free = jnp.where((hp["lawn"] > 0) & ~auto,
                   jnp.round(hp["free_frac"] * total_steps), NEVER)
  rule = lo.AutoFreeze(threshold=jnp.where(auto, hp["auto_threshold"], 0.0),
                       latest=free.astype(jnp.int32))
  return lo.lawn(base, free_steps=rule, mask=mask, **lawn_kwargs)


def stack_hps(configs: Sequence[dict[str, float]]) -> dict[str, jax.Array]:
  """Configurations -> one float32 array per hyper-parameter (defaults fill
  what a configuration does not name)."""
  unknown = {k for c in configs for k in c} - set(HP_DEFAULTS)
  if unknown:
    raise ValueError(f"unknown hyper-parameters {sorted(unknown)}")
  return {k: jnp.asarray([c.get(k, d) for c in configs], jnp.float32)
          for k, d in HP_DEFAULTS.items()}
