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


# The small problem the NumPy-reference tests share (test_lawn.py,
# test_project_norms.py): two kernels and a bias, and per-step targets of
# the loss 0.5 * ||w - a_t||^2 + 0.025 * sum(w^4).
SMALL_SHAPES = {"k1": (6, 5), "k2": (5, 3), "b": (3,)}


def small_params(seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {k: rng.normal(size=s).astype(np.float32)
          for k, s in SMALL_SHAPES.items()}


def small_targets(steps: int, seed: int = 1) -> list:
  rng = np.random.default_rng(seed)
  return [{k: rng.normal(size=s) for k, s in SMALL_SHAPES.items()}
          for _ in range(steps)]
