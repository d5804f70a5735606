"""Relative patch position labels (Doersch, Gupta and Efros 2015).

Doersch, Gupta and Efros, "Unsupervised Visual Representation Learning by
Context Prediction", ICCV 2015: given a centre patch and one of its eight
neighbours in a 3 × 3 layout, a network predicts where the neighbour is.

Label order (row-major over the 3 × 3 layout, skipping the centre X; the
paper's figure numbers the same positions 1..8):

    0 1 2
    3 X 4
    5 6 7

Shortcuts the paper closes: a gap between patches (48 pixels
for 96-pixel patches) and a random jitter of each patch's position (up to 7
pixels) stop the network from matching edges and continuing lines; the
chromatic-aberration counter-measures (`chromatic` below)
stop it from locating a patch by the colour fringes lenses leave towards
the image border. The authors' released code (cdoersch/deepcontext) also
standardises each patch on its own, so that brightness and contrast, which
change smoothly across an image, cannot place a patch either; here this is
`normalize`.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.pretext import _images

__all__ = ["NEIGHBOURS", "relative_patches"]

# (row, column) offset of the neighbour for each label.
NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1),
              (0, -1), (0, 1),
              (1, -1), (1, 0), (1, 1))

CHROMATIC = ("none", "projection", "drop")
# The paper's green-magenta axis: aberration moves green against red and
# blue, so "projection" removes each pixel's component along (−1, 2, −1).
_GREEN_MAGENTA = np.array([-1.0, 2.0, -1.0]) / np.sqrt(6.0)
# The paper's 96-pixel patches are 48 pixels apart (a third of the 144-pixel
# stride) and jitter by up to 7 pixels per 48 of gap.
_PAPER_GAP_RATIO = 3
_PAPER_JITTER_PER_GAP = (7, 48)
# "drop": the dropped channels become Gaussian noise with 1/100 of the
# standard deviation of the kept one.
_DROP_NOISE = 0.01
# The authors' code blurs patches of 96 pixels by resampling them to a side
# of sqrt(u) pixels, u uniform in [10², 95²], and back.
_BLUR_SIDES = (10, 95, 96)


def _resolve_sizes(patch_size, gap, side: int, fn: str) -> tuple[int, int]:
  """(patch, gap) with patch + gap = the cell side."""
  if patch_size is None and gap is None:
    gap = side // _PAPER_GAP_RATIO
  if gap is not None:
    _common.check_count(gap, "gap", fn, minimum=0)
    if gap >= side:
      raise ValueError(
          f"{fn}: `gap` must be < the cell side {side} (image side // grid) "
          f"to leave room for a patch, got {gap}.")
  if patch_size is None:
    return side - gap, gap
  _images.check_size(patch_size, side, "patch_size", fn)
  if gap is None:
    return patch_size, side - patch_size
  if patch_size + gap != side:
    raise ValueError(
        f"{fn}: `patch_size` + `gap` must equal the cell side {side} (image "
        f"side // grid), got {patch_size} + {gap}; give only one of them.")
  return patch_size, gap


def _project_out_green_magenta(patch: jax.Array) -> jax.Array:
  """x − (x·a) a for the unit green-magenta axis a, per pixel."""
  axis = jnp.asarray(_GREEN_MAGENTA, patch.dtype)
  # An elementwise sum, not a matmul: exact in float32 on every backend.
  return patch - jnp.sum(patch * axis, axis=-1, keepdims=True) * axis


def _drop_colours(patch: jax.Array, keep: jax.Array,
                  noise: jax.Array) -> jax.Array:
  """Keeps channel `keep`; the other two become `noise` ~ N(0, 1) scaled to
  1/100 of the kept channel's standard deviation."""
  scale = _DROP_NOISE * jnp.std(patch[..., keep])
  return jnp.where(jnp.arange(3) == keep, patch, scale * noise)


def _linear_resampling(size_in: jax.Array, size_out: jax.Array,
                       n: int) -> jax.Array:
  """[n, n] matrix R: R @ x resamples the first `size_in` entries of x to
  `size_out` entries (rows past `size_out` are 0), linear interpolation at
  half-pixel centres, sources clamped to the edge."""
  size_in = size_in.astype(jnp.float32)
  out = jnp.arange(n, dtype=jnp.float32)
  source = jnp.clip((out + 0.5) * size_in / size_out - 0.5, 0.0,
                    size_in - 1)
  low = jnp.floor(source)
  high = jnp.minimum(low + 1, size_in - 1)
  frac = (source - low)[:, None]
  taps = jnp.arange(n, dtype=jnp.float32)
  rows = (1 - frac) * (taps == low[:, None]) + frac * (taps == high[:, None])
  return jnp.where(out[:, None] < size_out, rows, 0.0)


def _blur(patch: jax.Array, side: jax.Array) -> jax.Array:
  """The square `patch` resampled to side × side pixels and back."""
  n = patch.shape[0]
  full = jnp.asarray(n)
  both = (_linear_resampling(side, full, n)
          @ _linear_resampling(full, side, n)).astype(patch.dtype)
  return jnp.einsum("ij,jkc,lk->ilc", both, patch, both)


def relative_patches(key: jax.Array, images: jax.Array, *, grid: int = 3,
                     patch_size: Optional[int] = None,
                     gap: Optional[int] = None, jitter: Optional[int] = None,
                     chromatic: str = "none", blur_prob: float = 0.0,
                     normalize: bool = True
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """A centre patch, one of its 8 neighbours, and the neighbour's position.

  The image is divided into a grid × grid layout of cells of side
  s = min(H, W) // grid (centred; for non-square images the cells are
  H // grid by W // grid). The centre patch lies in a uniformly random
  interior cell (always the middle one for grid = 3), the neighbour in the
  adjacent cell given by the label (uniform over 0..7, order in
  `NEIGHBOURS`). Each patch of side p sits at the centre of its cell, so
  patches are `gap` = s − p pixels apart, then moves by an independent
  uniform integer in [−jitter, jitter] along each axis.

  Args:
    key: a PRNG key; example b uses `jax.random.split(key, B)[b]`.
    images: float [B, H, W, C] images in [0, 1], C in {1, 3}.
    grid: cells per side, >= 3.
    patch_size: p; default s − gap.
    gap: pixels between unjittered patches; default s − patch_size, or
      s // 3 when neither is given (the paper's 96-pixel patches 48 apart).
      Give one of `patch_size` and `gap`, or both adding up to s.
    jitter: max displacement in pixels, <= gap // 2 so that patches stay in
      their cells and never overlap; default gap · 7 // 48 (the paper's 7
      pixels for a 48-pixel gap).
    chromatic: chromatic-aberration counter-measure, RGB only (a ValueError
      for C = 1):
      "none" (default);
      "projection": remove each pixel's component along the green-magenta
        axis (−1, 2, −1)/√6, shifting green and magenta towards gray;
      "drop": per patch keep one random channel and replace the other two
        with Gaussian noise of 1/100 of the kept channel's standard
        deviation.
    blur_prob: the probability that a patch is blurred first, as a third
      of them are in the authors' code (1/3 there): resampled (linearly, at
      half-pixel centres) down to a side of floor(p · sqrt(u) / 96) pixels,
      u uniform in [10², 95²] (10 to 95 pixels of 96), and back up to p, so
      that fine detail, which a patch's neighbour continues, cannot place it.
    normalize: standardise each patch after the chromatic step (default
      True, as in the authors' code): subtract each channel's mean over the
      patch, divide by sqrt(var + 1e-6) with var the mean square over its
      pixels and channels together, so that "drop"'s noise stays faint.

  Returns:
    (centre [B, p, p, C], neighbour [B, p, p, C] in the compute dtype,
    labels [B] int32 in 0..7).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jax.random.uniform(jax.random.key(0), (2, 48, 48, 3))
    >>> centre, neighbour, labels = relative_patches(jax.random.key(1), x)
    >>> print(centre.shape, neighbour.shape, labels.shape)
    (2, 11, 11, 3) (2, 11, 11, 3) (2,)
  """
  fn = "relative_patches"
  _images.check_images(images, fn)
  _common.check_count(grid, "grid", fn, minimum=3)
  cells = _images.layout(np.shape(images), grid, fn)
  patch_size, gap = _resolve_sizes(patch_size, gap,
                                   min(cells.cell_h, cells.cell_w), fn)
  if jitter is None:
    jitter = gap * _PAPER_JITTER_PER_GAP[0] // _PAPER_JITTER_PER_GAP[1]
  _images.check_jitter(jitter, gap, fn)
  _images.check_choice(chromatic, CHROMATIC, "chromatic", fn)
  _common.check_in_range(blur_prob, 0.0, 1.0, "blur_prob", fn)
  if chromatic != "none" and np.shape(images)[-1] != 3:
    raise ValueError(
        f"{fn}: `chromatic`={chromatic!r} needs RGB images [B, H, W, 3], got "
        f"shape {np.shape(images)}; use 'none' for one channel.")
  images = _common.to_compute(images)
  room = (cells.cell_h - patch_size, cells.cell_w - patch_size)
  neighbours = jnp.asarray(NEIGHBOURS, jnp.int32)
  cell_size = jnp.array([cells.cell_h, cells.cell_w], jnp.int32)
  origin = jnp.array([cells.top, cells.left], jnp.int32)
  # Per example: the centre cell (row, column), the label, (dy, dx) of both
  # patches, and the channel each patch keeps under "drop".
  low, high = _images.offset_bounds(2, room, jitter)
  low = np.concatenate([[1, 1, 0], low.ravel(), [0, 0]])
  high = np.concatenate([[grid - 1, grid - 1, len(NEIGHBOURS)], high.ravel(),
                         [3, 3]])

  def one(key, image):
    draw_key, noise_key = jax.random.split(key)
    draws = _images.draw_ints(draw_key, low, high)
    centre_cell, label = draws[:2], draws[2]
    cell = jnp.stack([centre_cell, centre_cell + neighbours[label]])
    corner = origin + cell * cell_size + draws[3:7].reshape(2, 2)
    patches = jax.vmap(_images.crop, (None, 0, 0, None))(
        image, corner[:, 0], corner[:, 1], patch_size)
    if blur_prob:
      # Its own key, so that the other draws do not depend on `blur_prob`.
      blurred_key, side_key = jax.random.split(jax.random.fold_in(key, 1))
      blurred = jax.random.bernoulli(blurred_key, blur_prob, (2,))
      fewest, most, paper = _BLUR_SIDES
      pixels = jnp.sqrt(jax.random.uniform(side_key, (2,),
                                           minval=fewest ** 2,
                                           maxval=most ** 2))
      sides = jnp.maximum(jnp.floor(pixels * patch_size / paper), 1)
      patches = jnp.where(blurred[:, None, None, None],
                          jax.vmap(_blur)(patches, sides), patches)
    if chromatic == "projection":
      patches = _project_out_green_magenta(patches)
    elif chromatic == "drop":
      noise = jax.random.normal(noise_key, patches.shape, patches.dtype)
      patches = jax.vmap(_drop_colours)(patches, draws[7:], noise)
    if normalize:
      patches = _images.standardize(patches, joint_channels=True)
    return patches[0], patches[1], label

  return _images.per_example(one, key, images)
