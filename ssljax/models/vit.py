"""Vision Transformers ViT-Tiny/Small/Base, ready for masked image modelling.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words"; the Tiny and Small
sizes are from Touvron et al. 2021 (DeiT).

Non-overlapping p×p patches are embedded linearly, a position embedding is
added (with a prepended CLS token for `pool="cls"`), then `depth` pre-LN
encoder blocks

    x ← x + MSA(LN(x)),   x ← x + MLP(LN(x))   (MLP: D → 4D → D, exact GELU)

and a final LayerNorm; the output is the CLS token or the mean of the tokens,
[B, D]. The position embedding is learned (`pos_embed="learned"`, truncated
normal with std 0.02 like the weights; inputs whose size differs from
`image_size`, e.g. DINO's local crops, get it resized bicubically, as DINO
does) or the fixed 2-D sin-cos embedding of MAE and I-JEPA
(`pos_embed="sincos"`, `sincos_position_embedding`, computed for any patch
grid; the CLS token's is zero).

Masked image modelling, through keywords of `Model.apply` (and of
`VisionTransformer.__call__`):

* `mask` bool [B, N]: the embeddings of the masked patches are replaced by a
  learned mask token before the position embedding is added (iBOT, SimMIM;
  needs `mask_token=True`);
* `keep` int [B, K]: only these patch tokens enter the blocks (MAE and
  I-JEPA drop the others); `keep_valid` bool [B, K] marks padding entries
  that no token attends to and that pooling skips (I-JEPA's context, whose
  size varies, under static shapes);
* `tokens=True`: every output token [B, T, D], CLS first, instead of the
  pooled feature.

Training options: `drop_path_rate` (stochastic depth, Huang et al. 2016; the
rate grows linearly from 0 at the first block, as in timm, DeiT and iBOT)
draws its masks from an RNG stream kept in `model_state`, in train mode
only; `remat` recomputes each block's activations in the backward pass
(`jax.checkpoint`), trading compute for memory. `layer_ids(params)` gives
every parameter's block index for layer-wise learning-rate decay.
`token_predictor` is the narrow transformer of the MAE decoder and the
I-JEPA predictor.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from ssljax._common import check_in_range, check_positive, check_rank
from ssljax.models._layers import (Dtype, check_last_dim, in_order,
                                   normal_002)
from ssljax.models.adapters import from_builder
from ssljax.models.base import Model
from ssljax.models.conv import Conv

POOLS = ("cls", "mean")
POSITION_EMBEDDINGS = ("learned", "sincos")
LN_EPSILON = 1e-6
# (dim, heads) of the presets; depth 12 for all three.
VIT_SIZES = {"vit_tiny": (192, 3), "vit_small": (384, 6), "vit_base": (768, 12)}
# Top-level parameters that `layer_ids` puts before the first block.
_EMBEDDINGS = ("patch_embed", "cls_token", "pos_embed", "mask_token")


def sincos_position_embedding(height: int, width: int, dim: int
                              ) -> np.ndarray:
  """The fixed 2-D sin-cos position embedding of MAE and I-JEPA.

  Patch (i, j) of an height×width grid (row-major) gets
  [e(j), e(i)], the column's 1-D embedding then the row's, each of D/2
  entries e(p) = [sin(p·ω_0..D/4−1), cos(p·ω_0..D/4−1)] with
  ω_k = 10000^(−k / (D/4)) (Vaswani et al. 2017, extended to 2-D in
  MoCo v3 and MAE's `get_2d_sincos_pos_embed`).

  Args:
    height, width: the patch grid.
    dim: D, a multiple of 4.

  Returns:
    [height·width, dim] float32 numpy array.

  Example:
    >>> e = sincos_position_embedding(2, 3, 8)
    >>> print(e.shape, e[0].tolist())
    (6, 8) [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
  """
  fn = "sincos_position_embedding"
  for name, value in (("height", height), ("width", width), ("dim", dim)):
    check_positive(value, name, fn)
  if dim % 4:
    raise ValueError(f"{fn}: `dim` must be a multiple of 4, got {dim}.")
  omega = 1.0 / 10000 ** (np.arange(dim // 4) / (dim / 4))
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")

  def encode(positions):
    angles = positions.reshape(-1, 1) * omega
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

  return np.concatenate([encode(cols), encode(rows)],
                        axis=1).astype(np.float32)


def drop_path(x: jax.Array, rate: float, key: jax.Array) -> jax.Array:
  """Stochastic depth of a residual branch x [B, ...] (Huang et al. 2016).

  Each example's branch is zeroed with probability `rate` and the kept ones
  are scaled by 1 / (1 − rate), so the expectation is x.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> y = drop_path(jnp.ones((4, 3)), 0.5, jax.random.key(0))
    >>> print(sorted(set(y.ravel().tolist())) in ([0.0, 2.0], [0.0], [2.0]))
    True
  """
  keep = 1.0 - rate
  kept = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(kept, x / keep, jnp.zeros_like(x))


class EncoderBlock(nnx.Module):
  """Pre-LN transformer block: x + MSA(LN(x)), then x + MLP(LN(x)).

  `drop_path` is the block's stochastic-depth rate, applied to both
  residual branches when the call gets keys.
  """

  def __init__(self, dim: int, num_heads: int, *, mlp_ratio: int = 4,
               drop_path: float = 0.0, dtype: Optional[Dtype] = None,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    # keep_rngs=False: no dropout, so no RNG state ends up in model_state.
    self.attn = nnx.MultiHeadAttention(
        num_heads, dim, decode=False, keep_rngs=False,
        kernel_init=normal_002, **kw)
    self.norm2 = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    self.fc1 = nnx.Linear(dim, mlp_ratio * dim, kernel_init=normal_002, **kw)
    self.fc2 = nnx.Linear(mlp_ratio * dim, dim, kernel_init=normal_002, **kw)
    self.drop_path = drop_path

  def __call__(self, x: jax.Array, attention_mask: Optional[jax.Array] = None,
               drop_keys: Optional[jax.Array] = None) -> jax.Array:
    """x [B, T, D]; `attention_mask` [B, 1, 1, T] (False: no token attends
    to that one); `drop_keys` [2] keys of the two branches' stochastic
    depth, None for none."""

    def residual(branch, i):
      if drop_keys is None or not self.drop_path:
        return branch
      return drop_path(branch, self.drop_path, drop_keys[i])

    x = x + residual(self.attn(self.norm1(x), mask=attention_mask), 0)
    return x + residual(
        self.fc2(nnx.gelu(self.fc1(self.norm2(x)), approximate=False)), 1)


def _run_blocks(blocks: nnx.Dict, x: jax.Array,
                attention_mask: Optional[jax.Array],
                drop_keys: Optional[jax.Array], remat: bool) -> jax.Array:
  """The blocks in index order; with `remat` each one's activations are
  recomputed in the backward pass instead of stored."""
  call = nnx.remat(EncoderBlock.__call__) if remat else EncoderBlock.__call__
  for i, block in enumerate(in_order(blocks)):
    x = call(block, x, attention_mask,
             None if drop_keys is None else drop_keys[i])
  return x


def _attention_mask(valid: Optional[jax.Array]) -> Optional[jax.Array]:
  """[B, T] valid tokens -> [B, 1, 1, T] keys every query may attend to."""
  return None if valid is None else valid[:, None, None, :]


def _check_indices(indices, batch: int, name: str, fn: str) -> None:
  check_rank(indices, 2, name, fn)
  if not jnp.issubdtype(jnp.result_type(indices), jnp.integer) or (
      np.shape(indices)[0] != batch):
    raise ValueError(f"{fn}: `{name}` must be integer patch indices [B, K] "
                     f"with B = {batch}, got {jnp.result_type(indices)} "
                     f"{np.shape(indices)}.")


def _check_flags(flags, shape: tuple, name: str, fn: str) -> None:
  if np.shape(flags) != tuple(shape) or jnp.result_type(flags) != jnp.bool_:
    raise ValueError(f"{fn}: `{name}` must be bool {list(shape)}, got "
                     f"{jnp.result_type(flags)} {np.shape(flags)}.")


class VisionTransformer(nnx.Module):
  """ViT backbone: [B, H, W, C] images -> [B, dim] features.

  H and W must be multiples of `patch_size`; a learned position embedding is
  learned for `image_size` and resized for other sizes. See the module
  docstring for the masking keywords of the call.
  """

  def __init__(self, in_channels: int, *, dim: int, depth: int,
               num_heads: int, patch_size: int = 16, image_size: int = 224,
               mlp_ratio: int = 4, pool: str = "cls",
               pos_embed: str = "learned", mask_token: bool = False,
               drop_path_rate: float = 0.0, remat: bool = False,
               dtype: Optional[Dtype] = None, param_dtype: Dtype = jnp.float32,
               rngs: nnx.Rngs):
    _check_config("VisionTransformer", patch_size=patch_size,
                  image_size=image_size, depth=depth, pool=pool,
                  pos_embed=pos_embed, drop_path_rate=drop_path_rate)
    if dim % num_heads:
      raise ValueError(f"VisionTransformer: `dim` ({dim}) must be divisible "
                       f"by `num_heads` ({num_heads}).")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_channels = in_channels
    self.patch_size = patch_size
    self.grid = image_size // patch_size
    self.dim = dim
    self.pool = pool
    self.dtype = dtype
    self.remat = remat
    self.patch_embed = Conv(
        in_channels, dim, patch_size, strides=patch_size, padding="VALID",
        kernel_init=normal_002, **kw)
    self.cls_token = (nnx.Param(normal_002(rngs.params(), (1, 1, dim),
                                             param_dtype))
                      if pool == "cls" else None)
    num_tokens = self.grid ** 2 + (pool == "cls")
    self.pos_embed = (nnx.Param(normal_002(rngs.params(),
                                             (1, num_tokens, dim),
                                             param_dtype))
                      if pos_embed == "learned" else None)
    # Zeros, as iBOT's `masked_embed` starts.
    self.mask_token = (nnx.Param(jnp.zeros((1, 1, dim), param_dtype))
                       if mask_token else None)
    rates = np.linspace(0.0, drop_path_rate, depth)
    self.blocks = nnx.Dict({
        f"block{i}": EncoderBlock(dim, num_heads, mlp_ratio=mlp_ratio,
                                  drop_path=float(rates[i]), **kw)
        for i in range(depth)})
    self.norm = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    # `Module.train()` clears it: stochastic depth runs in train mode only.
    self.deterministic = True
    self.drop_rngs = (rngs["dropout"].fork() if drop_path_rate > 0
                      else None)

  def _position_embedding(self, h: int, w: int
                          ) -> tuple[Optional[jax.Array], jax.Array]:
    """(CLS embedding [1, 1, dim] or None, grid embedding [1, h·w, dim])."""
    has_cls = self.cls_token is not None
    if self.pos_embed is None:
      grid = jnp.asarray(sincos_position_embedding(h, w, self.dim))[None]
      return (jnp.zeros((1, 1, self.dim)) if has_cls else None), grid
    pos = self.pos_embed[...]
    extra, grid = pos[:, :-self.grid ** 2], pos[:, -self.grid ** 2:]
    if (h, w) != (self.grid, self.grid):
      grid = jax.image.resize(grid.reshape(1, self.grid, self.grid, self.dim),
                              (1, h, w, self.dim), "bicubic", antialias=False)
      grid = grid.reshape(1, h * w, self.dim)
    return (extra if has_cls else None), grid

  def _drop_keys(self) -> Optional[jax.Array]:
    """[depth, 2] stochastic-depth keys in train mode, else None."""
    if self.deterministic or self.drop_rngs is None:
      return None
    return jax.random.split(self.drop_rngs(), (len(self.blocks), 2))

  def __call__(self, x: jax.Array, *, mask: Optional[jax.Array] = None,
               keep: Optional[jax.Array] = None,
               keep_valid: Optional[jax.Array] = None,
               tokens: bool = False) -> jax.Array:
    fn = "VisionTransformer"
    check_last_dim(x, self.in_channels, 4, fn)
    if x.shape[1] % self.patch_size or x.shape[2] % self.patch_size:
      raise ValueError(
          f"{fn}: `x` height and width must be multiples of patch_size "
          f"{self.patch_size}, got shape {x.shape}.")
    patches = self.patch_embed(x)
    b, h, w, dim = patches.shape
    patches = patches.reshape(b, h * w, dim)
    if mask is not None:
      if self.mask_token is None:
        raise ValueError(f"{fn}: `mask` needs a ViT built with "
                         f"mask_token=True.")
      _check_flags(mask, (b, h * w), "mask", fn)
      patches, token = promote_dtype((patches, self.mask_token[...]),
                                     dtype=self.dtype)
      patches = jnp.where(mask[..., None], token, patches)
    cls_pos, pos = self._position_embedding(h, w)
    patches, pos = promote_dtype((patches, pos), dtype=self.dtype)
    patches = patches + pos
    if keep is not None:
      _check_indices(keep, b, "keep", fn)
      patches = jnp.take_along_axis(patches, keep[..., None], axis=1)
    if keep_valid is not None:
      if keep is None:
        raise ValueError(f"{fn}: `keep_valid` needs `keep`.")
      _check_flags(keep_valid, np.shape(keep), "keep_valid", fn)
    valid = keep_valid
    if self.cls_token is not None:
      cls = jnp.broadcast_to(self.cls_token[...] + cls_pos, (b, 1, dim))
      patches, cls = promote_dtype((patches, cls), dtype=self.dtype)
      patches = jnp.concatenate([cls, patches], axis=1)
      if valid is not None:
        valid = jnp.concatenate([jnp.ones((b, 1), bool), valid], axis=1)
    out = _run_blocks(self.blocks, patches, _attention_mask(valid),
                      self._drop_keys(), self.remat)
    out = self.norm(out)
    if tokens:
      return out
    if self.pool == "cls":
      return out[:, 0]
    if keep_valid is None:
      return jnp.mean(out, axis=1)
    weights = keep_valid[..., None].astype(out.dtype)
    return jnp.sum(out * weights, axis=1) / jnp.maximum(
        jnp.sum(weights, axis=1), 1)


class TokenPredictor(nnx.Module):
  """A narrow transformer predicting tokens at given patch positions from
  encoded context tokens: MAE's decoder (He et al. 2022) and I-JEPA's
  predictor (Assran et al. 2023).

      z = Linear(context) + e[context positions]   (a CLS token: + 0)
      q = mask token + e[target positions]
      [z, q] → pre-LN blocks → LayerNorm → Linear → predictions at q

  with e the sin-cos embedding of the patch grid at the predictor's width.
  The decoder of MAE runs on every position in raster order and its loss
  reads the masked ones; a transformer without causal mask treats its
  tokens as a set, so predicting only the masked positions gives the same
  values. Parameters: `embed`, `mask_token`, `blocks`, `norm`, `proj`.
  """

  def __init__(self, in_dim: int, out_dim: int, *, dim: int, depth: int,
               num_heads: int, mlp_ratio: int = 4, cls_token: bool = False,
               remat: bool = False, dtype: Optional[Dtype] = None,
               param_dtype: Dtype = jnp.float32, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"TokenPredictor: `dim` ({dim}) must be divisible by "
                       f"`num_heads` ({num_heads}).")
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.in_dim = in_dim
    self.dim = dim
    self.cls_token = cls_token
    self.dtype = dtype
    self.remat = remat
    self.embed = nnx.Linear(in_dim, dim, kernel_init=normal_002, **kw)
    self.mask_token = nnx.Param(normal_002(rngs.params(), (1, 1, dim),
                                             param_dtype))
    self.blocks = nnx.Dict({
        f"block{i}": EncoderBlock(dim, num_heads, mlp_ratio=mlp_ratio, **kw)
        for i in range(depth)})
    self.norm = nnx.LayerNorm(dim, epsilon=LN_EPSILON, **kw)
    self.proj = nnx.Linear(dim, out_dim, kernel_init=normal_002, **kw)

  def __call__(self, context: jax.Array, *, grid: tuple[int, int],
               context_index: jax.Array, target_index: jax.Array,
               context_valid: Optional[jax.Array] = None,
               target_valid: Optional[jax.Array] = None) -> jax.Array:
    """context [B, (1 +) K, in_dim] (the CLS token first if `cls_token`),
    `context_index` [B, K] and `target_index` [B, M] positions in the
    `grid` (rows, columns) of patches, `context_valid` [B, K] and
    `target_valid` [B, M] False on padding, which no token attends to ->
    predictions [B, M, out_dim]."""
    fn = "TokenPredictor"
    check_last_dim(context, self.in_dim, 3, fn)
    b = context.shape[0]
    _check_indices(context_index, b, "context_index", fn)
    _check_indices(target_index, b, "target_index", fn)
    extra = int(self.cls_token)
    if context.shape[1] != context_index.shape[1] + extra:
      raise ValueError(
          f"{fn}: `context` must hold {extra} CLS token(s) and one token per "
          f"`context_index` entry ({context_index.shape[1]}), got shape "
          f"{context.shape}.")
    pos = jnp.asarray(sincos_position_embedding(*grid, self.dim))
    z = self.embed(context)
    z, pos, token = promote_dtype((z, pos, self.mask_token[...]),
                                  dtype=self.dtype)
    z = jnp.concatenate([z[:, :extra], z[:, extra:] + pos[context_index]],
                        axis=1)
    queries = token + pos[target_index]
    valid = None
    if context_valid is not None or target_valid is not None:
      flags = []
      for name, given, index in (("context_valid", context_valid,
                                  context_index),
                                 ("target_valid", target_valid, target_index)):
        if given is not None:
          _check_flags(given, np.shape(index), name, fn)
        flags.append(jnp.ones(index.shape, bool) if given is None else given)
      valid = jnp.concatenate([jnp.ones((b, extra), bool), *flags], axis=1)
    out = _run_blocks(self.blocks, jnp.concatenate([z, queries], axis=1),
                      _attention_mask(valid), None, self.remat)
    return self.proj(self.norm(out[:, z.shape[1]:]))


def _check_config(fn: str, *, patch_size: int, image_size: int, depth: int,
                  pool: str, pos_embed: str = "learned",
                  drop_path_rate: float = 0.0) -> None:
  for name, value in (("patch_size", patch_size), ("image_size", image_size),
                      ("depth", depth)):
    check_positive(value, name, fn)
  if image_size % patch_size:
    raise ValueError(f"{fn}: `image_size` ({image_size}) must be a multiple "
                     f"of `patch_size` ({patch_size}).")
  if pool not in POOLS:
    raise ValueError(f"{fn}: `pool` must be one of {POOLS}, got {pool!r}.")
  if pos_embed not in POSITION_EMBEDDINGS:
    raise ValueError(f"{fn}: `pos_embed` must be one of "
                     f"{POSITION_EMBEDDINGS}, got {pos_embed!r}.")
  check_in_range(drop_path_rate, 0.0, 0.99, "drop_path_rate", fn)


def _vit(name: str, *, patch_size: int, image_size: int, depth: int,
         pool: str, pos_embed: str, mask_token: bool, drop_path_rate: float,
         remat: bool, dtype: Optional[Dtype], param_dtype: Dtype) -> Model:
  """The preset `name` (`VIT_SIZES`) with the factories' arguments."""
  dim, num_heads = VIT_SIZES[name]
  _check_config(name, patch_size=patch_size, image_size=image_size,
                depth=depth, pool=pool, pos_embed=pos_embed,
                drop_path_rate=drop_path_rate)

  def build(rngs, x):
    return VisionTransformer(
        check_last_dim(x, None, 4, name), dim=dim, depth=depth,
        num_heads=num_heads, patch_size=patch_size, image_size=image_size,
        pool=pool, pos_embed=pos_embed, mask_token=mask_token,
        drop_path_rate=drop_path_rate, remat=remat, dtype=dtype,
        param_dtype=param_dtype, rngs=rngs)

  return from_builder(build, name=name)


def vit_tiny(*, patch_size: int = 16, image_size: int = 224, depth: int = 12,
             pool: str = "cls", pos_embed: str = "learned",
             mask_token: bool = False, drop_path_rate: float = 0.0,
             remat: bool = False, dtype: Optional[Dtype] = None,
             param_dtype: Dtype = jnp.float32) -> Model:
  """ViT-Tiny (dim 192, 3 heads, depth 12) as a `Model`: features [B, 192].

  5,524,416 parameters at 224×224, patch 16, 3 channels (5,717,416 minus the
  1000-way head). `model_state` is `{}`, or the stochastic-depth RNG stream
  when `drop_path_rate` > 0. `apply` takes the masking keywords `mask`,
  `keep`, `keep_valid` and `tokens` (module docstring).

  Args:
    patch_size: side of the square patches.
    image_size: side of the images the learned position embedding is for.
    depth: number of encoder blocks (lower it for tiny tests).
    pool: "cls" (CLS token) or "mean" (mean of the patch tokens, no CLS).
    pos_embed: "learned" or "sincos" (fixed, MAE and I-JEPA).
    mask_token: learn a mask token (the `mask` keyword, iBOT).
    drop_path_rate: stochastic depth of the last block (linear from 0).
    remat: recompute the blocks' activations in the backward pass.
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
    >>> keep = jnp.array([[0, 5], [3, 4]])  # 2 of the 16 patches each
    >>> out, _ = jax.eval_shape(lambda p: model.apply(
    ...     p, state, x, train=False, keep=keep, tokens=True), params)
    >>> print(out.shape)  # CLS and the two kept tokens
    (2, 3, 192)
  """
  return _vit("vit_tiny", **locals())


def vit_small(*, patch_size: int = 16, image_size: int = 224, depth: int = 12,
              pool: str = "cls", pos_embed: str = "learned",
              mask_token: bool = False, drop_path_rate: float = 0.0,
              remat: bool = False, dtype: Optional[Dtype] = None,
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
  return _vit("vit_small", **locals())


def vit_base(*, patch_size: int = 16, image_size: int = 224, depth: int = 12,
             pool: str = "cls", pos_embed: str = "learned",
             mask_token: bool = False, drop_path_rate: float = 0.0,
             remat: bool = False, dtype: Optional[Dtype] = None,
             param_dtype: Dtype = jnp.float32) -> Model:
  """ViT-Base (dim 768, 12 heads, depth 12) as a `Model`: features [B, 768].

  85,798,656 parameters at 224×224, patch 16, 3 channels (86,567,656 minus
  the 1000-way head). Arguments as in `vit_tiny`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import vit_base
    >>> model = vit_base()
    >>> x = jnp.zeros((2, 224, 224, 3))
    >>> params, _ = jax.eval_shape(model.init, jax.random.key(0), x)
    >>> print(sum(p.size for p in jax.tree.leaves(params)))
    85798656
  """
  return _vit("vit_base", **locals())


def token_predictor(in_dim: Optional[int], out_dim: int, *, dim: int,
                    depth: int, num_heads: int, mlp_ratio: int = 4,
                    cls_token: bool = False, remat: bool = False,
                    dtype: Optional[Dtype] = None,
                    param_dtype: Dtype = jnp.float32) -> Model:
  """The MAE decoder / I-JEPA predictor (`TokenPredictor`) as a `Model`.

  `apply(params, model_state, context, *, train, grid, context_index,
  target_index, context_valid=None, target_valid=None)` maps context
  tokens [B, (1 +) K, in_dim] to predictions [B, M, out_dim] at the M
  target positions of the (rows, columns) patch `grid`. MAE: dim 512,
  depth 8, 16 heads, CLS token, out p²·C pixels; I-JEPA: dim 384, depth 12
  (ViT-H), the encoder's heads, out the encoder's width.

  Args:
    in_dim: the encoder's width, or None to read it at `init`.
    out_dim: width of the predictions.
    dim, depth, num_heads, mlp_ratio: the narrow transformer.
    cls_token: the context starts with a CLS token (MAE).
    remat, dtype, param_dtype: as in `vit_tiny`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import token_predictor
    >>> head = token_predictor(None, 12, dim=16, depth=1, num_heads=2)
    >>> context = jnp.ones((2, 3, 8))  # 3 encoded tokens
    >>> params, state = head.init(jax.random.key(0), context)
    >>> out, _ = head.apply(
    ...     params, state, context, train=True, grid=(2, 2),
    ...     context_index=jnp.array([[0, 1, 2], [1, 2, 3]]),
    ...     target_index=jnp.array([[3], [0]]))
    >>> print(out.shape)
    (2, 1, 12)
  """
  name = "token_predictor"
  for arg, value in (("out_dim", out_dim), ("dim", dim), ("depth", depth),
                     ("num_heads", num_heads)):
    check_positive(value, arg, name)

  def build(rngs, x):
    return TokenPredictor(check_last_dim(x, in_dim, 3, name), out_dim,
                          dim=dim, depth=depth, num_heads=num_heads,
                          mlp_ratio=mlp_ratio, cls_token=cls_token,
                          remat=remat, dtype=dtype, param_dtype=param_dtype,
                          rngs=rngs)

  return from_builder(build, name=name)


def layer_ids(params: dict) -> dict:
  """Every parameter's layer index in a ViT, for layer-wise learning-rate
  decay (BEiT, Bao et al. 2022; MAE's and iBOT's fine-tuning).

  0 for the embeddings (`patch_embed`, `cls_token`, `pos_embed`,
  `mask_token`), i + 1 for block i, depth + 1 for everything after the
  blocks (the final `norm`, and any head in the tree). Fine-tuning scales
  the rate of a parameter with index l by decay^(depth + 1 − l).

  Args:
    params: the ViT's params (`params["backbone"]` of a composed method).

  Returns:
    A tree shaped like `params` of Python ints.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.models import layer_ids, vit_tiny
    >>> model = vit_tiny(patch_size=4, image_size=8, depth=2)
    >>> params, _ = jax.eval_shape(model.init, jax.random.key(0),
    ...                            jnp.zeros((1, 8, 8, 3)))
    >>> ids = layer_ids(params)
    >>> print(ids["cls_token"], ids["blocks"]["block1"]["fc1"]["bias"],
    ...       ids["norm"]["scale"])
    0 2 3
  """
  if not isinstance(params, dict) or "blocks" not in params:
    raise ValueError("layer_ids: `params` must be a ViT's parameters (a dict "
                     "with \"blocks\").")
  depth = len(params["blocks"])

  def layer(path, _):
    head = path[0].key
    if head in _EMBEDDINGS:
      return 0
    if head == "blocks":
      return int(path[1].key[len("block"):]) + 1
    return depth + 1

  return jax.tree_util.tree_map_with_path(layer, params)
