"""Supervised deep metric learning: an embedding trained with one of the
metric losses of `ssljax.losses`, chosen by `loss`.

The network is the backbone f and an embedding head g (an MLP, or one linear
layer with `proj_layers=1`); each image gives `num_views` augmented views,
every view one sample z = g(f(view)) carrying its image's label. Losses:

  embedding losses (z l2-normalised first when `normalize`):
    "contrastive_pair"   Hadsell et al. 2006, on the pairs described below;
    "triplet"            in-batch triplets, `mining` = "batch_hard" |
                         "batch_all" (Hermans et al. 2017) | "semi_hard"
                         (Schroff et al. 2015, FaceNet), on Euclidean or
                         (`squared`) squared Euclidean distances;
    "n_pair"             Sohn 2016, pairs of distinct classes (below);
    "lifted_structured"  Song et al. 2016;
    "soft_nearest_neighbour"  Frosst et al. 2019.
  class-weight losses (on the raw embedding; they normalise what their
  papers normalise):
    "center_loss"        Wen et al. 2016: softmax cross-entropy of a linear
                         classifier (`class_weights`: kernel [D, C] and bias
                         [C]) + λ·center loss, λ = `center_weight`,
                             L = mean_i CE(W z_i + b, y_i)
                                 + λ · mean_i ½ ||z_i − c_{y_i}||²;
                         the centers c [C, D] are `method_state.centers`,
                         moved by `losses.center_loss_update` (rate
                         `center_alpha`) after each step, never by the
                         gradient;
    "sphereface", "cosface", "arcface"  Liu et al. 2017, Wang et al. 2018,
                         Deng et al. 2019, class weights [D, C] in
                         `params["class_weights"]["kernel"]`.

`margin`, `scale` (class-weight losses), `temperature` (soft nearest
neighbour) and `l2_reg` (N-pair) default to None, the loss function's own
default (0.2 for the triplet); the number of classes is `num_classes`.

Pairs from the batch. "contrastive_pair" and "n_pair" need class-balanced
batches, P = `classes_per_batch` classes of K = B / P images laid out class
by class (`ssljax.data.balanced` makes them; the training loop reads
`config.method.classes_per_batch`). The V·B samples are grouped [P, M, D]
(M = V·K samples of each class; column k·V + v holds view v of the class's
k-th image): "n_pair" averages Sohn's loss over the M pairings (row j of
class p, row j + 1 of class p) for j < M, each a set of P pairs of distinct
classes with in-batch negatives; "contrastive_pair" pairs every sample with
the next sample of its class (a similar pair) and with the sample at the
same position of the next class (a dissimilar pair), so similar and
dissimilar pairs are balanced. Their `same` flags come from the labels, so
a batch that is not laid out this way gives a correct but differently mixed
set of pairs. The other losses read labels only.

Defaults follow the official code of the default loss, batch-hard triplets
(VisualComputingInstitute/triplet-reid): ResNet-50, the "fc1024" head
(Linear 1024-BN-ReLU, Linear 128), embeddings not normalised, Euclidean
distances, one view per image (a random crop of 79% of the area, flipped
with p 0.5). FaceNet's semi-hard recipe is `normalize=True, squared=True`.
The differences left (chiefly the hinge margin where the official default
is the soft margin) are listed in docs/fidelity.md#metric.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.metric(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                         proj_dim=8, loss="arcface", num_classes=2)
  >>> batch = {"image": jnp.zeros((4, 16, 16, 3), jnp.uint8),
  ...          "label": jnp.array([0, 0, 1, 1])}
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 batch)
  >>> print(params["class_weights"]["kernel"].shape)
  (8, 2)
  >>> loss, out = method.loss(params, model_state, method_state, batch,
  ...                         jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ssljax import _common, losses, models
from ssljax.methods import _breadth, _shared
from ssljax.methods.base import Method

LOSSES = ("contrastive_pair", "triplet", "n_pair", "lifted_structured",
          "soft_nearest_neighbour", "center_loss", "sphereface", "cosface",
          "arcface")
# Losses over pairs laid out by class (P×K batches).
PAIR_LOSSES = ("contrastive_pair", "n_pair")
# Losses with class parameters: weights [D, C] (and a bias for the softmax
# beside the center loss).
CLASS_WEIGHT_LOSSES = ("center_loss", "sphereface", "cosface", "arcface")
# The parts of `params` that the network's `apply` takes; the class weights
# sit beside them.
NETWORK_PARTS = ("backbone", "projector")
_MARGIN_SOFTMAX = {"sphereface": losses.sphereface,
                   "cosface": losses.cosface, "arcface": losses.arcface}
_LABELLED = {"lifted_structured": (losses.lifted_structured, "margin"),
             "soft_nearest_neighbour": (losses.soft_nearest_neighbour,
                                        "temperature")}


class CenterLossState(NamedTuple):
  """The center loss's class centers [C, D] (the other losses carry
  nothing: their state is `()`)."""
  centers: jax.Array


class CenterUpdate(NamedTuple):
  """What the center loss hands to `post_update`: the batch's embeddings
  [V·B, D] and their labels [V·B]."""
  features: jax.Array
  labels: jax.Array


# ------------------------------------------------------------ objectives ---


def samples(z: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """[V, B, D] embeddings and [B] labels -> [V·B, D] and [V·B]."""
  return z.reshape(-1, z.shape[-1]), jnp.tile(labels, z.shape[0])


def group_by_class(z: jax.Array, labels: jax.Array, classes_per_batch: int
                   ) -> tuple[jax.Array, jax.Array]:
  """[V, B, ...] and [B] -> [P, V·K, ...] and [P, V·K] for P×K batches.

  Sample (view v, image p·K + k) goes to row p, column k·V + v: the views
  of one image are adjacent.

  Raises:
    ValueError: if `classes_per_batch` does not divide the batch size.

  Example:
    >>> x, y = group_by_class(jnp.arange(4.0).reshape(1, 4, 1),
    ...                       jnp.array([3, 3, 5, 5]), 2)
    >>> print(x[..., 0].tolist(), y.tolist())
    [[0.0, 1.0], [2.0, 3.0]] [[3, 3], [5, 5]]
  """
  n_views, batch = z.shape[:2]
  if batch % classes_per_batch:
    raise ValueError(
        f"metric: the pair losses need class-balanced batches: "
        f"`classes_per_batch` = {classes_per_batch} must divide the batch "
        f"size {batch}.")

  def group(x):
    x = x.reshape(n_views, classes_per_batch, batch // classes_per_batch,
                  *x.shape[2:])
    x = jnp.moveaxis(x, 0, 2)  # [P, K, V, ...]
    return x.reshape(classes_per_batch, -1, *x.shape[3:])

  return group(z), group(jnp.broadcast_to(labels, (n_views, batch)))


def contrastive_pairs(z: jax.Array, labels: jax.Array, *,
                      classes_per_batch: int, **options) -> jax.Array:
  """`losses.contrastive_pair` over the P×K pairs of the module docstring:
  each sample with the next one of its class and with the same position of
  the next class. `options`: the loss's `margin`."""
  x, y = group_by_class(z, labels, classes_per_batch)
  partners = [jnp.roll(x, -1, axis=1), jnp.roll(x, -1, axis=0)]
  partner_labels = [jnp.roll(y, -1, axis=1), jnp.roll(y, -1, axis=0)]
  dim = x.shape[-1]
  x1 = jnp.concatenate([x, x]).reshape(-1, dim)
  x2 = jnp.concatenate(partners).reshape(-1, dim)
  same = jnp.concatenate([y, y]) == jnp.concatenate(partner_labels)
  return losses.contrastive_pair(x1, x2, same.reshape(-1), **options)


def n_pairs(z: jax.Array, labels: jax.Array, *, classes_per_batch: int,
            **options) -> jax.Array:
  """`losses.n_pair` averaged over the M pairings of the module docstring.
  `options`: the loss's `l2_reg`."""
  x, _ = group_by_class(z, labels, classes_per_batch)
  anchors = jnp.swapaxes(x, 0, 1)                   # [M, P, D]
  positives = jnp.roll(anchors, -1, axis=0)
  return jnp.mean(jax.vmap(lambda a, p: losses.n_pair(a, p, **options))(
      anchors, positives))


def center_loss_objective(z: jax.Array, labels: jax.Array, classifier: dict,
                          centers: jax.Array, *, center_weight: float
                          ) -> tuple[jax.Array, CenterUpdate]:
  """Wen et al., eq. 5: L = L_softmax + λ·L_center, the centers held fixed
  (they move in `post_update`)."""
  x, y = samples(_common.to_compute(z), labels)
  logits = x @ classifier["kernel"] + classifier["bias"]
  softmax = jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, y))
  center = losses.center_loss(x, y, jax.lax.stop_gradient(centers))
  return (softmax + center_weight * center,
          CenterUpdate(jax.lax.stop_gradient(x), y))


def objective(loss: str, *, normalize: bool, squared: bool, mining: str,
              margin: Optional[float], scale: Optional[float],
              temperature: Optional[float], l2_reg: Optional[float],
              classes_per_batch: int, center_weight: float) -> Callable:
  """`objective(z, labels, params, method_state) -> (value, update)` of the
  chosen loss, z the [V, B, D] embeddings of the views (arguments as
  `metric`; a None option is the loss function's default)."""
  given = {k: v for k, v in dict(margin=margin, scale=scale,
                                 temperature=temperature,
                                 l2_reg=l2_reg).items() if v is not None}

  def options(*names):
    return {n: given[n] for n in names if n in given}

  def embedding(z):
    z = _common.to_compute(z)
    return _common.l2_normalize(z) if normalize else z

  def value_of(z, labels, params, method_state) -> tuple[jax.Array, Any]:
    if loss == "center_loss":
      return center_loss_objective(z, labels, params["class_weights"],
                                   method_state.centers,
                                   center_weight=center_weight)
    if loss in _MARGIN_SOFTMAX:
      x, y = samples(z, labels)
      return _MARGIN_SOFTMAX[loss](x, y, params["class_weights"]["kernel"],
                                   **options("margin", "scale")), ()
    if loss == "contrastive_pair":
      return contrastive_pairs(embedding(z), labels,
                               classes_per_batch=classes_per_batch,
                               **options("margin")), ()
    if loss == "n_pair":
      return n_pairs(embedding(z), labels,
                     classes_per_batch=classes_per_batch,
                     **options("l2_reg")), ()
    x, y = samples(embedding(z), labels)
    if loss == "triplet":
      return losses.batch_triplet(x, y, mining=mining, squared=squared,
                                  **options("margin")), ()
    fn, name = _LABELLED[loss]
    return fn(x, y, **options(name)), ()

  return value_of


# ------------------------------------------------------------- factory ---


def _check(fn: str, loss: str, num_classes: int, classes_per_batch: int,
           center_weight: float, center_alpha: float) -> None:
  """The hyper-parameter checks that no loss function makes."""
  if loss not in LOSSES:
    raise ValueError(f"{fn}: unknown `loss` {loss!r}; valid losses: "
                     f"{', '.join(LOSSES)}.")
  _common.check_count(classes_per_batch, "classes_per_batch", fn,
                      minimum=1 if loss in PAIR_LOSSES else 0)
  if loss in CLASS_WEIGHT_LOSSES:
    _common.check_count(num_classes, "num_classes", fn, minimum=2)
  _common.check_non_negative(center_weight, "center_weight", fn)
  _common.check_in_range(center_alpha, 0.0, 1.0, "center_alpha", fn)


def metric(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _shared.augment_config(
               "simclr", scale=(0.79, 0.79), ratio=(1.0, 1.0),
               jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0),
           dtype: str = "float32", num_views: int = 1,
           proj_hidden_dim: int = 1024, proj_dim: int = 128,
           proj_layers: int = 2, normalize: bool = False,
           loss: str = "triplet", mining: str = "batch_hard",
           squared: bool = False, margin: float | None = None,
           scale: float | None = None, temperature: float | None = None,
           l2_reg: float | None = None, num_classes: int = 10,
           classes_per_batch: int = 0, center_weight: float = 0.003,
           center_alpha: float = 0.5, view_batchnorm: str = "joint"
           ) -> Method:
  """Supervised metric learning (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`.
    augment: the views' recipe; its first `num_views` views are used.
    num_views: views per image, each a sample with the image's label.
    proj_hidden_dim, proj_dim, proj_layers: the embedding head.
    normalize: l2-normalise the embeddings of the embedding losses.
    loss: one of `LOSSES`.
    mining, squared: the triplet loss's mining and distance.
    margin, scale, temperature, l2_reg: the loss's options (None: its
      default).
    num_classes: classes of the class-weight losses.
    classes_per_batch: P of the P×K batches (0: batches are not balanced;
      the pair losses need P >= 1).
    center_weight, center_alpha: λ and α of the center loss.
    view_batchnorm: "joint" (equal-sized views in one call) or "per_view";
      the same with one view.

  Raises:
    ValueError: naming the argument for an unknown `loss`, a bad
      `classes_per_batch`, `num_classes`, `center_weight`, `center_alpha`,
      `num_views` or `view_batchnorm`, or an option the chosen loss rejects
      (its check runs here, on a dummy batch).
  """
  fn = "metric"
  _check(fn, loss, num_classes, classes_per_batch, center_weight,
         center_alpha)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  used = _breadth.views_used(setup, num_views, fn)
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  model = _shared.with_projector(setup, proj_hidden_dim, proj_dim,
                                 num_layers=proj_layers)
  value_of = objective(loss, normalize=normalize, squared=squared,
                       mining=mining, margin=margin, scale=scale,
                       temperature=temperature, l2_reg=l2_reg,
                       classes_per_batch=classes_per_batch,
                       center_weight=center_weight)

  def class_parameters(rng):
    """Class weights (and the center loss's bias and zero centers)."""
    if loss not in CLASS_WEIGHT_LOSSES:
      return {}, ()
    kernel = jax.nn.initializers.lecun_normal()(rng, (proj_dim, num_classes))
    if loss != "center_loss":
      return {"class_weights": {"kernel": kernel}}, ()
    return ({"class_weights": {"kernel": kernel,
                               "bias": jnp.zeros((num_classes,))}},
            CenterLossState(jnp.zeros((num_classes, proj_dim))))

  # The losses check their options when traced: trace once on a dummy
  # P×2 batch so that a bad option stops the factory, not the first step.
  probe_labels = jnp.repeat(jnp.arange(max(classes_per_batch, 2)), 2)
  jax.eval_shape(lambda: value_of(
      jnp.zeros((1, probe_labels.size, proj_dim)), probe_labels,
      *class_parameters(jax.random.key(0))))

  def init(rng, batch):
    net_rng, class_rng = jax.random.split(rng)
    params, model_state = _shared.initialize(setup, model, net_rng, batch)
    extra, method_state = class_parameters(class_rng)
    return {**params, **extra}, model_state, method_state

  def loss_fn(params, model_state, method_state, batch, rng, step):
    del step  # No schedule.
    labels = _shared.labels_of(batch, fn)
    views = used.make(rng, batch)
    outputs, new_state = _shared.forward(
        model, {k: params[k] for k in NETWORK_PARTS}, model_state, views,
        joint=joint)
    value, update = value_of(outputs["projection"], labels, params,
                             method_state)
    return value, _shared.step_output(
        _shared.Online(views, outputs, new_state), update=update)

  def post_update(params, method_state, update, step):
    del step  # No schedule.
    if loss != "center_loss":
      return params, method_state
    return params, CenterLossState(losses.center_loss_update(
        method_state.centers, update.features, update.labels,
        alpha=center_alpha))

  return Method(name="metric", init=init, loss=loss_fn,
                post_update=post_update, encode=_shared.encoder(setup),
                crops=used.crops)
