"""Colourisation: predict the quantised colour of each pixel from lightness.

Zhang, Isola & Efros, "Colorful Image Colorization", ECCV 2016.

Each RGB image is converted to CIE Lab (`ssljax.pretext.rgb_to_lab`); the
network sees the lightness L (centred at 50 and scaled, (L − 50) / 50) and
predicts, per pixel, a distribution over the Q in-gamut ab bins of a
10-unit grid (`ssljax.pretext.ab_bins`); the targets Z are the soft
encodings of the true ab over their 5 nearest bins (σ = 5,
`ssljax.pretext.encode_ab`), and the loss is the cross-entropy (eq. 2)

    loss = −1/(B·H·W) Σ_{b,h,w} Σ_q Z_{b,h,w,q} log softmax(logits_{b,h,w})_q

Colourisation needs colour: on one-channel data (mnist5k) `init` raises a
ValueError.

Differences from the paper: no class rebalancing (the paper reweights each
pixel by the inverse smoothed frequency of its colour on ImageNet, which is
a dataset statistic not computed here); the encoder is the backbone with
pooled features and a small convolutional decoder (`ssljax.models.decoder`)
produces the per-pixel logits (the paper's network is fully convolutional
with dilated layers); Q = 261 bins (see `ab_bins` for the paper's 313); the
view is a random resized crop with a flip (`_pretext.light_augment`).
`encode` gives the backbone features of the images' lightness.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import colorization
  >>> method = colorization.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", decoder_width=8)
  >>> images = jnp.zeros((2, 8, 8, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (2, 8)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common, pretext
from ssljax.data import augment
from ssljax.methods import _pretext, _shared

# L* in [0, 100] -> (L* − 50) / 50 in [−1, 1]; the paper centres L at 50.
_L_CENTRE = 50.0


def default_config() -> ml_collections.ConfigDict:
  """Colourisation's hyper-parameters (the paper's)."""
  return ml_collections.ConfigDict(dict(
      name="colorization", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), decoder_width=64, bin_grid=10,
      sigma=5.0, neighbours=5))


def lightness(images: jax.Array) -> jax.Array:
  """[B, H, W, 1] network input (L* − 50) / 50 of RGB images in [0, 1]."""
  if images.shape[-1] != 3:
    raise ValueError(
        f"colorization: needs RGB `images` [B, H, W, 3], got shape "
        f"{images.shape}; colourisation does not apply to grayscale data "
        "such as mnist5k.")
  return (pretext.rgb_to_lab(images)[..., :1] - _L_CENTRE) / _L_CENTRE


def task(config, rng, view):
  """(lightness, soft ab targets [B, H, W, Q], all-ones mask)."""
  del rng  # No draw: the colours are the targets.
  method = config.method
  inputs = lightness(view)
  ab = pretext.rgb_to_lab(view)[..., 1:]
  targets = pretext.encode_ab(ab, pretext.ab_bins(method.bin_grid),
                              sigma=method.sigma,
                              neighbours=method.neighbours)
  return inputs, targets, jnp.ones(view.shape[:3] + (1,), view.dtype)


def objective(config, logits, targets, mask):
  """Cross-entropy of the per-pixel logits against the soft targets."""
  del config, mask  # Every pixel counts the same (no rebalancing).
  log_probs = jax.nn.log_softmax(_common.to_compute(logits), axis=-1)
  return -jnp.mean(jnp.sum(targets * log_probs, axis=-1))


def encode(config, params, model_state, images):
  """Backbone features [B, D] in eval mode of the images' lightness; uint8
  or normalised float RGB images."""
  images, _ = _shared.split_batch(images)
  if images.dtype == jnp.uint8:
    images = augment.to_float(images)
  else:
    mean, std = _shared._stats(config, images.shape[-1])  # pylint: disable=protected-access
    images = images * jnp.asarray(std) + jnp.asarray(mean)
  features, _ = _shared.backbone(config).apply(
      params["backbone"], model_state["backbone"],
      lightness(jnp.clip(images, 0.0, 1.0)), train=False)
  return features


METHOD = _pretext.reconstruction_method(_pretext.Reconstruction(
    name="colorization", task=task, objective=objective,
    default_config=default_config, encode=encode))
