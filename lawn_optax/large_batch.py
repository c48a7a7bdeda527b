"""The CBLR paper's two training-loop methods, as small JAX utilities."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np


def small_loss_weights(losses: jax.Array, fraction: float) -> jax.Array:
  """0/1 weights that drop the ``fraction`` of samples with the smallest loss.

  ``floor(fraction * batch)`` samples are dropped; shapes stay static (a
  weight mask, not a gather), so it jits once per batch size. Ties are broken
  by position: among equal losses the earlier sample is dropped first.

  Args:
    losses: per-sample losses, shape ``[batch]``.
    fraction: ρ in ``[0, 1)``.

  Returns:
    float32 weights of shape ``[batch]``; use
    ``jnp.sum(w * losses) / jnp.sum(w)`` as the batch loss.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> lo.small_loss_weights(jnp.array([0.5, 0.1, 0.9, 0.1]), 0.5).tolist()
    [1.0, 0.0, 1.0, 0.0]
  """
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"fraction must be in [0, 1), got {fraction}.")
  if losses.ndim != 1:
    raise ValueError(f"losses must be 1-D [batch], got shape {losses.shape}.")
  n = losses.shape[0]
  drop = int(np.floor(fraction * n))
  order = jnp.argsort(losses, stable=True)
  rank = jnp.zeros(n, jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
  return (rank >= drop).astype(jnp.float32)


def small_loss_mean(losses: jax.Array, fraction: float) -> jax.Array:
  """Mean loss over the samples kept by :func:`small_loss_weights`.

  Example:
    >>> import jax.numpy as jnp, lawn_optax as lo
    >>> round(float(lo.small_loss_mean(jnp.array([0.5, 0.1, 0.9, 0.1]), 0.5)), 6)
    0.7
  """
  w = small_loss_weights(losses, fraction)
  return jnp.sum(w * losses) / jnp.sum(w)


def batch_size_schedule(multipliers: Mapping[int, int]
                        ) -> Callable[[jax.Array], jax.Array]:
  """Piecewise-constant gradient-accumulation schedule for ``optax.MultiSteps``.

  ``{0: 1, 100: 2, 300: 4}`` accumulates 1 mini-batch per update for the
  first 100 updates, then 2, then 4 from update 300 on: the effective batch
  size grows without changing the compiled step (the schedule is evaluated
  on the traced update count).

  Args:
    multipliers: ``{first update: mini-batches per update}``; must contain 0.

  Returns:
    ``every_k_schedule`` for ``optax.MultiSteps``.

  Example:
    >>> import jax.numpy as jnp, optax, lawn_optax as lo
    >>> sched = lo.batch_size_schedule({0: 1, 2: 3})
    >>> [int(sched(jnp.asarray(t))) for t in range(4)]
    [1, 1, 3, 3]
    >>> tx = optax.MultiSteps(optax.sgd(0.1), every_k_schedule=sched)
  """
  if 0 not in multipliers:
    raise ValueError("multipliers must say what happens from update 0.")
  items = sorted(multipliers.items())
  for step, k in items:
    if step < 0 or int(k) < 1:
      raise ValueError(f"bad entry {step}: {k} (steps >= 0, multipliers >= 1).")
  starts = jnp.asarray([s for s, _ in items], jnp.int32)
  ks = jnp.asarray([k for _, k in items], jnp.int32)

  def every_k(step):
    idx = jnp.sum(jnp.asarray(step, jnp.int32) >= starts) - 1
    return ks[idx]

  return every_k
