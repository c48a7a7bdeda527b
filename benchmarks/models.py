"""Models used by the benchmarks, notebooks and tests (Flax linen)."""

from __future__ import annotations

from collections.abc import Sequence

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


def gpt(vocab: int, d: int, depth: int, heads: int, seq: int, *,
        tied: bool = False, rngs=None):
  """A pre-LN GPT decoder in ``flax.nnx`` (learned positions, causal
  attention, GELU MLP, final LayerNorm, untied or tied head)."""
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top

  class Block(nnx.Module):
    def __init__(self, rngs):
      self.norm1 = nnx.LayerNorm(d, rngs=rngs)
      self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
      self.proj = nnx.Linear(d, d, rngs=rngs)
      self.norm2 = nnx.LayerNorm(d, rngs=rngs)
      self.up = nnx.Linear(d, 4 * d, rngs=rngs)
      self.down = nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
      b, t, _ = x.shape
      q, k, v = jnp.split(self.qkv(self.norm1(x)), 3, -1)
      heads_of = lambda z: z.reshape(b, t, heads, d // heads)
      y = nnx.dot_product_attention(heads_of(q), heads_of(k), heads_of(v),
                                    mask=nnx.make_causal_mask(x[..., 0]))
      x = x + self.proj(y.reshape(b, t, d))
      return x + self.down(nnx.gelu(self.up(self.norm2(x))))

  class GPT(nnx.Module):
    def __init__(self, rngs):
      self.embed = nnx.Embed(vocab, d, rngs=rngs)
      self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq, d)))
      self.blocks = nnx.List([Block(rngs) for _ in range(depth)])
      self.final_norm = nnx.LayerNorm(d, rngs=rngs)
      self.head = None if tied else nnx.Linear(d, vocab, use_bias=False,
                                               rngs=rngs)

    def __call__(self, tokens):
      x = self.embed(tokens) + self.pos[...][: tokens.shape[1]]
      for block in self.blocks:
        x = block(x)
      x = self.final_norm(x)
      return self.embed.attend(x) if self.head is None else self.head(x)

  return GPT(rngs if rngs is not None else nnx.Rngs(0))
