"""Masks and the reconstruction loss of context encoders (inpainting).

Pathak, Krähenbühl, Donahue, Darrell and Efros, "Context Encoders: Feature
Learning by Inpainting", CVPR 2016: a region of the image is removed and a
network fills it in from its context. Masks are float [B, H, W, 1] arrays
with 1 on the missing region and 0 on the context (the paper's M̂), which
broadcast over the channels of [B, H, W, C] images. Of the paper's three
region shapes, the central block (`center_mask`) and random blocks
(`random_block_mask`) are here; its random regions come from PASCAL VOC
segmentation masks, which is a dataset rather than a formula. The
adversarial term of the paper's joint loss is a GAN loss and not part of
this module.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.pretext import _images

__all__ = ["center_mask", "random_block_mask", "apply_mask", "masked_l2"]


def _check_shape(shape, fn: str) -> tuple[int, int, int, int]:
  """A static images shape (B, H, W, C) of positive ints."""
  shape = tuple(shape)
  if len(shape) != 4 or not all(
      _images.is_integral(n) and n > 0 for n in shape):
    raise ValueError(f"{fn}: `shape` must be an images shape (B, H, W, C) of "
                     f"positive ints, got {shape}.")
  return shape


def center_mask(shape: Sequence[int], fraction: float = 0.25) -> jax.Array:
  """The centred rectangular hole covering `fraction` of each image.

  Hole sides round(H·√fraction) × round(W·√fraction), centred (the extra
  pixel of an odd margin goes below / right). The default 1/4 is the
  paper's central block: half the side, 64 × 64 of 128 × 128.

  Args:
    shape: the images' static shape (B, H, W, C).
    fraction: area fraction in (0, 1].

  Returns:
    [B, H, W, 1] float32 mask, 1 in the hole.

  Example:
    >>> m = center_mask((1, 4, 4, 3))
    >>> print(m[0, ..., 0].astype(int).tolist())
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
  """
  fn = "center_mask"
  batch, height, width, _ = _check_shape(shape, fn)
  if not isinstance(fraction, numbers.Real) or not 0 < fraction <= 1:
    raise ValueError(f"{fn}: `fraction` must be in (0, 1], got {fraction!r}.")
  side = math.sqrt(fraction)
  hole_h, hole_w = round(height * side), round(width * side)
  top, left = (height - hole_h) // 2, (width - hole_w) // 2
  mask = np.zeros((height, width, 1), np.float32)
  mask[top:top + hole_h, left:left + hole_w] = 1.0
  return jnp.broadcast_to(mask, (batch, height, width, 1))


def random_block_mask(key: jax.Array, shape: Sequence[int], *,
                      num_blocks: int, block_size: int) -> jax.Array:
  """The union of `num_blocks` random square blocks per image.

  The paper's "random block" masks: several smaller, possibly overlapping
  blocks, each block_size × block_size with its top-left corner uniform
  over the positions that keep it inside the image. The covered area is
  between block_size² and num_blocks · block_size² pixels (the paper covers
  up to 1/4 of the image).

  Args:
    key: a PRNG key; example b uses `jax.random.split(key, B)[b]`.
    shape: the images' static shape (B, H, W, C).
    num_blocks: blocks per image, >= 1.
    block_size: block side, 1 <= block_size <= min(H, W).

  Returns:
    [B, H, W, 1] float32 mask, 1 in the union of the blocks.

  Example:
    >>> import jax
    >>> m = random_block_mask(jax.random.key(0), (2, 8, 8, 1), num_blocks=1,
    ...                       block_size=3)
    >>> print(m.shape, m.sum(axis=(1, 2, 3)).tolist())
    (2, 8, 8, 1) [9.0, 9.0]
  """
  fn = "random_block_mask"
  batch, height, width, _ = _check_shape(shape, fn)
  _common.check_count(num_blocks, "num_blocks", fn, minimum=1)
  _images.check_size(block_size, min(height, width), "block_size", fn)
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  corner_high = np.array([height - block_size + 1, width - block_size + 1])

  def one(key):
    corner = _images.draw_ints(key, 0, np.tile(corner_high, (num_blocks, 1)))
    top, left = corner[:, 0, None, None], corner[:, 1, None, None]
    inside = ((rows >= top) & (rows < top + block_size)
              & (cols >= left) & (cols < left + block_size))
    return jnp.any(inside, axis=0)

  masks = jax.vmap(one)(jax.random.split(key, batch))
  return masks[..., None].astype(jnp.float32)


def _check_mask(mask, like, fn: str) -> None:
  """[B, H, W, 1] or [B, H, W, C] matching `like` [B, H, W, C]."""
  _common.check_rank(mask, 4, "mask", fn)
  mask_shape, shape = np.shape(mask), np.shape(like)
  if mask_shape[:3] != shape[:3] or mask_shape[3] not in (1, shape[3]):
    raise ValueError(f"{fn}: `mask` must be [B, H, W, 1] or [B, H, W, C] for "
                     f"images of shape {shape}, got shape {mask_shape}.")


def apply_mask(images: jax.Array, mask: jax.Array, fill=0.0) -> jax.Array:
  """The context encoder's input (1 − M̂) ⊙ x + M̂ · fill.

  Args:
    images: float [B, H, W, C].
    mask: [B, H, W, 1] or [B, H, W, C], 1 on the region to remove (soft
      values blend).
    fill: value of the removed region, a scalar or one value per channel
      [C]; the paper fills with the dataset's mean pixel.

  Returns:
    [B, H, W, C] masked images in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.ones((1, 4, 4, 1))
    >>> print(apply_mask(x, center_mask(x.shape), 0.5)[0, 1:3, 0:2, 0].tolist())
    [[1.0, 0.5], [1.0, 0.5]]
  """
  fn = "apply_mask"
  _images.check_images(images, fn)
  _check_mask(mask, images, fn)
  if np.ndim(fill) > 1 or np.size(fill) not in (1, np.shape(images)[-1]):
    raise ValueError(
        f"{fn}: `fill` must be a scalar or one value per channel "
        f"[{np.shape(images)[-1]}], got shape {np.shape(fill)}.")
  images, mask = _common.to_compute(images, mask)
  return images * (1.0 - mask) + jnp.asarray(fill, images.dtype) * mask


def masked_l2(pred: jax.Array, target: jax.Array, mask: jax.Array, *,
              overlap: int = 0, overlap_weight: float = 10.0,
              axis_name: Optional[str] = None) -> jax.Array:
  """Weighted mean squared error over the missing region (Pathak et al., eq. 1).

  The paper's reconstruction loss ‖M̂ ⊙ (x − F((1 − M̂) ⊙ x))‖², taken as a
  weighted mean so that its scale does not depend on the hole size:

      loss = Σ w ⊙ (pred − target)²  /  Σ w

  summed over all B·H·W·C entries (a [B, H, W, 1] weight broadcast over the
  channels), with w = mask, i.e. 1 in the hole. Optionally, as in the
  paper's code (`overlapPred` = 4 pixels, weight 10), the network also
  predicts a border of `overlap` context pixels around the hole, weighted
  `overlap_weight`, which encourages a seamless blend with the context:
  w = overlap_weight on the mask dilated by `overlap` pixels (a
  (2·overlap + 1)² square) minus the mask. `overlap` = 0 (default) gives
  the plain masked L2. An empty mask gives 0. The weights carry no
  gradient. Both sums run over the whole batch; inside `jax.shard_map`,
  `axis_name` adds them over devices, so every device returns the global
  loss.

  Args:
    pred: [B, H, W, C] reconstruction.
    target: [B, H, W, C] original images.
    mask: [B, H, W, 1] or [B, H, W, C], 1 on the missing region.
    overlap: border width in pixels, >= 0.
    overlap_weight: weight of the border, > 0.
    axis_name: mapped axis to sum over, or None.

  Returns:
    Scalar loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> target = jnp.zeros((1, 4, 4, 1))
    >>> pred = jnp.full((1, 4, 4, 1), 2.0)
    >>> print(float(masked_l2(pred, target, center_mask(target.shape))))
    4.0
  """
  fn = "masked_l2"
  _common.check_rank(pred, 4, "pred", fn)
  _common.check_same_shape(fn, pred=pred, target=target)
  _check_mask(mask, pred, fn)
  _common.check_count(overlap, "overlap", fn, minimum=0)
  _common.check_positive(overlap_weight, "overlap_weight", fn)
  pred, target, mask = _common.to_compute(pred, target, mask)
  weight = jax.lax.stop_gradient(mask)
  if overlap:
    window = (1, 2 * overlap + 1, 2 * overlap + 1, 1)
    dilated = jax.lax.reduce_window(weight, -jnp.inf, jax.lax.max, window,
                                    (1, 1, 1, 1), "SAME")
    weight = weight + overlap_weight * (dilated - weight)
  weight = jnp.broadcast_to(weight, pred.shape)
  error = _common.psum(jnp.sum(weight * jnp.square(pred - target)), axis_name)
  total = _common.psum(jnp.sum(weight), axis_name)
  return error / jnp.maximum(total, _common.EPS)
