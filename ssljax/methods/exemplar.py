"""Exemplar CNN: each seed image, under random transformations, is a class.

Dosovitskiy, Springenberg, Riedmiller & Brox, "Discriminative Unsupervised
Feature Learning with Convolutional Neural Networks", NIPS 2014 (no public
training code; the paper and its TPAMI 2016 version are the reference).

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
`augment` (SimCLR's crops, flips and colour distortions, standing in for
the paper's translation, scaling, rotation, contrast and colour operations).
Defaults: N = 8000 surrogate classes and a head of one 512-unit hidden layer
(the paper's STL-10 network, 64c5-128c5-256c5-512f, whose 512f is the
hidden layer before the N-way softmax).

Differences from the paper (docs/fidelity.md#exemplar): views are drawn on
the fly (no fixed K per exemplar); the exemplars are whole images of the
dataset, not 32 × 32 patches picked for their gradient energy; in the first
ceil(N / B) steps the classes not yet filled act only as negatives. N is
bounded by memory: the set is replicated on every device (N·H·W·C bytes).
`encode` gives the backbone features of whole images.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.exemplar(backbone="tiny_cnn", head_hidden_dim=16,
  ...                           num_exemplars=6)
  >>> images = jnp.ones((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, state = method.init(jax.random.key(0), images)
  >>> loss, out = method.loss(params, model_state, state, {"image": images},
  ...                         jax.random.key(1), 0)
  >>> _, state = method.post_update(params, state, out.update, 0)
  >>> print(loss.shape, int(state.count), int(state.exemplars[:4].min()))
  () 4 1
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ssljax import _common, models
from ssljax.methods import _pretext, _shared
from ssljax.methods.base import Method


class ExemplarState(NamedTuple):
  """The exemplar set: uint8 [N, H, W, C] images, the first `count` filled."""
  exemplars: jax.Array
  count: jax.Array


def pool(state: ExemplarState, images: jax.Array) -> ExemplarState:
  """The set with `images` written into the next free slots (those past
  the end are dropped), and its new count.

  Example:
    >>> import jax.numpy as jnp
    >>> empty = ExemplarState(jnp.zeros((3, 1, 1, 1), jnp.uint8),
    ...                       jnp.zeros((), jnp.int32))
    >>> state = pool(pool(empty, jnp.ones((2, 1, 1, 1), jnp.uint8)),
    ...              jnp.full((2, 1, 1, 1), 2, jnp.uint8))
    >>> print(state.exemplars.ravel().tolist(), int(state.count))
    [1, 1, 2] 3
  """
  capacity = state.exemplars.shape[0]
  slots = state.count + jnp.arange(images.shape[0])
  exemplars = state.exemplars.at[slots].set(images, mode="drop")
  return ExemplarState(exemplars,
                       jnp.minimum(state.count + images.shape[0], capacity))


def surrogate_task(setup: _shared.Setup, rng: jax.Array,
                   state: ExemplarState, batch: int) -> _pretext.Task:
  """`batch` normalised views [batch, H', W', C] of exemplars drawn
  uniformly among the `state.count` filled ones, and their indices."""
  index_rng, view_rng = jax.random.split(rng)
  labels = jax.random.randint(index_rng, (batch,), 0, state.count)
  views = setup.views.make(view_rng, state.exemplars[labels], count=1)[0]
  return _pretext.Task(views, labels)


def exemplar(*, backbone: str | models.Model = "resnet50",
             backbone_kwargs: Mapping | None = None,
             augment: Mapping = _shared.augment_config("simclr"),
             dtype: str = "float32", head_hidden_dim: int = 512,
             head_layers: int = 2, num_exemplars: int = 8000) -> Method:
  """Exemplar CNN (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`; the
      first view of `augment` transforms the exemplars.
    head_hidden_dim, head_layers: the MLP head to the N surrogate classes.
    num_exemplars: N, the number of surrogate classes.
  """
  fn = "exemplar"
  _common.check_count(num_exemplars, "num_exemplars", fn, minimum=1)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)

  def init_state(batch):
    images = _shared.first_image(batch)
    return ExemplarState(
        jnp.zeros((num_exemplars,) + images.shape[1:], jnp.uint8),
        jnp.zeros((), jnp.int32))

  def task(rng, batch, method_state):
    images = _shared.first_image(batch)
    state = pool(method_state, images)
    made = surrogate_task(setup, rng, state, images.shape[0])
    return made._replace(update=state, metrics={"exemplars": state.count})

  def post_update(params, method_state, update, step):
    del method_state, step  # The loss filled the set.
    return params, update

  return _pretext.pretext_method(
      fn, setup,
      _pretext.classifier(fn, setup, num_exemplars, head_hidden_dim,
                          head_layers),
      task, _pretext.classify, init_state=init_state,
      post_update=post_update)
