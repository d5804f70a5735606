"""SwAV: predict one view's cluster assignment (code) from another view.

Caron et al., "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments", NeurIPS 2020.

Backbone and projector map each "multicrop" view to z, l2-normalised;
scores against K prototypes are s = z·C with unit-norm prototypes. Codes of
the global views come from Sinkhorn-Knopp (ε = 0.05, 3 iterations), with no
gradient, and every other view predicts them (eq. 1-3):

    p_v = softmax(s_v / T)
    loss = 1/2 Σ_{i<2} 1/(V−1) Σ_{v≠i} −mean_b Σ_k q_i[b,k] log p_v[b,k].

For small batches a queue of the global views' past embeddings joins the
batch in the Sinkhorn step (its codes are discarded), once
`queue_start_steps` have passed and the queue is full; the prototypes get no
gradient during the first `freeze_prototypes_steps`. Defaults follow the
paper (K = 3000, z of 128, T = 0.1, 2 × 224 + 6 × 96 crops, scales
(0.14, 1) and (0.05, 0.14), no queue, prototypes frozen for 313 steps); the
CIFAR configs follow solo-learn (2 crops, queue 3840 from epoch 50,
prototypes frozen for 2 epochs).

The prototypes are normalised inside the loss, C = normalize(params) with
the gradient flowing through the normalisation, rather than normalised in
place before each step as the official code does: `Method.post_update` can
only change `method_state`, not the parameters. The scores are the same;
the gradient is the official one projected onto the sphere's tangent, and
during the freeze the optimizer's weight decay only rescales the stored
prototypes, which the normalisation removes.

The cross-entropy is `ssljax.losses.clustering.swav`'s, computed here from
codes given explicitly because the queue changes them.

Differences from the paper: views of equal size share a forward call (the
official multi-crop forward does the same).

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("swav")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      num_prototypes=6, queue_size=8)
  >>> config.method.augment.num_local = 1
  >>> images = jnp.zeros((4, 28, 28, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(out.update["queue"].shape)  # both global views per row
  (4, 16)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common, models
from ssljax.methods import _shared
from ssljax.methods.base import Method
from ssljax.state._sinkhorn import sinkhorn

# Codes are computed for the first views, the global crops of "multicrop".
NUM_GLOBAL = 2


def default_config() -> ml_collections.ConfigDict:
  """SwAV's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="swav", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config(
          "multicrop", num_local=6, global_scale=(0.14, 1.0),
          local_scale=(0.05, 0.14)),
      proj_hidden_dim=2048, proj_dim=128, num_prototypes=3000,
      temperature=0.1, epsilon=0.05, sinkhorn_iters=3, queue_size=0,
      queue_start_steps=0, freeze_prototypes_steps=313))


def network(config) -> models.Model:
  """Backbone, 2-layer projector, prototypes (scores of normalised z)."""
  method = config.method
  return models.compose(
      _shared.backbone(config), projector=_shared.projector(config),
      prototypes=models.prototypes(None, method.num_prototypes,
                                   **_shared.dtype_kwargs(config)))


def swapped_prediction(codes: jax.Array, scores: jax.Array, *,
                       temperature) -> jax.Array:
  """Swapped prediction: every other view predicts the codes of view i < n,

      ℓ = 1/n Σ_{i<n} 1/(V−1) Σ_{v≠i} −1/B Σ_b Σ_k q_i[b,k] log p_v[b,k],
      p_v = softmax(s_v / T),

  for codes q [n, B, K] of the first n views and scores s [V, B, K]; the
  cross-entropy of `ssljax.losses.clustering.swav` with the codes given.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.methods.swav import swapped_prediction
    >>> codes = jnp.array([[[1.0, 0.0]]])        # view 0 is code 0
    >>> scores = jnp.array([[[0.0, 0.0]], [[0.0, 0.0]]])
    >>> loss = swapped_prediction(codes, scores, temperature=1.0)
    >>> print(round(float(loss), 4))  # log 2: a uniform prediction
    0.6931
  """
  fn = "swav.swapped_prediction"
  _common.check_rank(codes, 3, "codes", fn)
  _common.check_rank(scores, 3, "scores", fn)
  _common.check_positive(temperature, "temperature", fn)
  n_codes, n_views = codes.shape[0], scores.shape[0]
  if codes.shape[1:] != scores.shape[1:] or not 1 <= n_codes <= n_views or (
      n_views < 2):
    raise ValueError(
        f"{fn}: `codes` [n, B, K] must match `scores` [V, B, K] with "
        f"1 <= n <= V and V >= 2, got shapes {codes.shape} and "
        f"{scores.shape}.")
  log_p = jax.nn.log_softmax(_common.to_compute(scores) / temperature, axis=-1)
  cross = -jnp.einsum("ibk,vbk->iv", codes, log_p) / scores.shape[1]
  other = 1.0 - jnp.eye(n_codes, n_views, dtype=cross.dtype)
  return jnp.sum(cross * other) / (n_codes * (n_views - 1))


def init(config, rng, images):
  method = config.method
  return _shared.init(config, rng, images, network(config),
                      queue_size=method.queue_size,
                      queue_width=NUM_GLOBAL * method.proj_dim)


def _codes(config, scores, prototypes, queue, step) -> tuple[jax.Array,
                                                              jax.Array]:
  """[NUM_GLOBAL, B, K] Sinkhorn codes of the global views' scores, and
  whether the queue took part: its embeddings of the same view join the
  batch once `queue_start_steps` have passed and it is full."""
  method = config.method
  solve = jax.vmap(functools.partial(sinkhorn, epsilon=method.epsilon,
                                     iterations=method.sinkhorn_iters))
  codes = solve(scores[:NUM_GLOBAL])
  if queue is None:
    return codes, jnp.bool_(False)
  size = queue.buffer.shape[0]
  use_queue = (step >= method.queue_start_steps) & (queue.count == size)
  queued_scores = _shared.queue_views(queue, NUM_GLOBAL) @ prototypes
  with_queue = solve(jnp.concatenate([queued_scores, scores[:NUM_GLOBAL]],
                                     axis=1))[:, size:]
  return jnp.where(use_queue, with_queue, codes), use_queue


def loss(config, params, model_state, method_state, images, rng, step):
  method = config.method
  params = models.normalize_prototypes(params)
  params = _shared.freeze(params, (models.PROTOTYPES,),
                          step < method.freeze_prototypes_steps)
  run = _shared.online(config, network(config), params, model_state, images,
                       rng)
  scores = run.outputs["scores"]
  queue = method_state.queue
  codes, use_queue = _codes(config, scores,
                            params[models.PROTOTYPES]["kernel"], queue, step)
  value = swapped_prediction(codes, scores, temperature=method.temperature)
  embeddings = _common.l2_normalize(run.outputs["projection"][:NUM_GLOBAL])
  update = {} if queue is None else {"queue": _shared.queue_rows(embeddings)}
  return value, _shared.step_output(
      run, metrics={"queue_in_use": jnp.asarray(use_queue, jnp.float32)},
      update=update)


METHOD = Method(name="swav", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
