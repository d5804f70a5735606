"""The `Method` protocol: a self-supervised method as pure functions.

A method never holds state. Everything it carries between steps (EMA target,
queue, DINO center, prototypes' freeze counter...) lives in `method_state`, a
pytree owned by `TrainState`, so it is sharded, donated and checkpointed with
the rest of the state.

Every function takes the experiment `config` (an `ml_collections.ConfigDict`)
first; the method reads its hyper-parameters from `config.method` (which
starts from its `default_config()`) and schedules from `config.total_steps`.
`make_train_step` binds it with `functools.partial`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax

PyTree = Any


class StepOutput(NamedTuple):
  """What `Method.loss` returns beside the scalar loss (its `aux`).

  Attributes:
    model_state: new mutable model state (BatchNorm statistics) of the online
      network, same structure as the input `model_state`.
    metrics: dict of scalar arrays to log (e.g. `{"logits_std": ...}`).
    update: anything `post_update` needs from the forward pass (keys to push
      into a queue, teacher logits for the DINO center...); `{}` if nothing.
    embeddings: [B, D] backbone features of the first view, used by collapse
      monitors; never differentiated.
  """
  model_state: PyTree
  metrics: dict
  update: PyTree
  embeddings: jax.Array


class DatasetUpdate(NamedTuple):
  """A method's pass over the whole training set every few steps.

  DeepCluster's k-means, SeLa's Sinkhorn labels and PCL's clusterings are
  functions of every training example's features, which no batch holds.
  `ssljax.train.train` runs this pass before step 0 and before every step t
  with t % every(config) == 0 (also the step a resumed run starts at, so a
  resumed run repeats and skips none), in three stages:

    features_i = features(config, params, model_state, method_state, x_i)
                 for every example i of the train split, in dataset order;
    params, method_state, metrics = update(config, params, model_state,
                                           method_state, F, rng, t)
    the optimizer state of every `reset` entry of params is zeroed.

  The train batches then carry "index" (int32 [B], the examples' rows of F)
  so that `loss` can look up per-example pseudo-labels kept in
  `method_state`.

  Attributes:
    every: `every(config) -> int`, steps between passes (DeepCluster and PCL:
      one epoch; SeLa: its label-update schedule).
    features: `features(config, params, model_state, method_state, images)
      -> [B, D]` float32, eval-mode features of uint8 images [B, H, W, C];
      jitted with the batch split over the mesh like the train step.
    update: `update(config, params, model_state, method_state, features,
      rng, step) -> (params, method_state, metrics)`, `features` [N, D] of
      the whole split (row i is example i), jitted and replicated; `metrics`
      a dict of scalars logged at that step (cluster sizes, NMI...).
    reset: top-level keys of `params` that `update` re-initialises
      (DeepCluster's classifier); their optimizer state (momentum, Adam
      moments) restarts from zero, as for a fresh optimizer.
  """
  every: Callable
  features: Callable
  update: Callable
  reset: tuple[str, ...] = ()


class Method(NamedTuple):
  """A method as pure functions (see module docstring for the conventions).

  Attributes:
    name: registry name, e.g. "byol".
    init: `init(config, rng, images) -> (params, model_state, method_state)`;
      `images` is one raw uint8 batch [B, H, W, C] used for shapes only.
    loss: `loss(config, params, model_state, method_state, batch, rng, step)
      -> (scalar_loss, StepOutput)`; `batch` is the global batch dict
      (`"image"` raw uint8 [B, H, W, C], `"label"` int32 [B], used only by
      supervised methods); makes its own views from the raw images with
      `ssljax.data.augment` inside the jitted step, and is
      differentiated with respect to `params` only.
    post_update: `post_update(config, params, method_state, update, step)
      -> method_state`; runs after the optimizer update inside the same jitted
      step (EMA of the target network, queue push, center update).
    encode: `encode(config, params, model_state, images) -> [B, D]` backbone
      features of uint8 (or float, already normalised) images in eval mode,
      used by kNN and linear evaluation.
    default_config: `default_config() -> ConfigDict` with the method's
      hyper-parameters (temperatures, dims, momentum, backbone name...), the
      value of `config.method`.
    optimizer_mask: optional `mask(params) -> pytree of bools`, False for
      leaves the optimizer must not update (e.g. frozen prototypes), or None.
    dataset_update: optional `DatasetUpdate`, a periodic pass over the whole
      training set (clustering methods), or None.
  """
  name: str
  init: Callable
  loss: Callable
  post_update: Callable
  encode: Callable
  default_config: Callable
  optimizer_mask: Callable | None = None
  dataset_update: DatasetUpdate | None = None
