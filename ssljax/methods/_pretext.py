"""Plumbing of the pretext-task methods (rotation, jigsaw, relative patch,
exemplar, denoising autoencoder, context encoder, colorization), written
once.

A pretext method makes one lightly augmented view of the raw batch
(`view`: the first recipe of `config.method.augment`, in [0, 1], before
normalisation, because the label makers of `ssljax.pretext` work on [0, 1]
images), turns it into network inputs and targets with a label maker, and
trains either

* a classifier (`classification_method`, and `classify` for exemplar's own
  loss): a `task(config, rng, view, method_state) -> (inputs [N, T, h, w,
  C], labels [N])` gives T crops per example (1 rotated image, 9 jigsaw
  tiles, 2 patches); the backbone (shared by the T crops, the papers'
  siamese towers) maps each crop to features, their concatenation goes
  through an MLP head to logits, and the loss is the cross-entropy
  −mean_n log softmax(logits_n)[label_n]; or
* an encoder-decoder (`reconstruction_method`): a `task(config, rng, view)
  -> (inputs, targets, mask)` of images; the backbone, then
  `ssljax.models.decoder` from its features, predicts the targets, and the
  method's objective scores the prediction (masked L2 for the autoencoders,
  per-pixel cross-entropy for colourisation).

`post_update` returns `method_state` as is (`keep_state`; jigsaw keeps its
permutation set there, a constant) except for exemplar, whose set fills
during the first steps. `encode` is the backbone on whole normalised images
(`_shared.encode`), as the papers transfer their convolutional layers;
colourisation encodes the lightness.

Config fields read here: `config.method.{backbone, backbone_kwargs,
augment}` and, for classifiers, `head_hidden_dim`, `head_layers`; for
encoder-decoders `decoder_width`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssljax import _common, models
from ssljax.data import augment
from ssljax.methods import _shared
from ssljax.methods.base import Method, StepOutput
from ssljax.models import decoder as decoder_lib

# A task makes network inputs and targets from a view, see the docstring.
Task = Callable[..., tuple]


def light_augment(**overrides) -> ml_collections.ConfigDict:
  """`config.method.augment` of the pretext methods: a random resized crop
  and a horizontal flip (the augmentation of RotNet's and the jigsaw's
  training), no colour, blur or solarisation, which would change what the
  pretext labels are about (colour for colourisation, pixel noise for a
  denoiser). One view of the "byol" recipes is taken."""
  settings = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                  solarize_prob=0.0)
  settings.update(overrides)
  return _shared.augment_config("byol", **settings)


def view(config, rng: jax.Array, images: jax.Array) -> jax.Array:
  """One float [B, H, W, C] view in [0, 1] of the uint8 batch: the first
  recipe of `config.method.augment` (the images themselves for "none")."""
  spec = config.method.augment
  overrides = {k: v for k, v in spec.items() if k != "preset" and v is not None}
  images = augment.to_float(images)
  recipes = augment.preset(spec.preset, image_size=min(images.shape[1:3]),
                           **overrides)
  if not recipes:
    return images
  return augment.batched(augment.view)(rng, images, spec=recipes[0])


def normalize(config, images: jax.Array) -> jax.Array:
  """[0, 1] images standardised with the dataset's mean and std."""
  mean, std = _shared._stats(config, images.shape[-1])  # pylint: disable=protected-access
  return augment.normalize(images, mean=mean, std=std)


def keep_state(config, params, method_state, update, step):
  """`Method.post_update` of a method without state between steps."""
  del config, params, update, step  # Nothing moves.
  return method_state


def make_method(name: str, init: Callable, loss: Callable,
                default_config: Callable, *, encode: Callable | None = None,
                post_update: Callable = keep_state) -> Method:
  """A `Method` with `_shared.encode` and `keep_state` unless given."""
  return Method(name=name, init=init, loss=loss, post_update=post_update,
                encode=encode or _shared.encode,
                default_config=default_config)


def _embeddings(features: jax.Array, batch: int) -> jax.Array:
  """[B, D] features of the first input row of each example (rows of one
  example are adjacent), without gradient."""
  return jax.lax.stop_gradient(features.reshape(batch, -1,
                                                features.shape[-1])[:, 0])


# ------------------------------------------------------------ classifiers ---


def tower_classifier(backbone: models.Model, head: models.Model
                     ) -> models.Model:
  """Shared backbone on each of T crops, concatenated features, head.

      features[n, t] = backbone(x[n, t]),
      logits[n] = head([features[n, 0], ..., features[n, T − 1]])

  All N·T crops go through the backbone in one call (BatchNorm statistics
  over all of them). Inputs [N, T, h, w, C]; outputs {"features": [N, T, D],
  "logits": [N, K]}; params and model_state {"backbone", "head"}.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import models
    >>> net = tower_classifier(models.get("tiny_cnn"),
    ...                        models.projector(None, 16, 5))
    >>> x = jnp.ones((2, 3, 8, 8, 1))
    >>> params, state = net.init(jax.random.key(0), x)
    >>> out, _ = net.apply(params, state, x, train=False)
    >>> print(out["features"].shape, out["logits"].shape)
    (2, 3, 8) (2, 5)
  """

  def run_backbone(params, model_state, x, train):
    crops = x.reshape(-1, *x.shape[2:])
    features, model_state = backbone.apply(params, model_state, crops,
                                           train=train)
    return features.reshape(*x.shape[:2], -1), model_state

  def init(rng, x):
    backbone_rng, head_rng = jax.random.split(rng)
    params, model_state = {}, {}
    crops = jnp.zeros((x.shape[0] * x.shape[1],) + x.shape[2:], x.dtype)
    params["backbone"], model_state["backbone"] = backbone.init(
        backbone_rng, crops)
    features = jax.eval_shape(
        lambda p, s: run_backbone(p, s, jnp.zeros(x.shape, x.dtype), False)[0],
        params["backbone"], model_state["backbone"])
    params["head"], model_state["head"] = head.init(
        head_rng, jnp.zeros((x.shape[0], features.shape[1] * features.shape[2]),
                            features.dtype))
    return params, model_state

  def apply(params, model_state, x, *, train: bool):
    features, backbone_state = run_backbone(
        params["backbone"], model_state["backbone"], x, train)
    logits, head_state = head.apply(
        params["head"], model_state["head"],
        features.reshape(features.shape[0], -1), train=train)
    return ({"features": features, "logits": logits},
            {"backbone": backbone_state, "head": head_state})

  return models.Model(init=init, apply=apply)


def classifier_network(config, num_classes: int) -> models.Model:
  """`tower_classifier` of the config's backbone and an MLP head of
  `head_layers` linear layers (hidden `head_hidden_dim`) to `num_classes`."""
  method = config.method
  head = models.projector(None, method.head_hidden_dim, num_classes,
                          num_layers=method.head_layers,
                          **_shared.dtype_kwargs(config))
  return tower_classifier(_shared.backbone(config), head)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """−mean_n log softmax(logits_n)[labels_n], computed in float32."""
  return optax.softmax_cross_entropy_with_integer_labels(
      _common.to_compute(logits), labels).mean()


def classify(config, num_classes: int, params, model_state, inputs, labels,
             batch: int, *, metrics: dict | None = None,
             update: dict | None = None) -> tuple[jax.Array, StepOutput]:
  """`Method.loss` value and aux of the `classifier_network` on `inputs`
  [N, T, h, w, C] against `labels` [N], the N rows coming from `batch`
  examples; logs the pretext accuracy beside `metrics`."""
  net = classifier_network(config, num_classes)
  outputs, model_state = net.apply(params, model_state, inputs, train=True)
  logits = outputs["logits"]
  accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
  return cross_entropy(logits, labels), StepOutput(
      model_state=model_state,
      metrics={"pretext_accuracy": accuracy, **(metrics or {})},
      update=update or {},
      embeddings=_embeddings(outputs["features"][:, 0], batch))


class Classification(NamedTuple):
  """What a classification method is made of (see the module docstring).

  Attributes:
    name: registry name.
    task: `task(config, rng, view, method_state) -> (inputs [N, T, h, w,
      C], labels [N])`;
      the N rows of the B examples are in example order, each example's
      rows adjacent.
    num_classes: `num_classes(config) -> K`.
    default_config: the method's `default_config`.
    init_state: `init_state(config) -> method_state` (constants), or None
      for an empty `_shared.MethodState()`.
  """
  name: str
  task: Task
  num_classes: Callable[[Any], int]
  default_config: Callable[[], ml_collections.ConfigDict]
  init_state: Callable | None = None


def classification_method(spec: Classification) -> Method:
  """The `Method` of a classification pretext task."""

  def init(config, rng, images):
    images, _ = _shared.split_batch(images)
    method_state = (_shared.MethodState() if spec.init_state is None
                    else spec.init_state(config))
    inputs = jax.eval_shape(
        lambda: spec.task(config, rng, view(config, rng, images),
                          method_state)[0])
    net = classifier_network(config, spec.num_classes(config))
    params, model_state = net.init(rng, jnp.zeros(inputs.shape, inputs.dtype))
    return params, model_state, method_state

  def loss(config, params, model_state, method_state, images, rng, step):
    del step  # The task does not change during training.
    images, _ = _shared.split_batch(images)
    view_rng, task_rng = jax.random.split(rng)
    inputs, labels = spec.task(config, task_rng,
                               view(config, view_rng, images), method_state)
    return classify(config, spec.num_classes(config), params, model_state,
                    inputs, labels, images.shape[0])

  return make_method(spec.name, init, loss, spec.default_config)


# ----------------------------------------------------------- autoencoders ---


def autoencoder(backbone: models.Model, decoder: models.Model) -> models.Model:
  """Backbone, then decoder from its features back to images.

  Outputs {"features": [B, D], "reconstruction": [B, H, W, C]}; params and
  model_state {"backbone", "decoder"}.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import models
    >>> from ssljax.models import decoder
    >>> net = autoencoder(models.get("tiny_cnn"),
    ...                   decoder.conv_decoder((8, 8, 1), width=4))
    >>> x = jnp.ones((2, 8, 8, 1))
    >>> params, state = net.init(jax.random.key(0), x)
    >>> out, _ = net.apply(params, state, x, train=False)
    >>> print(out["features"].shape, out["reconstruction"].shape)
    (2, 8) (2, 8, 8, 1)
  """

  def init(rng, x):
    backbone_rng, decoder_rng = jax.random.split(rng)
    params, model_state = {}, {}
    params["backbone"], model_state["backbone"] = backbone.init(backbone_rng,
                                                                x)
    features = jax.eval_shape(
        lambda p, s: backbone.apply(p, s, x, train=False)[0],
        params["backbone"], model_state["backbone"])
    params["decoder"], model_state["decoder"] = decoder.init(
        decoder_rng, jnp.zeros(features.shape, features.dtype))
    return params, model_state

  def apply(params, model_state, x, *, train: bool):
    features, backbone_state = backbone.apply(
        params["backbone"], model_state["backbone"], x, train=train)
    images, decoder_state = decoder.apply(
        params["decoder"], model_state["decoder"], features, train=train)
    return ({"features": features, "reconstruction": images},
            {"backbone": backbone_state, "decoder": decoder_state})

  return models.Model(init=init, apply=apply)


def autoencoder_network(config, image_shape) -> models.Model:
  """`autoencoder` of the config's backbone and a `conv_decoder` of width
  `config.method.decoder_width` to images of `image_shape` (H, W, C)."""
  return autoencoder(_shared.backbone(config), decoder_lib.conv_decoder(
      image_shape, width=config.method.decoder_width,
      **_shared.dtype_kwargs(config)))


class Reconstruction(NamedTuple):
  """What a reconstruction method is made of (see the module docstring).

  Attributes:
    name: registry name.
    task: `task(config, rng, view) -> (inputs, targets, mask)`: normalised
      [B, H, W, C] inputs, [B, H, W, C'] targets (the decoder's output
      shape) and a [B, H, W, 1] mask of where to reconstruct.
    objective: `objective(config, reconstruction, targets, mask) -> loss`.
    default_config: the method's `default_config`.
    encode: the method's `encode`, or None for the backbone on normalised
      images (`_shared.encode`).
  """
  name: str
  task: Task
  objective: Callable
  default_config: Callable[[], ml_collections.ConfigDict]
  encode: Callable | None = None


def reconstruction_method(spec: Reconstruction) -> Method:
  """The `Method` of a reconstruction pretext task."""

  def init(config, rng, images):
    images, _ = _shared.split_batch(images)
    inputs, targets, _ = jax.eval_shape(
        lambda: spec.task(config, rng, view(config, rng, images)))
    net = autoencoder_network(config, targets.shape[1:])
    params, model_state = net.init(rng, jnp.zeros(inputs.shape, inputs.dtype))
    return params, model_state, _shared.MethodState()

  def loss(config, params, model_state, method_state, images, rng, step):
    del method_state, step  # Nothing is carried between steps.
    images, _ = _shared.split_batch(images)
    view_rng, task_rng = jax.random.split(rng)
    inputs, targets, mask = spec.task(config, task_rng,
                                      view(config, view_rng, images))
    net = autoencoder_network(config, targets.shape[1:])
    outputs, model_state = net.apply(params, model_state, inputs, train=True)
    value = spec.objective(config, outputs["reconstruction"], targets, mask)
    return value, StepOutput(
        model_state=model_state, metrics={}, update={},
        embeddings=_embeddings(outputs["features"], images.shape[0]))

  return make_method(spec.name, init, loss, spec.default_config,
                     encode=spec.encode)
