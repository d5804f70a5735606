"""The supervised loop of the standard protocols: a classifier trained on
augmented views of the labelled images, then scored on the evaluation images.

Linear evaluation (a linear layer on a frozen encoder) and fine-tuning (the
encoder and a fresh head end to end) differ only in the `Classifier` they
train; `ssljax.evaluate.protocols` builds both and their recipes. One step,
with t the step and y the labels:

    x      = views(fold_in(rng, t), batch)          uint8 [B, S, S, C]
    logits = classifier.apply(θ, model_state, frozen, x, train=True)
    loss   = mean_b CE(logits_b, (1 − ε)·onehot(y_b) + ε / C)   (ε: smoothing)
    θ      ← θ + optimizer(∇θ loss)

Views are torchvision's `RandomResizedCrop(S, scale, ratio)` +
`RandomHorizontalFlip(p)`, the training transform of MoCo's, DINO's and
solo-learn's linear evaluation and of MAE's fine-tuning: cut on the device
from fixed-size images (`ssljax.data.augment`), from the full-resolution
picture on the host for variable-size ones (`ssljax.data.load(...,
crops=...)`, then only the flip on the device), and rounded to uint8, as
torchvision's crops of PIL images are, so that the classifier normalises
them exactly as the pre-trained method's evaluation does. The evaluation
images are the test split as `load` gives it without crops: whole images
(fixed size), or the shorter side resized to S / 0.875 and the centre S × S
(variable size, `Resize(256)` + `CenterCrop(224)`).

The loop is data parallel like pre-training (`ssljax.train`): the state is
replicated over the ("data",) mesh, each global batch split over it, and
the step jitted once. It checkpoints with `ssljax.train.Checkpointer` (the
state and the data iterator every `checkpoint_every` steps and at the end);
a run started again in the same directory resumes from the newest
checkpoint and ends exactly as an uninterrupted one, since the views depend
on (seed, step) only. A directory holding another protocol's checkpoint is
refused (`IncompatibleCheckpointError`).

Settings come from a protocol config (`ml_collections.ConfigDict`, see
`ssljax.evaluate.protocols.base_protocol` for every field and `check`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from ssljax import data as data_lib
from ssljax.data import augment
from ssljax.evaluate.linear import class_balanced_subset
from ssljax.train import evaluation
from ssljax.train.checkpoint import Checkpointer
from ssljax.train.metrics import MetricsWriter, ProgressBar
from ssljax.train.optim import decay_mask as rank_decay_mask
from ssljax.train.preemption import watch_preemption
from ssljax.train.sharding import (check_batch_size, data_sharded, make_mesh,
                                   replicated)
from ssljax.train.state import TrainState

PyTree = Any

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step")
# Factor of the "step" schedule at each milestone (MoCo's main_lincls).
STEP_FACTOR = 0.1


class Classifier(NamedTuple):
  """A network the loop trains (see `ssljax.evaluate.protocols`).

  Attributes:
    init: `init(rng, source, images) -> (params, model_state)`, the
      trainable parameters and the mutable state (BatchNorm statistics) at
      step 0; `images` is a uint8 batch [B, S, S, C] giving the shapes.
    apply: `apply(params, model_state, frozen, images, *, train) ->
      (logits [B, C] float32, model_state)` on uint8 images.
    source: arrays `init` starts from (fine-tuning: the pre-trained
      backbone); passed to `init` only.
    frozen: arrays `apply` reads and never trains (linear evaluation: the
      pre-trained method's networks); passed to every step.
    lr_scale: optional `lr_scale(params) -> pytree of floats`, each leaf's
      learning rate relative to the schedule's (layer-wise decay).
    decay_mask: optional `decay_mask(params) -> pytree of bools`, where the
      weight decay applies; default the leaves of rank >= 2.
  """
  init: Callable
  apply: Callable
  source: PyTree
  frozen: PyTree
  lr_scale: Optional[Callable] = None
  decay_mask: Optional[Callable] = None


# ---------------------------------------------------------------- checks ---


def check(protocol) -> None:
  """Raises ValueError naming the first field of `protocol` out of range.

  Example:
    >>> from ssljax.evaluate import protocols, supervised
    >>> protocol = protocols.base_protocol("linear")
    >>> protocol.optimizer.schedule = "linear"
    >>> supervised.check(protocol)
    Traceback (most recent call last):
    ...
    ValueError: protocol: `optimizer.schedule` must be one of ('cosine', 'step'), got 'linear'.
  """
  opt, views = protocol.optimizer, protocol.views
  _require(isinstance(protocol.epochs, int) and protocol.epochs >= 1,
           "epochs", "an int >= 1", protocol.epochs)
  _require(isinstance(protocol.batch_size, int) and protocol.batch_size >= 1,
           "batch_size", "an int >= 1", protocol.batch_size)
  _require(0 < protocol.label_fraction <= 1, "label_fraction",
           "in (0, 1]", protocol.label_fraction)
  _require(0 <= protocol.label_smoothing < 1, "label_smoothing", "in [0, 1)",
           protocol.label_smoothing)
  _require(protocol.head_init_std >= 0, "head_init_std", ">= 0",
           protocol.head_init_std)
  _require(opt.name in OPTIMIZERS, "optimizer.name",
           f"one of {OPTIMIZERS}", opt.name)
  _require(opt.schedule in SCHEDULES, "optimizer.schedule",
           f"one of {SCHEDULES}", opt.schedule)
  _require(opt.learning_rate > 0, "optimizer.learning_rate", "> 0",
           opt.learning_rate)
  _require(0 <= opt.min_learning_rate, "optimizer.min_learning_rate",
           ">= 0", opt.min_learning_rate)
  _require(0 <= opt.momentum < 1, "optimizer.momentum", "in [0, 1)",
           opt.momentum)
  _require(0 <= opt.b2 < 1, "optimizer.b2", "in [0, 1)", opt.b2)
  _require(opt.weight_decay >= 0, "optimizer.weight_decay", ">= 0",
           opt.weight_decay)
  _require(0 < opt.layer_decay <= 1, "optimizer.layer_decay", "in (0, 1]",
           opt.layer_decay)
  _require(0 <= opt.warmup_epochs < protocol.epochs, "optimizer.warmup_epochs",
           f"in [0, epochs={protocol.epochs})", opt.warmup_epochs)
  milestones = tuple(opt.milestones)
  # Only the step schedule reads them (a short cosine run must not fail on
  # the default's).
  _require(opt.schedule != "step" or (
      list(milestones) == sorted(set(milestones)) and all(
          opt.warmup_epochs < m * protocol.epochs < protocol.epochs
          for m in milestones)), "optimizer.milestones",
           "increasing fractions of the run in (warmup_epochs / epochs, 1)",
           milestones)
  _require(0 <= views.flip_prob <= 1, "views.flip_prob", "in [0, 1]",
           views.flip_prob)
  for name in ("scale", "ratio"):
    low, high = getattr(views, name)
    _require(0 < low <= high, f"views.{name}", "(low, high) with "
             "0 < low <= high", getattr(views, name))


def _require(ok: bool, field: str, expected: str, got) -> None:
  if not ok:
    raise ValueError(f"protocol: `{field}` must be {expected}, got {got!r}.")


# ------------------------------------------------------- the recipe parts ---


def view_spec(protocol, image_size: int) -> augment.ViewSpec:
  """The training view: a random-resized crop of side `image_size` and a
  flip, nothing else (no colour, grayscale, blur or solarisation)."""
  views = protocol.views
  return augment.ViewSpec(
      size=image_size, scale=tuple(views.scale), ratio=tuple(views.ratio),
      flip_prob=views.flip_prob, jitter_prob=0.0, grayscale_prob=0.0)


def make_views(spec: augment.ViewSpec) -> Callable:
  """`views(rng, batch) -> uint8 [B, S, S, C]`: one view of every example
  of a batch's "image" (cropped here) or of its host-cut "crops" (flipped
  here), rounded back to uint8 as a crop of a PIL image is.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> spec = augment.ViewSpec(size=8, flip_prob=0.5, jitter_prob=0.0,
    ...                         grayscale_prob=0.0)
    >>> batch = {"image": jnp.zeros((4, 16, 16, 1), jnp.uint8)}
    >>> x = make_views(spec)(jax.random.key(0), batch)
    >>> print(x.shape, x.dtype)
    (4, 8, 8, 1) uint8
  """

  def views(rng: jax.Array, batch: dict) -> jax.Array:
    crops = batch.get("crops")
    (made,) = augment.views(
        rng, batch["image"] if crops is None else crops, (spec,),
        precropped=crops is not None, standardize=False)
    return jnp.round(made * 255.0).astype(jnp.uint8)

  return views


def learning_rate_schedule(protocol, steps_per_epoch: int) -> optax.Schedule:
  """The rate: peak = `learning_rate` × batch_size / 256, a linear warm-up
  from 0 over `warmup_epochs`, then either a cosine to `min_learning_rate`
  at the last step (MAE, DINO, MoCo v3) or the peak divided by 10 at each
  of `milestones` (fractions of the run, rounded to whole epochs: MoCo
  v1/v2's and solo-learn's epochs 60 and 80 of 100 are (0.6, 0.8)).

  Example:
    >>> from ssljax.evaluate import protocols
    >>> protocol = protocols.base_protocol("linear")
    >>> protocol.epochs, protocol.optimizer.learning_rate = 4, 0.2
    >>> protocol.batch_size = 512
    >>> schedule = learning_rate_schedule(protocol, steps_per_epoch=1)
    >>> print([round(float(schedule(t)), 4) for t in range(5)])
    [0.4, 0.3414, 0.2, 0.0586, 0.0]
    >>> protocol.optimizer.update(schedule="step", milestones=(0.5, 0.75))
    >>> schedule = learning_rate_schedule(protocol, steps_per_epoch=1)
    >>> print([round(float(schedule(t)), 4) for t in range(4)])
    [0.4, 0.4, 0.04, 0.004]
  """
  opt = protocol.optimizer
  peak = opt.learning_rate * protocol.batch_size / 256
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  total = protocol.epochs * steps_per_epoch
  if opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(
        peak, max(total - warmup, 1), alpha=min(opt.min_learning_rate / peak,
                                                1.0))
  else:
    main = optax.piecewise_constant_schedule(
        peak, {round(m * protocol.epochs) * steps_per_epoch - warmup:
               STEP_FACTOR for m in opt.milestones})
  if not warmup:
    return main
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def make_optimizer(protocol, schedule: optax.Schedule,
                   classifier: Classifier) -> optax.GradientTransformation:
  """SGD with momentum (PyTorch's: v ← m·v + g + λθ, θ ← θ − lr·v;
  Nesterov with `optimizer.nesterov`) or AdamW (β1 = `momentum`, β2 =
  `b2`, decoupled decay λ), with the weight decay where
  `classifier.decay_mask` says, and every update scaled by its leaf's
  `classifier.lr_scale` (a per-group rate: both updates are linear in the
  rate, decay included, as PyTorch's parameter groups with their own `lr`).
  """
  opt = protocol.optimizer
  mask = classifier.decay_mask or rank_decay_mask
  if opt.name == "sgd":
    tx = optax.chain(
        optax.add_decayed_weights(opt.weight_decay, mask=mask),
        optax.sgd(schedule, momentum=opt.momentum or None,
                  nesterov=bool(opt.nesterov)))
  else:
    tx = optax.adamw(schedule, b1=opt.momentum, b2=opt.b2,
                     weight_decay=opt.weight_decay, mask=mask)
  if classifier.lr_scale is None:
    return tx
  scaled = optax.stateless(lambda updates, params: jax.tree.map(
      lambda u, s: u * s, updates, classifier.lr_scale(params)))
  return optax.chain(tx, scaled)


def labelled_rows(protocol, info: data_lib.DatasetInfo
                  ) -> Optional[np.ndarray]:
  """The training rows whose labels are used: all (None) or, with
  `label_fraction` < 1, `class_balanced_subset` of the train labels seeded
  by `subset_seed` (the same subset for every method and run)."""
  if protocol.label_fraction == 1:
    return None
  labels = data_lib.labels(protocol.dataset.name, "train",
                           data_dir=protocol.get("data_dir"),
                           path=protocol.dataset.get("path"))
  return class_balanced_subset(labels, protocol.label_fraction,
                               num_classes=info.num_classes,
                               seed=protocol.subset_seed)


# ------------------------------------------------------------ the step ---


def cross_entropy(logits: jax.Array, labels: jax.Array, *, num_classes: int,
                  smoothing: float = 0.0) -> jax.Array:
  """Mean CE against smoothed targets (1 − ε)·onehot(y) + ε / C.

  Example:
    >>> import jax.numpy as jnp
    >>> loss = cross_entropy(jnp.zeros((2, 4)), jnp.array([0, 3]),
    ...                      num_classes=4, smoothing=0.1)
    >>> print(round(float(loss), 4))  # log 4 for any target
    1.3863
  """
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes),
                                smoothing)
  return jnp.mean(optax.softmax_cross_entropy(logits.astype(jnp.float32),
                                              targets))


def make_step(classifier: Classifier, tx: optax.GradientTransformation,
              views: Callable, schedule: optax.Schedule, *, num_classes: int,
              smoothing: float, mesh) -> Callable:
  """`step(state, frozen, batch) -> (state, metrics)`, jitted over `mesh`
  (state and frozen arrays replicated, the batch split), `state` donated.

  `metrics`: "loss", "train_top1" (of the batch's views) and
  "learning_rate", replicated scalars.
  """

  def step(state: TrainState, frozen: PyTree, batch: dict):
    images = views(jax.random.fold_in(state.rng, state.step), batch)
    labels = batch["label"]

    def loss_fn(params):
      logits, model_state = classifier.apply(params, state.model_state,
                                             frozen, images, train=True)
      loss = cross_entropy(logits, labels, num_classes=num_classes,
                           smoothing=smoothing)
      return loss, (logits, model_state)

    (loss, (logits, model_state)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    metrics = {"loss": loss, "learning_rate": schedule(state.step),
               "train_top1": jnp.mean(jnp.argmax(logits, -1) == labels)}
    return state._replace(
        step=state.step + 1, params=optax.apply_updates(state.params,
                                                        updates),
        model_state=model_state, opt_state=opt_state), metrics

  return jax.jit(step, in_shardings=(replicated(mesh), replicated(mesh),
                                     data_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)),
                 donate_argnums=0)


def _initializer(classifier: Classifier, tx, mesh, seed: int,
                 image_shape) -> Callable:
  """A jitted `source -> TrainState` at step 0, replicated over `mesh`."""

  def init(source):
    init_rng, rng = jax.random.split(jax.random.key(seed))
    params, model_state = classifier.init(
        init_rng, source, jnp.zeros((1, *image_shape), jnp.uint8))
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      model_state=model_state, opt_state=tx.init(params),
                      method_state=(), rng=rng)

  return jax.jit(init, out_shardings=replicated(mesh))


# ------------------------------------------------------------ the loop ---


class Plan(NamedTuple):
  """The size of a run: `total` = `epochs` × `steps_per_epoch` steps of
  `batch_size` views of the `labelled` training images (`rows`: their rows,
  None for all)."""
  rows: Optional[np.ndarray]
  labelled: int
  batch_size: int
  steps_per_epoch: int
  total: int


def plan(protocol, info: data_lib.DatasetInfo, mesh) -> Plan:
  """The run's size; a batch larger than the labelled set is an error
  (every step has one shape; the last partial batch of an epoch is
  dropped)."""
  rows = labelled_rows(protocol, info)
  labelled = info.num_train if rows is None else len(rows)
  check_batch_size(protocol.batch_size, mesh)
  if protocol.batch_size > labelled:
    raise ValueError(
        f"protocol: `batch_size` ({protocol.batch_size}) exceeds the "
        f"{labelled} labelled training images; lower it.")
  steps = labelled // protocol.batch_size
  return Plan(rows, labelled, protocol.batch_size, steps,
              protocol.epochs * steps)


def fit(protocol, classifier: Classifier, workdir: str) -> dict[str, float]:
  """Trains `classifier` by `protocol` in `workdir` and scores it.

  Resumes from `workdir`'s newest checkpoint if there is one. Logs "loss",
  "train_top1", "learning_rate" and "images_per_sec" to
  `<workdir>/metrics.jsonl` every `log_every` steps (default: each epoch)
  and shows a progress bar; SIGTERM saves and returns early.

  Args:
    protocol: the protocol config (`ssljax.evaluate.protocols`): its
      `name` prefixes the result's keys.
    classifier: what to train.
    workdir: the protocol's own directory (checkpoints, metrics).

  Returns:
    {"step", "<name>_top1", "<name>_top5"} (accuracies in [0, 1] on the test
    split; top-5 is top-min(5, C)), or only {"step"} if SIGTERM stopped the
    run first.

  Raises:
    ValueError: for a bad protocol field, or a dataset without labels or
      without a test split.
    IncompatibleCheckpointError: if `workdir` holds another run's
      checkpoint.
  """
  check(protocol)
  if not evaluation.can_evaluate(protocol):
    raise ValueError(f"{protocol.name}: {protocol.dataset.name} needs labels "
                     "and a test split (an image folder with class "
                     "subfolders and val/).")
  info = evaluation.dataset_info(protocol)
  mesh = make_mesh(protocol)
  size = plan(protocol, info, mesh)
  schedule = learning_rate_schedule(protocol, size.steps_per_epoch)
  tx = make_optimizer(protocol, schedule, classifier)
  spec = view_spec(protocol, info.image_shape[0])
  batches = data_lib.DevicePrefetch(data_lib.load(
      protocol.dataset.name, "train", batch_size=protocol.batch_size,
      seed=protocol.seed, shuffle=True, num_epochs=None,
      process_index=jax.process_index(), process_count=jax.process_count(),
      crops=(spec,) if info.variable_size else None, indices=size.rows,
      **evaluation.dataset_options(protocol)), data_sharded(mesh))
  init = _initializer(classifier, tx, mesh, protocol.seed,
                      (spec.size, spec.size, info.image_shape[-1]))
  every = protocol.get("checkpoint_every") or 10 * size.steps_per_epoch
  # The pre-trained arrays may live on another mesh (`mesh.data`).
  source, frozen = jax.device_put((classifier.source, classifier.frozen),
                                  replicated(mesh))
  with Checkpointer(workdir, max_to_keep=protocol.get("max_to_keep", 3)) \
      as ckpt:
    restored = ckpt.restore(protocol, jax.eval_shape(init, source))
    if restored is None:
      state, data_state = init(source), batches.get_state()
    else:
      state, data_state = restored
    batches.set_state(data_state)
    start = int(jax.device_get(state.step))
    logging.info("%s: %d steps (%d epochs of %d labelled images) from step "
                 "%d in %s", protocol.name, size.total, protocol.epochs,
                 size.labelled, start, workdir)
    step_fn = make_step(classifier, tx, make_views(spec), schedule,
                        num_classes=info.num_classes,
                        smoothing=protocol.label_smoothing, mesh=mesh)
    with MetricsWriter(workdir, start_step=start) as writer, \
        ProgressBar(size.total, start_step=start) as progress, \
        watch_preemption() as preempted:
      state, step = _loop(protocol, state, start, size.total, every,
                          batches, frozen, step_fn, ckpt, writer, progress,
                          preempted,
                          protocol.get("log_every") or size.steps_per_epoch)
  if step < size.total:
    return {"step": step}
  return {"step": step, **score(protocol, classifier._replace(frozen=frozen),
                                state, mesh)}


def _loop(protocol, state, start, total, every, batches, frozen, step_fn,
          ckpt, writer, progress, preempted, log_every):
  step, last = start, (start, time.perf_counter())
  while step < total:
    state, metrics = step_fn(state, frozen, next(batches))
    step += 1
    stop = preempted(step)
    save = stop or step == total or step % every == 0
    if save or step % log_every == 0:
      host = {k: float(v) for k, v in jax.device_get(metrics).items()}
      if not math.isfinite(host["loss"]):
        ckpt.wait()
        raise FloatingPointError(
            f"{protocol.name}: non-finite loss at step {step}; lower "
            f"`optimizer.learning_rate`. The last good checkpoint in "
            f"{ckpt.directory} is step {ckpt.latest_step()}.")
      now = time.perf_counter()
      host["images_per_sec"] = ((step - last[0]) * protocol.batch_size
                                / (now - last[1]))
      last = (step, now)
      writer.write(step, host)
      progress.update(step, host)
    else:
      progress.update(step)
    if save:
      ckpt.save(step, state, batches.get_state(), protocol)
    if stop:
      ckpt.wait()
      logging.warning("%s: SIGTERM received; saved step %d in %s, exiting.",
                      protocol.name, step, ckpt.directory)
      break
  return state, step


def score(protocol, classifier: Classifier, state: TrainState, mesh
          ) -> dict[str, float]:
  """Top-1 and top-5 accuracy of the trained classifier on every test
  image (the evaluation crop, eval mode), as `<name>_top1`/`<name>_top5`.
  """
  predict = evaluation.make_encoder(
      lambda tree, images: classifier.apply(*tree, images, train=False)[0],
      mesh)
  logits, labels = evaluation.encode_split(
      protocol, predict, (state.params, state.model_state,
                          classifier.frozen), "test", mesh=mesh)
  k = min(5, logits.shape[1])
  top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return {f"{protocol.name}_top1": float(np.mean(top[:, 0] == labels)),
          f"{protocol.name}_top5": float(np.mean(np.any(top == labels[:, None],
                                                        axis=1)))}
