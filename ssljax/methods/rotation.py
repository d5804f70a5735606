"""RotNet: predict which of four rotations was applied to an image.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by
Predicting Image Rotations", ICLR 2018; the official code
(gidariss/FeatureLearningRotNet).

Each image x of the batch is fed in all four rotations g_r(x), r·90°
counter-clockwise (`ssljax.pretext.rotations`), as in the paper's batches
(section 2.3: "we feed the ConvNet model all four rotated copies of an
image simultaneously"); the backbone F and a classifier head give 4-way
logits, trained with the cross-entropy (eq. 1-2):

    loss = −1/4B Σ_b Σ_r log softmax(head(F(g_r(x_b))))_r

Defaults follow the official code: the four copies go through the network
in one batch (BatchNorm statistics over all 4B images,
`view_batchnorm="joint"`); the head is one linear layer on the pooled
backbone features, as the Network-in-Network RotNet's global average
pooling and linear classifier (`head_layers=3`, `head_hidden_dim=4096`
give the AlexNet RotNet's fc block); the view before rotation is a random
resized crop with a flip (the ImageNet `RandomSizedCrop(224)` and
`RandomHorizontalFlip`). `encode` gives the backbone features of unrotated
images. Differences from the official code (its CIFAR views, step
schedule, Nesterov momentum) are in docs/fidelity.md#rotation.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.rotation(backbone="tiny_cnn")
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from ssljax import models, pretext
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method


def task(view: jax.Array) -> _pretext.Task:
  """The four rotated copies [B, 4, H, W, C] of each image (copy r turned r
  quarter-turns counter-clockwise) and their labels [B, 4] = r.

  Example:
    >>> import jax.numpy as jnp
    >>> view = jnp.array([[0., 1.], [2., 3.]]).reshape(1, 2, 2, 1)
    >>> inputs, labels = task(view)[:2]
    >>> print(inputs[0, 1, ..., 0].tolist(), labels.tolist())
    [[1.0, 3.0], [0.0, 2.0]] [[0, 1, 2, 3]]
  """
  rotated, labels = pretext.rotations(view)
  shape = (view.shape[0], pretext.NUM_ROTATIONS)
  return _pretext.Task(rotated.reshape(*shape, *view.shape[1:]),
                       labels.reshape(shape))


def rotation(*, backbone: str | models.Model = "resnet50",
             backbone_kwargs: Mapping | None = None,
             augment: Mapping = _pretext.light_augment(),
             dtype: str = "float32", head_hidden_dim: int = 4096,
             head_layers: int = 1, view_batchnorm: str = "joint"
             ) -> Method:
  """RotNet (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      first view of `augment` is rotated.
    head_hidden_dim, head_layers: the classifier head, `head_layers`
      linear layers (1: a linear classifier).
    view_batchnorm: "joint" (the official 4B-image batch) or "per_view"
      (each rotation in its own call).
  """
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  net = _pretext.per_view(
      _pretext.classifier("rotation", setup, pretext.NUM_ROTATIONS,
                          head_hidden_dim, head_layers),
      joint=_shared.check_view_batchnorm(view_batchnorm, "rotation"))

  def make(rng, view, method_state):
    del rng, method_state  # All four rotations, no draw.
    return task(_pretext.standardize(augment, view))

  return _pretext.pretext_method(
      "rotation", setup, net, _pretext.on_view(setup, make),
      _pretext.classify)
