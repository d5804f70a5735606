"""Context prediction: where is the neighbour patch relative to the centre?

Doersch, Gupta & Efros, "Unsupervised Visual Representation Learning by
Context Prediction", ICCV 2015.

Each step takes, from every image, the centre patch of a 3 × 3 layout and
one of its 8 neighbours drawn uniformly, with a gap between the patches and
a random jitter of their positions (`ssljax.pretext.relative_patches`, the
paper's 96-pixel patches 48 apart with up to 7 pixels of jitter, scaled to
the image) and standardises each patch on its own, as the authors' code
does. The backbone F, shared by both patches (the paper's late-fusion
pair of towers), maps each patch to features; their concatenation goes
through an MLP head to 8 logits:

    loss = −1/B Σ_b log softmax(head([F(centre_b), F(neighbour_b)]))_{l_b}

with l_b in 0..7 the neighbour's position, row-major around the centre
(`ssljax.pretext.NEIGHBOURS`). `config.method.chromatic` selects the
paper's counter-measure to chromatic aberration on RGB data ("projection"
removes the green-magenta component, "drop" keeps one colour channel);
it must be "none" on one-channel data.

Differences from the paper: the head is an MLP on pooled backbone features
(the paper's fc6 per patch is the backbone's last layer here, fc7-fc8 the
head); the view before cutting patches is a random resized crop with a flip
(`_pretext.light_augment`); the authors' code also blurs a third of the
patches (down- then up-sampled), which is not done here (on mnist5k it made
no difference). `encode` gives the backbone features of whole images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import relative_patch
  >>> method = relative_patch.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", head_hidden_dim=16)
  >>> images = jnp.zeros((4, 24, 24, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssljax import pretext
from ssljax.methods import _pretext


def default_config() -> ml_collections.ConfigDict:
  """Context prediction's hyper-parameters (the paper's)."""
  return ml_collections.ConfigDict(dict(
      name="relative_patch", backbone="resnet50", backbone_kwargs={},
      augment=_pretext.light_augment(), head_hidden_dim=4096, head_layers=2,
      chromatic="projection"))


def task(config, rng, view, method_state):
  """[B, 2, p, p, C] (centre, neighbour), each patch standardised on its
  own, and the neighbour's position label."""
  del method_state  # Nothing is kept.
  centre, neighbour, labels = pretext.relative_patches(
      rng, view, chromatic=config.method.chromatic)
  return jnp.stack([centre, neighbour], axis=1), labels


METHOD = _pretext.classification_method(_pretext.Classification(
    name="relative_patch", task=task,
    num_classes=lambda config: len(pretext.NEIGHBOURS),
    default_config=default_config))
