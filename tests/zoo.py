"""Small versions of the models people train, for the final_homogeneous zoo.

Each ``case_*`` returns a :class:`Case`: the model wrapped as
``fn(params, *inputs)`` (or an ``nnx.Module``), its params, a function making
example inputs (``"zeros"`` or ``"random"``), the hand-derived mask (selected
paths) with its degree, and the ``final_homogeneous`` options it assumes. The
hand derivation is in each docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

from benchmarks import models


class Case(NamedTuple):
  name: str
  fn: Any  # (params, *inputs) -> logits, or an nnx.Module
  params: Any  # None for nnx modules
  inputs: Callable[[str], tuple]  # "zeros" / "random" -> example inputs
  expected: list[str] | None  # selected paths; None: an error is expected
  degree: int | None
  options: dict
  error: str = ""  # regex of the expected error


def _images(shape):
  def make(kind, dtype=jnp.float32):
    if kind == "zeros":
      return (jnp.zeros(shape, dtype),)
    return (jax.random.normal(jax.random.key(7), shape, dtype),)
  return make


def _tokens(shape, vocab):
  def make(kind, dtype=None):
    del dtype
    if kind == "zeros":
      return (jnp.zeros(shape, jnp.int32),)
    return (jax.random.randint(jax.random.key(7), shape, 0, vocab),)
  return make


def _random_biases(params):
  """Flax initialises biases at zero, which would hide degree mixing."""
  def noise(path, x):
    key = jax.random.key(hash(jax.tree_util.keystr(path)) % 2**31)
    return 0.3 * jax.random.normal(key, x.shape, x.dtype)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: noise(p, x) if jax.tree_util.keystr(p).endswith(
          "'bias']") else x, params)


def _linen(model, example, **apply_kw):
  variables = model.init(jax.random.key(0), *example)
  params = _random_biases(variables["params"])
  rest = {k: v for k, v in variables.items() if k != "params"}
  mutable = list(rest) if rest else False

  def fn(p, *x):
    out = model.apply({"params": p, **rest}, *x, mutable=mutable, **apply_kw)
    return out[0] if mutable else out
  return fn, params


# --------------------------------------------------------------------------
# Linen models
# --------------------------------------------------------------------------


class ActMLP(nn.Module):
  act: Callable = nn.relu

  @nn.compact
  def __call__(self, x):
    x = self.act(nn.Dense(16)(x))
    x = self.act(nn.Dense(16)(x))
    return nn.Dense(4)(x)


def case_mlp(act_name: str) -> Case:
  """Dense-act-Dense-act-Dense with biases. ReLU / leaky ReLU are
  homogeneous: with biases at zero all three kernels (degree 3); strictly,
  the head's kernel and bias. GELU is not: only the head's kernel."""
  act = {"relu": nn.relu, "leaky_relu": nn.leaky_relu, "gelu": nn.gelu}[act_name]
  inputs = _images((6, 5))
  fn, params = _linen(ActMLP(act), inputs("random"))
  if act_name == "gelu":
    return Case(f"mlp_{act_name}", fn, params, inputs, ["Dense_2/kernel"], 1,
                dict(biases="ignore"))
  return Case(f"mlp_{act_name}", fn, params, inputs,
              [f"Dense_{i}/kernel" for i in range(3)], 3,
              dict(biases="ignore"))


def case_mlp_strict() -> Case:
  """A bias after a scaled kernel must scale like the kernel's output:
  strictly, only the head keeps its bias (degree 1)."""
  inputs = _images((6, 5))
  fn, params = _linen(ActMLP(), inputs("random"))
  return Case("mlp_relu_strict", fn, params, inputs,
              ["Dense_2/bias", "Dense_2/kernel"], 1, {})


class PoolCNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.max_pool(x, (2, 2), (2, 2), padding="SAME")
    x = nn.relu(nn.Conv(4, (3, 3))(x))
    x = nn.avg_pool(x, (2, 2), (2, 2))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def case_cnn() -> Case:
  """Conv-ReLU-maxpool(SAME: -inf padding)-Conv-ReLU-avgpool-Dense, no
  normalisation: every kernel (degree 3) with biases at zero."""
  inputs = _images((2, 8, 8, 3))
  fn, params = _linen(PoolCNN(), inputs("random"))
  return Case("cnn_pool", fn, params, inputs,
              ["Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel"], 3,
              dict(biases="ignore"))


class ResNet(nn.Module):
  train: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x):
    bn = functools.partial(nn.BatchNorm, use_running_average=not self.train,
                           axis_name=self.axis_name)
    x = nn.relu(bn()(nn.Conv(4, (3, 3), use_bias=False)(x)))
    y = nn.relu(bn()(nn.Conv(4, (3, 3), use_bias=False)(x)))
    y = bn()(nn.Conv(4, (3, 3), use_bias=False)(y))
    x = nn.relu(x + y)
    return nn.Dense(3)(x.mean((1, 2)))


def case_resnet(mode: str) -> Case:
  """stem: BN0 -> ReLU -> x; block: BN1 (inside), BN2 (branch end); skip
  x + y; mean; head. Every kernel before a BN is cut by its epsilon, BN1's
  scale by BN2's, and BN0's scale by BN1's (x feeds the block's first conv),
  so the skip needs BN2's scale fixed too: the head kernel alone (degree 1,
  biases at zero), in train and eval mode (running statistics are not zero
  once trained: they are abstract here) and with the batch axis named under
  vmap (BN's psum over 'batch')."""
  inputs = _images((4, 6, 6, 3))
  if mode == "axis":
    model = ResNet(train=True, axis_name="batch")
    variables = jax.vmap(lambda x: model.init(jax.random.key(0), x[None]),
                         axis_name="batch", out_axes=None)(inputs("random")[0])
    params = _random_biases(variables["params"])
    stats = variables["batch_stats"]

    def fn(p, x):
      apply = lambda xi: model.apply({"params": p, "batch_stats": stats},
                                     xi[None], mutable=["batch_stats"])[0][0]
      return jax.vmap(apply, axis_name="batch")(x)
  else:
    fn, params = _linen(ResNet(train=mode == "train"), inputs("random"))
  return Case(f"resnet_bn_{mode}", fn, params, inputs, ["Dense_0/kernel"], 1,
              dict(biases="ignore"))


def case_resnet_strict() -> Case:
  """Strictly, the head's bias joins its kernel (degree 1)."""
  inputs = _images((4, 6, 6, 3))
  fn, params = _linen(ResNet(train=True), inputs("random"))
  return Case("resnet_bn_strict", fn, params, inputs,
              ["Dense_0/bias", "Dense_0/kernel"], 1, {})


class MixerBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    y = nn.LayerNorm()(x).swapaxes(1, 2)
    y = nn.Dense(x.shape[1])(nn.gelu(nn.Dense(8)(y))).swapaxes(1, 2)
    x = x + y
    y = nn.LayerNorm()(x)
    return x + nn.Dense(x.shape[2])(nn.gelu(nn.Dense(8)(y)))


class Mixer(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.Conv(6, (2, 2), (2, 2))(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    for _ in range(2):
      x = MixerBlock()(x)
    x = nn.LayerNorm(name="final_norm")(x).mean(1)
    return nn.Dense(3, name="head")(x)


def case_mixer() -> Case:
  """Pre-LN residual blocks: the stream is cut by every LN's epsilon; the
  final LN's scale and the head remain (degree 2, biases at zero)."""
  inputs = _images((2, 4, 4, 3))
  fn, params = _linen(Mixer(), inputs("random"))
  return Case("mlp_mixer", fn, params, inputs,
              ["final_norm/scale", "head/kernel"], 2, dict(biases="ignore"))


def case_ncf() -> Case:
  """Embeddings -> concat -> ReLU tower -> logit, no normalisation: with
  biases at zero every kernel and both embedding tables (degree 4)."""
  model = models.NCF(num_users=7, num_items=11, dim=4, tower=(8, 4))
  u, i = jnp.arange(6) % 7, jnp.arange(6) % 11

  def inputs(kind, dtype=None):
    del dtype
    return (jnp.zeros_like(u), jnp.zeros_like(i)) if kind == "zeros" else (
        u, i)
  fn, params = _linen(model, (u, i))
  return Case("ncf", fn, params, inputs,
              ["Dense_0/kernel", "Dense_1/kernel", "Dense_2/kernel",
               "item_embedding/embedding", "user_embedding/embedding"], 4,
              dict(biases="ignore"))


class UNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    e1 = nn.relu(nn.Conv(4, (3, 3), name="enc1")(x))
    e2 = nn.relu(nn.Conv(4, (3, 3), name="enc2")(nn.max_pool(e1, (2, 2),
                                                             (2, 2))))
    up = jnp.repeat(jnp.repeat(e2, 2, axis=1), 2, axis=2)
    d = nn.relu(nn.Conv(4, (3, 3), name="dec")(jnp.concatenate([up, e1], -1)))
    return nn.Conv(2, (1, 1), name="head")(d)


def case_unet() -> Case:
  """The concat skip joins e1 (degree s_enc1) with the upsampled e2 (degree
  s_enc1 + s_enc2): enc2 cannot join; enc1, dec, head can (degree 3)."""
  inputs = _images((2, 8, 8, 3))
  fn, params = _linen(UNet(), inputs("random"))
  return Case("unet_concat", fn, params, inputs,
              ["dec/kernel", "enc1/kernel", "head/kernel"], 3,
              dict(biases="ignore"))


class ScanBlock(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    h = nn.LayerNorm()(x)
    h = nn.SelfAttention(num_heads=2, qkv_features=8, out_features=8)(h)
    x = x + h
    h = nn.Dense(8)(nn.gelu(nn.Dense(16)(nn.LayerNorm()(x))))
    return x + h, None


class ScanTransformer(nn.Module):
  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(13, 8, name="embed")(tokens)
    stack = nn.scan(ScanBlock, variable_axes={"params": 0},
                    split_rngs={"params": True}, length=3)
    x, _ = stack(name="layers")(x, None)
    x = nn.LayerNorm(name="final_norm")(x)
    return nn.Dense(13, use_bias=False, name="head")(x)


def case_scan_transformer() -> Case:
  """Scan over 3 pre-LN blocks (params stacked on a leading axis): the
  first LN cuts the embedding, every block's LN its own weights; the final
  LN's scale and the head remain (degree 2)."""
  inputs = _tokens((2, 5), 13)
  fn, params = _linen(ScanTransformer(), inputs("random"))
  return Case("scan_transformer", fn, params, inputs,
              ["final_norm/scale", "head/kernel"], 2, dict(biases="ignore"))


class ScanReLU(nn.Module):
  @nn.compact
  def __call__(self, x):
    stack = nn.scan(_ReLULayer, variable_axes={"params": 0},
                    split_rngs={"params": True}, length=3)
    x, _ = stack(name="layers")(nn.Dense(8, name="stem")(x), None)
    return nn.Dense(2, name="head")(x)


class _ReLULayer(nn.Module):
  @nn.compact
  def __call__(self, x, _):
    return nn.relu(nn.Dense(8)(x)), None


def case_scan_relu() -> Case:
  """A scanned stack of 3 ReLU layers is one leaf of degree 3: stem, stack
  and head together have degree 5 (biases at zero)."""
  inputs = _images((4, 5))
  fn, params = _linen(ScanReLU(), inputs("random"))
  return Case("scan_relu_stack", fn, params, inputs,
              ["head/kernel", "layers/Dense_0/kernel", "stem/kernel"], 5,
              dict(biases="ignore"))


# --------------------------------------------------------------------------
# nnx models
# --------------------------------------------------------------------------


class RMSNorm(nnx.Module):
  def __init__(self, d, *, one_plus=False):
    self.scale = nnx.Param(jnp.zeros(d) if one_plus else jnp.ones(d))
    self.one_plus = one_plus

  def __call__(self, x):
    dtype = x.dtype
    x = x.astype(jnp.float32)
    x = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
    s = self.scale[...].astype(jnp.float32)
    return (x * (1 + s) if self.one_plus else x * s).astype(dtype)


class Attention(nnx.Module):
  def __init__(self, d, heads, rngs, *, bias=True):
    self.qkv = nnx.Linear(d, 3 * d, use_bias=bias, rngs=rngs)
    self.out = nnx.Linear(d, d, use_bias=bias, rngs=rngs)
    self.heads = heads

  def __call__(self, x, causal=True):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(x), 3, -1)
    split = lambda z: z.reshape(b, t, self.heads, d // self.heads)
    logits = jnp.einsum("bthd,bshd->bhts", split(q), split(k)) / jnp.sqrt(
        d // self.heads).astype(x.dtype)
    if causal:
      mask = jnp.tril(jnp.ones((t, t), bool))
      logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    att = jax.nn.softmax(logits, -1)
    y = jnp.einsum("bhts,bshd->bthd", att, split(v)).reshape(b, t, d)
    return self.out(y)


class Block(nnx.Module):
  def __init__(self, d, rngs, *, style="gpt"):
    self.style = style
    norm = (lambda: RMSNorm(d, one_plus=style == "gemma")) if style in (
        "llama", "gemma") else (lambda: nnx.LayerNorm(d, rngs=rngs))
    bias = style == "gpt"
    self.norm1, self.norm2 = norm(), norm()
    self.att = Attention(d, 2, rngs, bias=bias)
    if style == "gpt":
      self.up = nnx.Linear(d, 2 * d, rngs=rngs)
    else:  # SwiGLU
      self.gate = nnx.Linear(d, 2 * d, use_bias=False, rngs=rngs)
      self.up = nnx.Linear(d, 2 * d, use_bias=False, rngs=rngs)
    self.down = nnx.Linear(2 * d, d, use_bias=bias, rngs=rngs)

  def __call__(self, x):
    x = x + self.att(self.norm1(x))
    h = self.norm2(x)
    h = (nnx.gelu(self.up(h)) if self.style == "gpt" else
         nnx.silu(self.gate(h)) * self.up(h))
    return x + self.down(h)


class Decoder(nnx.Module):
  """Pre-norm decoder: GPT (LN, GELU, learned positions), Llama (RMSNorm,
  SwiGLU) or Gemma ((1 + scale) RMSNorm, sqrt(d) embedding, soft-cap)."""

  def __init__(self, rngs, *, style="gpt", tied=False, vocab=13, d=8,
               depth=2, seq=5):
    self.style, self.tied = style, tied
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    if style == "gpt":
      self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (seq, d)))
    self.blocks = nnx.List([Block(d, rngs, style=style) for _ in range(depth)])
    self.final_norm = (nnx.LayerNorm(d, rngs=rngs) if style == "gpt" else
                       RMSNorm(d, one_plus=style == "gemma"))
    if not tied:
      self.head = nnx.Linear(d, vocab, use_bias=False, rngs=rngs)

  def __call__(self, tokens):
    x = self.embed(tokens)
    if self.style == "gemma":
      x = x * jnp.sqrt(x.shape[-1]).astype(x.dtype)
    if self.style == "gpt":
      x = x + self.pos[...][: tokens.shape[1]]
    for block in self.blocks:
      x = block(x)
    x = self.final_norm(x)
    logits = self.embed.attend(x) if self.tied else self.head(x)
    if self.style == "gemma":
      logits = 30.0 * jnp.tanh(logits / 30.0)
    return logits


def case_gpt(head: str) -> Case:
  """Pre-LN GPT: every LN's epsilon cuts the residual stream (the embedding
  and every block). Untied: final LN scale + head (degree 2). Tied: the head
  is the embedding, already cut; the final LN scale alone (degree 1)."""
  tied = head == "tied"
  model = Decoder(nnx.Rngs(0), tied=tied)
  expected = (["final_norm/scale"] if tied else
              ["final_norm/scale", "head/kernel"])
  return Case(f"gpt_{head}", model, None,
              _tokens((2, 5), 13), expected, 1 if tied else 2,
              dict(biases="ignore"))


def case_llama() -> Case:
  """RMSNorm scales, SwiGLU (silu cuts the gate), untied head: the final
  norm's scale and the head (degree 2)."""
  model = Decoder(nnx.Rngs(0), style="llama")
  return Case("llama", model, None, _tokens((2, 5), 13),
              ["final_norm/scale", "head/kernel"], 2, {})


def case_gemma() -> Case:
  """(1 + scale) norms, a tied head and a tanh soft-cap on the logits:
  nothing scales the output; the soft-cap's tanh is named."""
  model = Decoder(nnx.Rngs(0), style="gemma", tied=True)
  return Case("gemma", model, None, _tokens((2, 5), 13), None, None, {},
              error=r"no homogeneous set: .* 'tanh' at .*zoo\.py")


def case_gemma_no_cap() -> Case:
  """Without the soft-cap: the final norm's (1 + scale) adds a fixed 1 and
  the tied head is cut by the first norm: still no set, and the reason
  names the '+ 1' of the norm."""
  model = Decoder(nnx.Rngs(0), style="gemma", tied=True)
  model.style = "gemma_nocap"  # same weights; no soft-cap, no sqrt(d)
  return Case("gemma_no_cap", model, None, _tokens((2, 5), 13), None, None,
              {}, error=r"no homogeneous set: .*'add' at .*zoo\.py")


class ViT(nnx.Module):
  def __init__(self, rngs, d=8, patches=4):
    self.patch = nnx.Conv(3, d, (2, 2), strides=(2, 2), rngs=rngs)
    self.cls = nnx.Param(jnp.zeros((1, 1, d)))
    self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(),
                                                  (1, patches + 1, d)))
    self.blocks = nnx.List([Block(d, rngs) for _ in range(2)])
    self.final_norm = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, 3, rngs=rngs)

  def __call__(self, x):
    x = self.patch(x)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    cls = jnp.broadcast_to(self.cls[...], (x.shape[0], 1, x.shape[-1]))
    x = jnp.concatenate([cls.astype(x.dtype), x], 1) + self.pos[...]
    for block in self.blocks:
      x = _vit_block(block, x)
    return self.head(self.final_norm(x)[:, 0])


def _vit_block(block, x):
  x = x + block.att(block.norm1(x), causal=False)
  return x + block.down(nnx.gelu(block.up(block.norm2(x))))


def case_vit() -> Case:
  """Patch conv, class token (concat), positions (add), pre-LN blocks: the
  stream is cut; the final LN scale and the head kernel on the class token
  (degree 2, biases at zero)."""
  model = ViT(nnx.Rngs(0))
  return Case("vit", model, None, _images((2, 4, 4, 3)),
              ["final_norm/scale", "head/kernel"], 2, dict(biases="ignore"))


class NnxCNN(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.fc1 = nnx.Linear(4 * 3 * 3, 8, rngs=rngs)
    self.fc2 = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x)))
    x = nnx.max_pool(x, (2, 2), (2, 2))
    x = nnx.leaky_relu(self.fc1(x.reshape(x.shape[0], -1)))
    return self.fc2(x)


def case_nnx_cnn() -> Case:
  """nnx Conv-BN-ReLU-maxpool-Linear-leakyReLU-Linear: BN's scale and both
  linear kernels (degree 3, biases at zero)."""
  model = NnxCNN(nnx.Rngs(0))
  return Case("nnx_cnn_bn", model, None, _images((2, 6, 6, 3)),
              ["bn/scale", "fc1/kernel", "fc2/kernel"], 3,
              dict(biases="ignore"))


ALL = [
    functools.partial(case_mlp, "relu"), functools.partial(case_mlp,
                                                           "leaky_relu"),
    functools.partial(case_mlp, "gelu"), case_mlp_strict, case_cnn,
    functools.partial(case_resnet, "train"),
    functools.partial(case_resnet, "eval"),
    functools.partial(case_resnet, "axis"), case_resnet_strict, case_mixer,
    case_ncf, case_unet, case_scan_transformer, case_scan_relu,
    functools.partial(case_gpt, "untied"), functools.partial(case_gpt, "tied"),
    case_llama, case_gemma, case_gemma_no_cap, case_vit, case_nnx_cnn,
]
