"""The `Method` protocol: a self-supervised method as pure functions.

A method is built once by its factory (`ssljax.methods.simclr(temperature=
0.2, ...)`), which binds every hyper-parameter; the functions it returns
close over them and never see an experiment config. A method holds no state:
everything it carries between steps (EMA target, queue, DINO centre,
pseudo-labels...) lives in `method_state`, its own NamedTuple of
`ssljax.state` pieces, which the training loop shards, donates and
checkpoints with the parameters.

Step-dependent settings (EMA momentum, teacher temperature, freezes) are
numbers or `step -> value` schedules (`Schedule`), so no method needs to know
the length of the run.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax

PyTree = Any

# A value, or a function of the (traced) int32 step giving it.
Schedule = Union[float, Callable[[jax.Array], jax.Array]]


class StepOutput(NamedTuple):
  """What `Method.loss` returns beside the scalar loss (its `aux`).

  Attributes:
    model_state: new mutable model state (BatchNorm statistics) of the online
      network, same structure as the input `model_state`.
    metrics: dict of scalar arrays to log (e.g. `{"momentum": ...}`).
    update: what `post_update` needs from the forward pass (keys to push
      into a queue, teacher logits for the DINO centre...), a pytree the
      method defines; `()` if nothing.
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
  with t % every == 0 (also the step a resumed run starts at, so a resumed
  run repeats and skips none), in three stages:

    features_i = features(params, model_state, method_state, x_i)
                 for every example i of the train split, in dataset order;
    params, method_state, metrics = update(params, model_state, method_state,
                                           F, rng, t)
    the optimizer state of every `reset` entry of params is zeroed.

  The train batches then carry "index" (int32 [B], the examples' rows of F)
  so that `loss` can look up per-example pseudo-labels kept in
  `method_state`.

  Attributes:
    every: steps between passes (DeepCluster and PCL: one epoch).
    features: `features(params, model_state, method_state, images) -> [B, D]`
      float32, eval-mode features of uint8 images [B, H, W, C]; jitted with
      the batch split over the mesh like the train step.
    update: `update(params, model_state, method_state, features, rng, step)
      -> (params, method_state, metrics)`, `features` [N, D] of the whole
      split (row i is example i), jitted and replicated; `metrics` a dict of
      scalars logged at that step (cluster sizes, NMI...).
    reset: top-level keys of `params` that `update` re-initialises
      (DeepCluster's classifier); their optimizer state (momentum, Adam
      moments) restarts from zero, as for a fresh optimizer.
  """
  every: int
  features: Callable
  update: Callable
  reset: tuple[str, ...] = ()


class Method(NamedTuple):
  """A method as pure functions over arrays (see the module docstring).

  Attributes:
    name: the method's name, e.g. "byol".
    init: `init(rng, images) -> (params, model_state, method_state)`;
      `images` is one raw uint8 batch [B, H, W, C] (or a batch dict), used
      for shapes only.
    loss: `loss(params, model_state, method_state, batch, rng, step)
      -> (scalar_loss, StepOutput)`; `batch` is the global batch dict
      (`"image"` raw uint8 [B, H, W, C], or `"crops"`, one uint8 array per
      view already cropped on the host; `"label"` int32 [B], read by
      supervised methods; `"index"` int32 [B], read by methods with a
      `dataset_update`). It makes its views inside the jitted step and is
      differentiated with respect to `params` only.
    post_update: `post_update(params, method_state, update, step)
      -> (params, method_state)`; runs after the optimizer update inside
      the same jitted step (EMA of the target network, queue push, centre
      update, SwAV's prototype normalisation).
    encode: `encode(params, model_state, method_state, images) -> [B, D]`
      features in eval mode of uint8 (or float, already normalised) images,
      from the network the method's official evaluation uses (DINO's
      teacher, the others' online backbone).
    frozen: optional `frozen(params, step) -> pytree of bools` (a prefix of
      `params`), True where the optimizer must leave a parameter and its
      optimizer state untouched at `step` (DINO's last layer during the
      first epoch, SwAV's prototypes); None when nothing is ever frozen.
    dataset_update: optional `DatasetUpdate`, a periodic pass over the whole
      training set (clustering methods), or None.
    crops: optional `crops(image_size) -> tuple[augment.ViewSpec, ...]`,
      the views' crop recipes for images whose views are cropped on the host
      (variable-size datasets: `ssljax.data.load(..., crops=...)`); None
      for a method that makes no views.
    backbone: optional `backbone(drop_path_rate) -> models.Model`, the
      network `encode` evaluates built as the method builds it (the masked
      image models' ViTs: their position embedding, pooling and mask
      token), for fine-tuning; None: `models.get(backbone,
      **backbone_kwargs)` of the config (`evaluate.protocols.backbone_of`).
  """
  name: str
  init: Callable
  loss: Callable
  post_update: Callable
  encode: Callable
  frozen: Optional[Callable] = None
  dataset_update: Optional[DatasetUpdate] = None
  crops: Optional[Callable] = None
  backbone: Optional[Callable] = None
