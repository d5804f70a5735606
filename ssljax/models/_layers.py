"""Layers and input checks shared by the backbones and heads.

BatchNorm follows the torchvision convention the SSL papers were trained with:
running statistics move by 10% of the batch statistic per step (Flax
`momentum=0.9` is PyTorch `momentum=0.1`) and eps is 1e-5. Under `jax.jit`
the batch mean and variance are reductions over the global batch, so with a
batch sharded over a mesh they are global without any collective written
here; `axis_name` is only for callers that run a model inside
`shard_map`/pmap, where it makes the statistics a mean over devices.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax._common import check_rank
from ssljax.models.conv import Conv

Dtype = Any

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5

# He et al. 2015 initialisation on fan-out, as torchvision initialises ResNets.
he_normal = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")
# The ViT and DINO initialisation of linear weights and embeddings, timm's
# `trunc_normal_(std=.02)`: it truncates at ±2 in absolute value, 100 std, so
# the draw is N(0, 0.02²) (as MAE's code notes). Flax's `truncated_normal`
# cuts at ±2 std, which would shrink the std by 12%.
normal_002 = nnx.initializers.normal(stddev=0.02)


def batch_norm(num_features: int, *, dtype: Optional[Dtype],
               param_dtype: Dtype, axis_name: Optional[str], rngs: nnx.Rngs,
               zero_scale: bool = False, affine: bool = True) -> nnx.BatchNorm:
  """BatchNorm with the project's momentum and eps.

  `zero_scale` starts gamma at 0 (Goyal et al. 2017, "zero-init residual"),
  `affine=False` drops gamma and beta (the last BN of SimSiam/MoCo v3
  projectors).
  """
  return nnx.BatchNorm(
      num_features, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype,
      param_dtype=param_dtype, axis_name=axis_name, use_scale=affine,
      use_bias=affine,
      scale_init=(nnx.initializers.zeros if zero_scale
                  else nnx.initializers.ones),
      rngs=rngs)


class ConvBN(nnx.Module):
  """k×k convolution without bias, then BatchNorm.

  Padding is k // 2 on every side (PyTorch's padding), not Flax "SAME", which
  pads stride-2 convolutions asymmetrically and would shift every feature map
  by one pixel relative to the published architectures.
  """

  def __init__(self, in_features: int, out_features: int, kernel_size: int,
               stride: int = 1, *, zero_scale: bool = False,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               axis_name: Optional[str] = None, rngs: nnx.Rngs):
    pad = kernel_size // 2
    self.conv = Conv(
        in_features, out_features, kernel_size, strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False, kernel_init=he_normal, dtype=dtype,
        param_dtype=param_dtype, rngs=rngs)
    self.bn = batch_norm(out_features, zero_scale=zero_scale, dtype=dtype,
                         param_dtype=param_dtype, axis_name=axis_name,
                         rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.bn(self.conv(x))


def in_order(layers: nnx.Dict) -> list:
  """Values of `layers` (keys "<name><index>") in index order.

  `nnx.merge` rebuilds an `nnx.Dict` with its keys sorted as strings, which
  would run "block10" before "block2"; the index says the order.
  """
  def index(key: str) -> int:
    return int(key[len(key.rstrip("0123456789")):])

  return [layers[k] for k in sorted(layers, key=index)]


def global_avg_pool(x: jax.Array) -> jax.Array:
  """[B, H, W, C] -> [B, C], summed in float32 so bf16 maps do not lose bits."""
  return jnp.mean(x, axis=(1, 2), dtype=jnp.float32).astype(x.dtype)


def check_last_dim(x, size: Optional[int], rank: int, fn: str) -> int:
  """Checks the rank of input `x` and that its last dim is `size` (if given).

  Returns the last dimension, so that builders can infer it from an example
  input when `size` is None.
  """
  check_rank(x, rank, "x", fn)
  last = jnp.shape(x)[-1]
  if size is not None and last != size:
    raise ValueError(
        f"{fn}: `x` must have last dimension {size}, got shape "
        f"{jnp.shape(x)}.")
  return last
