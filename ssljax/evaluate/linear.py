"""Linear probe: multinomial logistic regression on frozen features.

The linear evaluation protocol of the self-supervised literature (Zhang et
al. 2016; SimCLR, Chen et al. 2020; MoCo; DINO): the encoder is frozen and a
linear classifier on its features minimises

    logits = x W + b,   loss = mean_b −log softmax(logits_b)[y_b] (+ λ/2 ||W||²).

The optimizer is SGD with Nesterov momentum 0.9 (SimCLR's linear
evaluation) and a cosine decay of the learning rate to 0 over all steps (as
DINO's `eval_linear.py`). Weight decay is an L2 term on W (not b) added to
the gradient, so the minimiser is that of the regularised objective above;
with λ = 1/(C_sklearn · N) it is scikit-learn's
`LogisticRegression(C=C_sklearn)`. The default is no weight decay, as in
SimCLR's, MoCo's and DINO's ImageNet linear evaluation.

`linear_probe` is the experiment driver: it standardises the features, picks
the labelled subset, trains for a number of epochs in one compiled program
and reports accuracies. `linear_probe_init` / `linear_probe_step` are the
pure pieces for callers who train a probe inside their own jitted code (e.g.
online, next to pre-training).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ssljax._common import (check_count, check_dim, check_labels,
                            check_non_negative, check_positive, check_rank,
                            to_compute)
from ssljax.evaluate._checks import check_num_classes, check_split


class LinearParams(NamedTuple):
  """A linear classifier, logits = features @ weights + bias.

  Attributes:
    weights: [D, C].
    bias: [C].
  """
  weights: jax.Array
  bias: jax.Array


class LinearProbeState(NamedTuple):
  """Parameters and optimizer state of a linear probe being trained."""
  params: LinearParams
  opt_state: optax.OptState


class LinearProbeResult(NamedTuple):
  """What `linear_probe` reports.

  Attributes:
    train_top1: accuracy in [0, 1] on the labelled training rows it used.
    test_top1: accuracy in [0, 1] on the test rows.
    params: the trained classifier acting on the *raw* (unstandardised)
      features: the standardisation is folded into its weights and bias.
  """
  train_top1: jax.Array
  test_top1: jax.Array
  params: LinearParams


def linear_probe_optimizer(*, learning_rate: float, total_steps: int,
                           weight_decay: float = 0.0,
                           momentum: float = 0.9
                           ) -> optax.GradientTransformation:
  """Nesterov SGD with a cosine-decayed rate and L2 weight decay on W.

      g ← ∇ mean CE + λ W (W only),   lr(t) = lr₀ · ½ (1 + cos(π t / T)).

  Args:
    learning_rate: lr₀ > 0.
    total_steps: T >= 1, steps over which the rate decays to 0.
    weight_decay: λ >= 0.
    momentum: Nesterov momentum in [0, 1).

  Returns:
    An optax `GradientTransformation` over `LinearParams`.

  Example:
    >>> from ssljax.evaluate import linear_probe_init, linear_probe_optimizer
    >>> optimizer = linear_probe_optimizer(learning_rate=0.1, total_steps=10)
    >>> state = linear_probe_init(3, 2, optimizer=optimizer)
    >>> print(state.params.weights.shape, state.params.bias.shape)
    (3, 2) (2,)
  """
  fn = "linear_probe_optimizer"
  check_positive(learning_rate, "learning_rate", fn)
  check_count(total_steps, "total_steps", fn, minimum=1)
  check_non_negative(weight_decay, "weight_decay", fn)
  if not 0 <= momentum < 1:
    raise ValueError(f"{fn}: `momentum` must be in [0, 1), got {momentum}.")
  return optax.chain(
      optax.add_decayed_weights(
          weight_decay, mask=LinearParams(weights=True, bias=False)),
      optax.sgd(optax.cosine_decay_schedule(learning_rate, total_steps),
                momentum=momentum, nesterov=True))


def linear_probe_init(dim: int, num_classes: int, *,
                      optimizer: optax.GradientTransformation
                      ) -> LinearProbeState:
  """A zero classifier (the convex problem needs no random start).

  Args:
    dim: D, the feature dimension.
    num_classes: C.
    optimizer: the optax transformation `linear_probe_step` will use, e.g.
      `linear_probe_optimizer(...)`.

  Returns:
    A `LinearProbeState` with float32 [D, C] weights and [C] bias.

  Example:
    >>> import optax
    >>> from ssljax.evaluate import linear_probe_init
    >>> state = linear_probe_init(4, 3, optimizer=optax.sgd(0.1))
    >>> print(float(state.params.weights.sum()), state.params.bias.shape)
    0.0 (3,)
  """
  fn = "linear_probe_init"
  check_count(dim, "dim", fn, minimum=1)
  check_num_classes(num_classes, fn)
  params = LinearParams(weights=jnp.zeros((dim, num_classes), jnp.float32),
                        bias=jnp.zeros((num_classes,), jnp.float32))
  return LinearProbeState(params=params, opt_state=optimizer.init(params))


def _logits(params: LinearParams, features: jax.Array) -> jax.Array:
  return features @ params.weights + params.bias


def linear_probe_loss(params: LinearParams, features: jax.Array,
                      labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy of a linear classifier.

      loss = mean_b [logsumexp(x_b W + b) − (x_b W + b)_{y_b}]

  Labels outside [0, C) raise when concrete; under `jax.jit` they make the
  loss NaN rather than being clipped silently.

  Args:
    params: `LinearParams` with [D, C] weights.
    features: [B, D].
    labels: [B] integer labels in [0, C).

  Returns:
    Scalar loss, float32 for half-precision features.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import LinearParams, linear_probe_loss
    >>> params = LinearParams(jnp.zeros((2, 4)), jnp.zeros(4))
    >>> loss = linear_probe_loss(params, jnp.ones((3, 2)), jnp.array([0, 1, 3]))
    >>> print(round(float(loss), 4))  # log 4
    1.3863
  """
  fn = "linear_probe_loss"
  check_rank(params.weights, 2, "params.weights", fn)
  dim, num_classes = np.shape(params.weights)
  check_split(fn, features, labels, num_classes=num_classes,
              features_name="features", labels_name="labels")
  if np.shape(features)[1] != dim:
    raise ValueError(
        f"{fn}: `features` must have D={dim} columns (the rows of "
        f"`params.weights`), got shape {np.shape(features)}.")
  per_example = optax.softmax_cross_entropy_with_integer_labels(
      _logits(params, to_compute(features)), labels)
  in_range = (labels >= 0) & (labels < num_classes)
  return jnp.mean(jnp.where(in_range, per_example, jnp.nan))


def linear_probe_step(state: LinearProbeState, features: jax.Array,
                      labels: jax.Array, *,
                      optimizer: optax.GradientTransformation
                      ) -> tuple[LinearProbeState, jax.Array]:
  """One optimizer step on `linear_probe_loss`; pure and jittable.

  Under `jax.jit` with the batch sharded over a mesh and the state
  replicated, the gradient is the global-batch gradient (the compiler
  inserts the all-reduce).

  Args:
    state: from `linear_probe_init` (or a previous step).
    features: [B, D] frozen features (standardise them first if the
      optimizer's learning rate assumes unit-scale inputs).
    labels: [B] integer labels.
    optimizer: the transformation `state` was initialised with.

  Returns:
    (new state, the batch loss before the update).

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from ssljax.evaluate import linear_probe_init, linear_probe_step
    >>> optimizer = optax.sgd(1.0)
    >>> step = jax.jit(lambda s, x, y: linear_probe_step(s, x, y,
    ...                                                   optimizer=optimizer))
    >>> state = linear_probe_init(1, 2, optimizer=optimizer)
    >>> x, y = jnp.array([[1.], [-1.]]), jnp.array([0, 1])
    >>> for _ in range(50):
    ...   state, loss = step(state, x, y)
    >>> print(float(loss) < 0.05)
    True
  """
  loss, grads = jax.value_and_grad(linear_probe_loss)(state.params, features,
                                                      labels)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return LinearProbeState(params=params, opt_state=opt_state), loss


def class_balanced_subset(labels, fraction: float, *, num_classes: int,
                          seed: int = 0) -> np.ndarray:
  """Indices of a seeded subset keeping the same fraction of every class.

  Class c with n_c examples keeps max(1, ⌊fraction · n_c + ½⌋) of them,
  drawn without replacement, so the subset has the class proportions of the
  full set (exactly balanced when the full set is, like the 1% and 10%
  ImageNet subsets of the semi-supervised tables) and no class vanishes.
  `fraction = 1` keeps everything. Runs on the host: `labels` must be
  concrete.

  Args:
    labels: [N] integer labels in [0, num_classes).
    fraction: in (0, 1].
    num_classes: C.
    seed: the subset is a deterministic function of (labels, fraction, seed).

  Returns:
    Sorted int64 numpy indices into `labels`.

  Example:
    >>> import numpy as np
    >>> from ssljax.evaluate import class_balanced_subset
    >>> labels = np.array([0] * 10 + [1] * 20)
    >>> subset = class_balanced_subset(labels, 0.1, num_classes=2)
    >>> print(np.bincount(labels[subset]).tolist())
    [1, 2]
  """
  fn = "class_balanced_subset"
  check_num_classes(num_classes, fn)
  _check_fraction(fraction, fn)
  check_rank(labels, 1, "labels", fn)
  check_labels(labels, num_classes, "labels", fn)
  check_count(seed, "seed", fn)
  labels = np.asarray(labels)
  rng = np.random.default_rng(seed)
  chosen = [np.arange(0)]
  for c in range(num_classes):
    members = np.flatnonzero(labels == c)
    if members.size:
      # Round half up (Python's round() would send 2.5 to 2).
      count = max(1, math.floor(fraction * members.size + 0.5))
      chosen.append(rng.choice(members, count, replace=False))
  return np.sort(np.concatenate(chosen))


def _check_fraction(fraction, fn: str) -> None:
  if not (isinstance(fraction, numbers.Real) and 0 < fraction <= 1):
    raise ValueError(
        f"{fn}: `label_fraction` must be a number in (0, 1], got {fraction!r}.")


def _standardizer(features: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Mean and 1/std of every feature dimension over the rows.

  A dimension that is constant on these rows (common for partially collapsed
  encoders) carries nothing a classifier could learn; it gets scale 0, not
  1/0, so that test rows that differ there are not blown up.
  """
  mean = jnp.mean(features, axis=0)
  std = jnp.std(features, axis=0)
  constant = jnp.all(features == features[:1], axis=0)
  return mean, jnp.where(constant, 0.0, 1.0 / jnp.where(constant, 1.0, std))


def _fold_standardizer(params: LinearParams, mean: jax.Array,
                       scale: jax.Array) -> LinearParams:
  """((x − μ) · s) W + b = x (s W) + (b − (μ s) W): the same classifier on x."""
  weights = scale[:, None] * params.weights
  return LinearParams(weights=weights, bias=params.bias - mean @ weights)


@functools.partial(jax.jit, static_argnames=("batch_size",))
def _top1(params: LinearParams, features: jax.Array, labels: jax.Array, *,
          batch_size: int) -> jax.Array:
  """Accuracy, predicting `batch_size` rows at a time ([B, C] logits live)."""
  predictions = jax.lax.map(
      lambda x: jnp.argmax(_logits(params, x)), features,
      batch_size=batch_size)
  return jnp.mean((predictions == labels).astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=(
    "num_classes", "epochs", "steps_per_epoch", "batch_size", "batch_sharding"))
def _fit(features: jax.Array, labels: jax.Array, key: jax.Array,
         learning_rate: jax.Array, weight_decay: jax.Array, *,
         num_classes: int, epochs: int, steps_per_epoch: int, batch_size: int,
         batch_sharding: Optional[NamedSharding]) -> LinearParams:
  """All epochs in one compiled program: a scan over epochs of step scans.

  The optimizer is built here from traced hyper-parameters, so repeated
  probes (every evaluation of a run, a learning-rate sweep) with the same
  shapes reuse one compilation.
  """
  num_rows = features.shape[0]
  optimizer = linear_probe_optimizer(
      learning_rate=learning_rate, weight_decay=weight_decay,
      total_steps=epochs * steps_per_epoch)

  def epoch(state, epoch_key):
    order = jax.random.permutation(epoch_key, num_rows)
    # The last batch wraps around to the start of the epoch's order, so every
    # batch has `batch_size` rows and one compiled step serves them all (and
    # a labelled subset smaller than a batch still gives full batches).
    index = order[jnp.arange(steps_per_epoch * batch_size) % num_rows]

    def step(state, batch_index):
      x, y = features[batch_index], labels[batch_index]
      if batch_sharding is not None:
        x = jax.lax.with_sharding_constraint(x, batch_sharding)
        y = jax.lax.with_sharding_constraint(y, batch_sharding)
      state, _ = linear_probe_step(state, x, y, optimizer=optimizer)
      return state, None

    state, _ = jax.lax.scan(
        step, state, index.reshape(steps_per_epoch, batch_size))
    return state, None

  state = linear_probe_init(features.shape[1], num_classes,
                            optimizer=optimizer)
  state, _ = jax.lax.scan(epoch, state, jax.random.split(key, epochs))
  return state.params


def linear_probe(train_features: jax.Array, train_labels: jax.Array,
                 test_features: jax.Array, test_labels: jax.Array, *,
                 num_classes: int, epochs: int = 100, batch_size: int = 256,
                 learning_rate: float = 0.1, weight_decay: float = 0.0,
                 label_fraction: float = 1.0, seed: int = 0,
                 mesh: Optional[Mesh] = None) -> LinearProbeResult:
  """Trains a logistic-regression probe on frozen features and scores it.

  1. Every feature dimension is standardised with the mean and standard
     deviation of *all* training rows (labels are not used for this, and the
     test rows never are), so one learning rate suits any encoder's scale.
  2. With `label_fraction` < 1 only `class_balanced_subset(train_labels,
     label_fraction, seed=seed)` keeps its labels (semi-supervised tables:
     0.01, 0.1); the probe trains and reports `train_top1` on that subset.
  3. `epochs` passes of `ceil(n / batch_size)` steps of `linear_probe_step`
     with `linear_probe_optimizer` (Nesterov SGD, cosine decay over all
     steps), shuffled by `seed`, all in one compiled program.

  With `mesh`, the features and the probe are replicated on its devices and
  every batch is split over all mesh axes, as in data-parallel training; the
  result equals the single-device one up to float summation order.

  Not jittable as a whole (the labelled subset is picked on the host); use
  `linear_probe_init` / `linear_probe_step` inside your own jit.

  Args:
    train_features: [N, D] frozen training features.
    train_labels: [N] integer labels in [0, num_classes).
    test_features: [M, D].
    test_labels: [M] integer labels in [0, num_classes).
    num_classes: C.
    epochs: passes over the labelled rows, >= 1.
    batch_size: rows per step, >= 1 (a multiple of the mesh size with
      `mesh`).
    learning_rate: peak SGD rate for the standardised features.
    weight_decay: λ of the L2 penalty on the weights.
    label_fraction: fraction of the training labels used, in (0, 1].
    seed: seeds the labelled subset and the shuffling.
    mesh: optional `jax.sharding.Mesh` to split batches over.

  Returns:
    A `LinearProbeResult` (accuracies and the classifier on raw features).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import linear_probe
    >>> x = jnp.array([[0., 1.], [1., 2.], [5., 1.], [6., 0.]])
    >>> y = jnp.array([0, 0, 1, 1])
    >>> result = linear_probe(x, y, x[::-1], y[::-1], num_classes=2,
    ...                       epochs=20, batch_size=2)
    >>> print(float(result.train_top1), float(result.test_top1))
    1.0 1.0
  """
  fn = "linear_probe"
  check_num_classes(num_classes, fn)
  check_split(fn, train_features, train_labels, num_classes=num_classes,
              features_name="train_features", labels_name="train_labels")
  check_split(fn, test_features, test_labels, num_classes=num_classes,
              features_name="test_features", labels_name="test_labels")
  check_dim(fn, 1, train_features=train_features, test_features=test_features)
  check_count(epochs, "epochs", fn, minimum=1)
  check_count(batch_size, "batch_size", fn, minimum=1)
  check_positive(learning_rate, "learning_rate", fn)
  check_non_negative(weight_decay, "weight_decay", fn)
  _check_fraction(label_fraction, fn)
  batch_sharding = None
  if mesh is not None:
    if batch_size % mesh.size:
      raise ValueError(
          f"{fn}: `batch_size` must be a multiple of the mesh size "
          f"{mesh.size}, got {batch_size}.")
    batch_sharding = NamedSharding(mesh, P(mesh.axis_names))

  train, test = to_compute(train_features, test_features)
  mean, scale = _standardizer(train)
  subset = class_balanced_subset(train_labels, label_fraction,
                                 num_classes=num_classes, seed=seed)
  train_x = (train[subset] - mean) * scale
  train_y = jnp.asarray(train_labels)[subset]
  test_x = (test - mean) * scale

  if mesh is not None:
    train_x, train_y = jax.device_put((train_x, train_y),
                                      NamedSharding(mesh, P()))
  params = _fit(train_x, train_y, jax.random.key(seed),
                jnp.float32(learning_rate), jnp.float32(weight_decay),
                num_classes=num_classes, epochs=epochs,
                steps_per_epoch=math.ceil(len(subset) / batch_size),
                batch_size=batch_size, batch_sharding=batch_sharding)
  return LinearProbeResult(
      train_top1=_top1(params, train_x, train_y, batch_size=batch_size),
      test_top1=_top1(params, test_x, jnp.asarray(test_labels),
                      batch_size=batch_size),
      params=_fold_standardizer(params, mean, scale))
