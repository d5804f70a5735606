"""Plumbing of the pretext-task methods (rotation, jigsaw, relative patch,
exemplar, denoising autoencoder, context encoder, colorization), written
once.

A pretext method cuts one view of the raw batch (the first recipe of its
`augment`, in [0, 1] before normalisation, because the label makers of
`ssljax.pretext` work on [0, 1] images), turns it into network inputs and
targets with a label maker (a `task`), runs its network on the inputs and
scores the outputs (an `objective`):

* classifiers (`classifier`): the backbone, shared by the T crops of an
  example when there are several (the papers' siamese towers:
  `models.compose(towers=...)`), then an MLP head to K logits, trained with
  the cross-entropy −mean_n log softmax(logits_n)[label_n] (`classify`);
* encoder-decoders (`autoencoder`): the backbone, then
  `ssljax.models.decoder` from its features back to an image, scored by the
  method (masked L2, per-pixel cross-entropy).

`pretext_method` assembles the `Method`. `encode` is the backbone on whole
normalised images, as the papers transfer their convolutional layers.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import _common, models
from ssljax.data import augment as augment_lib
from ssljax.losses import classification
from ssljax.methods import _shared
from ssljax.methods.base import Method, StepOutput
from ssljax.models import decoder as decoder_lib

# No colour, blur or solarisation: they would change what the pretext labels
# are about (colour for colourisation, pixel noise for a denoiser).
_NO_COLOUR = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                  solarize_prob=0.0)
# `augment` overrides that leave the whole image, unflipped (the square
# centre of a non-square one): the views of the methods whose official code
# uses no augmentation, or a fixed crop.
WHOLE_IMAGE = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0)


def light_augment(**overrides) -> Mapping:
  """An `augment` recipe of one light view: a random resized crop and a
  horizontal flip (RotNet's ImageNet augmentation), the first view of the
  "byol" preset without its colour operations; `overrides` as in
  `_shared.augment_config` (e.g. `**WHOLE_IMAGE`).

  Example:
    >>> spec = light_augment(**WHOLE_IMAGE)
    >>> spec["scale"], spec["flip_prob"], spec["jitter_prob"]
    ((1.0, 1.0), 0.0, 0.0)
  """
  return _shared.augment_config("byol", **{**_NO_COLOUR, **overrides})


def channel_stats(augment: Mapping, channels: int
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The (mean, std) per channel that an `augment` recipe normalises with."""
  if augment.get("mean") is None:
    return augment_lib.default_stats(channels)
  return tuple(augment["mean"]), tuple(augment["std"])


def standardize(augment: Mapping, images: jax.Array) -> jax.Array:
  """[0, 1] images normalised as the recipe's views are."""
  mean, std = channel_stats(augment, images.shape[-1])
  return augment_lib.normalize(images, mean=mean, std=std)


# ------------------------------------------------------------- networks ---


def classifier(fn: str, setup: _shared.Setup, num_classes: int,
               hidden_dim: int, layers: int, *, towers: Optional[str] = None
               ) -> models.Model:
  """The backbone (on each of T crops with `towers`, see `models.compose`)
  and an MLP head of `layers` linear layers (hidden `hidden_dim`, BN-ReLU
  between them) to `num_classes` logits; bad sizes raise a ValueError
  naming the method `fn`'s argument."""
  _common.check_count(hidden_dim, "head_hidden_dim", fn, minimum=1)
  _common.check_count(layers, "head_layers", fn, minimum=1)
  head = models.projector(None, hidden_dim, num_classes, num_layers=layers,
                          **setup.kw)
  return models.compose(setup.backbone, classifier=head, towers=towers)


def per_view(model: models.Model, *, joint: bool) -> models.Model:
  """`model` on each of T views of an example, [B, T, ...] -> outputs
  [B, T, ...]: all B·T in one call with `joint` (BatchNorm over all),
  otherwise one call per view position (`_shared.forward`)."""

  def apply(params, model_state, x, *, train: bool):
    outputs, model_state = _shared.forward(
        model, params, model_state, tuple(jnp.swapaxes(x, 0, 1)),
        joint=joint, train=train)
    return jax.tree.map(lambda y: jnp.swapaxes(y, 0, 1), outputs), model_state

  return models.Model(init=lambda rng, x: model.init(rng, x[:, 0]),
                      apply=apply)


def autoencoder(setup: _shared.Setup, width: int,
                out_channels: Optional[int] = None) -> models.Model:
  """The backbone and a `conv_decoder` of `width` channels from its
  features back to images of the inputs' size, with `out_channels`
  channels (default: the inputs')."""

  def network(x) -> models.Model:
    height, width_px, channels = x.shape[1:]
    return models.compose(setup.backbone, decoder=decoder_lib.conv_decoder(
        (height, width_px, out_channels or channels), width=width,
        **setup.kw))

  def apply(params, model_state, x, *, train: bool):
    return network(x).apply(params, model_state, x, train=train)

  return models.Model(init=lambda rng, x: network(x).init(rng, x),
                      apply=apply)


# ---------------------------------------------------------------- tasks ---


class Task(NamedTuple):
  """A step's network inputs and what the objective scores them against.

  Attributes:
    inputs: the network's input batch.
    targets: labels, target images... (the objective's second argument).
    update: what `post_update` needs (exemplar's filled set), or ().
    metrics: extra scalars to log.
  """
  inputs: jax.Array
  targets: Any
  update: Any = ()
  metrics: Mapping = types.MappingProxyType({})


def on_view(setup: _shared.Setup, make: Callable) -> Callable:
  """The task `task(rng, batch, method_state)` that runs `make(rng, view,
  method_state) -> Task` on the first view of the batch, in [0, 1]."""

  def task(rng, batch, method_state):
    view_rng, task_rng = jax.random.split(rng)
    view = setup.views.make(view_rng, batch, count=1, normalize=False)[0]
    return make(task_rng, view, method_state)

  return task


def classify(outputs: dict, labels: jax.Array) -> tuple[jax.Array, dict]:
  """The cross-entropy of the logits against the labels, and the pretext
  accuracy to log."""
  logits = outputs["logits"]
  return classification.cross_entropy(logits, labels), {
      "pretext_accuracy": classification.accuracy(logits, labels)}


def pretext_method(name: str, setup: _shared.Setup, model: models.Model,
                   task: Callable, objective: Callable, *,
                   init_state: Callable[[Any], Any] = lambda batch: (),
                   post_update: Callable = _shared.keep,
                   encode: Optional[Callable] = None) -> Method:
  """The `Method` of a pretext task.

  Args:
    name: the registry name.
    setup: the factory's `_shared.setup`.
    model: the network, task inputs -> outputs with "features" ([B, D], or
      [B, T, D] for T crops per example: the first crop's are logged).
    task: `task(rng, batch, method_state) -> Task`.
    objective: `objective(outputs, targets) -> (loss, metrics)`.
    init_state: `init_state(batch) -> method_state` (constants, or a set to
      fill, shaped from the raw batch).
    post_update: `Method.post_update`; default: nothing moves.
    encode: `Method.encode`; default the backbone on normalised images.
  """

  def init(rng, batch):
    method_state = init_state(batch)
    inputs = jax.eval_shape(lambda: task(rng, batch, method_state).inputs)
    params, model_state = model.init(rng, jnp.zeros(inputs.shape,
                                                    inputs.dtype))
    return params, model_state, method_state

  def loss(params, model_state, method_state, batch, rng, step):
    del step  # The task does not change during training.
    made = task(rng, batch, method_state)
    outputs, model_state = model.apply(params, model_state, made.inputs,
                                       train=True)
    value, metrics = objective(outputs, made.targets)
    features = outputs["features"]
    return value, StepOutput(
        model_state=model_state, metrics={**made.metrics, **metrics},
        update=made.update, embeddings=jax.lax.stop_gradient(
            features if features.ndim == 2 else features[:, 0]))

  return Method(name=name, init=init, loss=loss, post_update=post_update,
                encode=encode or _shared.encoder(setup),
                crops=setup.views.specs)
