"""Colourisation: predict the quantised colour of each pixel from lightness.

Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016; the official
Caffe code (richzhang/colorization, `models/colorization_train_val_v2.prototxt`
and `train/solver.prototxt`).

Each RGB image is converted to CIE Lab (`ssljax.pretext.rgb_to_lab`); the
network sees the lightness centred at 50, L − 50 in [−50, 50] (the official
`data_l`), and predicts, per pixel, a distribution over the Q in-gamut ab
bins of a 10-unit grid (`ssljax.pretext.ab_bins`); the targets Z are the
soft encodings of the true ab over their 10 nearest bins (σ = 5: the
official `NNEncLayer`; the paper's text says 5 neighbours,
`ssljax.pretext.encode_ab`), and the loss is the cross-entropy (eq. 2)

    loss = −1/(B·H·W) Σ_{b,h,w} g_b Σ_q Z_{b,h,w,q} log P_{b,h,w,q},
    P_{b,h,w} = softmax(logits_{b,h,w}),

where g_b = 0 for a gray image (no |a| or |b| above 5 anywhere: the
official `NonGrayMaskLayer`, `skip_gray`) and 1 otherwise. Colourisation
needs colour: on one-channel data (mnist5k) `init` raises a ValueError.
Defaults follow the official code: the view is a random square crop of
(176/256)² of the image, flipped half the time (the official 176-pixel
crops of 256-pixel images, `mirror: true`).

Differences from the official code (docs/fidelity.md#colorization): no
class rebalancing (the official loss reweights each pixel by the inverse
smoothed frequency of its colour on ImageNet, a dataset statistic not
computed here); the encoder is the backbone with pooled features and a
small convolutional decoder (`ssljax.models.decoder`) produces full-
resolution logits (the official network is fully convolutional with
dilated layers and predicts at a quarter of the resolution); Q = 261 bins
(see `ab_bins` for the official 313). `encode` gives the backbone features
of the images' lightness.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.colorization(backbone="tiny_cnn", decoder_width=8)
  >>> images = jnp.zeros((2, 8, 8, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (2, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, models, pretext
from ssljax.data import augment as augment_lib
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method

# The official data_l = L* − 50, in [−50, 50].
L_CENTRE = 50.0
# An image is gray if no |a*| or |b*| exceeds this (`NonGrayMaskLayer`).
GRAY_THRESHOLD = 5.0
# The official views: 176-pixel crops of 256-pixel images.
_CROP_AREA = (176 / 256) ** 2


def lightness(images: jax.Array) -> jax.Array:
  """[B, H, W, 1] network input L* − 50 of RGB images in [0, 1]."""
  if images.shape[-1] != 3:
    raise ValueError(
        f"colorization: needs RGB `images` [B, H, W, 3], got shape "
        f"{images.shape}; colourisation does not apply to grayscale data "
        "such as mnist5k.")
  return pretext.rgb_to_lab(images)[..., :1] - L_CENTRE


def task(view: jax.Array, *, bin_grid: int, sigma: float, neighbours: int,
         skip_gray: bool) -> _pretext.Task:
  """(lightness, (soft ab targets [B, H, W, Q], per-image weights [B]))."""
  inputs = lightness(view)
  ab = pretext.rgb_to_lab(view)[..., 1:]
  targets = pretext.encode_ab(ab, pretext.ab_bins(bin_grid), sigma=sigma,
                              neighbours=neighbours)
  coloured = jnp.any(jnp.abs(ab) > GRAY_THRESHOLD, axis=(1, 2, 3))
  weights = coloured if skip_gray else jnp.ones_like(coloured)
  return _pretext.Task(inputs, (targets, weights.astype(targets.dtype)))


def objective(outputs: dict, targets) -> tuple[jax.Array, dict]:
  """The per-pixel cross-entropy against the soft targets, gray images
  weighted 0."""
  soft, weights = targets
  log_probs = jax.nn.log_softmax(
      _common.to_compute(outputs["reconstruction"]), axis=-1)
  per_pixel = -jnp.sum(soft * log_probs, axis=-1)
  return jnp.mean(per_pixel * weights[:, None, None]), {
      "coloured_images": jnp.mean(weights)}


def colorization(*, backbone: str | models.Model = "resnet50",
                 backbone_kwargs: Mapping | None = None,
                 augment: Mapping = _pretext.light_augment(
                     scale=(_CROP_AREA, _CROP_AREA), ratio=(1.0, 1.0)),
                 dtype: str = "float32", decoder_width: int = 64,
                 bin_grid: int = 10, sigma: float = 5.0, neighbours: int = 10,
                 skip_gray: bool = True) -> Method:
  """Colourisation (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      first view of `augment` is coloured in.
    decoder_width: channels of the decoder's feature maps.
    bin_grid: ab quantisation step (`ssljax.pretext.ab_bins`).
    sigma, neighbours: the soft encoding (`ssljax.pretext.encode_ab`).
    skip_gray: give gray images no loss (the official code).
  """
  fn = "colorization"
  _common.check_count(bin_grid, "bin_grid", fn, minimum=1)
  _common.check_positive(sigma, "sigma", fn)
  _common.check_count(neighbours, "neighbours", fn, minimum=1)
  _common.check_positive(decoder_width, "decoder_width", fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  num_bins = pretext.ab_bins(bin_grid).shape[0]

  def make(rng, view, method_state):
    del rng, method_state  # No draw: the colours are the targets.
    return task(view, bin_grid=bin_grid, sigma=sigma, neighbours=neighbours,
                skip_gray=skip_gray)

  def encode(params, model_state, method_state, images):
    """Backbone features [B, D] in eval mode of the images' lightness;
    uint8 or normalised float RGB images."""
    del method_state  # Nothing is kept.
    images = _shared.first_image(images)
    if images.dtype == jnp.uint8:
      images = augment_lib.to_float(images)
    else:
      mean, std = _pretext.channel_stats(augment, images.shape[-1])
      images = images * jnp.asarray(std) + jnp.asarray(mean)
    features, _ = setup.backbone.apply(
        params["backbone"], model_state["backbone"],
        lightness(jnp.clip(images, 0.0, 1.0)), train=False)
    return features

  return _pretext.pretext_method(
      fn, setup, _pretext.autoencoder(setup, decoder_width, num_bins),
      _pretext.on_view(setup, make), objective, encode=encode)
