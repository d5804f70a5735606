"""The standard protocols on a pre-trained encoder: linear evaluation and
fine-tuning, their recipes and their classifiers.

* Linear evaluation (`linear_protocol`, `linear_classifier`): the method's
  evaluation network (`Method.encode`: the online backbone, DINO's
  teacher) frozen in eval mode, a linear layer (no BatchNorm, weights
  N(0, 0.01²), bias 0) trained on random-resized-crop + flip views with SGD,
  momentum 0.9, base rate 0.1 × B/256, a cosine schedule, no weight decay,
  100 epochs, batch 256, then scored on the centre crops: MoCo v3's
  `main_lincls.py`, DINO's `eval_linear.py`, solo-learn's offline
  `main_linear.py`. Where a method's official code differs
  (`LINEAR_RECIPES`): MoCo v1/v2 use rate 30 divided by 10 at epochs 60 and
  80; DINO base rate 0.001; MoCo v3 90 epochs.
* Fine-tuning (`finetune_protocol`, `finetune_classifier`): the same
  network's backbone, trained end to end (BatchNorm in train mode) with a
  fresh linear head (weights N(0, 2e-5²) as MAE's truncated normal), MAE's
  `main_finetune.py` recipe: AdamW (0.9, 0.999), base rate 5e-4 × B/256,
  5 warm-up epochs then a cosine to 1e-6, weight decay 0.05 except biases,
  norms, the position embedding and the CLS token, layer-wise rate decay
  0.65 (`layer_scales`) and drop path 0.1 for ViTs, label smoothing 0.1,
  100 epochs. With
  `label_fraction` 0.01 or 0.1 it is the semi-supervised protocol of SimCLR
  and BYOL on a fixed class-balanced subset of the labels.

docs/evaluation.md lists the official sources and every difference.
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ssljax import methods, models, train
from ssljax.data import augment
from ssljax.evaluate import supervised
from ssljax.evaluate.linear import LinearParams
from ssljax.evaluate.supervised import Classifier
from ssljax.train import checkpoint, evaluation
from ssljax.train.state import TrainState

PyTree = Any

# Overrides of the linear protocol where a method's official linear
# evaluation differs from the default (MoCo v3's main_lincls.py).
LINEAR_RECIPES = {
    # MoCo v1/v2 main_lincls.py: lr 30 (batch 256), x0.1 at epochs 60, 80.
    "moco_v2": {"optimizer.learning_rate": 30.0,
                "optimizer.schedule": "step"},
    # MoCo v3 main_lincls.py: 90 epochs.
    "moco_v3": {"epochs": 90},
    # DINO eval_linear.py: lr 0.001 x B/256.
    "dino": {"optimizer.learning_rate": 1e-3},
}

# Views adapted to a dataset, for both protocols. Digits are not mirror
# symmetric and lose their class in crops of 8% of their area; the mnist5k
# pre-training recipes crop (0.5, 1) without flips for the same reason.
DATASET_VIEWS = {"mnist5k": {"views.scale": (0.5, 1.0),
                             "views.flip_prob": 0.0}}

# Backbone parameters that get no weight decay when fine-tuning, beside
# every leaf of rank <= 1 (MAE's `no_weight_decay()` of its ViT).
NO_WEIGHT_DECAY = ("pos_embed", "cls_token")



def base_protocol(name: str) -> ml_collections.ConfigDict:
  """Every field of a protocol config, with the linear evaluation's values.

  Fields: `name` ("linear" or "finetune": the results' prefix), `epochs`,
  `batch_size` (global), `label_fraction` (of the training labels, a
  class-balanced subset drawn with `subset_seed`), `seed` (views,
  shuffling, head), `label_smoothing`, `head_init_std`, `drop_path_rate`
  (stochastic depth of a fine-tuned ViT), `optimizer` (`name`
  "sgd" or "adamw", `learning_rate` the base rate for a batch of 256,
  `momentum` (AdamW's β1), `nesterov`, `b2`, `weight_decay`, `schedule`
  "cosine" or "step", `milestones` (fractions of the run where the step
  schedule divides the rate by 10),
  `warmup_epochs`, `min_learning_rate`, `layer_decay`), `views` (`scale`,
  `ratio`, `flip_prob`), `checkpoint_every` and `log_every` (steps; unset:
  every 10 epochs and every epoch), `max_to_keep`, `mesh.data`, and the
  pre-trained run's `dataset` (`name`, `path`, `image_size`), `data_dir`
  and `pretrained` (`method`, `fingerprint` of its config, checkpoint
  `step`), which `linear_protocol`/`finetune_protocol` fill in.

  Example:
    >>> print(base_protocol("linear").optimizer.learning_rate)
    0.1
  """
  placeholder = ml_collections.config_dict.placeholder
  return ml_collections.ConfigDict(dict(
      name=name, epochs=100, batch_size=256, label_fraction=1.0,
      subset_seed=0, seed=0, label_smoothing=0.0, head_init_std=0.01,
      drop_path_rate=0.0,
      optimizer=dict(name="sgd", learning_rate=0.1, momentum=0.9,
                     nesterov=False, b2=0.999, weight_decay=0.0,
                     schedule="cosine", milestones=(0.6, 0.8),
                     warmup_epochs=0, min_learning_rate=0.0,
                     layer_decay=1.0),
      views=dict(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), flip_prob=0.5),
      checkpoint_every=placeholder(int), log_every=placeholder(int),
      max_to_keep=3, mesh=dict(data=-1),
      dataset=dict(name="", path=placeholder(str),
                   image_size=placeholder(int)),
      data_dir=placeholder(str),
      pretrained=dict(method="", fingerprint="", step=-1)))


def linear_protocol(pretrain_config) -> ml_collections.ConfigDict:
  """The linear evaluation of a pre-training run (module docstring).

  Example:
    >>> import ml_collections
    >>> run = ml_collections.ConfigDict(dict(
    ...     method=dict(name="moco_v2"), dataset=dict(name="cifar10")))
    >>> protocol = linear_protocol(run)
    >>> print(protocol.optimizer.learning_rate, protocol.optimizer.schedule)
    30.0 step
  """
  protocol = base_protocol("linear")
  _update(protocol, LINEAR_RECIPES.get(pretrain_config.method.name, {}))
  return _for_run(protocol, pretrain_config)


def finetune_protocol(pretrain_config) -> ml_collections.ConfigDict:
  """The fine-tuning of a pre-training run (module docstring); layer-wise
  decay 0.65 for ViT backbones, none (1.0) for the others, whose official
  fine-tuning (SimCLR, BYOL) has none; ViTs also get MAE's stochastic
  depth 0.1.

  Example:
    >>> import ml_collections
    >>> run = ml_collections.ConfigDict(dict(
    ...     method=dict(name="dino", backbone="vit_small"),
    ...     dataset=dict(name="cifar10")))
    >>> protocol = finetune_protocol(run)
    >>> print(protocol.optimizer.name, protocol.optimizer.layer_decay)
    adamw 0.65
  """
  protocol = base_protocol("finetune")
  vit = str(pretrain_config.method.get("backbone", "")).startswith("vit")
  _update(protocol, {
      "label_smoothing": 0.1, "head_init_std": 2e-5,
      "optimizer.name": "adamw", "optimizer.learning_rate": 5e-4,
      "optimizer.b2": 0.999, "optimizer.weight_decay": 0.05,
      "optimizer.warmup_epochs": 5, "optimizer.min_learning_rate": 1e-6,
      "optimizer.layer_decay": 0.65 if vit else 1.0,
      "drop_path_rate": 0.1 if vit else 0.0})
  return _for_run(protocol, pretrain_config)


def _for_run(protocol, pretrain_config) -> ml_collections.ConfigDict:
  dataset = pretrain_config.dataset
  _update(protocol, DATASET_VIEWS.get(dataset.name, {}))
  protocol.dataset.update(name=dataset.name, path=dataset.get("path"),
                          image_size=dataset.get("image_size"))
  protocol.data_dir = pretrain_config.get("data_dir")
  protocol.pretrained.update(method=pretrain_config.method.name,
                             fingerprint=checkpoint.fingerprint(
                                 pretrain_config))
  return protocol


def _update(config: ml_collections.ConfigDict, values: dict) -> None:
  """Sets {dotted key: value} in `config`."""
  for key, value in values.items():
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
      node = node[part]
    node[leaf] = value


# ---------------------------------------------------------- classifiers ---


def _head(rng: jax.Array, dim: int, num_classes: int, std: float
          ) -> LinearParams:
  return LinearParams(
      weights=std * jax.random.normal(rng, (dim, num_classes), jnp.float32),
      bias=jnp.zeros((num_classes,), jnp.float32))


def _logits(head: LinearParams, features: jax.Array) -> jax.Array:
  return features.astype(jnp.float32) @ head.weights + head.bias


def linear_classifier(method, params: PyTree, model_state: PyTree,
                      method_state: PyTree, *, num_classes: int,
                      head_init_std: float = 0.01) -> Classifier:
  """A linear layer on `method.encode` of a frozen pre-trained state.

  logits = stop_gradient(encode(θ, s, m, x)) W + b: the encoder runs in
  eval mode on the uint8 views, normalised by the method itself.

  Args:
    method: the pre-trained `Method`.
    params, model_state, method_state: its trained state (frozen).
    num_classes: C.
    head_init_std: std of W at init (b starts at 0).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import methods
    >>> simclr = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=8,
    ...                         proj_dim=4, augment={"preset": "none"})
    >>> images = jnp.zeros((2, 8, 8, 1), jnp.uint8)
    >>> state = simclr.init(jax.random.key(0), images)
    >>> clf = linear_classifier(simclr, *state, num_classes=3)
    >>> head, _ = clf.init(jax.random.key(1), clf.source, images)
    >>> logits, _ = clf.apply(head, (), clf.frozen, images, train=True)
    >>> print(head.weights.shape, logits.shape)
    (8, 3) (2, 3)
  """

  def features(frozen, images):
    return jax.lax.stop_gradient(method.encode(*frozen, images))

  def init(rng, source, images):
    dim = jax.eval_shape(features, source, images).shape[-1]
    return _head(rng, dim, num_classes, head_init_std), ()

  def apply(head, model_state_, frozen, images, *, train):
    del train  # The encoder is frozen in eval mode either way.
    return _logits(head, features(frozen, images)), model_state_

  frozen = (params, model_state, method_state)
  return Classifier(init=init, apply=apply, source=frozen, frozen=frozen)


def finetune_classifier(backbone: models.Model, backbone_params: PyTree,
                        backbone_state: PyTree, *, num_classes: int,
                        mean: Sequence[float], std: Sequence[float],
                        head_init_std: float = 2e-5,
                        layer_decay: float = 1.0) -> Classifier:
  """The pre-trained backbone and a fresh linear head, trained end to end.

  logits = backbone((x / 255 − mean) / std) W + b, BatchNorm in train mode
  while training. Parameters {"backbone": ..., "head": LinearParams}; the
  learning rate of a backbone leaf is scaled by `layer_scales` (the head's
  by 1); weight decay skips rank <= 1 leaves and `NO_WEIGHT_DECAY`.

  Args:
    backbone: the pre-trained `models.Model`.
    backbone_params, backbone_state: its weights and BatchNorm statistics
      (`encoder_weights`).
    num_classes: C.
    mean, std: the normalisation of the method's evaluation.
    head_init_std: std of W at init (b starts at 0).
    layer_decay: d of `layer_scales`, in (0, 1].

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import models
    >>> net = models.tiny_cnn(width=4)
    >>> images = jnp.zeros((2, 8, 8, 1), jnp.uint8)
    >>> weights = net.init(jax.random.key(0), images / 1.0)
    >>> clf = finetune_classifier(net, *weights, num_classes=3, mean=(0.5,),
    ...                           std=(0.25,), layer_decay=0.5)
    >>> params, state = clf.init(jax.random.key(1), clf.source, images)
    >>> logits, _ = clf.apply(params, state, (), images, train=True)
    >>> print(logits.shape, sorted(params))
    (2, 3) ['backbone', 'head']
  """
  mean, std = tuple(mean), tuple(std)

  def features(params, state, images, train):
    x = augment.normalize(augment.to_float(images), mean=mean, std=std)
    return backbone.apply(params, state, x, train=train)

  def init(rng, source, images):
    params, state = source
    backbone_rng, head_rng = jax.random.split(rng)
    # The pre-trained statistics, plus what this backbone's state has
    # beside them (the stream of a ViT's drop-path masks).
    fresh = backbone.init(backbone_rng, augment.to_float(images))[1]
    state = {**fresh, **state}
    out = jax.eval_shape(lambda: features(params, state, images, False))[0]
    return {"backbone": params,
            "head": _head(head_rng, out.shape[-1], num_classes,
                          head_init_std)}, state

  def apply(params, state, frozen, images, *, train):
    del frozen  # Nothing is frozen.
    out, state = features(params["backbone"], state, images, train)
    return _logits(params["head"], out), state

  def lr_scale(params):
    return {"backbone": layer_scales(params["backbone"], layer_decay),
            "head": jax.tree.map(lambda _: 1.0, params["head"])}

  excluded = {("backbone", name) for name in NO_WEIGHT_DECAY}

  def decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, decayed: decayed and _keys(path)[:2] not in excluded,
        train.decay_mask(params))

  return Classifier(init=init, apply=apply,
                    source=(backbone_params, backbone_state), frozen=(),
                    lr_scale=lr_scale, decay_mask=decay_mask)


def _keys(path) -> tuple:
  """A pytree path as its dict keys / attribute names / indices."""
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))
               for k in path)


# ---------------------------------------------------- layer-wise decay ---


def layer_id(path: Sequence[str]) -> Optional[int]:
  """The depth of a parameter of a backbone other than a ViT, by its path
  in `params["backbone"]`: the fallback of `layer_ids`, in the spirit of
  MAE's `get_layer_id_for_vit` (embeddings 0, block i at i + 1):

    stem/...              (ResNet stem)          0
    stages/stage{s}/...   (ResNet, s = 1..4)     s
    conv_bn{i}/...        (tiny_cnn, small_cnn)  i + 1
    anything else                                None: the top, like the
                                                 head

  Example:
    >>> layer_id(("stages", "stage3", "block0", "layers", "conv_bn0"))
    3
    >>> layer_id(("conv_bn0", "conv", "kernel")), layer_id(("head",))
    (1, None)
  """
  first = str(path[0])
  if first == "stem":
    return 0
  stage = re.fullmatch(r"stage(\d+)", str(path[1])) if len(path) > 1 \
      else None
  if first == "stages" and stage:
    return int(stage[1])
  conv = re.fullmatch(r"conv_bn(\d+)", first)
  return None if conv is None else int(conv[1]) + 1


def layer_ids(backbone_params: PyTree) -> tuple[PyTree, int]:
  """Every backbone leaf's depth, shaped like `backbone_params`, and L, the
  depth of the head: a ViT's from `ssljax.models.layer_ids` (MAE's rule:
  embeddings 0, block i at i + 1, the final norm at L = depth + 1), any
  other backbone's from `layer_id`, with L one above the deepest known
  layer and the unknown paths at L.

  Example:
    >>> layer_ids({"stem": 0.0, "stages": {"stage1": 0.0}, "norm": 0.0})
    ({'norm': 2, 'stages': {'stage1': 1}, 'stem': 0}, 2)
  """
  if isinstance(backbone_params, dict) and "blocks" in backbone_params:
    return models.layer_ids(backbone_params), \
        len(backbone_params["blocks"]) + 1
  ids = jax.tree_util.tree_map_with_path(
      lambda path, _: layer_id(_keys(path)), backbone_params)
  is_leaf = lambda x: x is None  # pylint: disable=unnecessary-lambda-assignment
  top = max((i for i in jax.tree.leaves(ids, is_leaf=is_leaf)
             if i is not None), default=-1) + 1
  return jax.tree.map(lambda i: top if i is None else i, ids,
                      is_leaf=is_leaf), top


def layer_scales(backbone_params: PyTree, layer_decay: float) -> PyTree:
  """Each backbone leaf's learning-rate scale d^(L − id) with `layer_ids`'
  ids and L (MAE's `param_groups_lrd`: a ViT's final norm and the head
  keep the full rate; a ResNet's stem gets d^5, its last stage d). A
  backbone with no known layer is not decayed.

  Example:
    >>> params = {"patch_embed": 0.0, "blocks": {"block0": 0.0,
    ...           "block1": 0.0}, "norm": 0.0}
    >>> layer_scales(params, 0.5)
    {'blocks': {'block0': 0.25, 'block1': 0.5}, 'norm': 1.0, 'patch_embed': 0.125}
  """
  if not 0 < layer_decay <= 1:
    raise ValueError(f"layer_scales: `layer_decay` must be in (0, 1], got "
                     f"{layer_decay!r}.")
  ids, top = layer_ids(backbone_params)
  return jax.tree.map(lambda i: float(layer_decay ** (top - i)), ids)


# ------------------------------------------------------ pre-trained run ---


def normalization(pretrain_config, channels: int
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """The mean and std the run's method normalises its inputs with:
  `method.augment.mean/std`, or `augment.default_stats` when unset."""
  spec = pretrain_config.method.get("augment") or {}
  if spec.get("mean") is None:
    return augment.default_stats(channels)
  return tuple(spec["mean"]), tuple(spec["std"])


def backbone_of(pretrain_config, method: methods.Method, *,
                drop_path_rate: float = 0.0) -> models.Model:
  """The run's backbone `Model` as `method` (built from `pretrain_config`)
  builds it: its own `backbone` where it has one (the masked image
  models' ViTs), else the config's preset with its `backbone_kwargs`; with
  stochastic depth `drop_path_rate` if positive (ViTs only)."""
  if method.backbone is not None:
    return method.backbone(drop_path_rate)
  config = pretrain_config.method
  kwargs = dict(config.get("backbone_kwargs") or {})
  if drop_path_rate:
    kwargs["drop_path_rate"] = drop_path_rate
  return models.get(config.backbone, **kwargs,
                    dtype=jnp.dtype(config.get("dtype", "float32")),
                    param_dtype=jnp.float32)


def encoder_weights(method, backbone: models.Model, params: PyTree,
                    model_state: PyTree, method_state: PyTree,
                    images: jax.Array, *, mean: Sequence[float],
                    std: Sequence[float]) -> tuple[PyTree, PyTree]:
  """The backbone weights `method.encode` evaluates: the online
  `params["backbone"]` or the EMA `method_state.target` (DINO's teacher).

  Found by running both on `images` (uint8 [B, H, W, C]) and comparing
  with `method.encode`, so no method needs to say which it uses.

  Raises:
    ValueError: if neither gives `method.encode`'s features (a method whose
      evaluation network is not its backbone on normalised images, such as
      CPC's patch grid, cannot be fine-tuned this way).
  """
  candidates = []
  for tree, state in ((params, model_state),
                      getattr(method_state, "target", None) or (None, None)):
    if isinstance(tree, dict) and "backbone" in tree:
      candidates.append((tree["backbone"], state["backbone"]))

  x = augment.normalize(augment.to_float(images), mean=tuple(mean),
                        std=tuple(std))
  # What the backbone keeps in its state; a student's also holds its
  # drop-path stream (iBOT), which evaluation does not use.
  kept = jax.eval_shape(backbone.init, jax.random.key(0), x)[1]

  @jax.jit
  def features(candidates):
    return (method.encode(params, model_state, method_state, images),
            [backbone.apply(p, {k: s[k] for k in kept}, x, train=False)[0]
             for p, s in candidates])

  expected, found = features(candidates)
  for candidate, got in zip(candidates, found):
    if got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4,
                                                   atol=1e-5):
      return candidate
  raise ValueError(
      f"finetune: {method.name}'s `encode` is neither its backbone "
      "(params['backbone']) nor its EMA target's on images normalised with "
      f"mean {tuple(mean)} and std {tuple(std)}; fine-tuning needs a method "
      "whose evaluation network is its backbone.")


# --------------------------------------------------------------- a run ---


def directory(protocol, named_step: bool = False) -> str:
  """The protocol's directory in the run's workdir: its `name`, with the
  label percentage when it uses a fraction ("linear", "finetune_1pct"), and
  with `named_step` the pre-trained checkpoint's step ("linear_step300"):
  evaluations of earlier checkpoints each keep their own.

  Example:
    >>> protocol = base_protocol("finetune")
    >>> protocol.label_fraction = 0.1
    >>> directory(protocol)
    'finetune_10pct'
  """
  name = protocol.name
  if protocol.label_fraction != 1:
    name += f"_{100 * protocol.label_fraction:g}pct"
  return name + (f"_step{protocol.pretrained.step}" if named_step else "")


def run(name: str, config, state: TrainState, workdir: str, *,
        overrides: Optional[Mapping[str, Any]] = None,
        named_step: bool = False
        ) -> tuple[ml_collections.ConfigDict, dict[str, float]]:
  """Runs a protocol ("linear" or "finetune") on a pre-trained state.

  Builds the protocol of `config` (`linear_protocol`/`finetune_protocol`),
  applies `overrides` ({dotted key: value}), records `state`'s step as
  `pretrained.step`, and trains and scores its classifier with
  `supervised.fit` in `<workdir>/<directory(protocol, named_step)>`,
  resuming there.

  Args:
    name: "linear" or "finetune".
    config: the pre-training run's config.
    state: its `TrainState` (`ssljax.train.restore_state`).
    workdir: the pre-training run's directory.
    overrides: protocol fields to change.
    named_step: put the checkpoint's step in the directory's name (an
      evaluation of a chosen, not the latest, checkpoint).

  Returns:
    (the protocol, the result of `supervised.fit`).
  """
  builders = {"linear": linear_protocol, "finetune": finetune_protocol}
  if name not in builders:
    raise ValueError(f"run: `name` must be one of {tuple(builders)}, got "
                     f"{name!r}.")
  protocol = builders[name](config)
  _update(protocol, dict(overrides or {}))
  protocol.pretrained.step = int(jax.device_get(state.step))
  supervised.check(protocol)
  method = methods.build(config)
  info = evaluation.dataset_info(config)
  if name == "linear":
    classifier = linear_classifier(
        method, state.params, state.model_state, state.method_state,
        num_classes=info.num_classes, head_init_std=protocol.head_init_std)
  else:
    mean, std = normalization(config, info.image_shape[-1])
    backbone = backbone_of(config, method)
    # Noise images tell the online backbone from the EMA target.
    images = np.random.default_rng(0).integers(
        0, 256, (4, *info.image_shape), dtype=np.uint8)
    weights = encoder_weights(method, backbone, state.params,
                              state.model_state, state.method_state, images,
                              mean=mean, std=std)
    classifier = finetune_classifier(
        backbone_of(config, method, drop_path_rate=protocol.drop_path_rate),
        *weights, num_classes=info.num_classes, mean=mean, std=std,
        head_init_std=protocol.head_init_std,
        layer_decay=protocol.optimizer.layer_decay)
  result = supervised.fit(protocol, classifier,
                          os.path.join(workdir, directory(protocol, named_step)))
  return protocol, result
