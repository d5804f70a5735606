"""A backbone of a few hundred parameters, for tests and smoke runs.

conv3×3(C→w)-BN-ReLU, conv3×3 stride 2(w→w)-BN-ReLU, global average pool.
It has BatchNorm so that tests exercise running statistics like a ResNet
does, but compiles and runs in a blink on a CPU.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax._common import check_positive
from ssljax.models._layers import ConvBN, Dtype, check_last_dim, global_avg_pool
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model


class TinyCNN(nnx.Module):
  """Two ConvBN-ReLU layers and global pooling: [B, H, W, C] -> [B, width]."""

  def __init__(self, in_channels: int, *, width: int = 8,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    check_positive(width, "width", "TinyCNN")
    kw = dict(dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
              rngs=rngs)
    self.in_channels = in_channels
    self.conv_bn0 = ConvBN(in_channels, width, 3, 1, **kw)
    self.conv_bn1 = ConvBN(width, width, 3, 2, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_channels, 4, "TinyCNN")
    x = nnx.relu(self.conv_bn0(x))
    return global_avg_pool(nnx.relu(self.conv_bn1(x)))


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

  def build(rngs, x):
    return TinyCNN(check_last_dim(x, None, 4, "tiny_cnn"), width=width,
                   dtype=dtype, param_dtype=param_dtype, axis_name=axis_name,
                   rngs=rngs)

  return from_builder(build, name="tiny_cnn")
