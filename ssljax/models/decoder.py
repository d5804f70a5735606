"""A small convolutional decoder: features [B, D] -> images [B, H, W, C].

The reconstruction methods (denoising autoencoder, context encoder) decode
the backbone's pooled features back to pixels, as the context encoder's
decoder does from its bottleneck (Pathak et al. 2016, Fig. 2: a fully
connected layer, then up-convolutions):

    Linear(D → s·s·w) - reshape [s, s, w] - ReLU,
    (4×4 transposed convolution, stride 2 - BN - ReLU) × n,
    3×3 convolution → C,  centre crop to H × W,

with n the fewest doublings that bring s = 4 or less up to the output
side: s = ceil(max(H, W) / 2ⁿ) <= 4. The output is linear (no squashing):
the methods compare it with normalised pixels.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax._common import check_positive
from ssljax.models._layers import Dtype, batch_norm, check_last_dim
from ssljax.models.adapters import from_builder
from ssljax.models.conv import Conv, ConvTranspose
from ssljax.models.base import Model

# Side of the first feature map: the decoder doubles it until it covers the
# image (4 × 4 as in DCGAN-style generators and the context encoder).
_START_SIDE = 4


def upsampling_steps(height: int, width: int) -> int:
  """n = the fewest stride-2 steps with ceil(max(H, W) / 2ⁿ) <= 4.

  >>> upsampling_steps(28, 28), upsampling_steps(32, 32), upsampling_steps(4, 4)
  (3, 3, 0)
  """
  return max(0, math.ceil(math.log2(max(height, width) / _START_SIDE)))


class ConvDecoder(nnx.Module):
  """Features [B, in_dim] -> images [B, H, W, C], see the module docstring."""

  def __init__(self, in_dim: int, out_shape: Sequence[int], *, width: int,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    height, width_px, channels = out_shape
    for name, value in (("width", width), ("height", height),
                        ("out width", width_px), ("channels", channels)):
      check_positive(value, name, "ConvDecoder")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.out_shape = (height, width_px, channels)
    self.steps = upsampling_steps(height, width_px)
    self.start = (-(-height // 2 ** self.steps), -(-width_px // 2 ** self.steps))
    self.width = width
    self.fc = nnx.Linear(in_dim, self.start[0] * self.start[1] * width, **kw)
    self.up = nnx.List([
        ConvTranspose(width, width, 4, strides=2, use_bias=False, **kw)
        for _ in range(self.steps)])
    self.bn = nnx.List([
        batch_norm(width, dtype=dtype, param_dtype=param_dtype,
                   axis_name=axis_name, rngs=rngs)
        for _ in range(self.steps)])
    self.out = Conv(width, channels, 3, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    check_last_dim(x, self.in_dim, 2, "ConvDecoder")
    x = nnx.relu(self.fc(x).reshape(x.shape[0], *self.start, self.width))
    for up, bn in zip(self.up, self.bn):
      x = nnx.relu(bn(up(x)))
    x = self.out(x)
    height, width, _ = self.out_shape
    top, left = (x.shape[1] - height) // 2, (x.shape[2] - width) // 2
    return x[:, top:top + height, left:left + width]


def conv_decoder(out_shape: Sequence[int], *, width: int = 64,
                 dtype: Optional[Dtype] = None,
                 param_dtype: Dtype = jnp.float32,
                 axis_name: Optional[str] = None) -> Model:
  """The decoder as a `Model`: features [B, D] -> images [B, H, W, C].

  Args:
    out_shape: (H, W, C) of the images to produce.
    width: channels of every hidden feature map.
    dtype, param_dtype, axis_name: as in `ssljax.models.resnet18`.

  Returns:
    A `Model` (D read at `init`) with BN statistics in `model_state`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> decoder = conv_decoder((28, 28, 1), width=8)
    >>> params, state = decoder.init(jax.random.key(0), jnp.ones((2, 16)))
    >>> out, state = decoder.apply(params, state, jnp.ones((2, 16)),
    ...                            train=True)
    >>> print(out.shape)
    (2, 28, 28, 1)
  """
  if len(out_shape) != 3:
    raise ValueError(f"conv_decoder: `out_shape` must be (H, W, C), got "
                     f"{tuple(out_shape)}.")
  check_positive(width, "width", "conv_decoder")
  return from_builder(
      lambda rngs, x: ConvDecoder(
          check_last_dim(x, None, 2, "conv_decoder"), tuple(out_shape),
          width=width, dtype=dtype, param_dtype=param_dtype,
          axis_name=axis_name, rngs=rngs),
      name="conv_decoder")
