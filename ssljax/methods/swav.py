"""SwAV: predict one view's cluster assignment (code) from another view.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020; the official code (facebookresearch/
swav: `main_swav.py`, `src/resnet50.py`, `src/multicropdataset.py`).

Backbone and projector map each multi-crop view to z, l2-normalised;
scores against K unit-norm prototypes are s = z·C. Codes of the 2 global
views come from Sinkhorn-Knopp (ε = 0.05, 3 iterations, `state.sinkhorn`),
without gradient, and every other view predicts them (eq. 1-3,
`losses.swav`):

    p_v = softmax(s_v / T)
    loss = 1/2 Σ_{i<2} 1/(V−1) Σ_{v≠i} −mean_b Σ_k q_i[b,k] log p_v[b,k].

As in `main_swav.py`:

* the prototypes are normalised in place, c_k ← c_k / ||c_k||, after every
  update (`post_update`; and at `init`), and the scores use them as stored;
* they get no update (not even weight decay) during the first
  `freeze_prototypes_steps` steps (`Method.frozen`);
* with `queue_size` > 0 a queue of the global views' embeddings starts
  filling at step `queue_start_steps` (`--epoch_queue_starts`) and, once
  full, joins the batch in the Sinkhorn step (its codes are discarded):
  q_i = sinkhorn(concat(queue_i · C, s_i))[−B:] (`losses.
  swapped_prediction`);
* the backbone runs once per crop size on the crops of that size
  concatenated, and the projection head once on all crops concatenated
  (`forward_backbone` per resolution, then `forward_head`), so the head's
  BatchNorm statistics span all crops (`view_batchnorm="joint"`;
  "per_view" runs each view on its own, as solo-learn does).

Defaults follow the paper's 800-epoch recipe (K = 3000, z of 128, head
hidden 2048, T = 0.1, 2 × 224 + 6 × 96 crops of scales (0.14, 1) and
(0.05, 0.14), SwAV's colour distortion on every crop: jitter (0.8, 0.8,
0.8, 0.2) with p 0.8, grayscale 0.2, blur p 0.5, no solarisation; no queue,
prototypes frozen for 313 steps). The official LARC adapts and decays
every parameter: the imagenet2012 config sets
`optimizer.exclude_bias_and_norm=False`. Differences from the official
code: see docs/fidelity.md#swav.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.swav(
  ...     backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...     num_prototypes=6, queue_size=8,
  ...     augment={"preset": "multicrop", "num_local": 1})
  >>> images = jnp.zeros((4, 28, 28, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(out.update.shape)  # both global views' embeddings per row
  (4, 16)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import _common, losses, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method
from ssljax.state import queue as queue_lib
from ssljax.state import sinkhorn

# Codes are computed for the first views, the global crops of "multicrop".
NUM_GLOBAL = 2


class SwAVState(NamedTuple):
  """SwAV's state: the queue of the global views' past embeddings (rows
  hold both views side by side), None without a queue."""
  queue: Optional[queue_lib.QueueState]


def objective(scores: jax.Array, queued_scores: Optional[jax.Array] = None,
              use_queue=False, *, temperature: float = 0.1,
              epsilon: float = 0.05, sinkhorn_iters: int = 3) -> jax.Array:
  """The swapped prediction of [V, B, K] scores, codes of the 2 global views.

  Without `queued_scores` this is `losses.swav`. With the queue's scores
  [2, Q, K] and `use_queue` True, each global view's codes come from the
  Sinkhorn step over the queue and the batch together, keeping the batch's
  rows: q_i = sinkhorn(concat(queued_i, s_i))[Q:] (`main_swav.py`).

  Example:
    >>> import jax.numpy as jnp
    >>> s = jnp.array([[[1.0, 0.0], [0.0, 1.0]]] * 2)  # 2 views, 2 rows
    >>> # Nearly one-hot codes (ε = 0.05), predicted by softmax(s): log(1 + 1/e)
    >>> print(round(float(objective(s, temperature=1.0)), 4))
    0.3133
  """
  solve = jax.vmap(functools.partial(sinkhorn, epsilon=epsilon,
                                     iterations=sinkhorn_iters))
  if queued_scores is None:
    return losses.swav(scores, temperature=temperature, epsilon=epsilon,
                       sinkhorn_iters=sinkhorn_iters, n_global=NUM_GLOBAL)
  size = queued_scores.shape[1]
  global_scores = scores[:NUM_GLOBAL]
  with_queue = solve(jnp.concatenate([queued_scores, global_scores],
                                     axis=1))[:, size:]
  codes = jnp.where(use_queue, with_queue, solve(global_scores))
  return losses.swapped_prediction(codes, scores, temperature=temperature)


def swav(*, backbone: str | models.Model = "resnet50",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = _shared.augment_config(
             "multicrop", num_local=6, global_scale=(0.14, 1.0),
             local_scale=(0.05, 0.14), brightness=0.8, contrast=0.8,
             saturation=0.8, hue=0.2, blur_prob=0.5, solarize_prob=0.0),
         dtype: str = "float32", proj_hidden_dim: int = 2048,
         proj_dim: int = 128, num_prototypes: int = 3000,
         temperature: float = 0.1, epsilon: float = 0.05,
         sinkhorn_iters: int = 3, queue_size: int = 0,
         queue_start_steps: int = 0, freeze_prototypes_steps: int = 313,
         view_batchnorm: str = "joint") -> Method:
  """SwAV (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`;
      `augment` needs at least the 2 global views.
    proj_hidden_dim, proj_dim: the 2-layer projection head (`--hidden_mlp`,
      `--feat_dim`).
    num_prototypes: K (`--nmb_prototypes`).
    temperature: T.
    epsilon, sinkhorn_iters: ε and the iterations of Sinkhorn-Knopp.
    queue_size: rows of the queue (`--queue_length`), 0 for none.
    queue_start_steps: the step the queue starts filling.
    freeze_prototypes_steps: steps during which the prototypes do not move
      (`--freeze_prototypes_niters`).
    view_batchnorm: "joint" (the official multi-crop forward: the backbone
      per crop size, the head once over all crops) or "per_view".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "swav"
  _siamese.check_counts(fn, proj_hidden_dim=proj_hidden_dim,
                        proj_dim=proj_dim, num_prototypes=num_prototypes,
                        sinkhorn_iters=sinkhorn_iters)
  _siamese.check_counts(fn, minimum=0, queue_size=queue_size,
                        queue_start_steps=queue_start_steps,
                        freeze_prototypes_steps=freeze_prototypes_steps)
  _common.check_positive(temperature, "temperature", fn)
  _common.check_positive(epsilon, "epsilon", fn)
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  n_views = len(setup.views.specs(224))
  if n_views < NUM_GLOBAL:
    raise ValueError(f"{fn}: `augment` must make at least {NUM_GLOBAL} "
                     f"views (the global crops come first), got {n_views}.")
  projector = models.projector(None, proj_hidden_dim, proj_dim, **setup.kw)
  prototypes = models.prototypes(None, num_prototypes, **setup.kw)
  model = models.compose(setup.backbone, projector=projector,
                         prototypes=prototypes)

  def forward(params, model_state, views):
    """Outputs {key: [V, B, ...]} of the views and the new model state."""
    if not joint:
      return _shared.forward(model, params, model_state, views, joint=False)
    features, backbone_state = _shared.forward(
        setup.backbone, params["backbone"], model_state["backbone"], views,
        joint=True)
    flat = features.reshape(-1, features.shape[-1])
    projection, projector_state = projector.apply(
        params["projector"], model_state["projector"], flat, train=True)
    scores, prototypes_state = prototypes.apply(
        params["prototypes"], model_state["prototypes"], projection,
        train=True)
    outputs = {"features": features, "projection": projection,
               "scores": scores}
    return (jax.tree.map(lambda x: x.reshape(len(views), -1, *x.shape[1:]),
                         outputs),
            {"backbone": backbone_state, "projector": projector_state,
             "prototypes": prototypes_state})

  def init(rng, batch):
    model_rng, queue_rng = jax.random.split(rng)
    params, model_state = _shared.initialize(setup, model, model_rng, batch)
    params = _siamese.torch_heads(params, jax.random.fold_in(model_rng, 1))
    queue = queue_lib.init(queue_size, NUM_GLOBAL * proj_dim,
                           key=queue_rng) if queue_size else None
    return models.normalize_prototypes(params), model_state, SwAVState(queue)

  def loss(params, model_state, method_state, batch, rng, step):
    del step  # The queue's state says whether it takes part.
    views = setup.views.make(rng, batch)
    outputs, model_state = forward(params, model_state, views)
    scores, queue = outputs["scores"], method_state.queue
    queued_scores, use_queue = None, jnp.bool_(False)
    if queue is not None:
      use_queue = queue.count == queue_size
      queued_scores = (_shared.queue_views(queue.buffer, NUM_GLOBAL)
                       @ params[models.PROTOTYPES]["kernel"])
    value = objective(scores, queued_scores, use_queue,
                      temperature=temperature, epsilon=epsilon,
                      sinkhorn_iters=sinkhorn_iters)
    embeddings = _common.l2_normalize(outputs["projection"][:NUM_GLOBAL])
    # The update: the rows to enqueue, both global views' embeddings.
    return value, _shared.step_output(
        _shared.Online(views, outputs, model_state),
        {"queue_in_use": use_queue.astype(jnp.float32)},
        _shared.queue_rows(embeddings))

  def post_update(params, method_state, update, step):
    queue = method_state.queue
    if queue is not None:
      pushed = queue_lib.push(queue, update)
      queue = jax.tree.map(
          lambda new, old: jnp.where(step >= queue_start_steps, new, old),
          pushed, queue)
    return models.normalize_prototypes(params), SwAVState(queue)

  def frozen(params, step):
    return _shared.frozen_at(params, (models.PROTOTYPES,),
                             step < freeze_prototypes_steps)

  return Method(name=fn, init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup), frozen=frozen,
                crops=setup.views.specs)
