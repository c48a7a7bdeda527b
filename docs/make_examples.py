"""Prints the masks.explain examples shown on the mask guide (run by conf.py)."""

import jax
import jax.numpy as jnp
from flax import linen as nn

import lawn_optax as lo
from benchmarks import models


class MLP(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(128)(x))
    return nn.Dense(10)(x)


class LNNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.LayerNorm(name="norm")(nn.Dense(64, name="body")(x))
    return nn.Dense(10, use_bias=False, name="head")(nn.relu(x))


def main():
  x = jnp.zeros((1, 40))
  for title, model, kw in [("ReLU MLP, biases='strict'", MLP(), {}),
                           ("ReLU MLP, biases='ignore'", MLP(),
                            {"biases": "ignore"}),
                           ("Dense -> LayerNorm -> Dense", LNNet(),
                            {"biases": "ignore"})]:
    params = model.init(jax.random.key(0), x)["params"]
    fn = lambda p, x, model=model: model.apply({"params": p}, x)
    print(f"# {title}")
    print(lo.masks.explain(fn, params, x, **kw))
    print()
  gpt = models.gpt(vocab=50, d=16, depth=2, heads=2, seq=8)
  print("# pre-LN GPT (nnx), biases='ignore'")
  print(lo.masks.explain(gpt, jnp.zeros((1, 8), jnp.int32), biases="ignore"))


if __name__ == "__main__":
  main()
