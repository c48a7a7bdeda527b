"""How long ``masks.final_homogeneous`` takes on a GPT-2-small-sized model.

The model (12 layers, d=768, vocab 50257, 124M parameters) is built
abstractly with ``nnx.eval_shape``: no parameter is allocated. Prints the
wall-clock time of the whole call (tracing included), median of repeats.

  python -m benchmarks.mask_analysis [--depth 12] [--d 768] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import lawn_optax as lo
from benchmarks import models


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--depth", type=int, default=12)
  ap.add_argument("--d", type=int, default=768)
  ap.add_argument("--heads", type=int, default=12)
  ap.add_argument("--vocab", type=int, default=50257)
  ap.add_argument("--seq", type=int, default=1024)
  ap.add_argument("--repeats", type=int, default=3)
  args = ap.parse_args(argv)
  model = nnx.eval_shape(lambda: models.gpt(
      args.vocab, args.d, args.depth, args.heads, args.seq))
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      nnx.state(model, nnx.Param)))
  tokens = jax.ShapeDtypeStruct((1, args.seq), jnp.int32)
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    mask = lo.masks.final_homogeneous(model, tokens, biases="ignore")
    times.append(time.perf_counter() - t0)
  selected = [p for p, v in zip(*lo._tree.flatten_with_paths(mask)[:2]) if v]
  print(f"GPT depth={args.depth} d={args.d}: {n_params / 1e6:.1f}M abstract "
        f"params, {len(jax.tree.leaves(mask))} leaves; selected {selected}")
  print(f"final_homogeneous: median {statistics.median(times):.2f} s over "
        f"{args.repeats} runs (min {min(times):.2f} s, max {max(times):.2f} "
        f"s); CPU {platform.processor() or platform.machine()}, "
        f"{jax.device_count()} device(s), jax {jax.__version__}")


if __name__ == "__main__":
  main()
