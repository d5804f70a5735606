"""Plumbing every method factory shares, written once.

* `setup(backbone, backbone_kwargs, augment, dtype)`: the backbone `Model`
  (a registered name or the user's own `Model`), the `Views` of an
  `augment` recipe and the compute dtype, bound once by a factory;
* views: `Views.make(rng, batch)` makes the normalised float32 views of a
  batch inside the jitted step (from the raw uint8 "image", or from host
  crops in "crops"), `Views.normalize` the eval-mode input;
* forward passes: `forward` runs the views through a network, either one
  call per view (BatchNorm statistics per view, as the official code of
  BYOL, SimSiam, MoCo... does) or one call per group of equal-sized views
  (statistics over all of them, SimCLR's concatenated batch and the
  multi-crop wrappers of SwAV and DINO); `target_forward` runs a momentum
  network without gradient;
* the EMA target (`Target`, `init_target`, `update_target`) and schedules
  (`at`: a number or a `step -> value` function);
* `encoder(...)`: `Method.encode` of the online backbone or of the target;
* `redraw_dense` (with `torch_linear_init`): a head's dense layers drawn
  again from the official code's initialisation;
* `stateless_method` and `momentum_method`: whole `Method`s of the methods
  whose loss is one objective of the online pass (SimCLR, Barlow Twins...)
  or of online predictions against a momentum network (BYOL, MoCo v3).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from ssljax import models
from ssljax.data import augment as augment_lib
from ssljax.methods.base import Method, Schedule, StepOutput
from ssljax.state import ema

PyTree = Any

# The parts of a `compose`d online network that its EMA target copies: all
# but the predictor (BYOL, MoCo v3); MoCo v2 and DINO have no predictor.
TARGET_PARTS = ("backbone", "projector")

# How the views meet BatchNorm (`forward`): "per_view", one network call per
# view, statistics per view; "joint", one call per group of equal-sized
# views, statistics over the group.
VIEW_BATCHNORM = ("per_view", "joint")

# Fields of every `ViewSpec` except the crop size, which the views read from
# the images; "multicrop" replaces `scale` by its global/local settings.
_VIEW_FIELDS = tuple(f for f in augment_lib.ViewSpec._fields if f != "size")
_MULTICROP_FIELDS = ("num_local", "global_size", "local_size", "global_scale",
                     "local_scale")
# Normalisation statistics, None for `augment.default_stats` of the channels.
_STATS_FIELDS = ("mean", "std")


# ------------------------------------------------------------- augment ---


def _augment_fields(preset: str) -> tuple[str, ...]:
  if preset == "multicrop":
    return _MULTICROP_FIELDS + tuple(f for f in _VIEW_FIELDS if f != "scale")
  return _VIEW_FIELDS


def augment_config(preset: str, **values) -> Mapping:
  """An `augment` recipe: a preset of `ssljax.data.augment` and overrides.

  Every override the preset accepts is a key, None meaning "the preset's
  value", plus "mean" and "std" (None: `augment.default_stats` of the
  images' channels), so that any of them can be set from the command line.
  The mapping is read-only: it serves as a factory's default.

  Example:
    >>> spec = augment_config("byol", scale=(0.2, 1.0))
    >>> spec["preset"], spec["scale"], spec["blur_prob"]
    ('byol', (0.2, 1.0), None)
  """
  fields = _augment_fields(preset) + _STATS_FIELDS
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ValueError(f"augment_config: unknown override(s) {unknown} for "
                     f"preset {preset!r}; valid: {list(fields)}.")
  return types.MappingProxyType(
      {"preset": preset, **{f: values.get(f) for f in fields}})


class Views(NamedTuple):
  """A bound augmentation recipe (see `views`).

  Attributes:
    make: `make(rng, batch, *, count=None, normalize=True) -> tuple of
      [B, s, s, C] float32 views` of the batch's uint8 "image" (or of its
      host-cropped "crops"): the first `count` views of the recipe (all if
      None), standardised with the recipe's mean and std (or left in [0, 1]
      with `normalize=False`).
    normalize: `normalize(images) -> float32` eval-mode input: uint8 images
      to [0, 1] then standardised; float images are returned as they are.
    specs: `specs(image_size) -> tuple[ViewSpec, ...]`, the recipes of the
      views for square images of that side (the crops a host pipeline cuts
      from variable-size images).
  """
  make: Callable
  normalize: Callable
  specs: Callable


def views(spec: Mapping) -> Views:
  """`Views` of an `augment_config` mapping (missing keys mean None)."""
  spec = dict(spec)
  preset = spec.pop("preset", None)
  if preset not in augment_lib.PRESETS:
    raise ValueError(f"augment: `preset` must be one of "
                     f"{augment_lib.PRESETS}, got {preset!r}.")
  mean, std = spec.pop("mean", None), spec.pop("std", None)
  if (mean is None) != (std is None):
    raise ValueError("augment: give both `mean` and `std` or neither.")
  overrides = {k: v for k, v in spec.items() if v is not None}
  # Checks the override names now, not at the first step.
  augment_lib.preset(preset, image_size=32, **overrides)

  def stats(channels: int):
    if mean is None:
      return augment_lib.default_stats(channels)
    return tuple(mean), tuple(std)

  def specs(image_size: int):
    return augment_lib.preset(preset, image_size=image_size, **overrides)

  def normalize(images):
    if images.dtype != jnp.uint8:
      return images
    channel_mean, channel_std = stats(images.shape[-1])
    return augment_lib.normalize(augment_lib.to_float(images),
                                 mean=channel_mean, std=channel_std)

  def make(rng, batch, *, count: Optional[int] = None,
           normalize: bool = True):
    crops = batch.get("crops") if isinstance(batch, Mapping) else None
    images = first_image(batch)
    recipes = specs(min(images.shape[1:3]))
    if not recipes:  # "none": the batch itself.
      made = (augment_lib.to_float(images),)
    else:
      made = augment_lib.views(
          rng, tuple(crops)[:count] if crops is not None else images,
          recipes[:count], precropped=crops is not None, standardize=False)
    if not normalize:
      return made
    channel_mean, channel_std = stats(images.shape[-1])
    return tuple(augment_lib.normalize(v, mean=channel_mean, std=channel_std)
                 for v in made)

  return Views(make=make, normalize=normalize, specs=specs)


def first_image(batch) -> jax.Array:
  """The uint8 images of a batch: `batch` itself, its "image", or its first
  host crop."""
  if not isinstance(batch, Mapping):
    return batch
  if "image" in batch:
    return batch["image"]
  if "crops" in batch:
    return batch["crops"][0]
  raise ValueError(f"`batch` must hold \"image\" or \"crops\", got keys "
                   f"{sorted(batch)}.")


def labels_of(batch, fn: str) -> jax.Array:
  """`batch["label"]`; a batch without labels raises ValueError."""
  if not isinstance(batch, Mapping) or "label" not in batch:
    raise ValueError(f"{fn}: `batch` must be a dict with \"label\" (int32 "
                     f"[B]); this method is supervised.")
  return batch["label"]


def index_of(batch, fn: str) -> jax.Array:
  """`batch["index"]`; a batch without it raises ValueError."""
  if not isinstance(batch, Mapping) or "index" not in batch:
    keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
    raise ValueError(
        f"{fn}: `batch` must be a dict with \"index\" (int32 [B], the "
        f"examples' rows of the train split, which `ssljax.train.train` adds "
        f"for methods with a `dataset_update`), got {keys}.")
  return batch["index"]


# --------------------------------------------------------------- setup ---


class Setup(NamedTuple):
  """What every factory binds first (see `setup`).

  Attributes:
    backbone: images -> features [B, D].
    views: the bound augmentation recipe.
    kw: `dtype` (computation) and `param_dtype` (float32) keyword arguments
      of every network part.
  """
  backbone: models.Model
  views: Views
  kw: dict


def setup(backbone: str | models.Model, backbone_kwargs: Optional[Mapping],
          augment: Mapping, dtype: str | jnp.dtype) -> Setup:
  """The backbone, the views and the dtype arguments of a method.

  Args:
    backbone: a name of `ssljax.models.get`, or any `models.Model` (your own
      network through `models.from_nnx`, `from_linen`...).
    backbone_kwargs: keyword arguments of the named backbone.
    augment: an `augment_config` mapping.
    dtype: the compute dtype ("float32", "bfloat16"); parameters stay
      float32.
  """
  kw = dict(dtype=jnp.dtype(dtype), param_dtype=jnp.float32)
  if isinstance(backbone, models.Model):
    if backbone_kwargs:
      raise ValueError("`backbone_kwargs` apply to a backbone name only; "
                       "build your `Model` with them instead.")
    net = backbone
  else:
    net = models.get(backbone, **dict(backbone_kwargs or {}), **kw)
  return Setup(net, views(augment), kw)


def with_projector(setup_: Setup, hidden_dim: int, out_dim: int, *,
                   num_layers: int = 2, last_bn: bool = False,
                   **parts: models.Model) -> models.Model:
  """The backbone, an MLP projector (`models.projector`) and other `parts`
  (predictor, prototypes) as one `compose`d network."""
  return models.compose(setup_.backbone, projector=models.projector(
      None, hidden_dim, out_dim, num_layers=num_layers, last_bn=last_bn,
      **setup_.kw), **parts)


def check_view_batchnorm(value: str, fn: str) -> bool:
  """True for "joint", False for "per_view"; anything else raises."""
  if value not in VIEW_BATCHNORM:
    raise ValueError(f"{fn}: `view_batchnorm` must be one of "
                     f"{VIEW_BATCHNORM}, got {value!r}.")
  return value == "joint"


# -------------------------------------------------------- forward passes ---


def forward(model: models.Model, params: PyTree, model_state: PyTree,
            views_: Sequence[jax.Array], *, joint: bool, train: bool = True
            ) -> tuple[dict, PyTree]:
  """Outputs of every view, stacked: {key: [V, B, ...]}, and the new state.

  With `joint`, consecutive views of one shape go through the network in one
  call (BatchNorm statistics over all of them); otherwise each view has its
  own call, the model state threading through them in view order, as
  successive PyTorch forward passes update the running statistics.
  """
  groups: list[list[jax.Array]] = []
  for view in views_:
    if joint and groups and groups[-1][0].shape == view.shape:
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


class Online(NamedTuple):
  """The online network's pass over the views of one batch (see `online`)."""
  views: tuple[jax.Array, ...]
  outputs: dict
  model_state: PyTree


def online(setup_: Setup, model: models.Model, params: PyTree,
           model_state: PyTree, batch, rng: jax.Array, *, joint: bool
           ) -> Online:
  """Views of the batch and the online network's outputs on all of them."""
  views_ = setup_.views.make(rng, batch)
  outputs, model_state = forward(model, params, model_state, views_,
                                 joint=joint)
  return Online(views_, outputs, model_state)


def swapped_pairs_sum(fn: Callable, a: Sequence, b: Sequence) -> jax.Array:
  """fn(a[0], b[1]) + fn(a[1], b[0]): each view predicts the other one."""
  return fn(a[0], b[1]) + fn(a[1], b[0])


def step_output(run: Online, metrics: dict | None = None,
                update: PyTree = ()) -> StepOutput:
  """`StepOutput` of an online pass; embeddings: first view's features."""
  return StepOutput(
      model_state=run.model_state, metrics=metrics or {}, update=update,
      embeddings=jax.lax.stop_gradient(run.outputs["features"][0]))


# ------------------------------------------------- target and schedules ---


def at(value: Schedule, step) -> jax.Array:
  """A setting at `step`: `value(step)` for a schedule, else the number.

  Example:
    >>> print(float(at(0.5, 3)), round(float(at(lambda t: t / 10, 3)), 6))
    0.5 0.3
  """
  out = value(step) if callable(value) else value
  return jnp.asarray(out, jnp.float32)


class Target(NamedTuple):
  """The momentum (EMA) network: a copy of some parts of the online one."""
  params: PyTree
  model_state: PyTree


def init_target(params: PyTree, model_state: PyTree,
                parts: Sequence[str] = TARGET_PARTS) -> Target:
  """The target starts as a copy of the online `parts`."""
  return Target(ema.init({k: params[k] for k in parts}),
                ema.init({k: model_state[k] for k in parts}))


def target_forward(model: models.Model, target: Target,
                   views_: Sequence[jax.Array], *, joint: bool
                   ) -> tuple[dict, PyTree]:
  """`forward` of the EMA network in train mode, without gradient."""
  outputs, model_state = forward(model, target.params, target.model_state,
                                 views_, joint=joint)
  return jax.lax.stop_gradient(outputs), model_state


def update_target(target: Target, params: PyTree, momentum: jax.Array,
                  model_state: PyTree) -> Target:
  """θt ← m·θt + (1 − m)·θ over the target's parts; its BatchNorm
  statistics are those of its own forward pass (`model_state`)."""
  current = {k: params[k] for k in target.params}
  return Target(ema.update(target.params, current, momentum), model_state)


# ------------------------------------------------------------ the queue ---


def queue_rows(views_: jax.Array) -> jax.Array:
  """[V, B, D] -> [B, V·D]: one queue row holds an example's V views."""
  n_views, batch, dim = views_.shape
  return jnp.transpose(views_, (1, 0, 2)).reshape(batch, n_views * dim)


def queue_views(buffer: jax.Array, n_views: int) -> jax.Array:
  """A queue's buffer [K, V·D] as [V, K, D], inverse of `queue_rows`."""
  size, width = buffer.shape
  return jnp.transpose(buffer.reshape(size, n_views, width // n_views),
                       (1, 0, 2))


# ------------------------------------------------------ methods, whole ---


def initialize(setup_: Setup, model: models.Model, rng: jax.Array, batch
               ) -> tuple[PyTree, PyTree]:
  """(params, model_state) of `model` on inputs shaped like the first view."""
  first = jax.eval_shape(lambda: setup_.views.make(rng, batch, count=1))[0]
  return model.init(rng, jnp.zeros(first.shape, first.dtype))


def encoder(setup_: Setup, *, target: bool = False) -> Callable:
  """`Method.encode`: backbone features [B, D] in eval mode of uint8 or
  normalised images, from the online backbone or, with `target`, the EMA
  target's (`method_state.target`)."""

  def encode(params, model_state, method_state, images):
    x = setup_.views.normalize(first_image(images))
    if target:
      params, model_state = method_state.target
    features, _ = setup_.backbone.apply(params["backbone"],
                                        model_state["backbone"], x,
                                        train=False)
    return features

  return encode


def frozen_at(params: PyTree, path: Sequence[str], frozen: jax.Array
              ) -> PyTree:
  """A `Method.frozen` mask: `frozen` (a bool scalar) at the subtree of
  `params` at `path`, False elsewhere.

  Example:
    >>> mask = frozen_at({"a": {"b": 1.0, "c": 2.0}, "d": 3.0}, ("a", "b"),
    ...                  True)
    >>> print(jax.tree.map(bool, mask))
    {'a': {'b': True, 'c': False}, 'd': False}
  """
  def mark(tree, path):
    if not path:
      return jax.tree.map(lambda _: jnp.asarray(frozen, bool), tree)
    head, *rest = path
    return {k: mark(v, rest) if k == head else
            jax.tree.map(lambda _: jnp.zeros((), bool), v)
            for k, v in tree.items()}

  return mark(params, tuple(path))


# `init(key, shape, fan_in) -> array`: a draw for `redraw_dense`.
DenseInit = Callable[[jax.Array, tuple, int], jax.Array]


def torch_linear_init(key: jax.Array, shape: tuple, fan_in: int
                      ) -> jax.Array:
  """PyTorch's default `nn.Linear` draw of a weight or bias:
  U(−1/√fan_in, 1/√fan_in) (`kaiming_uniform_` with a = √5, and the bias),
  where the official MoCo and DINO heads start."""
  bound = 1.0 / jnp.sqrt(float(fan_in))
  return jax.random.uniform(key, shape, jnp.float32, -bound, bound)


def is_vit_preset(backbone: str | models.Model) -> bool:
  """Whether `backbone` names one of `models.VIT_SIZES`."""
  return isinstance(backbone, str) and backbone in models.VIT_SIZES


def torch_conv_init(conv: dict, rng: jax.Array) -> dict:
  """A convolution's {"kernel": [kh, kw, c_in, c_out], "bias"} drawn again
  as PyTorch's default `nn.Conv2d`: both U(±1/√fan_in), fan_in = kh·kw·c_in.
  Where DINO's and iBOT's ViT patch embedding starts: their
  `_init_weights` redraws only the Linear and LayerNorm layers."""
  kh, kw, c_in, _ = conv["kernel"].shape
  keys = jax.random.split(rng)
  return dict(conv, **{name: torch_linear_init(key, conv[name].shape,
                                               kh * kw * c_in)
                       for name, key in zip(("kernel", "bias"), keys)})


def redraw_dense(params: PyTree, rng: jax.Array, kernel_init: DenseInit,
                 bias_init: Optional[DenseInit] = None) -> PyTree:
  """`params` with every dense layer drawn again from an official init.

  A dense layer is a dict holding a 2-D "kernel" [fan_in, out]: its kernel
  becomes `kernel_init(key, shape, fan_in)` and, with `bias_init`, its
  "bias" `bias_init(key, shape, fan_in)`; other leaves are kept. Each layer
  gets its own key (folded from `rng` by its position in the tree).

  Example:
    >>> params = {"a": {"kernel": jnp.zeros((4, 2)), "bias": jnp.zeros(2)},
    ...           "scale": jnp.ones(2)}
    >>> new = redraw_dense(params, jax.random.key(0), torch_linear_init,
    ...                    torch_linear_init)
    >>> print(bool(jnp.all(jnp.abs(new["a"]["kernel"]) <= 0.5)),
    ...       bool(jnp.any(new["a"]["bias"] != 0)), new["scale"].tolist())
    True True [1.0, 1.0]
  """
  counter = iter(range(len(jax.tree.leaves(params))))

  def visit(node):
    if not isinstance(node, Mapping):
      return node
    kernel = node.get("kernel")
    if kernel is None or getattr(kernel, "ndim", 0) != 2:
      return {k: visit(v) for k, v in node.items()}
    key = jax.random.fold_in(rng, next(counter))
    fan_in = kernel.shape[0]
    new = dict(node, kernel=kernel_init(key, kernel.shape, fan_in).astype(
        kernel.dtype))
    if bias_init is not None and "bias" in node:
      bias = node["bias"]
      new["bias"] = bias_init(jax.random.fold_in(key, 1), bias.shape,
                              fan_in).astype(bias.dtype)
    return new

  return visit(params)


def keep(params, method_state, update, step):
  """`Method.post_update` of a method with nothing to advance."""
  del update, step  # Nothing moves.
  return params, method_state


def stateless_method(name: str, setup_: Setup, model: models.Model,
                     objective: Callable[[Online, PyTree], jax.Array], *,
                     joint: bool) -> Method:
  """The `Method` whose loss is `objective(run, batch)` of the online pass
  `run` over the views (SimCLR, SimSiam, Barlow Twins...); it carries no
  state between steps (`method_state` is `()`)."""

  def init(rng, batch):
    return (*initialize(setup_, model, rng, batch), ())

  def loss(params, model_state, method_state, batch, rng, step):
    del method_state, step  # Nothing is carried between steps.
    run = online(setup_, model, params, model_state, batch, rng, joint=joint)
    return objective(run, batch), step_output(run)

  return Method(name=name, init=init, loss=loss, post_update=keep,
                encode=encoder(setup_), crops=setup_.views.specs)


class MomentumState(NamedTuple):
  """The state of BYOL and MoCo v3: the EMA target network."""
  target: Target


def momentum_method(name: str, setup_: Setup, online_net: models.Model,
                    target_net: models.Model, pair_loss: Callable, *,
                    momentum: Schedule, joint: bool) -> Method:
  """BYOL and MoCo v3: `pair_loss(p, z')` of the online predictions and the
  EMA target's projections, summed over the two swapped view pairs; the
  target (backbone and projector) follows θt ← m(t)·θt + (1 − m(t))·θ."""

  def init(rng, batch):
    params, model_state = initialize(setup_, online_net, rng, batch)
    return params, model_state, MomentumState(init_target(params, model_state))

  def loss(params, model_state, method_state, batch, rng, step):
    run = online(setup_, online_net, params, model_state, batch, rng,
                 joint=joint)
    targets, target_state = target_forward(target_net, method_state.target,
                                           run.views, joint=joint)
    value = swapped_pairs_sum(pair_loss, run.outputs["prediction"],
                              targets["projection"])
    return value, step_output(run, {"momentum": at(momentum, step)},
                              target_state)

  def post_update(params, method_state, update, step):
    return params, MomentumState(update_target(
        method_state.target, params, at(momentum, step), update))

  return Method(name=name, init=init, loss=loss, post_update=post_update,
                encode=encoder(setup_), crops=setup_.views.specs)
