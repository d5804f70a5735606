"""Rotation prediction labels (RotNet).

Gidaris, Singh and Komodakis, "Unsupervised Representation Learning by
Predicting Image Rotations", ICLR 2018: a network classifies which of the
four rotations by 0°, 90°, 180° and 270° was applied to an image.

Label r in {0, 1, 2, 3} means a rotation by r·90° counter-clockwise as the
image is displayed (row 0 at the top), i.e. `np.rot90(image, r)` over the
(H, W) axes. Rotations by multiples of 90° are exact pixel permutations (no
resampling, so no interpolation artefact can give the label away); they keep
the shape only for square images, which are therefore required.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.pretext import _images

__all__ = ["NUM_ROTATIONS", "rotate", "rotations", "random_rotation"]

NUM_ROTATIONS = 4


def _check_square(images, fn: str) -> None:
  _images.check_images(images, fn)
  height, width = np.shape(images)[1:3]
  if height != width:
    raise ValueError(
        f"{fn}: `images` must be square [B, H, H, C] so that a 90° rotation "
        f"keeps the shape, got shape {np.shape(images)}.")


def _all_rotations(images: jax.Array) -> jax.Array:
  """[B, 4, H, W, C]: entry [b, r] is images[b] rotated by r·90°."""
  return jnp.stack(
      [jnp.rot90(images, r, axes=(1, 2)) for r in range(NUM_ROTATIONS)],
      axis=1)


def rotate(images: jax.Array, labels) -> jax.Array:
  """images[b] rotated counter-clockwise by labels[b]·90°.

  Args:
    images: float [B, H, H, C] square images.
    labels: integer [B] (one rotation per example, possibly traced) or a
      Python int (the same for all). Taken modulo 4, as rotations are:
      label 5 is label 1 and −1 is 3.

  Returns:
    [B, H, H, C] rotated images in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> x = jnp.arange(4.).reshape(1, 2, 2, 1)   # [[0, 1], [2, 3]]
    >>> print(rotate(x, 1)[0, ..., 0].tolist())
    [[1.0, 3.0], [0.0, 2.0]]
  """
  fn = "rotate"
  _check_square(images, fn)
  images = _common.to_compute(images)
  if _images.is_integral(labels):
    return jnp.rot90(images, labels % NUM_ROTATIONS, axes=(1, 2))
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_integer(labels, "labels", fn)
  _common.check_dim(fn, 0, images=images, labels=labels)
  index = jnp.asarray(labels) % NUM_ROTATIONS
  return _all_rotations(images)[jnp.arange(images.shape[0]), index]


def rotations(images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """All four rotations of every image, as in RotNet's training batches.

  rotated[4·b + r] = images[b] rotated by r·90°, labels[4·b + r] = r. The
  four copies of an example are adjacent (the order of the official RotNet
  loader), so on a batch sharded over devices each device's rows stay on it.

  Args:
    images: float [B, H, H, C] square images, C in {1, 3}.

  Returns:
    (rotated [4B, H, H, C] in the compute dtype, labels [4B] int32).

  Example:
    >>> import jax.numpy as jnp
    >>> rotated, labels = rotations(jnp.zeros((2, 8, 8, 3)))
    >>> print(rotated.shape, labels.tolist())
    (8, 8, 8, 3) [0, 1, 2, 3, 0, 1, 2, 3]
  """
  _check_square(images, "rotations")
  images = _common.to_compute(images)
  batch = images.shape[0]
  rotated = _all_rotations(images).reshape((NUM_ROTATIONS * batch,)
                                           + images.shape[1:])
  labels = jnp.tile(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), batch)
  return rotated, labels


def random_rotation(key: jax.Array,
                    images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One uniformly random rotation per example.

  Example b draws its label with key `jax.random.split(key, B)[b]`.

  Args:
    key: a PRNG key.
    images: float [B, H, H, C] square images, C in {1, 3}.

  Returns:
    (rotated [B, H, H, C] in the compute dtype, labels [B] int32 in 0..3).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((5, 4, 4, 1))
    >>> rotated, labels = random_rotation(jax.random.key(0), x)
    >>> print(rotated.shape, labels.shape, bool((labels < 4).all()))
    (5, 4, 4, 1) (5,) True
  """
  _check_square(images, "random_rotation")
  labels = _images.per_example(
      lambda k, _: _images.draw_ints(k, 0, NUM_ROTATIONS), key, images)
  return rotate(images, labels), labels
