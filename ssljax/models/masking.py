"""Mask samplers of masked image modelling, and images as patch tokens.

Every sampler is a pure function of a PRNG key with static output shapes,
jittable. Example b of a batch draws from `fold_in(key, b)`, b its row in
the global batch, so a draw does not depend on how the batch is sharded
under `jax.jit`; inside `jax.shard_map` pass `axis_name`, which offsets the
rows by the device's position and makes the batch-level reductions (I-JEPA's
smallest context) global, so every device gets its rows of the
single-device masks. Patches are numbered row-major over the (height, width)
grid of patches, as `patchify` and the ViT's tokens are.

* `random_masking`: MAE's uniform random subset (He et al. 2022);
* `block_mask`, `ibot_masks`: BEiT's block-wise masking (Bao et al. 2022)
  with iBOT's per-image prediction ratios (Zhou et al. 2022);
* `multiblock_masks`: I-JEPA's context block and target blocks (Assran et
  al. 2023);
* `patchify`, `unpatchify`: images <-> [B, N, p·p·C] patch vectors (MAE's
  reconstruction targets).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common

# I-JEPA's context sampler relaxes its constraints after this many misses.
_IJEPA_TIMEOUT = 20


# -------------------------------------------------------------- checks ---


def _check_grid(height, width, fn: str) -> None:
  _common.check_count(height, "height", fn, minimum=1)
  _common.check_count(width, "width", fn, minimum=1)


def _check_range(pair, name: str, fn: str, low: float = 0.0,
                 high: float = math.inf) -> tuple[float, float]:
  """(a, b) with low <= a <= b <= high."""
  pair = tuple(pair)
  if len(pair) != 2 or not low <= pair[0] <= pair[1] <= high:
    raise ValueError(f"{fn}: `{name}` must be a pair (a, b) with {low} <= a "
                     f"<= b <= {high}, got {pair!r}.")
  return pair


def _row_keys(key: jax.Array, batch: int, axis_name: Optional[str]
              ) -> jax.Array:
  """fold_in(key, b) for the global rows b of this batch (or shard)."""
  rows = _common.global_row_offset(batch, axis_name) + jnp.arange(batch)
  return jax.vmap(lambda row: jax.random.fold_in(key, row))(rows)


def _vary_with(key: jax.Array, *values: jax.Array) -> tuple:
  """`values`, typed as varying over devices like `key` inside shard_map.

  A loop's initial carry must have the device-varying type of what its body
  computes from a per-example key. Adding an exactly-zero scalar built from
  the key's bits (the sum of an empty slice) gives each value that type
  without changing it; outside shard_map it does nothing.
  """
  zero = jnp.sum(jax.random.key_data(key).reshape(-1)[:0])
  return tuple(v | (zero != 0) if v.dtype == jnp.bool_
               else v + zero.astype(v.dtype) for v in values)


def _block(height: int, width: int, top, left, h, w) -> jax.Array:
  """bool [height, width], True on rows [top, top + h) × cols [left,
  left + w)."""
  rows = jnp.arange(height)[:, None]
  cols = jnp.arange(width)[None, :]
  return ((rows >= top) & (rows < top + h)
          & (cols >= left) & (cols < left + w))


# ------------------------------------------------------------- patches ---


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, N, p·p·C]: patch n = (i, j) row-major, its pixels
  row-major with the channels last (MAE's `patchify`, "nhwpqc").

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    >>> print(patchify(x, 2)[0, 1].tolist())  # the top-right 2×2 patch
    [2.0, 3.0, 6.0, 7.0]
  """
  fn = "patchify"
  _common.check_rank(images, 4, "images", fn)
  _common.check_count(patch_size, "patch_size", fn, minimum=1)
  b, height, width, c = images.shape
  if height % patch_size or width % patch_size:
    raise ValueError(f"{fn}: `images` height and width must be multiples of "
                     f"patch_size {patch_size}, got shape {images.shape}.")
  h, w = height // patch_size, width // patch_size
  x = images.reshape(b, h, patch_size, w, patch_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * w,
                                               patch_size ** 2 * c)


def unpatchify(patches: jax.Array, patch_size: int, height: int,
               width: int) -> jax.Array:
  """The inverse of `patchify`: [B, N, p·p·C] -> [B, H, W, C].

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(32.0).reshape(2, 4, 4, 1)
    >>> bool((unpatchify(patchify(x, 2), 2, 4, 4) == x).all())
    True
  """
  fn = "unpatchify"
  _common.check_rank(patches, 3, "patches", fn)
  b, n, size = patches.shape
  h, w = height // patch_size, width // patch_size
  if h * w != n or h * patch_size != height or w * patch_size != width or (
      size % patch_size ** 2):
    raise ValueError(f"{fn}: `patches` {patches.shape} do not tile a "
                     f"{height}×{width} image with patches of "
                     f"{patch_size}.")
  c = size // patch_size ** 2
  x = patches.reshape(b, h, w, patch_size, patch_size, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, height, width, c)


# ------------------------------------------------------------------ MAE ---


class RandomMasking(NamedTuple):
  """A random masking of N patches into K kept and M = N − K masked.

  Attributes:
    keep: int32 [B, K], the visible patches, ascending.
    masked: int32 [B, M], the masked patches, ascending.
    mask: bool [B, N], True on the masked patches.
  """
  keep: jax.Array
  masked: jax.Array
  mask: jax.Array


def random_masking(key: jax.Array, batch: int, num_patches: int,
                   ratio: float, *, axis_name: Optional[str] = None
                   ) -> RandomMasking:
  """MAE's per-example random masking: K = int(N·(1 − ratio)) patches kept.

  Each example ranks its N patches by uniform noise and keeps the K
  lowest, a uniformly random K-subset (He et al. 2022, Sec. 3, and the
  official `random_masking`, which shuffles by argsort of noise). Indices are
  returned in ascending order; a transformer treats tokens as a set, so the
  order only fixes the order of its outputs.

  Args:
    key: a PRNG key.
    batch: B (this shard's rows inside `shard_map`).
    num_patches: N.
    ratio: the masked fraction in [0, 1); K >= 1.
    axis_name: mapped axis of the batch inside `shard_map`, or None.

  Returns:
    `RandomMasking(keep, masked, mask)`.

  Example:
    >>> import jax
    >>> m = random_masking(jax.random.key(0), 2, 16, 0.75)
    >>> print(m.keep.shape, m.masked.shape, m.mask.sum(axis=1).tolist())
    (2, 4) (2, 12) [12, 12]
  """
  fn = "random_masking"
  _common.check_count(batch, "batch", fn, minimum=1)
  _common.check_count(num_patches, "num_patches", fn, minimum=1)
  if not 0 <= ratio < 1:
    raise ValueError(f"{fn}: `ratio` must be in [0, 1), got {ratio}.")
  num_keep = int(num_patches * (1 - ratio))
  if num_keep < 1:
    raise ValueError(f"{fn}: `ratio` {ratio} keeps no patch of "
                     f"{num_patches}.")

  def one(k):
    order = jnp.argsort(jax.random.uniform(k, (num_patches,)))
    return jnp.sort(order[:num_keep]), jnp.sort(order[num_keep:])

  keep, masked = jax.vmap(one)(_row_keys(key, batch, axis_name))
  mask = jnp.zeros((batch, num_patches), bool).at[
      jnp.arange(batch)[:, None], masked].set(True)
  return RandomMasking(keep.astype(jnp.int32), masked.astype(jnp.int32), mask)


# ----------------------------------------------------------- BEiT, iBOT ---


def block_mask(key: jax.Array, height: int, width: int, num_masked, *,
               min_block_patches: float = 4,
               max_block_patches: Optional[float] = None,
               aspect: tuple[float, float] = (0.3, 1 / 0.3),
               attempts: int = 10) -> jax.Array:
  """BEiT's block-wise mask of one height×width patch grid.

  Blocks are added until at least `num_masked` patches are masked or a
  block cannot be placed (Bao et al. 2022, Algorithm 1; the official
  `MaskingGenerator` of BEiT, iBOT and DINOv2). Each block, with the
  budget r = `num_masked` − masked so far (at most `max_block_patches`),
  gets up to `attempts` tries of

      area s ~ U(min_block_patches, r),  aspect a = exp(U(log a0, log a1)),
      h = round(√(s·a)), w = round(√(s/a)), kept if h < height, w < width,
      top ~ U{0..height − h}, left ~ U{0..width − w},

  and the first block that masks between 1 and r new patches is added.
  The result never exceeds `num_masked`, and falls short when no block
  fits.

  Args:
    key: a PRNG key.
    height, width: the patch grid.
    num_masked: the patches to mask, a number or a traced scalar.
    min_block_patches: the smallest block area drawn (BEiT, DINOv2: 4;
      iBOT: (min(height, width) // 3)²).
    max_block_patches: the largest block area drawn (DINOv2: N / 2), or
      None.
    aspect: (a0, a1) range of the blocks' aspect ratios.
    attempts: tries per block.

  Returns:
    bool [height, width], True on the masked patches.

  Example:
    >>> import jax
    >>> m = block_mask(jax.random.key(0), 14, 14, 60)
    >>> print(m.shape, 40 < int(m.sum()) <= 60)
    (14, 14) True
  """
  fn = "block_mask"
  _check_grid(height, width, fn)
  _common.check_count(attempts, "attempts", fn, minimum=1)
  log_aspect = np.log(_check_range(aspect, "aspect", fn, low=1e-6))

  def budget(count):
    left = jnp.asarray(num_masked, jnp.float32) - count
    return left if max_block_patches is None else jnp.minimum(
        left, max_block_patches)

  def try_block(_, carry):
    key, mask, added, limit = carry
    key, *keys = jax.random.split(key, 5)
    # min + u·(limit − min), also below min once the budget is smaller, as
    # Python's random.uniform (jax.random.uniform clips to its minval).
    area = min_block_patches + jax.random.uniform(keys[0]) * (
        limit - min_block_patches)
    ratio = jnp.exp(jax.random.uniform(keys[1], minval=log_aspect[0],
                                       maxval=log_aspect[1]))
    h = jnp.round(jnp.sqrt(area * ratio)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / ratio)).astype(jnp.int32)
    top = jax.random.randint(keys[2], (), 0, jnp.maximum(height - h + 1, 1))
    left = jax.random.randint(keys[3], (), 0, jnp.maximum(width - w + 1, 1))
    block = _block(height, width, top, left, h, w)
    new = jnp.sum(block & ~mask)
    place = ((added == 0) & (h < height) & (w < width) & (new > 0)
             & (new <= limit))
    return (key, jnp.where(place, mask | block, mask),
            jnp.where(place, new, added), limit)

  def add_block(state):
    key, mask, count, _ = state
    key, mask, added, _ = jax.lax.fori_loop(
        0, attempts, try_block,
        (key, mask, *_vary_with(key, jnp.int32(0), budget(count))))
    return key, mask, count + added, added == 0

  def more(state):
    _, _, count, stalled = state
    return (count < num_masked) & ~stalled

  state = (key, *_vary_with(key, jnp.zeros((height, width), bool),
                            jnp.int32(0), jnp.bool_(False)))
  return jax.lax.while_loop(more, add_block, state)[1]


def ibot_masks(key: jax.Array, batch: int, height: int, width: int, *,
               ratio: Sequence[float] = (0.3,),
               ratio_var: Sequence[float] = (0.0,), shape: str = "block",
               min_block_patches: Optional[float] = None,
               aspect: tuple[float, float] = (0.3, 1 / 0.3),
               axis_name: Optional[str] = None) -> jax.Array:
  """iBOT's masks of one view, each image with its own prediction ratio.

  Image b picks one of the (ratio, ratio_var) pairs uniformly and draws its
  ratio r ~ U(ratio − ratio_var, ratio + ratio_var), then masks r·N of its
  N = height·width patches: block-wise (`block_mask`, BEiT's generator with
  iBOT's smallest block (min(height, width) // 3)²) for `shape="block"`, or
  int(r·N) uniformly random patches for "rand" (the official
  `ImageFolderMask`). iBOT's ViT-S/16 recipe, ratio (0, 0.3) with var
  (0, 0.2), masks half of the images not at all and the others at 10-50%.

  Args:
    key: a PRNG key.
    batch: B (this shard's rows inside `shard_map`).
    height, width: the patch grid.
    ratio, ratio_var: equal-length sequences, 0 <= var <= ratio, ratio +
      var < 1.
    shape: "block" or "rand".
    min_block_patches: the smallest block area, None for iBOT's.
    aspect: the blocks' aspect-ratio range.
    axis_name: mapped axis of the batch inside `shard_map`, or None.

  Returns:
    bool [B, height·width], True on the patches to predict.

  Example:
    >>> import jax
    >>> m = ibot_masks(jax.random.key(0), 4, 7, 7, ratio=(0.0, 0.3),
    ...                ratio_var=(0.0, 0.2))
    >>> print(m.shape, m.dtype)
    (4, 49) bool
  """
  fn = "ibot_masks"
  _common.check_count(batch, "batch", fn, minimum=1)
  _check_grid(height, width, fn)
  ratio, ratio_var = tuple(ratio), tuple(ratio_var)
  if not ratio or len(ratio) != len(ratio_var):
    raise ValueError(f"{fn}: `ratio` and `ratio_var` must be non-empty and "
                     f"of equal length, got {ratio} and {ratio_var}.")
  for mean, var in zip(ratio, ratio_var):
    if not 0 <= var <= mean or mean + var >= 1:
      raise ValueError(f"{fn}: each `ratio_var` must be in [0, ratio] with "
                       f"ratio + ratio_var < 1, got ratio {mean}, ratio_var "
                       f"{var}.")
  if shape not in ("block", "rand"):
    raise ValueError(f"{fn}: `shape` must be 'block' or 'rand', got "
                     f"{shape!r}.")
  if min_block_patches is None:
    min_block_patches = (min(height, width) // 3) ** 2
  n = height * width
  means, variances = jnp.asarray(ratio), jnp.asarray(ratio_var)

  def one(k):
    k_pick, k_ratio, k_mask = jax.random.split(k, 3)
    pick = jax.random.randint(k_pick, (), 0, len(ratio))
    u = jax.random.uniform(k_ratio)
    target = (means[pick] + variances[pick] * (2 * u - 1)) * n
    if shape == "rand":
      rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_mask, (n,))))
      return rank < jnp.floor(target)
    return block_mask(k_mask, height, width, target,
                      min_block_patches=min_block_patches,
                      aspect=aspect).reshape(n)

  return jax.vmap(one)(_row_keys(key, batch, axis_name))


# --------------------------------------------------------------- I-JEPA ---


class MultiBlock(NamedTuple):
  """I-JEPA's context and target patches, padded to static sizes.

  Attributes:
    context: int32 [B, Kc], the context block's patches that no target
      covers, ascending, padded.
    context_valid: bool [B, Kc], True on the first c entries of every row,
      c the smallest context of the batch (or of its group), as the
      official collator truncates every context to that size.
    targets: int32 [T, B, Kt], each target block's patches, ascending.
    target_valid: bool [T, B, Kt], True on the h·w patches of the blocks.
  """
  context: jax.Array
  context_valid: jax.Array
  targets: jax.Array
  target_valid: jax.Array


def _block_size(u, scale, aspect, height: int, width: int, xp=jnp):
  """I-JEPA's block (h, w) from one uniform u shared by scale and aspect:
  s = lerp(scale, u), a = lerp(aspect, u), n = int(H·W·s),
  h = round(√(n·a)), w = round(√(n/a)), each below the grid's side; in
  float32, with `xp` numpy (static sizes) or jax.numpy (traced draws)."""
  u = xp.asarray(u, xp.float32)
  s = scale[0] + u * (scale[1] - scale[0])
  a = aspect[0] + u * (aspect[1] - aspect[0])
  n = xp.floor(height * width * s)
  h = xp.minimum(xp.round(xp.sqrt(n * a)), height - 1)
  w = xp.minimum(xp.round(xp.sqrt(n / a)), width - 1)
  return h.astype(xp.int32), w.astype(xp.int32)


def max_block_area(height: int, width: int, scale: tuple[float, float],
                   aspect: tuple[float, float]) -> int:
  """The largest h·w of I-JEPA's block sizes (`_block_size`) over u in
  [0, 1], searched on 2¹⁶ + 1 values of u: the static number of slots that
  `multiblock_masks` gives a block.

  Example:
    >>> max_block_area(14, 14, (0.15, 0.2), (0.75, 1.5))
    40
  """
  h, w = _block_size(np.linspace(0.0, 1.0, 2 ** 16 + 1), scale, aspect,
                     height, width, xp=np)
  return max(int(np.max(h * w)), 1)


def _indices(mask: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
  """Ascending indices of a flat bool mask, padded with 0 to `size`, and
  the count of True entries."""
  flat = mask.reshape(-1)
  return (jnp.nonzero(flat, size=size, fill_value=0)[0].astype(jnp.int32),
          jnp.sum(flat, dtype=jnp.int32))


def _first(count: jax.Array, size: int) -> jax.Array:
  """[..., size] True on the first `count` (broadcast [...]) entries."""
  return jnp.arange(size) < jnp.minimum(count, size)[..., None]


def multiblock_masks(key: jax.Array, batch: int, height: int, width: int, *,
                     context_scale: tuple[float, float] = (0.85, 1.0),
                     target_scale: tuple[float, float] = (0.15, 0.2),
                     aspect: tuple[float, float] = (0.75, 1.5),
                     num_targets: int = 4, min_keep: int = 10,
                     allow_overlap: bool = False,
                     group_size: Optional[int] = None,
                     axis_name: Optional[str] = None) -> MultiBlock:
  """I-JEPA's multi-block masks: T target blocks and one context block.

  As the official `MaskCollator` (Assran et al. 2023, Sec. 3): one block
  size per batch for the targets (scale `target_scale`, aspect `aspect`)
  and one for the context (scale `context_scale`, aspect 1), each from a
  single uniform draw shared by scale and aspect (`_block_size`); then per
  image the T targets at uniform positions (top in {0..H − h − 1}, left
  likewise) and the context block, from which every target is removed
  unless `allow_overlap`. A context of at most `min_keep` patches is
  redrawn; after 20 misses the last target stops constraining it, and so
  on. Every context is then truncated to the smallest context of the batch
  (of each group of `group_size` consecutive images: the official collator
  runs on each GPU's batch), keeping its first patches in raster order.

  Shapes are static: Kt = `max_block_area(target)`, Kc =
  `max_block_area(context)` slots, the unused ones marked invalid.

  Args:
    key: a PRNG key.
    batch: B (this shard's rows inside `shard_map`).
    height, width: the patch grid.
    context_scale, target_scale: area fractions (a, b), 0 < a <= b <= 1.
    aspect: the targets' aspect ratios h/w (a, b).
    num_targets: T >= 1.
    min_keep: the context must keep more patches than this.
    allow_overlap: let targets and context overlap.
    group_size: images per truncation group (None: the whole batch); it
      must divide B.
    axis_name: mapped axis of the batch inside `shard_map`, or None; with
      `group_size` None the smallest context is over all devices.

  Returns:
    `MultiBlock(context, context_valid, targets, target_valid)`.

  Example:
    >>> import jax
    >>> m = multiblock_masks(jax.random.key(0), 2, 14, 14)
    >>> print(m.context.shape, m.targets.shape)
    (2, 169) (4, 2, 40)
    >>> import jax.numpy as jnp
    >>> targets = jnp.where(m.target_valid, m.targets, -1)  # -1: padding
    >>> hit = jax.vmap(jnp.isin)(m.context,
    ...                          targets.transpose(1, 0, 2).reshape(2, -1))
    >>> print(bool((hit & m.context_valid).any()))  # disjoint
    False
  """
  fn = "multiblock_masks"
  _common.check_count(batch, "batch", fn, minimum=1)
  _check_grid(height, width, fn)
  context_scale = _check_range(context_scale, "context_scale", fn, 1e-6, 1)
  target_scale = _check_range(target_scale, "target_scale", fn, 1e-6, 1)
  aspect = _check_range(aspect, "aspect", fn, low=1e-6)
  _common.check_count(num_targets, "num_targets", fn, minimum=1)
  _common.check_count(min_keep, "min_keep", fn)
  if group_size is not None:
    _common.check_count(group_size, "group_size", fn, minimum=1)
    if batch % group_size:
      raise ValueError(f"{fn}: `group_size` ({group_size}) must divide the "
                       f"batch ({batch}).")
  size_t = max_block_area(height, width, target_scale, aspect)
  size_c = max_block_area(height, width, context_scale, (1.0, 1.0))
  key_sizes, key_rows = jax.random.split(key)
  u_target, u_context = jax.random.uniform(key_sizes, (2,))
  th, tw = _block_size(u_target, target_scale, aspect, height, width)
  ch, cw = _block_size(u_context, context_scale, (1.0, 1.0), height, width)
  limit = _IJEPA_TIMEOUT * (num_targets + 2)

  def placed(key, h, w):
    k_top, k_left = jax.random.split(key)
    top = jax.random.randint(k_top, (), 0, height - h)
    left = jax.random.randint(k_left, (), 0, width - w)
    return _block(height, width, top, left, h, w)

  def one(k):
    k_targets, k_context = jax.random.split(k)
    targets = jax.vmap(lambda kk: placed(kk, th, tw))(
        jax.random.split(k_targets, num_targets))

    def draw(state):
      key, tries, misses, _, steps = state
      key, k_block = jax.random.split(key)
      block = placed(k_block, ch, cw)
      if not allow_overlap:
        # Targets k < T − tries constrain the context.
        active = jnp.arange(num_targets) < num_targets - tries
        block &= ~jnp.any(targets & active[:, None, None], axis=0)
      ok = jnp.sum(block) > min_keep
      misses = jnp.where(ok, 0, misses + 1)
      relax = misses == _IJEPA_TIMEOUT
      return (key, tries + relax, jnp.where(relax, 0, misses), block,
              steps + 1), ok

    def again(carry):
      state, ok = carry
      return ~ok & (state[-1] < limit)

    *state, ok = _vary_with(k_context, jnp.int32(0), jnp.int32(0),
                            jnp.zeros((height, width), bool), jnp.int32(0),
                            jnp.bool_(False))
    state, _ = jax.lax.while_loop(again, lambda c: draw(c[0]),
                                  ((k_context, *state), ok))
    context, count = _indices(state[3], size_c)
    target_index = jax.vmap(lambda m: _indices(m, size_t)[0])(targets)
    return context, count, target_index

  context, counts, targets = jax.vmap(one)(_row_keys(key_rows, batch,
                                                     axis_name))
  if group_size is None:
    smallest = jnp.min(counts)
    if axis_name is not None:
      smallest = jax.lax.pmin(smallest, axis_name)
    smallest = jnp.broadcast_to(smallest, (batch,))
  else:
    smallest = jnp.repeat(jnp.min(counts.reshape(-1, group_size), axis=1),
                          group_size)
  target_valid = jnp.broadcast_to(_first(th * tw, size_t),
                                  (num_targets, batch, size_t))
  return MultiBlock(context, _first(smallest, size_c),
                    targets.transpose(1, 0, 2), target_valid)
