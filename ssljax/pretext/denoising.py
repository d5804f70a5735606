"""Input corruption for denoising autoencoders.

Vincent, Larochelle, Bengio and Manzagol, "Extracting and Composing Robust
Features with Denoising Autoencoders", ICML 2008, and Vincent et al.,
"Stacked Denoising Autoencoders", JMLR 2010 (which defines the three
noises here): an autoencoder reconstructs the clean x from a corrupted x̃.

Corruption acts on components, i.e. on every value of [H, W, C] separately
(each colour channel of a pixel on its own), as in the papers' input
vectors. Masking and salt-and-pepper noise corrupt a fixed number of
components, round(level · H·W·C) chosen uniformly without replacement per
example, as the papers specify, not each component with probability level.
"""

from __future__ import annotations

import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.pretext import _images

__all__ = ["KINDS", "corrupt"]

KINDS = ("gaussian", "masking", "salt_pepper")
# Default `level` per kind: a mid-range value of the JMLR 2010 experiments
# (σ in 0.05..0.5, ν in 0.1..0.4).
_DEFAULT_LEVEL = {"gaussian": 0.1, "masking": 0.25, "salt_pepper": 0.25}


def _chosen(key: jax.Array, shape, fraction: float) -> jax.Array:
  """Boolean array of `shape` with exactly round(fraction · size) True
  entries at uniformly random places."""
  size = int(np.prod(shape))
  ranks = jax.random.permutation(key, size)
  return (ranks < round(fraction * size)).reshape(shape)


def corrupt(key: jax.Array, images: jax.Array, *, kind: str = "gaussian",
            level: Optional[float] = None) -> jax.Array:
  """A corrupted copy x̃ of each image, q_D(x̃ | x).

  kind="gaussian":     x̃ = x + level · ε, ε ~ N(0, I) (additive isotropic;
                       not clipped, so x̃ may leave [0, 1]).
  kind="masking":      a fraction `level` of the components is set to 0.
  kind="salt_pepper":  a fraction `level` of the components is set to 0 or
                       1 (the minimum or maximum of [0, 1] images) by a
                       fair coin flip each.

  Args:
    key: a PRNG key; example b uses `jax.random.split(key, B)[b]`.
    images: float [B, H, W, C] images in [0, 1], C in {1, 3}.
    kind: one of `KINDS`.
    level: σ >= 0 for "gaussian", ν in [0, 1] for the others; default 0.1
      for "gaussian" and 0.25 for the others.

  Returns:
    [B, H, W, C] corrupted images in the compute dtype.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> x = jnp.ones((2, 4, 4, 1))
    >>> noisy = corrupt(jax.random.key(0), x, kind="masking", level=0.25)
    >>> print((noisy == 0).sum(axis=(1, 2, 3)).tolist())
    [4, 4]
  """
  fn = "corrupt"
  _images.check_images(images, fn)
  _images.check_choice(kind, KINDS, "kind", fn)
  if level is None:
    level = _DEFAULT_LEVEL[kind]
  if kind == "gaussian":
    _common.check_non_negative(level, "level", fn)
  else:
    # A static number: it fixes how many components are corrupted.
    if not isinstance(level, numbers.Real):
      raise ValueError(f"{fn}: `level` must be a Python number for kind="
                       f"{kind!r}, got {type(level).__name__}.")
    _common.check_in_range(level, 0.0, 1.0, "level", fn)
  images = _common.to_compute(images)

  def one(key, image):
    if kind == "gaussian":
      return image + level * jax.random.normal(key, image.shape, image.dtype)
    chosen_key, coin_key = jax.random.split(key)
    chosen = _chosen(chosen_key, image.shape, level)
    if kind == "masking":
      return jnp.where(chosen, 0.0, image)
    salt = jax.random.bernoulli(coin_key, 0.5, image.shape)
    return jnp.where(chosen, salt.astype(image.dtype), image)

  return _images.per_example(one, key, images)
