"""Supervised deep metric learning: an embedding trained with one of the
metric losses of `ssljax.losses.metric`, chosen by `config.method.loss`.

The network is the backbone f and an embedding head g (an MLP, or one linear
layer with `proj_layers=1`); every augmented view of every image is one
sample, z = g(f(view)), carrying its image's label. Losses:

  embedding losses (z l2-normalised first when `normalize`, as FaceNet does):
    "contrastive_pair"   Hadsell et al. 2006, on the pairs described below;
    "triplet"            in-batch triplets, `mining` = "batch_hard" |
                         "batch_all" (Hermans et al. 2017) | "semi_hard"
                         (Schroff et al. 2015);
    "n_pair"             Sohn 2016, pairs of distinct classes (below);
    "lifted_structured"  Song et al. 2016;
    "soft_nearest_neighbour"  Frosst et al. 2019.
  class-weight losses (on the raw embedding; they normalise what their
  papers normalise):
    "center_loss"        Wen et al. 2016: softmax cross-entropy of a linear
                         classifier (`class_weights`: kernel [D, C] and
                         bias [C]) + λ·center loss, λ = `center_weight`; the
                         centers [C, D] are `method_state.centers`, moved by
                         `center_loss_update` (rate `center_alpha`) after
                         each step, never by the gradient;
    "sphereface", "cosface", "arcface"  Liu et al. 2017, Wang et al. 2018,
                         Deng et al. 2019, class weights [D, C] in
                         `params["class_weights"]["kernel"]`.

`margin`, `scale` (class-weight losses), `temperature` (soft nearest
neighbour) and `l2_reg` (N-pair) default to None, meaning the loss
function's own default; the number of classes is `num_classes`.

Pairs from the batch. "contrastive_pair" and "n_pair" need class-balanced
batches, P = `classes_per_batch` classes of K = B / P images laid out class
by class (`ssljax.data.balanced` makes them). The V·B samples are grouped
[P, M, D] (M = V·K samples of each class; column k·V + v holds view v of
the class's k-th image): "n_pair" averages Sohn's loss over the M pairings
(row j of class p, row j + 1 of class p) for j < M, each a set of P pairs of
distinct classes with in-batch negatives; "contrastive_pair" pairs every
sample with the next sample of its class (a similar pair) and with the
sample at the same position of the next class (a dissimilar pair), so
similar and dissimilar pairs are balanced. Their `same` flags come from the
labels, so a batch that is not laid out this way gives a correct but
differently mixed set of pairs. The other losses read labels only.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import metric
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=metric.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                      proj_dim=8, loss="arcface", num_classes=2)
  >>> batch = {"image": jnp.zeros((4, 16, 16, 3), jnp.uint8),
  ...          "label": jnp.array([0, 0, 1, 1])}
  >>> params, model_state, state = metric.init(config, jax.random.key(0),
  ...                                          batch)
  >>> print(params["class_weights"]["kernel"].shape)
  (8, 2)
  >>> loss, out = metric.loss(config, params, model_state, state, batch,
  ...                         jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssljax import _common, models
from ssljax.losses import metric as metric_losses
from ssljax.methods import _shared
from ssljax.methods.base import Method

# The parts of `params` that the network's `apply` takes; the class weights
# sit beside them.
NETWORK_PARTS = ("backbone", "projector")


class MetricState(NamedTuple):
  """Center loss's class centers [C, D] (None for the other losses)."""
  centers: Optional[jax.Array] = None


def default_config() -> ml_collections.ConfigDict:
  """Batch-hard triplet on l2-normalised 128-d embeddings (Hermans et al.'s
  TriNet head 1024 → 128), ResNet-50."""
  return ml_collections.ConfigDict(dict(
      name="metric", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("simclr"),
      proj_hidden_dim=1024, proj_dim=128, proj_layers=2, normalize=True,
      loss="triplet", mining="batch_hard", margin=None, scale=None,
      temperature=None, l2_reg=None, num_classes=10, classes_per_batch=0,
      center_weight=0.003, center_alpha=0.5))


def network(config) -> models.Model:
  """Backbone and embedding head (`proj_layers` linear layers)."""
  return _shared.projector_network(config,
                                   num_layers=config.method.proj_layers)


# ------------------------------------------------------------ objectives ---


def _given(config, *names) -> dict:
  """The hyper-parameters among `names` that the config sets (not None)."""
  return {n: config.method[n] for n in names if config.method[n] is not None}


def _samples(z: jax.Array, labels: jax.Array):
  """[V, B, D] embeddings and [B] labels -> [V·B, D] and [V·B]."""
  return z.reshape(-1, z.shape[-1]), jnp.tile(labels, z.shape[0])


def _embedding(config, z: jax.Array) -> jax.Array:
  z = _common.to_compute(z)
  return _common.l2_normalize(z) if config.method.normalize else z


def group_by_class(config, z: jax.Array, labels: jax.Array):
  """[V, B, ...] and [B] -> [P, V·K, ...] and [P, V·K] for P×K batches.

  Sample (view v, image p·K + k) goes to row p, column k·V + v: the views
  of one image are adjacent.
  """
  fn = "metric.loss"
  classes = config.method.classes_per_batch
  n_views, batch = z.shape[:2]
  if not (isinstance(classes, int) and classes > 0 and batch % classes == 0):
    raise ValueError(
        f"{fn}: loss {config.method.loss!r} needs class-balanced batches: "
        f"`classes_per_batch` must be a positive divisor of the batch size "
        f"{batch}, got {classes!r}.")

  def group(x):
    x = x.reshape(n_views, classes, batch // classes, *x.shape[2:])
    x = jnp.moveaxis(x, 0, 2)  # [P, K, V, ...]
    return x.reshape(classes, -1, *x.shape[3:])

  return group(z), group(jnp.broadcast_to(labels, (n_views, batch)))


def _contrastive_pair(config, z, labels, params, state):
  del params, state
  x, y = group_by_class(config, _embedding(config, z), labels)
  partners = [jnp.roll(x, -1, axis=1), jnp.roll(x, -1, axis=0)]
  partner_labels = [jnp.roll(y, -1, axis=1), jnp.roll(y, -1, axis=0)]
  dim = x.shape[-1]
  x1 = jnp.concatenate([x, x]).reshape(-1, dim)
  x2 = jnp.concatenate(partners).reshape(-1, dim)
  same = (jnp.concatenate([y, y]) == jnp.concatenate(partner_labels))
  return metric_losses.contrastive_pair(x1, x2, same.reshape(-1),
                                        **_given(config, "margin")), {}


def _n_pair(config, z, labels, params, state):
  del params, state
  x, _ = group_by_class(config, _embedding(config, z), labels)
  anchors = jnp.swapaxes(x, 0, 1)                   # [M, P, D]
  positives = jnp.roll(anchors, -1, axis=0)
  per_pairing = jax.vmap(lambda a, p: metric_losses.n_pair(
      a, p, **_given(config, "l2_reg")))(anchors, positives)
  return jnp.mean(per_pairing), {}


def _labelled(loss_fn: Callable, *names: str) -> Callable:
  """Objective of a loss of (embeddings, labels) and the config's `names`."""

  def objective(config, z, labels, params, state):
    del params, state
    x, y = _samples(_embedding(config, z), labels)
    return loss_fn(x, y, **_given(config, *names)), {}

  return objective


def _class_weights(loss_fn: Callable) -> Callable:
  """Objective of a margin softmax on the raw embeddings."""

  def objective(config, z, labels, params, state):
    del state
    x, y = _samples(z, labels)
    return loss_fn(x, y, params["class_weights"]["kernel"],
                   **_given(config, "margin", "scale")), {}

  return objective


def _center_loss(config, z, labels, params, state):
  """Wen et al., eq. 5: L = L_softmax + λ·L_center, centers held fixed."""
  x, y = _samples(_common.to_compute(z), labels)
  classifier = params["class_weights"]
  logits = x @ classifier["kernel"] + classifier["bias"]
  softmax = jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, y))
  center = metric_losses.center_loss(x, y,
                                     jax.lax.stop_gradient(state.centers))
  update = {"features": jax.lax.stop_gradient(x), "labels": y}
  return softmax + config.method.center_weight * center, update


OBJECTIVES = {
    "contrastive_pair": _contrastive_pair,
    "triplet": _labelled(metric_losses.batch_triplet, "margin", "mining"),
    "n_pair": _n_pair,
    "lifted_structured": _labelled(metric_losses.lifted_structured, "margin"),
    "soft_nearest_neighbour": _labelled(metric_losses.soft_nearest_neighbour,
                                        "temperature"),
    "center_loss": _center_loss,
    "sphereface": _class_weights(metric_losses.sphereface),
    "cosface": _class_weights(metric_losses.cosface),
    "arcface": _class_weights(metric_losses.arcface),
}
LOSSES = tuple(OBJECTIVES)
# Losses with class parameters: weights [D, C] (and a bias for the softmax
# next to the center loss).
_CLASS_WEIGHT_LOSSES = ("center_loss", "sphereface", "cosface", "arcface")


def _loss_name(config, fn: str) -> str:
  name = config.method.loss
  if name not in OBJECTIVES:
    raise ValueError(f"{fn}: unknown `config.method.loss` {name!r}; valid "
                     f"losses: {', '.join(LOSSES)}.")
  return name


# --------------------------------------------------------- the protocol ---


def init(config, rng, images):
  """Network params, plus `class_weights` for the class-weight losses and
  zero centers for the center loss."""
  name = _loss_name(config, "metric.init")
  net_rng, class_rng = jax.random.split(rng)
  params, model_state, _ = _shared.init(config, net_rng, images,
                                        network(config))
  centers = None
  if name in _CLASS_WEIGHT_LOSSES:
    classes, dim = config.method.num_classes, config.method.proj_dim
    _common.check_count(classes, "config.method.num_classes", "metric.init",
                        minimum=2)
    kernel = jax.nn.initializers.lecun_normal()(class_rng, (dim, classes))
    params["class_weights"] = {"kernel": kernel}
    if name == "center_loss":
      params["class_weights"]["bias"] = jnp.zeros((classes,))
      centers = jnp.zeros((classes, dim))
  return params, model_state, MetricState(centers)


def loss(config, params, model_state, method_state, images, rng, step):
  """The chosen metric loss on the embeddings of every view."""
  del step  # No schedule.
  fn = "metric.loss"
  objective = OBJECTIVES[_loss_name(config, fn)]
  run = _shared.online(config, network(config),
                       {k: params[k] for k in NETWORK_PARTS}, model_state,
                       images, rng)
  if run.labels is None:
    raise ValueError(
        f"{fn}: `images` must be the batch dict {{'image': ..., 'label': "
        f"...}}; metric learning is supervised and needs the labels.")
  value, update = objective(config, run.outputs["projection"],
                            jnp.asarray(run.labels), params, method_state)
  return value, _shared.step_output(run, update=update)


def post_update(config, params, method_state: MetricState, update: dict,
                step) -> MetricState:
  """Moves the center loss's centers towards this batch's features."""
  del params, step
  if method_state.centers is None:
    return method_state
  return MetricState(metric_losses.center_loss_update(
      method_state.centers, update["features"], update["labels"],
      alpha=config.method.center_alpha))


METHOD = Method(name="metric", init=init, loss=loss, post_update=post_update,
                encode=_shared.encode, default_config=default_config)
