"""`make_train_step`: one compiled, data-parallel update of a method.

The step is a single `jax.jit` over the ("data",) mesh: the state is
replicated, the batch split along its first dimension, and XLA inserts the
gradient all-reduce and the cross-device reductions of BatchNorm and in-batch
losses, so the update equals the single-device update on the global batch.
"""

from __future__ import annotations

from typing import Callable

import jax
import optax
from jax.sharding import Mesh

from ssljax.train.optim import learning_rate_schedule
from ssljax.train.sharding import data_sharded, replicated
from ssljax.train.state import TrainState


def make_train_step(config, method, tx: optax.GradientTransformation,
                    mesh: Mesh) -> Callable:
  """Builds `step(state, batch) -> (state, metrics)`, jitted over `mesh`.

  One call, with t = `state.step`:

    rng_t              = fold_in(state.rng, t)
    loss, aux          = method.loss(θ, model_state, method_state, batch,
                                     rng_t, t)
    g                  = ∂loss/∂θ
    θ'                 = θ + tx.update(g, opt_state, θ)
    θ', method_state'  = method.post_update(θ', method_state, aux.update, t)

  `state` is donated (its buffers are reused for the new state), so the
  caller must not touch it after the call. Deriving the step key from
  (rng, t) makes a resumed run draw the same augmentations as an
  uninterrupted one.

  Compute precision is the method's business: built with
  `dtype="bfloat16"`, a method computes in bfloat16 while `params`,
  gradients and optimizer state stay float32.

  Args:
    config: the experiment config (its `optimizer`, `batch_size` and
      `total_steps` give the logged learning rate).
    method: a `ssljax.methods.Method`.
    tx: the optimizer that built `state.opt_state`.
    mesh: a mesh with a "data" axis (`make_mesh(config)`).

  Returns:
    The jitted step. `batch` is the global batch, a dict with "image" (uint8
    [B, H, W, C]) and "label" (int32 [B], read by supervised methods only),
    placed with `data_sharded(mesh)`; it is passed whole to `method.loss`.
    `metrics` is a dict of replicated scalars: "loss",
    "learning_rate", "grad_norm" and the method's own metrics.

  Example (SimCLR with a tiny CNN, batch sharded over all devices):
    >>> import jax, jax.numpy as jnp, ml_collections, numpy as np
    >>> from ssljax import methods, train
    >>> simclr = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=16,
    ...                         proj_dim=8, augment={"preset": "byol"})
    >>> config = ml_collections.ConfigDict(dict(
    ...     batch_size=8, total_steps=10, mesh=dict(data=-1),
    ...     optimizer=dict(name="lars", learning_rate=0.3, weight_decay=1e-6,
    ...                    warmup_steps=2)))
    >>> mesh, tx = train.make_mesh(config), train.make_optimizer(config)
    >>> images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3),
    ...                                            dtype=np.uint8)
    >>> state = train.create_train_state(simclr, jax.random.key(0), images,
    ...                                  tx)
    >>> step = train.make_train_step(config, simclr, tx, mesh)
    >>> batch = jax.device_put({"image": images}, train.data_sharded(mesh))
    >>> state, metrics = step(state, batch)
    >>> print(int(state.step), float(metrics["learning_rate"]),
    ...       bool(jnp.isfinite(metrics["loss"])))
    1 0.0 True
  """
  loss_and_grad = jax.value_and_grad(method.loss, has_aux=True)
  schedule = learning_rate_schedule(config)

  def step(state: TrainState, batch: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    (loss, out), grads = loss_and_grad(state.params, state.model_state,
                                       state.method_state, batch, rng,
                                       state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    params, method_state = method.post_update(params, state.method_state,
                                              out.update, state.step)
    metrics = {**out.metrics, "loss": loss,
               "learning_rate": schedule(state.step),
               "grad_norm": optax.tree.norm(grads)}
    new_state = TrainState(step=state.step + 1, params=params,
                           model_state=out.model_state, opt_state=opt_state,
                           method_state=method_state, rng=state.rng)
    return new_state, metrics

  state_sharding = replicated(mesh)
  return jax.jit(step, in_shardings=(state_sharding, data_sharded(mesh)),
                 out_shardings=(state_sharding, state_sharding),
                 donate_argnums=0)
