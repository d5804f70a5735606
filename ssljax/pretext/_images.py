"""Checks and small helpers shared by the pretext label makers.

Conventions of `ssljax.pretext`: images are float [B, H, W, C] with C = 1 or
3 and values in [0, 1]; computed outputs are in the compute dtype of
`ssljax._common.to_compute` (float32 for bf16/f16 inputs); a random maker
takes one key and gives example b the key `jax.random.split(key, B)[b]` (the
convention of `ssljax.data.augment.batched`), so an example's draw does not
depend on how the batch is sharded.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common


def check_images(images, fn: str, name: str = "images") -> None:
  """Float [B, H, W, C] with C in {1, 3}."""
  _common.check_rank(images, 4, name, fn)
  dtype = jnp.result_type(images)
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
        f"{fn}: `{name}` must be float images [B, H, W, C] with values in "
        f"[0, 1], got dtype {dtype}; convert uint8 batches with "
        "`ssljax.data.augment.to_float`.")
  if np.shape(images)[-1] not in (1, 3):
    raise ValueError(f"{fn}: `{name}` must have 1 or 3 channels [B, H, W, C],"
                     f" got shape {np.shape(images)}.")


def check_choice(value, choices, name: str, fn: str) -> None:
  if value not in choices:
    raise ValueError(
        f"{fn}: `{name}` must be one of {', '.join(map(repr, choices))}, "
        f"got {value!r}.")


def per_example(fn: Callable, key: jax.Array, images: jax.Array):
  """`jax.vmap(fn)(keys, images)` with keys = jax.random.split(key, B)."""
  return jax.vmap(fn)(jax.random.split(key, images.shape[0]), images)


class Layout(NamedTuple):
  """A grid × grid layout of cells over an image, centred in it.

  Cell (r, c) covers rows top + r·cell_h ... and columns left + c·cell_w ...;
  the H mod grid rows and W mod grid columns left over are split evenly on
  both sides and never sampled.
  """
  top: int
  left: int
  cell_h: int
  cell_w: int


def layout(shape, grid, fn: str) -> Layout:
  """The centred `grid` × `grid` cell layout of images of `shape`."""
  _common.check_count(grid, "grid", fn, minimum=1)
  height, width = shape[1], shape[2]
  if height < grid or width < grid:
    raise ValueError(
        f"{fn}: `images` must be at least `grid` = {grid} pixels on each side,"
        f" got shape {tuple(shape)}.")
  cell_h, cell_w = height // grid, width // grid
  return Layout((height - grid * cell_h) // 2, (width - grid * cell_w) // 2,
                cell_h, cell_w)


def check_jitter(jitter: Optional[int], room: int, fn: str) -> None:
  """`jitter` is None or an int in [0, room // 2] (a patch that moves at
  most room // 2 from the centre of its cell stays inside it)."""
  if jitter is None:
    return
  _common.check_count(jitter, "jitter", fn, minimum=0)
  if jitter > room // 2:
    raise ValueError(
        f"{fn}: `jitter` must be <= {room // 2} (half the {room} free pixels "
        f"of a cell) so that patches stay in their cells, got {jitter}.")


def draw_ints(key: jax.Array, low, high) -> jax.Array:
  """Independent uniform integers low <= n < high, elementwise over static
  (broadcast) integer bounds, from one uniform draw.

  Every `jax.random` call compiles to a full threefry hash, which dominates
  the compile time of these small functions, so each example draws all its
  integers at once. floor(u · span) for u ~ U[0, 1) in float32 is uniform
  up to a bias of span / 2²⁴.
  """
  low, high = np.broadcast_arrays(np.asarray(low, np.int32),
                                  np.asarray(high, np.int32))
  span = high - low
  u = jax.random.uniform(key, low.shape)
  return low + jnp.minimum(jnp.floor(u * span).astype(jnp.int32), span - 1)


def offset_bounds(count: int, room: tuple[int, int], jitter: Optional[int]):
  """[count, 2] bounds (low, high) of the (y, x) positions of patches in
  their cells, for `draw_ints`.

  `room` = (cell_h − size, cell_w − size) free pixels per axis. With
  `jitter` = None a position is uniform over all of [0, room]; with an int j
  it is uniform over room // 2 ± j (j = 0 centres the patch).
  """
  room = np.broadcast_to(np.asarray(room), (count, 2))
  if jitter is None:
    return np.zeros_like(room), room + 1
  return room // 2 - jitter, room // 2 + jitter + 1


def crop(image: jax.Array, top: jax.Array, left: jax.Array,
         size: int) -> jax.Array:
  """The [size, size, C] square of one image [H, W, C] at (top, left)."""
  return jax.lax.dynamic_slice(image, (top, left, 0),
                               (size, size, image.shape[-1]))


def check_size(size, limit: int, name: str, fn: str) -> None:
  """A patch side: a Python int in [1, limit] (`limit` = the cell side)."""
  _common.check_count(size, name, fn, minimum=1)
  if size > limit:
    raise ValueError(
        f"{fn}: `{name}` must be <= the cell side {limit} (image side // "
        f"grid), got {size}.")


def is_integral(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# Added to a crop's variance before dividing by its standard deviation: a
# constant crop becomes 0 (not NaN), and noise in a nearly flat crop is
# amplified at most 1000 times.
_CROP_VAR_EPS = 1e-6


def standardize(crops: jax.Array, *, joint_channels: bool = False
                ) -> jax.Array:
  """Crops [..., h, w, C] minus each channel's mean over the crop's pixels,
  divided by sqrt(var + 1e-6): the variance over the pixels per channel, or,
  with `joint_channels`, over the pixels and channels together (one scale
  per crop, which keeps a faint channel faint)."""
  mean = jnp.mean(crops, axis=(-3, -2), keepdims=True)
  centred = crops - mean
  axes = (-3, -2, -1) if joint_channels else (-3, -2)
  var = jnp.mean(jnp.square(centred), axis=axes, keepdims=True)
  return centred * jax.lax.rsqrt(var + _CROP_VAR_EPS)
