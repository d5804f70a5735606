"""RotNet: predict which of four rotations was applied to an image.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by
Predicting Image Rotations", ICLR 2018.

Each image x of the batch is fed in all four rotations g_r(x), r·90°
counter-clockwise (`ssljax.pretext.rotations`), as in the paper's batches
(section 2.3: "we feed the ConvNet model all four rotated copies of an
image simultaneously"); the backbone F and a classifier head give 4-way
logits, trained with the cross-entropy (eq. 1-2):

    loss = −1/4B Σ_b Σ_r log softmax(head(F(g_r(x_b))))_r

Differences from the paper: the head is an MLP on the pooled backbone
features (the paper puts its classifier on a chosen conv block of a
Network-in-Network or AlexNet); the view before rotation is a random resized
crop with a flip (`_pretext.light_augment`). `encode` gives the backbone
features of unrotated images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import rotation
  >>> method = rotation.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", head_hidden_dim=16)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import ml_collections

from ssljax import pretext
from ssljax.methods import _pretext


def default_config() -> ml_collections.ConfigDict:
  """RotNet's hyper-parameters."""
  return ml_collections.ConfigDict(dict(
      name="rotation", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), head_hidden_dim=1024, head_layers=2))


def task(config, rng, view, method_state):
  """The 4B rotated copies [4B, 1, H, H, C] (normalised) and their labels;
  rows 4b..4b+3 are image b at 0°, 90°, 180°, 270°."""
  del rng, method_state  # All four rotations, no draw.
  rotated, labels = pretext.rotations(view)
  return _pretext.normalize(config, rotated)[:, None], labels


METHOD = _pretext.classification_method(_pretext.Classification(
    name="rotation", task=task,
    num_classes=lambda config: pretext.NUM_ROTATIONS,
    default_config=default_config))
