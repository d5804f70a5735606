"""Context encoder: fill in a removed region of the image from its context.

Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature
Learning by Inpainting", CVPR 2016.

A region M̂ of each (normalised) image x is removed, filled with the
dataset's mean pixel (0 after normalisation, the paper's fill), encoded by
the backbone f and decoded by a small convolutional decoder g
(`ssljax.models.decoder`); the reconstruction loss is the paper's masked L2
(eq. 1, `ssljax.pretext.masked_l2`), as a weighted mean:

    loss = Σ w ⊙ (g(f((1 − M̂) ⊙ x)) − x)² / Σ w,

w = 1 in the hole and, with `overlap` > 0, `overlap_weight` on a border of
`overlap` context pixels around it (the paper's code: 4 pixels weighted 10
at 128 × 128, encouraging a seamless blend). Regions (`mask`): "center",
the paper's central block covering `mask_fraction` = 1/4 of the image, or
"random_block", `num_blocks` random squares of side
round(side·√(mask_fraction / num_blocks)), covering at most `mask_fraction`.

Differences from the paper: no adversarial loss (the paper's joint loss
adds one with weight 0.001; its feature-learning results are with the
reconstruction loss); the encoder is the backbone with pooled features and
the decoder starts from them (the paper's channel-wise fully connected
bottleneck); the view is a random resized crop with a flip
(`_pretext.light_augment`). `encode` gives the backbone features of whole
images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import context_encoder
  >>> method = context_encoder.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", decoder_width=8, overlap=1)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import math

import ml_collections

from ssljax import pretext
from ssljax.methods import _pretext

MASKS = ("center", "random_block")


def default_config() -> ml_collections.ConfigDict:
  """The context encoder's hyper-parameters (the paper's, at 128 pixels)."""
  return ml_collections.ConfigDict(dict(
      name="context_encoder", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), decoder_width=64, mask="center",
      mask_fraction=0.25, num_blocks=4, overlap=4, overlap_weight=10.0))


def region(config, rng, shape):
  """The [B, H, W, 1] mask of the region to remove (1 in it)."""
  method = config.method
  if method.mask not in MASKS:
    raise ValueError(f"context_encoder: `config.method.mask` must be one of "
                     f"{MASKS}, got {method.mask!r}.")
  if method.mask == "center":
    return pretext.center_mask(shape, method.mask_fraction)
  side = round(min(shape[1:3]) * math.sqrt(method.mask_fraction
                                           / method.num_blocks))
  return pretext.random_block_mask(rng, shape, num_blocks=method.num_blocks,
                                   block_size=max(1, side))


def task(config, rng, view):
  """(masked, original) normalised images and the region's mask."""
  images = _pretext.normalize(config, view)
  mask = region(config, rng, images.shape)
  return pretext.apply_mask(images, mask, 0.0), images, mask


def objective(config, reconstruction, targets, mask):
  """The masked L2 of the region (and its weighted border)."""
  return pretext.masked_l2(reconstruction, targets, mask,
                           overlap=config.method.overlap,
                           overlap_weight=config.method.overlap_weight)


METHOD = _pretext.reconstruction_method(_pretext.Reconstruction(
    name="context_encoder", task=task, objective=objective,
    default_config=default_config))
