"""Vision Transformers ViT-Tiny/Small.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; the Tiny and Small
sizes are from Touvron et al. 2021 (DeiT).

Non-overlapping p×p patches are embedded linearly, a learned position
embedding is added (with a prepended CLS token for `pool="cls"`), then
`depth` pre-LN encoder blocks

    x ← x + MSA(LN(x)),   x ← x + MLP(LN(x))   (MLP: D → 4D → D, exact GELU)

and a final LayerNorm; the output is the CLS token or the mean of the tokens,
[B, D]. Inputs whose size differs from `image_size` (e.g. DINO's local crops)
get the position embedding of the patch grid resized bicubically, as DINO does.
Weights and embeddings start from a truncated normal with std 0.02.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from ssljax._common import check_positive
from ssljax.models._layers import (Dtype, check_last_dim, in_order,
                                   trunc_normal)
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model

POOLS = ("cls", "mean")
LN_EPSILON = 1e-6


class EncoderBlock(nnx.Module):
  """Pre-LN transformer block: x + MSA(LN(x)), then x + MLP(LN(x))."""

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: int = 4,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    # keep_rngs=False: no dropout, so no RNG state ends up in model_state.
    self.attn = nnx.MultiHeadAttention(
        num_heads, dim, decode=False, keep_rngs=False,
        kernel_init=trunc_normal, **kw)
    self.norm2 = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    self.fc1 = nnx.Linear(dim, mlp_ratio * dim, kernel_init=trunc_normal, **kw)
    self.fc2 = nnx.Linear(mlp_ratio * dim, dim, kernel_init=trunc_normal, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    x = x + self.attn(self.norm1(x))
    return x + self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=False))


class VisionTransformer(nnx.Module):
  """ViT backbone: [B, H, W, C] images -> [B, dim] features.

  H and W must be multiples of `patch_size`; the position embedding is
  learned for `image_size` and resized for other sizes.
  """

  def __init__(self, in_channels: int, *, dim: int, depth: int,
               num_heads: int, patch_size: int = 16, image_size: int = 224,
               mlp_ratio: int = 4, pool: str = "cls",
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    _check_config("VisionTransformer", patch_size=patch_size,
                  image_size=image_size, depth=depth, pool=pool)
    if dim % num_heads:
      raise ValueError(f"VisionTransformer: `dim` ({dim}) must be divisible "
                       f"by `num_heads` ({num_heads}).")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_channels = in_channels
    self.patch_size = patch_size
    self.grid = image_size // patch_size
    self.pool = pool
    self.dtype = dtype
    self.patch_embed = nnx.Conv(
        in_channels, dim, (patch_size, patch_size),
        strides=(patch_size, patch_size), padding="VALID",
        kernel_init=trunc_normal, **kw)
    self.cls_token = (nnx.Param(trunc_normal(rngs.params(), (1, 1, dim),
                                             param_dtype))
                      if pool == "cls" else None)
    num_tokens = self.grid ** 2 + (pool == "cls")
    self.pos_embed = nnx.Param(trunc_normal(rngs.params(),
                                            (1, num_tokens, dim), param_dtype))
    self.blocks = nnx.Dict({
        f"block{i}": EncoderBlock(dim, num_heads, mlp_ratio=mlp_ratio, **kw)
        for i in range(depth)})
    self.norm = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)

  def _position_embedding(self, h: int, w: int) -> jax.Array:
    """[1, tokens, dim] embedding for an h×w patch grid (CLS first)."""
    pos = self.pos_embed[...]
    if (h, w) == (self.grid, self.grid):
      return pos
    extra, grid = pos[:, :-self.grid ** 2], pos[:, -self.grid ** 2:]
    dim = pos.shape[-1]
    grid = jax.image.resize(grid.reshape(1, self.grid, self.grid, dim),
                            (1, h, w, dim), "bicubic", antialias=False)
    return jnp.concatenate([extra, grid.reshape(1, h * w, dim)], axis=1)

  def __call__(self, x: jax.Array) -> jax.Array:
    fn = "VisionTransformer"
    check_last_dim(x, self.in_channels, 4, fn)
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(
          f"{fn}: `x` height and width must be multiples of patch_size "
          f"{self.patch_size}, got shape {x.shape}.")
    tokens = self.patch_embed(x)
    b, h, w, dim = tokens.shape
    tokens = tokens.reshape(b, h * w, dim)
    pos = self._position_embedding(h, w)
    if self.cls_token is not None:
      cls = jnp.broadcast_to(self.cls_token[...], (b, 1, dim))
      tokens, cls = promote_dtype((tokens, cls), dtype=self.dtype)
      tokens = jnp.concatenate([cls, tokens], axis=1)
    tokens, pos = promote_dtype((tokens, pos), dtype=self.dtype)
    tokens = tokens + pos
    for block in in_order(self.blocks):
      tokens = block(tokens)
    tokens = self.norm(tokens)
    return tokens[:, 0] if self.pool == "cls" else jnp.mean(tokens, axis=1)


def _check_config(fn: str, *, patch_size: int, image_size: int, depth: int,
                  pool: str) -> None:
  for name, value in (("patch_size", patch_size), ("image_size", image_size),
                      ("depth", depth)):
    check_positive(value, name, fn)
  if image_size % patch_size:
    raise ValueError(f"{fn}: `image_size` ({image_size}) must be a multiple "
                     f"of `patch_size` ({patch_size}).")
  if pool not in POOLS:
    raise ValueError(f"{fn}: `pool` must be one of {POOLS}, got {pool!r}.")


def _vit(name: str, dim: int, num_heads: int, *, patch_size: int,
         image_size: int, depth: int, pool: str, dtype: Optional[Dtype],
         param_dtype: Dtype) -> Model:
  _check_config(name, patch_size=patch_size, image_size=image_size,
                depth=depth, pool=pool)

  def build(rngs, x):
    return VisionTransformer(
        check_last_dim(x, None, 4, name), dim=dim, depth=depth,
        num_heads=num_heads, patch_size=patch_size, image_size=image_size,
        pool=pool, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

  return from_builder(build, name=name)


def vit_tiny(*, patch_size: int = 16, image_size: int = 224, depth: int = 12,
             pool: str = "cls", dtype: Optional[Dtype] = None,
             param_dtype: Dtype = jnp.float32) -> Model:
  """ViT-Tiny (dim 192, 3 heads, depth 12) as a `Model`: features [B, 192].

  5,524,416 parameters at 224×224, patch 16, 3 channels (5,717,416 minus the
  1000-way head). ViTs have no BatchNorm: `model_state` is `{}`.

  Args:
    patch_size: side of the square patches.
    image_size: side of the images the position embedding is learned for.
    depth: number of encoder blocks (lower it for tiny tests).
    pool: "cls" (CLS token) or "mean" (mean of the patch tokens, no CLS).
    dtype: computation dtype (e.g. `jnp.bfloat16`); None infers it.
    param_dtype: dtype of the parameters.

  Returns:
    A `Model`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import vit_tiny
    >>> model = vit_tiny(patch_size=4, image_size=16, depth=1)
    >>> x = jnp.ones((2, 16, 16, 3))
    >>> params, state = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> crops = jnp.ones((2, 8, 8, 3))  # position embedding resized
    >>> out, _ = jax.eval_shape(
    ...     lambda p: model.apply(p, state, crops, train=False), params)
    >>> print(out.shape, state)
    (2, 192) {}
  """
  return _vit("vit_tiny", 192, 3, patch_size=patch_size,
              image_size=image_size, depth=depth, pool=pool, dtype=dtype,
              param_dtype=param_dtype)


def vit_small(*, patch_size: int = 16, image_size: int = 224, depth: int = 12,
              pool: str = "cls", dtype: Optional[Dtype] = None,
              param_dtype: Dtype = jnp.float32) -> Model:
  """ViT-Small (dim 384, 6 heads, depth 12) as a `Model`: features [B, 384].

  21,665,664 parameters at 224×224, patch 16, 3 channels (22,050,664 minus
  the 1000-way head). Arguments as in `vit_tiny`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import vit_small
    >>> model = vit_small()
    >>> x = jnp.zeros((2, 224, 224, 3))
    >>> params, _ = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> print(sum(p.size for p in jax.tree.leaves(params)))
    21665664
  """
  return _vit("vit_small", 384, 6, patch_size=patch_size,
              image_size=image_size, depth=depth, pool=pool, dtype=dtype,
              param_dtype=param_dtype)
