"""Small plain CNNs: a stack of conv3×3-BN-ReLU layers and global pooling.

`tiny_cnn` (two layers, a few hundred parameters) is for tests: it has
BatchNorm so tests exercise running statistics like a ResNet does, but
compiles and runs in a blink on a CPU. `small_cnn` (four layers, 97k
parameters) is the CPU-sized backbone of the mnist5k recipes: its strided
layers keep enough spatial structure before the pooling for digits, where the
two-layer net barely beats its own random initialisation.
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax._common import check_positive
from ssljax.models._layers import ConvBN, Dtype, check_last_dim, global_avg_pool
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model


POOLINGS = ("avg", "flatten")


class TinyCNN(nnx.Module):
  """ConvBN-ReLU layers and global pooling: [B, H, W, C] -> [B, widths[-1]].

  Layer i has `widths[i]` channels and stride `strides[i]`; the defaults are
  the two-layer test net. `pooling="flatten"` keeps the last feature map's
  layout, [B, h·w·widths[-1]], instead of averaging it away.
  """

  def __init__(self, in_channels: int, *, widths: Sequence[int] = (8, 8),
               strides: Sequence[int] = (1, 2), pooling: str = "avg",
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    if not widths or len(widths) != len(strides):
      raise ValueError(f"TinyCNN: `widths` {widths} and `strides` {strides} "
                       "must be non-empty and of equal length.")
    for width in widths:
      check_positive(width, "widths", "TinyCNN")
    if pooling not in POOLINGS:
      raise ValueError(f"TinyCNN: `pooling` must be one of {POOLINGS}, got "
                       f"{pooling!r}.")
    kw = dict(dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
              rngs=rngs)
    self.in_channels = in_channels
    self.depth = len(widths)
    self.pooling = pooling
    channels = (in_channels, *widths)
    for i, stride in enumerate(strides):
      setattr(self, f"conv_bn{i}",
              ConvBN(channels[i], channels[i + 1], 3, stride, **kw))

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_channels, 4, "TinyCNN")
    # Layers by index: nnx orders attributes as strings (conv_bn10 < conv_bn2).
    for i in range(self.depth):
      x = nnx.relu(getattr(self, f"conv_bn{i}")(x))
    if self.pooling == "flatten":
      return x.reshape(x.shape[0], -1)
    return global_avg_pool(x)


def _conv_stack(name: str, widths, strides, dtype, param_dtype,
                axis_name, pooling="avg") -> Model:
  def build(rngs, x):
    return TinyCNN(check_last_dim(x, None, 4, name), widths=widths,
                   strides=strides, pooling=pooling, dtype=dtype,
                   param_dtype=param_dtype, axis_name=axis_name, rngs=rngs)

  return from_builder(build, name=name)


def tiny_cnn(*, width: int = 8, dtype: Optional[Dtype] = None,
             param_dtype: Dtype = jnp.float32,
             axis_name: Optional[str] = None) -> Model:
  """The tiny test backbone as a `Model`: features [B, width].

  Parameters: 9·C·w + 9·w² + 4·w (824 for C=3, w=8).

  Args:
    width: channels of both convolutions, and the feature dimension.
    dtype, param_dtype, axis_name: as in `resnet18`.

  Returns:
    A `Model` with BN running statistics in `model_state`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import tiny_cnn
    >>> model = tiny_cnn()
    >>> x = jnp.ones((2, 28, 28, 1))
    >>> params, state = model.init(jax.random.key(0), x)
    >>> out, state = model.apply(params, state, x, train=True)
    >>> print(out.shape, sum(p.size for p in jax.tree.leaves(params)))
    (2, 8) 680
  """
  check_positive(width, "width", "tiny_cnn")
  return _conv_stack("tiny_cnn", (width, width), (1, 2), dtype, param_dtype,
                     axis_name)


def small_cnn(*, widths: Sequence[int] = (16, 32, 64, 128),
              strides: Sequence[int] = (1, 2, 2, 2), pooling: str = "avg",
              dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
              axis_name: Optional[str] = None) -> Model:
  """A four-layer CNN for small images on a CPU.

  28×28 inputs go through 28 → 28 → 14 → 7 → 4 before the pooling; about
  0.1 GFLOP per image for a forward and backward pass. Features are
  [B, widths[-1]] after global average pooling, or, with
  `pooling="flatten"`, the last map as is, [B, 4·4·widths[-1]] for 28×28
  inputs: centred digits carry their class in where the strokes are, which
  averaging discards (mnist5k's recipe flattens, as LeNet-style nets do).

  Args:
    widths: channels of each conv3×3-BN-ReLU layer.
    strides: stride of each layer.
    pooling: "avg" (global average) or "flatten".
    dtype, param_dtype, axis_name: as in `resnet18`.

  Returns:
    A `Model` with BN running statistics in `model_state`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import small_cnn
    >>> model = small_cnn()
    >>> x = jnp.ones((2, 28, 28, 1))
    >>> params, state = model.init(jax.random.key(0), x)
    >>> out, state = model.apply(params, state, x, train=True)
    >>> print(out.shape, sum(p.size for p in jax.tree.leaves(params)))
    (2, 128) 97392
  """
  return _conv_stack("small_cnn", tuple(widths), tuple(strides), dtype,
                     param_dtype, axis_name, pooling)
