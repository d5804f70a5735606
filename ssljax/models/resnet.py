"""ResNet-18/34/50 backbones (He et al. 2016, "Deep Residual Learning").

The network ends at global average pooling: its output is the feature vector
[B, 512] (basic blocks) or [B, 2048] (bottleneck blocks) that SSL methods put
their heads on; there is no classifier. Bottleneck blocks stride in the 3×3
convolution (torchvision's "ResNet v1.5", used by the SSL reference code).

Stems:
  * "imagenet": 7×7 stride-2 convolution and 3×3 stride-2 max-pool (224×224).
  * "cifar": one 3×3 stride-1 convolution, no max-pool, as in the SimCLR
    CIFAR-10 experiments; keeps resolution for 32×32 and 28×28 images.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax._common import check_positive
from ssljax.models._layers import (ConvBN, Dtype, check_last_dim,
                                   global_avg_pool, in_order)
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model

STEMS = ("cifar", "imagenet")
WIDTHS = (64, 128, 256, 512)


def _check_stem(stem: str, fn: str) -> None:
  if stem not in STEMS:
    raise ValueError(f"{fn}: `stem` must be one of {STEMS}, got {stem!r}.")


class ResidualBlock(nnx.Module):
  """Basic (two 3×3) or bottleneck (1×1, 3×3, 1×1 with 4× expansion) block.

  y = relu(F(x) + shortcut(x)), where the shortcut is the identity or, when
  the stride or width changes, a strided 1×1 convolution with BatchNorm.
  `zero_init_last` starts the last BN's gamma at 0, so the block starts as the
  identity (Goyal et al. 2017).
  """

  def __init__(self, in_features: int, width: int, stride: int, *,
               bottleneck: bool, zero_init_last: bool = False,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
              rngs=rngs)
    # (in, out, kernel, stride) of the convolutions of the residual branch.
    if bottleneck:
      out_features = 4 * width
      convs = [(in_features, width, 1, 1), (width, width, 3, stride),
               (width, out_features, 1, 1)]
    else:
      out_features = width
      convs = [(in_features, width, 3, stride), (width, width, 3, 1)]
    last = len(convs) - 1
    self.layers = nnx.Dict({
        f"conv_bn{i}": ConvBN(*c, zero_scale=zero_init_last and i == last,
                              **kw)
        for i, c in enumerate(convs)})
    needs_projection = stride != 1 or in_features != out_features
    self.shortcut = (ConvBN(in_features, out_features, 1, stride, **kw)
                     if needs_projection else None)

  def __call__(self, x: jax.Array) -> jax.Array:
    *hidden, last = in_order(self.layers)
    y = x
    for layer in hidden:
      y = nnx.relu(layer(y))
    shortcut = x if self.shortcut is None else self.shortcut(x)
    return nnx.relu(last(y) + shortcut)


class ResNet(nnx.Module):
  """ResNet backbone: stem, four stages of residual blocks, global pooling.

  Input [B, H, W, C] (NHWC), output [B, 512] for basic blocks and [B, 2048]
  for bottleneck blocks (`num_features`). Parameters are grouped as `stem`,
  `stages/stage1`..`stage4`, each with `block0`, `block1`, ...
  """

  def __init__(self, in_channels: int, *, stage_sizes: Sequence[int],
               bottleneck: bool, stem: str = "imagenet",
               zero_init_residual: bool = False,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    _check_stem(stem, "ResNet")
    check_positive(in_channels, "in_channels", "ResNet")
    kw = dict(dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
              rngs=rngs)
    self.in_channels = in_channels
    self.max_pool = stem == "imagenet"
    self.stem = ConvBN(in_channels, WIDTHS[0], 7 if self.max_pool else 3,
                       2 if self.max_pool else 1, **kw)
    features = WIDTHS[0]
    stages = {}
    for s, (width, size) in enumerate(zip(WIDTHS, stage_sizes)):
      blocks = {}
      for b in range(size):
        # The first block of stages 2-4 halves the resolution.
        stride = 2 if s > 0 and b == 0 else 1
        blocks[f"block{b}"] = ResidualBlock(
            features, width, stride, bottleneck=bottleneck,
            zero_init_last=zero_init_residual, **kw)
        features = 4 * width if bottleneck else width
      stages[f"stage{s + 1}"] = nnx.Dict(blocks)
    self.stages = nnx.Dict(stages)
    self.num_features = features

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_channels, 4, "ResNet")
    x = nnx.relu(self.stem(x))
    if self.max_pool:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage in in_order(self.stages):
      for block in in_order(stage):
        x = block(x)
    return global_avg_pool(x)


def _resnet(name: str, stage_sizes: Sequence[int], bottleneck: bool, *,
            stem: str, zero_init_residual: bool, dtype: Optional[Dtype],
            param_dtype: Dtype, axis_name: Optional[str]) -> Model:
  _check_stem(stem, name)

  def build(rngs, x):
    channels = check_last_dim(x, None, 4, name)
    return ResNet(channels, stage_sizes=stage_sizes, bottleneck=bottleneck,
                  stem=stem, zero_init_residual=zero_init_residual,
                  dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
                  rngs=rngs)

  return from_builder(build, name=name)


def resnet18(*, stem: str = "imagenet", zero_init_residual: bool = False,
             dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
             axis_name: Optional[str] = None) -> Model:
  """ResNet-18 backbone (basic blocks [2, 2, 2, 2]) as a `Model`.

  Output: global-average-pooled features [B, 512]. The input channels are
  read from the example input at `init`. 11,176,512 parameters with the
  "imagenet" stem and 3 input channels (11,689,512 minus the 1000-way fc).

  Args:
    stem: "imagenet" (7×7/2 conv + max-pool) or "cifar" (3×3/1 conv, for
      32×32 and 28×28 images, any number of channels).
    zero_init_residual: start the last BN gamma of each block at 0.
    dtype: computation dtype (e.g. `jnp.bfloat16`); None infers it from the
      input and parameters.
    param_dtype: dtype of the parameters and BN statistics.
    axis_name: mapped axis over which BN averages its batch statistics when
      the model runs inside `shard_map`/pmap; leave None under `jax.jit`,
      where statistics are over the global batch already.

  Returns:
    A `Model`; `model_state` holds the BN running statistics.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import resnet18
    >>> model = resnet18(stem="cifar")
    >>> x = jnp.zeros((2, 32, 32, 3))
    >>> params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> print(sum(p.size for p in jax.tree.leaves(params)))
    11168832
  """
  return _resnet("resnet18", (2, 2, 2, 2), False, stem=stem,
                 zero_init_residual=zero_init_residual, dtype=dtype,
                 param_dtype=param_dtype, axis_name=axis_name)


def resnet34(*, stem: str = "imagenet", zero_init_residual: bool = False,
             dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
             axis_name: Optional[str] = None) -> Model:
  """ResNet-34 backbone (basic blocks [3, 4, 6, 3]) as a `Model`.

  Output [B, 512]; 21,284,672 parameters with the "imagenet" stem and 3 input
  channels. Arguments as in `resnet18`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import resnet34
    >>> model = resnet34()
    >>> x = jnp.zeros((2, 64, 64, 3))
    >>> params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> print(sum(p.size for p in jax.tree.leaves(params)))
    21284672
  """
  return _resnet("resnet34", (3, 4, 6, 3), False, stem=stem,
                 zero_init_residual=zero_init_residual, dtype=dtype,
                 param_dtype=param_dtype, axis_name=axis_name)


def resnet50(*, stem: str = "imagenet", zero_init_residual: bool = False,
             dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
             axis_name: Optional[str] = None) -> Model:
  """ResNet-50 backbone (bottleneck blocks [3, 4, 6, 3]) as a `Model`.

  Output [B, 2048]; 23,508,032 parameters with the "imagenet" stem and 3
  input channels (25,557,032 minus the 1000-way fc). Arguments as in
  `resnet18`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import resnet50
    >>> model = resnet50()
    >>> x = jnp.zeros((2, 64, 64, 3))
    >>> params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> out, _ = jax.eval_shape(
    ...     lambda p, s: model.apply(p, s, x, train=False), params, state)
    >>> print(sum(p.size for p in jax.tree.leaves(params)), out.shape)
    23508032 (2, 2048)
  """
  return _resnet("resnet50", (3, 4, 6, 3), True, stem=stem,
                 zero_init_residual=zero_init_residual, dtype=dtype,
                 param_dtype=param_dtype, axis_name=axis_name)
