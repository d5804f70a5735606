"""Plumbing every method shares, written once.

* networks from the config: `backbone`, `projector` and their compositions,
  computing in `config.compute_dtype` with float32 parameters
  (`dtype_kwargs`);
* views: `make_views(config, rng, images)` with the augmentation recipe of
  `config.method.augment` and the dataset's `config.dataset.mean/std`;
* forward passes: `forward` runs views of equal size through a network in
  one call (as the official multi-crop wrappers of SwAV and DINO do), so
  BatchNorm statistics are over all views of one size; `target_forward` runs
  the momentum network without gradient;
* `swapped_pairs_sum(fn, a, b) = fn(a[0], b[1]) + fn(a[1], b[0])`, the
  symmetrised two-view loss;
* one `MethodState` for every method (EMA target, queue, DINO center, each
  None when unused) and one `post_update` that advances whichever parts are
  present: θt ← m(t)·θt + (1 − m(t))·θ with BYOL's cosine schedule from
  `config.method.base_momentum` to `final_momentum`, FIFO push of the keys,
  center update;
* `init`, `encode` (backbone features in eval mode) and `freeze` (no
  gradient to a subtree while a step-dependent condition holds).

Config fields read here: `config.method.{backbone, backbone_kwargs,
augment}`, `config.total_steps`, and optionally `config.compute_dtype`
(default "float32") and `config.dataset.{mean, std}` (default: the
augmentation module's statistics for the channel count).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import models
from ssljax.data import augment
from ssljax.methods.base import StepOutput
from ssljax.state import center as center_lib
from ssljax.state import ema
from ssljax.state import queue as queue_lib

PyTree = Any

# The parts of a `compose`d online network that its EMA target copies: all
# but the predictor (BYOL, MoCo v3); MoCo v2 and DINO have no predictor.
TARGET_PARTS = ("backbone", "projector")

# Fields of every `ViewSpec` except the crop size, which the views read from
# the images; "multicrop" replaces `scale` by its global/local settings.
_VIEW_FIELDS = tuple(f for f in augment.ViewSpec._fields if f != "size")
_MULTICROP_FIELDS = ("num_local", "global_size", "local_size", "global_scale",
                     "local_scale")


class Target(NamedTuple):
  """The momentum (EMA) network: a copy of some parts of the online one."""
  params: PyTree
  model_state: PyTree


class MethodState(NamedTuple):
  """What a method carries between steps; parts it does not use are None.

  Attributes:
    target: EMA network (BYOL, MoCo, DINO), parts keyed as in `params`.
    queue: FIFO of past embeddings (MoCo's negatives, NNCLR's support set,
      SwAV's features); rows hold the views side by side, see `queue_rows`.
    center: DINO's [K] teacher center.
  """
  target: Optional[Target] = None
  queue: Optional[queue_lib.QueueState] = None
  center: Optional[jax.Array] = None


# ---------------------------------------------------------------- config ---


def augment_config(preset: str, **values) -> ml_collections.ConfigDict:
  """`config.method.augment`: a preset of `ssljax.data.augment` and overrides.

  Every override the preset accepts is a field, None meaning "the preset's
  value", so that any of them can be set from the command line.
  """
  fields = _VIEW_FIELDS
  if preset == "multicrop":
    fields = _MULTICROP_FIELDS + tuple(f for f in fields if f != "scale")
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"augment_config: unknown override(s) {unknown} for "
                     f"preset {preset!r}; valid: {list(fields)}.")
  return ml_collections.ConfigDict(
      {"preset": preset, **{f: values.get(f) for f in fields}})


def compute_dtype(config) -> jnp.dtype:
  """`config.compute_dtype` (default float32) as a dtype."""
  return jnp.dtype(config.get("compute_dtype", "float32"))


def dtype_kwargs(config) -> dict:
  """dtype (compute) and param_dtype (float32) of every network part."""
  return dict(dtype=compute_dtype(config), param_dtype=jnp.float32)


def backbone(config) -> models.Model:
  """`models.get(config.method.backbone, **config.method.backbone_kwargs)`."""
  method = config.method
  return models.get(method.backbone, **method.backbone_kwargs.to_dict(),
                    **dtype_kwargs(config))


def projector(config, *, num_layers: int = 2, last_bn: bool = False
              ) -> models.Model:
  """MLP projector `config.method.proj_hidden_dim` → `proj_dim`."""
  method = config.method
  return models.projector(None, method.proj_hidden_dim, method.proj_dim,
                          num_layers=num_layers, last_bn=last_bn,
                          **dtype_kwargs(config))


def projector_network(config, *, num_layers: int = 2, last_bn: bool = False
                      ) -> models.Model:
  """Backbone and `projector(config, ...)`."""
  return models.compose(backbone(config),
                        projector=projector(config, num_layers=num_layers,
                                            last_bn=last_bn))


def predictor_networks(config, projector: models.Model
                       ) -> tuple[models.Model, models.Model]:
  """(online, target) of BYOL-like methods: backbone, `projector` and a
  predictor `proj_dim` → `pred_hidden_dim` → `proj_dim`; the target network
  (`TARGET_PARTS`) has no predictor."""
  method = config.method
  net = backbone(config)
  predictor = models.predictor(None, method.pred_hidden_dim, method.proj_dim,
                               **dtype_kwargs(config))
  return (models.compose(net, projector=projector, predictor=predictor),
          models.compose(net, projector=projector))


def _stats(config, channels: int) -> tuple[Sequence[float], Sequence[float]]:
  dataset = config.get("dataset")
  if dataset is None or dataset.get("mean") is None:
    return augment.default_stats(channels)
  return tuple(dataset.mean), tuple(dataset.std)


# ----------------------------------------------------------------- views ---


def split_batch(images) -> tuple[jax.Array, Optional[jax.Array]]:
  """`images` is the uint8 batch, or a batch dict with "image" (and "label")."""
  if isinstance(images, Mapping):
    return images["image"], images.get("label")
  return images, None


def make_views(config, rng: jax.Array, images: jax.Array
               ) -> tuple[jax.Array, ...]:
  """Normalised float32 views of the uint8 batch per `config.method.augment`."""
  spec = config.method.augment
  overrides = {k: v for k, v in spec.items() if k != "preset" and v is not None}
  mean, std = _stats(config, images.shape[-1])
  return augment.views(rng, images, spec.preset, mean=mean, std=std,
                       **overrides)


class Online(NamedTuple):
  """The online network's pass over the views of one batch (see `online`)."""
  views: tuple[jax.Array, ...]
  outputs: dict
  model_state: PyTree
  labels: Optional[jax.Array]


def online(config, model: models.Model, params: PyTree, model_state: PyTree,
           images, rng: jax.Array) -> Online:
  """Views of the batch and the online network's outputs on all of them."""
  images, labels = split_batch(images)
  views = make_views(config, rng, images)
  outputs, model_state = forward(model, params, model_state, views)
  return Online(views, outputs, model_state, labels)


# -------------------------------------------------------- forward passes ---


def forward(model: models.Model, params: PyTree, model_state: PyTree,
            views: Sequence[jax.Array], *, train: bool = True
            ) -> tuple[dict, PyTree]:
  """Outputs of every view, stacked: {key: [V, B, ...]}, and the new state.

  Consecutive views of one shape go through the network in one call.
  """
  groups: list[list[jax.Array]] = []
  for view in views:
    if groups and groups[-1][0].shape == view.shape:
      groups[-1].append(view)
    else:
      groups.append([view])
  outputs = []
  for group in groups:
    out, model_state = model.apply(params, model_state,
                                   jnp.concatenate(group), train=train)
    outputs.append(jax.tree.map(
        lambda x, n=len(group): x.reshape(n, -1, *x.shape[1:]), out))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outputs), model_state


def target_forward(model: models.Model, target: Target,
                   views: Sequence[jax.Array]) -> tuple[dict, PyTree]:
  """`forward` of the EMA network in train mode, without gradient."""
  outputs, model_state = forward(model, target.params, target.model_state,
                                 views)
  return jax.lax.stop_gradient(outputs), model_state


def swapped_pairs_sum(fn: Callable, a: Sequence, b: Sequence) -> jax.Array:
  """fn(a[0], b[1]) + fn(a[1], b[0]): each view predicts the other one."""
  return fn(a[0], b[1]) + fn(a[1], b[0])


def freeze(params: PyTree, path: Sequence[str], frozen: jax.Array) -> PyTree:
  """`params` whose subtree at `path` gets a zero gradient while the scalar
  `frozen` is True (DINO's last layer, SwAV's prototypes at the start).

  The optimizer still applies weight decay to it; for the weight-normalised
  layers frozen here that only rescales the weights, which the layers
  normalise away, so their function stays fixed.
  """
  if not path:
    return jax.tree.map(
        lambda x: jnp.where(frozen, jax.lax.stop_gradient(x), x), params)
  head, *rest = path
  return {**params, head: freeze(params[head], rest, frozen)}


def step_output(run: Online, metrics: dict | None = None,
                update: dict | None = None) -> StepOutput:
  """`StepOutput` of an online pass; embeddings: first view's features."""
  return StepOutput(
      model_state=run.model_state, metrics=metrics or {},
      update=update or {},
      embeddings=jax.lax.stop_gradient(run.outputs["features"][0]))


def stateless_loss(network: Callable[[Any], models.Model],
                   objective: Callable[[Any, Online], jax.Array]) -> Callable:
  """`Method.loss` of a method without state: `objective(config, run)` of
  the online pass `run` over the views (SimCLR, SimSiam, Barlow Twins...)."""

  def loss(config, params, model_state, method_state, images, rng, step):
    del method_state, step  # Nothing is carried between steps.
    run = online(config, network(config), params, model_state, images, rng)
    return objective(config, run), step_output(run)

  return loss


def momentum_loss(networks: Callable[[Any], tuple[models.Model, models.Model]],
                  pair_loss: Callable[[Any], Callable]) -> Callable:
  """`Method.loss` of BYOL and MoCo v3: `pair_loss(config)(p, z')` of the
  online predictions and the EMA target's projections, summed over the two
  swapped view pairs (`swapped_pairs_sum`); `networks(config)` gives the
  (online, target) networks."""

  def loss(config, params, model_state, method_state, images, rng, step):
    online_net, target_net = networks(config)
    run = online(config, online_net, params, model_state, images, rng)
    targets, target_state = target_forward(target_net, method_state.target,
                                           run.views)
    value = swapped_pairs_sum(pair_loss(config), run.outputs["prediction"],
                              targets["projection"])
    return value, momentum_output(config, step, run, target_state)

  return loss


def momentum_output(config, step, run: Online, target_state: PyTree,
                    metrics: dict | None = None,
                    update: dict | None = None) -> StepOutput:
  """`step_output` of a method with an EMA target: logs m(t) and hands the
  target's BatchNorm statistics to `post_update`."""
  return step_output(
      run, {"momentum": momentum(config, step), **(metrics or {})},
      {"target_model_state": target_state, **(update or {})})


# ------------------------------------------------------------ the queue ---


def queue_rows(views: jax.Array) -> jax.Array:
  """[V, B, D] -> [B, V·D]: one queue row holds an example's V views."""
  n_views, batch, dim = views.shape
  return jnp.transpose(views, (1, 0, 2)).reshape(batch, n_views * dim)


def queue_views(queue: queue_lib.QueueState, n_views: int) -> jax.Array:
  """The queue's buffer [K, V·D] as [V, K, D], inverse of `queue_rows`."""
  size, width = queue.buffer.shape
  return jnp.transpose(queue.buffer.reshape(size, n_views, width // n_views),
                       (1, 0, 2))


# ----------------------------------------------------- init, post-update ---


def init(config, rng: jax.Array, images, model: models.Model, *,
         target_parts: Sequence[str] = (), queue_size: int = 0,
         queue_width: int = 0, center_dim: int = 0
         ) -> tuple[PyTree, PyTree, MethodState]:
  """(params, model_state, method_state) of a method built on `model`.

  The network is initialised on inputs shaped like the first view. The
  target starts as a copy of the online `target_parts`, the queue as random
  unit rows (MoCo's initialisation), the center at zero.
  """
  images, _ = split_batch(images)
  model_rng, queue_rng = jax.random.split(rng)
  first = jax.eval_shape(lambda: make_views(config, rng, images))[0]
  params, model_state = model.init(model_rng, jnp.zeros(first.shape,
                                                        first.dtype))
  target = None
  if target_parts:
    target = Target(ema.init({k: params[k] for k in target_parts}),
                    ema.init({k: model_state[k] for k in target_parts}))
  queue = None
  if queue_size:
    queue = queue_lib.init(queue_size, queue_width, key=queue_rng)
  center = center_lib.init(center_dim) if center_dim else None
  return params, model_state, MethodState(target, queue, center)


def momentum(config, step) -> jax.Array:
  """m(t): cosine from `base_momentum` at 0 to `final_momentum` at the end."""
  return ema.cosine_momentum(step, config.total_steps,
                             base=config.method.base_momentum,
                             final=config.method.final_momentum)


def post_update(config, params: PyTree, method_state: MethodState,
                update: dict, step) -> MethodState:
  """Advances the parts of `method_state` that the method uses.

  `update` carries what the loss produced for them: "target_model_state"
  (the EMA network's BatchNorm statistics), "queue" (rows to enqueue) and
  "teacher_logits" (for the center, momentum `config.method.
  center_momentum`).
  """
  target, queue, center = method_state
  if target is not None:
    current = {k: params[k] for k in target.params}
    target = Target(ema.update(target.params, current, momentum(config, step)),
                    update["target_model_state"])
  if queue is not None:
    queue = queue_lib.push(queue, update["queue"])
  if center is not None:
    center = center_lib.update(center, update["teacher_logits"],
                               config.method.center_momentum)
  return MethodState(target, queue, center)


def encode(config, params: PyTree, model_state: PyTree, images: jax.Array
           ) -> jax.Array:
  """Backbone features [B, D] in eval mode of uint8 or normalised images."""
  images, _ = split_batch(images)
  if images.dtype == jnp.uint8:
    mean, std = _stats(config, images.shape[-1])
    images = augment.normalize(augment.to_float(images), mean=mean, std=std)
  features, _ = backbone(config).apply(params["backbone"],
                                       model_state["backbone"], images,
                                       train=False)
  return features
