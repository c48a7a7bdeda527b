"""Plain-NumPy reference implementations, written from the papers' formulas.

Nothing here imports lawn_optax: it is the independent side of every
agreement test. Arithmetic is float64.
"""

from __future__ import annotations

import numpy as np


def norm(x, granularity):
  x = np.asarray(x, np.float64)
  if granularity == "tensor":
    return np.sqrt(np.sum(x * x))
  return np.sqrt(np.sum(x * x, axis=tuple(range(x.ndim - 1)), keepdims=True))


class SGDMomentum:
  """Heavy-ball: m <- g + mu m;  u = -lr m  (optax.sgd's convention)."""

  def __init__(self, lr, momentum=0.9):
    self.lr, self.mu, self.m = lr, momentum, None

  def step(self, g):
    self.m = g if self.m is None else g + self.mu * self.m
    return -self.lr * self.m


class Adam:
  """Kingma & Ba with bias correction; eps outside the square root."""

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
    self.m = self.v = None
    self.t = 0

  def step(self, g):
    if self.m is None:
      self.m, self.v = np.zeros_like(g), np.zeros_like(g)
    self.t += 1
    self.m = self.b1 * self.m + (1 - self.b1) * g
    self.v = self.b2 * self.v + (1 - self.b2) * g * g
    m_hat = self.m / (1 - self.b1**self.t)
    v_hat = self.v / (1 - self.b2**self.t)
    return -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class Lamb:
  """You et al.: Adam's direction rescaled per tensor to ``||w|| / ||u||``
  (1 where either norm is 0), then ``-lr`` (optax.lamb, no weight decay)."""

  needs_params = True

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-6):
    self.lr = lr
    self.adam = Adam(1.0, b1, b2, eps)

  def step(self, g, w):
    u = -self.adam.step(g)  # the direction, before the learning rate
    wn, un = np.linalg.norm(w), np.linalg.norm(u)
    ratio = wn / un if wn > 0 and un > 0 else 1.0
    return -self.lr * ratio * u


def tangent(g, w, granularity):
  if granularity == "tensor":
    return g - (np.sum(g * w) / np.sum(w * w)) * w
  axes = tuple(range(w.ndim - 1))
  coef = np.sum(g * w, axis=axes, keepdims=True) / np.sum(w * w, axis=axes,
                                                          keepdims=True)
  return g - coef * w


def lawn_trajectory(params, grad_fn, make_opt, *, free_steps, mask, steps,
                    granularity="tensor", tangent_projection=False):
  """Runs LAWN on a flat dict of arrays; returns the params after each step.

  ``grad_fn(params, t) -> grads`` (dicts); ``mask``: dict name -> bool.
  """
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  opts = {k: make_opt() for k in w}
  frozen = {}
  history = []
  for t in range(steps):
    g = {k: np.asarray(v, np.float64) for k, v in grad_fn(w, t).items()}
    for k in w:
      gk = g[k]
      if mask[k] and tangent_projection and t >= free_steps:
        gk = tangent(gk, w[k], granularity)
      opt = opts[k]
      u = opt.step(gk, w[k]) if getattr(opt, "needs_params", False) else \
          opt.step(gk)
      new = w[k] + u
      if mask[k] and t >= free_steps:
        if t == free_steps:
          frozen[k] = norm(w[k], granularity)
        new = frozen[k] * new / norm(new, granularity)
      w[k] = new
    history.append({k: v.copy() for k, v in w.items()})
  return history, frozen
