"""Data shared by the tests (one place for it)."""

import functools

import jax.numpy as jnp
import numpy as np

from lawn_optax import _tree


@functools.cache
def digits(shuffle_seed: int | None = None):
  """scikit-learn's bundled 8x8 digits: float32 features in [0, 1], labels;
  shuffled with ``shuffle_seed`` when given."""
  from sklearn.datasets import load_digits
  x, y = load_digits(return_X_y=True)
  if shuffle_seed is not None:
    order = np.random.default_rng(shuffle_seed).permutation(len(y))
    x, y = x[order], y[order]
  return jnp.asarray(x / 16.0, jnp.float32), jnp.asarray(y)


def selected(mask) -> list[str]:
  """The sorted ``"a/b"`` paths a mask selects."""
  paths, leaves, _ = _tree.flatten_with_paths(mask)
  return sorted(p for p, v in zip(paths, leaves) if v)
