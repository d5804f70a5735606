"""Context encoder: fill in a removed region of the image from its context.

Pathak, Krähenbühl, Donahue, Darrell & Efros, "Context Encoders: Feature
Learning by Inpainting", CVPR 2016; the official Torch code
(pathak22/context-encoder).

A region R of each (normalised) image x is chosen (`mask`): "center", the
paper's central block covering `mask_fraction` = 1/4 of the image, or
"random_block", `num_blocks` random squares of side
round(side·√(mask_fraction / num_blocks)), covering at most
`mask_fraction`. As in the official `train.lua` (`overlapPred`), the
network must predict all of R but sees its outer `overlap` pixels: the hole
M̂ that is removed is R shrunk by `overlap` pixels, filled with the
dataset's mean pixel (0 after normalisation, the paper's fill), encoded by
the backbone f and decoded by a small convolutional decoder g
(`ssljax.models.decoder`). The loss is the paper's masked L2 (eq. 1,
`ssljax.pretext.masked_l2`), as a weighted mean:

    loss = Σ w ⊙ (g(f((1 − M̂) ⊙ x)) − x)² / Σ w,

w = 1 in the hole and `overlap_weight` on R's visible border around it
(the official 10, which encourages a seamless blend with the context).
Defaults are the official ones at 128 × 128 (overlap 4 pixels, weight 10;
configs scale the overlap with the image).

Differences from the official code (docs/fidelity.md#context_encoder): no
adversarial loss (the paper's feature-learning encoder is trained with the
reconstruction loss); the encoder is the backbone with pooled features and
the decoder starts from them (the paper's channel-wise fully connected
bottleneck); the view is a random resized crop with a flip
(`_pretext.light_augment`; the official code takes random 128-pixel crops
of images resized to 350 and flips them). `encode` gives the backbone
features of whole images.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.context_encoder(backbone="tiny_cnn", decoder_width=8,
  ...                                  overlap=1)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method

MASKS = ("center", "random_block")


def region(rng: jax.Array, shape, *, mask: str, fraction: float,
           num_blocks: int) -> jax.Array:
  """The [B, H, W, 1] mask of the region R to predict (1 in it)."""
  if mask == "center":
    return pretext.center_mask(shape, fraction)
  side = round(min(shape[1:3]) * math.sqrt(fraction / num_blocks))
  return pretext.random_block_mask(rng, shape, num_blocks=num_blocks,
                                   block_size=max(1, side))


def hole(region_mask: jax.Array, overlap: int) -> jax.Array:
  """R shrunk by `overlap` pixels: the pixels whose (2·overlap + 1)²
  neighbourhood lies in R (the image's outside counts as R, so a block at
  the border is not shrunk from there).

  Example:
    >>> region_mask = pretext.center_mask((1, 6, 6, 1), 4 / 9)
    >>> print(hole(region_mask, 1)[0, ..., 0].astype(int).tolist()[2:4])
    [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]]
  """
  if not overlap:
    return region_mask
  window = (1, 2 * overlap + 1, 2 * overlap + 1, 1)
  outside = jax.lax.reduce_window(1.0 - region_mask, 0.0, jax.lax.max,
                                  window, (1, 1, 1, 1), "SAME")
  return 1.0 - outside


def task(rng: jax.Array, images: jax.Array, *, mask: str, fraction: float,
         num_blocks: int, overlap: int) -> _pretext.Task:
  """(normalised images with the hole filled by 0, the mean pixel) and the
  targets (the images, the hole's mask)."""
  removed = hole(region(rng, images.shape, mask=mask, fraction=fraction,
                        num_blocks=num_blocks), overlap)
  return _pretext.Task(pretext.apply_mask(images, removed, 0.0),
                       (images, removed))


def context_encoder(*, backbone: str | models.Model = "resnet50",
                    backbone_kwargs: Mapping | None = None,
                    augment: Mapping = _pretext.light_augment(),
                    dtype: str = "float32", decoder_width: int = 64,
                    mask: str = "center", mask_fraction: float = 0.25,
                    num_blocks: int = 4, overlap: int = 4,
                    overlap_weight: float = 10.0) -> Method:
  """The context encoder (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      region is removed from the first view of `augment`.
    decoder_width: channels of the decoder's feature maps.
    mask: "center" or "random_block".
    mask_fraction: the region's area fraction, in (0, 1).
    num_blocks: squares of "random_block".
    overlap: visible border of the region that is predicted, in pixels.
    overlap_weight: its weight in the loss (the hole's is 1).
  """
  fn = "context_encoder"
  if mask not in MASKS:
    raise ValueError(f"{fn}: `mask` must be one of {MASKS}, got {mask!r}.")
  if not 0 < mask_fraction < 1:
    raise ValueError(f"{fn}: `mask_fraction` must be in (0, 1), got "
                     f"{mask_fraction}.")
  _common.check_count(num_blocks, "num_blocks", fn, minimum=1)
  _common.check_count(overlap, "overlap", fn)
  _common.check_positive(overlap_weight, "overlap_weight", fn)
  _common.check_positive(decoder_width, "decoder_width", fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  net = _pretext.autoencoder(setup, decoder_width)

  def make(rng, view, method_state):
    del method_state  # Nothing is kept.
    return task(rng, _pretext.standardize(augment, view), mask=mask,
                fraction=mask_fraction, num_blocks=num_blocks,
                overlap=overlap)

  def objective(outputs, targets):
    images, removed = targets
    return pretext.masked_l2(outputs["reconstruction"], images, removed,
                             overlap=overlap,
                             overlap_weight=overlap_weight), {}

  return _pretext.pretext_method(
      fn, setup, net, _pretext.on_view(setup, make), objective)
