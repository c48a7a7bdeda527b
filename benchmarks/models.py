"""Models used by the benchmarks, notebooks and tests (Flax linen)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """ReLU MLP; ``use_bias=False`` makes it positively homogeneous."""
  features: Sequence[int]
  num_classes: int = 10
  use_bias: bool = True

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = x.reshape(x.shape[0], -1)
    for f in self.features:
      x = nn.relu(nn.Dense(f, use_bias=self.use_bias)(x))
    return nn.Dense(self.num_classes, use_bias=self.use_bias)(x)


class ResidualBlock(nn.Module):
  channels: int
  stride: int = 1

  @nn.compact
  def __call__(self, x, train: bool = False):
    bn = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)
    y = nn.Conv(self.channels, (3, 3), self.stride, use_bias=False)(x)
    y = nn.relu(bn()(y))
    y = nn.Conv(self.channels, (3, 3), use_bias=False)(y)
    y = bn()(y)
    if x.shape != y.shape:
      x = bn()(nn.Conv(self.channels, (1, 1), self.stride, use_bias=False)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A small ResNet-style CNN with BatchNorm and a dense head.

  ``widths`` gives each stage's channels (one block per stage, stride 2
  after the first). Inputs are NHWC images; 1-D inputs are reshaped.
  """
  widths: Sequence[int] = (16, 32, 64)
  num_classes: int = 10
  image_shape: Sequence[int] = (28, 28, 1)

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = x.reshape((x.shape[0], *self.image_shape))
    x = nn.Conv(self.widths[0], (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    for i, w in enumerate(self.widths):
      x = ResidualBlock(w, stride=1 if i == 0 else 2)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


class NCF(nn.Module):
  """NCF-style recommender: user/item embeddings, an MLP tower, one logit."""
  num_users: int
  num_items: int
  dim: int = 32
  tower: Sequence[int] = (64, 32, 16)

  @nn.compact
  def __call__(self, user, item, train: bool = False):
    del train
    u = nn.Embed(self.num_users, self.dim, name="user_embedding")(user)
    i = nn.Embed(self.num_items, self.dim, name="item_embedding")(item)
    x = jnp.concatenate([u, i], axis=-1)
    for f in self.tower:
      x = nn.relu(nn.Dense(f)(x))
    return nn.Dense(1)(x)[..., 0]
