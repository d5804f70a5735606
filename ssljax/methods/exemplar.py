"""Exemplar CNN: each seed image, under random transformations, is a class.

Dosovitskiy, Springenberg, Riedmiller & Brox, "Discriminative Unsupervised
Feature Learning with Convolutional Neural Networks", NIPS 2014.

The paper draws N seed patches ("exemplars"), applies K random
transformations (crops, scaling, rotation, colour and contrast changes) to
each, and trains an N-way classifier: surrogate class i is the set of
transformed versions of exemplar i,

    loss = −1/B Σ_b log softmax(head(F(T_b(x_{i_b}))))_{i_b}

with i_b uniform over the exemplars and T_b a random transformation.

A parametric N-way head needs a fixed set of classes, so the exemplar set
is fixed and kept in `method_state` (uint8 images, checkpointed with the
run). As the train loop initialises methods on a zero batch, the set is
filled from the data: the first ceil(N / B) training batches are written
into it in order (`ExemplarState.count` images so far), after which it never
changes. Each step classifies B fresh views of exemplars drawn uniformly
among those filled so far, the current batch included (`pool`), so the
training batch only feeds the set; the transformations are the views of
`config.method.augment` (SimCLR's crops, flips and colour distortions,
standing in for the paper's translation, scaling, rotation, contrast and
colour operations).

Differences from the paper: views are drawn on the fly (no fixed K per
exemplar); the exemplars are whole (augmented-crop) images of the dataset,
not 32 × 32 patches picked for their gradient energy; in the first ceil(N /
B) steps the classes not yet filled act only as negatives. N is bounded by
memory: the set is replicated on every device (N·H·W·C bytes). `encode`
gives the backbone features of whole images.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import exemplar
  >>> method = exemplar.METHOD
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", head_hidden_dim=16,
  ...                      num_exemplars=6)
  >>> images = jnp.ones((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, state = method.init(config, jax.random.key(0),
  ...                                          images)
  >>> loss, out = method.loss(config, params, model_state, state, images,
  ...                         jax.random.key(1), 0)
  >>> state = method.post_update(config, params, state, out.update, 0)
  >>> print(loss.shape, int(state.count), int(state.exemplars[:4].min()))
  () 4 1
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from ssljax.methods import _pretext, _shared


class ExemplarState(NamedTuple):
  """The exemplar set: uint8 [N, H, W, C] images, the first `count` filled."""
  exemplars: jax.Array
  count: jax.Array


def default_config() -> ml_collections.ConfigDict:
  """Exemplar CNN's hyper-parameters: 8000 surrogate classes (the paper's
  STL-10 runs)."""
  return ml_collections.ConfigDict(dict(
      name="exemplar", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("simclr"), head_hidden_dim=1024,
      head_layers=2, num_exemplars=8000))


def init(config, rng, images):
  """Parameters, and an empty exemplar set shaped like the images."""
  images, _ = _shared.split_batch(images)
  count = config.method.num_exemplars
  state = ExemplarState(jnp.zeros((count,) + images.shape[1:], jnp.uint8),
                        jnp.zeros((), jnp.int32))
  first = jax.eval_shape(lambda: _pretext.view(config, rng, images))
  net = _pretext.classifier_network(config, count)
  params, model_state = net.init(
      rng, jnp.zeros((first.shape[0], 1) + first.shape[1:], first.dtype))
  return params, model_state, state


def pool(state: ExemplarState, images: jax.Array) -> ExemplarState:
  """The set with `images` written into the next free slots (those past
  the end are dropped), and its new count."""
  capacity = state.exemplars.shape[0]
  slots = state.count + jnp.arange(images.shape[0])
  exemplars = state.exemplars.at[slots].set(images, mode="drop")
  return ExemplarState(exemplars,
                       jnp.minimum(state.count + images.shape[0], capacity))


def surrogate_task(config, rng, state: ExemplarState, batch: int):
  """`batch` views [batch, 1, H, W, C] (normalised) of exemplars drawn
  uniformly among the `state.count` filled ones, and their indices."""
  index_rng, view_rng = jax.random.split(rng)
  labels = jax.random.randint(index_rng, (batch,), 0, state.count)
  views = _pretext.view(config, view_rng, state.exemplars[labels])
  return _pretext.normalize(config, views)[:, None], labels


def loss(config, params, model_state, method_state, images, rng, step):
  del step  # The task does not change during training.
  images, _ = _shared.split_batch(images)
  state = pool(method_state, images)
  inputs, labels = surrogate_task(config, rng, state, images.shape[0])
  return _pretext.classify(
      config, config.method.num_exemplars, params, model_state, inputs,
      labels, images.shape[0], metrics={"exemplars": state.count},
      update={"exemplar_state": state})


def post_update(config, params, method_state, update, step):
  """Keeps the set that the step's `pool` filled."""
  del config, params, method_state, step  # The loss computed it.
  return update["exemplar_state"]


METHOD = _pretext.make_method("exemplar", init, loss, default_config,
                              post_update=post_update)
