"""SeLa: self-labelling by equipartitioned optimal transport.

Asano, Rupprecht & Vedaldi, "Self-labelling via simultaneous clustering and
representation learning", ICLR 2020; the official code (yukimasano/
self-label, `main.py`, `sinkhornknopp.py`, `data.py`).

A backbone f and H linear heads, each over K clusters, are trained with the
cross-entropy against labels y^h that are themselves chosen to minimise it,
subject to an equal share N/K of the N training examples per cluster.
With P^h_nk = softmax(W_h f(x_n) + b_h)_k on the whole training set,
the relaxed labelling is the transport plan

    Q^h = diag(α) (P^h)^λ diag(β),   Q^h 1 = 1/N,   (Q^h)ᵀ 1 = 1/K,

found by Sinkhorn-Knopp (`ssljax.state.sinkhorn` on the log-probabilities
with ε = 1/λ, λ = 25), and y^h_n = argmax_k Q^h_nk (`sinkhorn_labels`);
the heads are labelled independently. Between two labellings the loss is

    loss = 1/(H·B) Σ_h Σ_b CE(W_h f(v_b) + b_h, y^h_b),

v_b one augmented view of example b, whose labels the batch's "index"
finds. The views follow the official `augs=3`: a random resized crop, a
grayscale conversion with probability 0.2, then a colour jitter (0.4, 0.4,
0.4, 0.4) always, then a flip; grayscale comes BEFORE the jitter
(`grayscale_first`, where `ssljax.data.augment` jitters first).

The label updates follow the official schedule (`label_steps`): the
`label_updates` = 100 optimisations are spread quadratically over the run,
update j at step ⌈H·(j/(n − 1))²⌉ with H = `label_horizon` (the official
(epochs + 1.01) epochs of samples, just past the run's end: the last one
never happens), so they are dense at the start (4% of an ImageNet epoch
apart) and sparse at the end (8 epochs apart); `label_power` = 1 spaces
them evenly, as the official CIFAR script. The training loop's dataset
pass runs every `reassign_every` steps (`DatasetUpdate.every`); a pass
relabels when an update falls since the previous pass (so each update is
delayed to the next pass, merged with others due before it; with
`reassign_every` = 1 the official steps are exact), and a pass that does
not relabel skips the network. `label_horizon` = 0 relabels at every pass,
the linear schedule that the authors say works as well. The update logs
whether it relabelled, the entropy of the label distribution and the
fraction of clusters in use (log K and 1 when equipartitioned), and the
NMI with the previous labels. `encode` is the backbone in eval mode.

Defaults are the official ResNet-50 run, SeLa [3k × 10] (`scripts/
resnet.sh`): K = 3000, H = 10 heads, λ = 25, 400 epochs of 1,281,167
images in steps of 256 with 100 label optimisations, heads initialised as
PyTorch's `nn.Linear`, U(±1/√D) (the scale matters: λ·log P sets how sharp
the plan is, and the arg-max of a nearly uniform plan, from heads of
N(0, 0.01²) on small features, neither balances the clusters nor follows
the network). The optimizer (SGD over every parameter, momentum 0.9, weight
decay 1e-5) is in `configs/sela.py`.

Where this differs from the official code (docs/fidelity.md#sela): label
updates delayed to the next dataset pass; Sinkhorn-Knopp for
`sinkhorn_iters` iterations in float32 in the log domain, where the
official code iterates in float64 until the column scalings change by less
than 0.1 in total; the labelled outputs are those of the eval-mode network
on the un-augmented images (the official ones: train mode, augmented); the
official learning rate drops tenfold at epochs 150, 300 and 350, the
configs' follow a cosine.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.sela(backbone="tiny_cnn", num_clusters=4,
  ...                       num_heads=2, num_examples=8)
  >>> images = jax.random.randint(jax.random.key(3), (8, 16, 16, 1), 0, 256,
  ...                             jnp.uint8)
  >>> params, model_state, state = method.init(jax.random.key(0), images)
  >>> update = method.dataset_update
  >>> features = update.features(params, model_state, state, images)
  >>> params, state, metrics = update.update(
  ...     params, model_state, state, features, jax.random.key(1), 0)
  >>> print(state.labels.shape, float(metrics["clusters_used_fraction"]))
  (2, 8) 1.0
  >>> print(label_steps(5, 160))  # 160 · (j / 4)², rounded up
  (0, 10, 40, 90, 160)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ssljax import _common, models
from ssljax.data import augment as augment_lib
from ssljax.losses import classification
from ssljax.methods import _pseudo_labels, _shared
from ssljax.methods.base import DatasetUpdate, Method
from ssljax.state import sinkhorn

HEADS = "heads"

# The official `augs=3` views: RandomResizedCrop, RandomGrayscale(0.2),
# ColorJitter(0.4, 0.4, 0.4, 0.4) always, RandomHorizontalFlip.
SELA_AUGMENT = _shared.augment_config(
    "byol", jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.4,
    hue=0.4, grayscale_prob=0.2, blur_prob=0.0, solarize_prob=0.0)

# The official run's label schedule spans (400 + 1.01) epochs of ImageNet's
# images in steps of 256.
OFFICIAL_LABEL_HORIZON = round(
    (400 + 1.01) * _pseudo_labels.IMAGENET_TRAIN_SIZE / 256)


class SeLaState(NamedTuple):
  """SeLa's state.

  Attributes:
    labels: int32 [H, N], the label of example n for head h.
    relabel_next: bool scalar, whether the next dataset pass relabels (a
      pass that does not skips the network).
  """
  labels: jax.Array
  relabel_next: jax.Array


def label_steps(label_updates: int, label_horizon: int, power: int = 2
                ) -> tuple[int, ...]:
  """The official steps of SeLa's label optimisations: ⌈H·(j/(n − 1))^p⌉.

  The official code optimises the labels at sample counts
  (E + 1.01)·N·(j/(n − 1))² (`main.py`, ImageNet; p = 2) or
  (E + 1.0001)·N·j/(n − 1) (`cifar.py`; p = 1), j = 0, ..., n − 1 popped in
  increasing order, each at the first iteration whose samples reach it; in
  steps of B samples that is ⌈H·j^p/(n − 1)^p⌉ with H = (E + 1.01)·N / B,
  computed here in integers.

  Args:
    label_updates: n >= 2.
    label_horizon: H >= 0, in steps.
    power: p >= 1.

  Example:
    >>> label_steps(4, 90), label_steps(4, 90, power=1)
    ((0, 10, 40, 90), (0, 30, 60, 90))
  """
  fn = "label_steps"
  _common.check_count(label_updates, "label_updates", fn, minimum=2)
  _common.check_count(label_horizon, "label_horizon", fn)
  _common.check_count(power, "label_power", fn, minimum=1)
  last = (label_updates - 1) ** power
  return tuple(-(-label_horizon * j ** power // last)
               for j in range(label_updates))


def sinkhorn_labels(logits: jax.Array, *, lambda_: float,
                    iterations: int) -> jax.Array:
  r"""SeLa's labels: argmax_k of Q ∝ softmax(logits)^λ with equal clusters.

  Sinkhorn-Knopp (`ssljax.state.sinkhorn`) on log P = log_softmax(logits)
  with ε = 1/λ rescales P^λ = exp(log P / ε) alternately so that every
  cluster holds N/K of the mass and every example 1; the label of example n
  is the arg-max of its row (the final row scaling does not change it).

  Args:
    logits: [N, K] head outputs of the whole training set.
    lambda_: λ > 0; larger follows the network's predictions more closely.
    iterations: Sinkhorn-Knopp iterations.

  Returns:
    int32 [N] labels, each cluster holding about N/K examples.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.array([[2., 0.], [1., 0.], [0.5, 0.], [0., 1.]])
    >>> # all prefer cluster 0 but the least sure of them moves to 1
    >>> print(sinkhorn_labels(logits, lambda_=25.0, iterations=50).tolist())
    [0, 0, 1, 1]
  """
  fn = "sinkhorn_labels"
  _common.check_rank(logits, 2, "logits", fn)
  _common.check_positive(lambda_, "lambda_", fn)
  log_p = jax.nn.log_softmax(_common.to_compute(logits), axis=-1)
  codes = sinkhorn(log_p, epsilon=1.0 / lambda_, iterations=iterations)
  return jnp.argmax(codes, axis=1).astype(jnp.int32)


def sela(*, backbone: str | models.Model = "resnet50",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = SELA_AUGMENT, dtype: str = "float32",
         num_clusters: int = 3000, num_heads: int = 10,
         lambda_: float = 25.0, sinkhorn_iters: int = 100,
         label_updates: int = 100,
         label_horizon: int = OFFICIAL_LABEL_HORIZON, label_power: int = 2,
         reassign_every: int = _pseudo_labels.IMAGENET_EPOCH_STEPS,
         num_examples: int = _pseudo_labels.IMAGENET_TRAIN_SIZE,
         grayscale_first: bool = True) -> Method:
  """SeLa (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`.
    augment: the recipe whose first view each step trains on.
    num_clusters: K, per head.
    num_heads: H.
    lambda_: λ of the transport plan (ε = 1/λ).
    sinkhorn_iters: Sinkhorn-Knopp iterations of each labelling.
    label_updates, label_horizon, label_power: the label schedule
      (`label_steps`; power 2 is the official ImageNet spacing, 1 the CIFAR
      script's); label_horizon = 0 relabels at every dataset pass.
    reassign_every: steps between two dataset passes.
    num_examples: training examples N (rows of the per-example labels).
    grayscale_first: grayscale before the colour jitter (official), else
      `ssljax.data.augment`'s order (jitter, then grayscale).
  """
  fn = "sela"
  _pseudo_labels.check_clusters(num_clusters, num_examples, fn)
  _common.check_count(num_heads, "num_heads", fn, minimum=1)
  _common.check_positive(lambda_, "lambda_", fn)
  _common.check_count(sinkhorn_iters, "sinkhorn_iters", fn, minimum=1)
  _common.check_count(reassign_every, "reassign_every", fn, minimum=1)
  steps = jnp.asarray(label_steps(label_updates, label_horizon, label_power),
                      jnp.int32)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(setup.backbone)
  encode = _shared.encoder(setup)
  make_view = (grayscale_first_view(setup, augment) if grayscale_first
               else functools.partial(_pseudo_labels.one_view, setup))
  label = functools.partial(sinkhorn_labels, lambda_=lambda_,
                            iterations=sinkhorn_iters)

  def due(step):
    """Whether a label update falls in (step − reassign_every, step]."""
    if not label_horizon:
      return jnp.ones((), bool)
    return jnp.any((steps > step - reassign_every) & (steps <= step))

  def init(rng, batch):
    net_rng, head_rng = jax.random.split(rng)
    params, model_state = _shared.initialize(setup, model, net_rng, batch)
    width = jax.eval_shape(
        lambda: encode(params, model_state, (), batch)).shape[-1]
    params[HEADS] = _pseudo_labels.init_heads(
        head_rng, num_heads=num_heads, in_dim=width,
        num_classes=num_clusters, std=None)
    labels = _pseudo_labels.init_labels(num_examples, num_heads,
                                        weighted=False).labels
    return params, model_state, SeLaState(labels, due(0))

  def loss(params, model_state, method_state, batch, rng, step):
    del step  # The targets change only at the label updates.
    labels, _ = _pseudo_labels.batch_labels(
        _pseudo_labels.PseudoLabels(method_state.labels), batch, "sela.loss")
    views = make_view(rng, batch)
    outputs, model_state = _shared.forward(
        model, {"backbone": params["backbone"]}, model_state, views,
        joint=False)
    # [H, 1, B, K] logits of the [1, B, D] features; labels [H, 1, B].
    logits = _pseudo_labels.apply_heads(params[HEADS], outputs["features"])
    labels = labels[:, None, :]
    return classification.cross_entropy(logits, labels), _shared.step_output(
        _shared.Online(views, outputs, model_state),
        {"pseudo_label_accuracy": classification.accuracy(logits, labels)})

  def features(params, model_state, method_state, images):
    """Backbone features [B, D] in eval mode of the un-augmented images,
    float32; zeros when the pass does not relabel."""
    compute = lambda: encode(params, model_state, method_state,
                             images).astype(jnp.float32)
    return jax.lax.cond(method_state.relabel_next, compute,
                        lambda: jnp.zeros(jax.eval_shape(compute).shape,
                                          jnp.float32))

  def update(params, model_state, method_state, features, rng, step):
    """Every head's `sinkhorn_labels` of its outputs on the whole training
    set when a label update is due; logs "relabelled", the label entropy,
    the clusters in use and the NMI with the previous labels (mean over
    heads)."""
    del model_state, rng  # The labels are a function of the outputs.
    _pseudo_labels.check_features(features, num_examples, "sela.update")
    # One head at a time: its [N, K] plan is the update's largest array.
    relabel = lambda: jax.lax.map(
        lambda head: label(_pseudo_labels.apply_heads(
            jax.tree.map(lambda a: a[None], head), features)[0]),
        params[HEADS])
    relabelled = due(step)
    labels = jax.lax.cond(relabelled, relabel, lambda: method_state.labels)
    metrics = _pseudo_labels.cluster_statistics(labels, num_clusters)
    metrics["nmi_previous"] = jnp.mean(jax.vmap(
        _pseudo_labels.normalized_mutual_information)(labels,
                                                      method_state.labels))
    metrics["relabelled"] = relabelled.astype(jnp.float32)
    return params, SeLaState(labels, due(step + reassign_every)), metrics

  return Method(
      name=fn, init=init, loss=loss, post_update=_shared.keep, encode=encode,
      crops=_pseudo_labels.one_view_crops(setup),
      dataset_update=DatasetUpdate(every=reassign_every, features=features,
                                   update=update))


def grayscale_first_view(setup: _shared.Setup, augment: Mapping
                         ) -> Callable:
  """`view(rng, batch) -> (view,)`: the first view of `augment` with its
  grayscale conversion before its colour jitter (the official SeLa order;
  `ssljax.data.augment` jitters first), both with the recipe's settings,
  then standardised with the recipe's statistics."""
  # The recipe without its colour operations ("none" takes no settings).
  no_colour = ({} if augment["preset"] == "none"
               else {"jitter_prob": 0.0, "grayscale_prob": 0.0})
  crop_and_flip = _shared.views({**augment, **no_colour})

  def view(rng, batch):
    crop_rng, gray_rng, jitter_rng = jax.random.split(rng, 3)
    x, = crop_and_flip.make(crop_rng, batch, count=1, normalize=False)
    recipes = setup.views.specs(x.shape[1])
    if recipes:
      spec = recipes[0]
      x = augment_lib.batched(augment_lib.grayscale)(
          gray_rng, x, p=spec.grayscale_prob)
      x = augment_lib.batched(augment_lib.color_jitter)(
          jitter_rng, x, brightness=spec.brightness, contrast=spec.contrast,
          saturation=spec.saturation, hue=spec.hue, p=spec.jitter_prob)
    mean, std = augment.get("mean"), augment.get("std")
    if mean is None:
      mean, std = augment_lib.default_stats(x.shape[-1])
    return (augment_lib.normalize(x, mean=mean, std=std),)

  return view
