"""`TrainState`: everything a training run carries from one step to the next.

One pytree of arrays, so that it is replicated over the mesh, donated to the
jitted step and checkpointed as a whole; resuming from it is exact because the
step's randomness is derived from (`rng`, `step`) alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class TrainState(NamedTuple):
  """State of a run after `step` optimizer updates.

  Attributes:
    step: int32 scalar, the number of updates applied so far.
    params: trainable parameters (float32, also when computing in bfloat16).
    model_state: non-trainable model state (BatchNorm running statistics).
    opt_state: the optimizer's state.
    method_state: the method's memory between steps (EMA target, queue,
      center...), see `ssljax.methods.base`.
    rng: a typed PRNG key, fixed for the run; step t uses
      `jax.random.fold_in(rng, t)`.
  """
  step: jax.Array
  params: PyTree
  model_state: PyTree
  opt_state: optax.OptState
  method_state: PyTree
  rng: jax.Array


def create_train_state(method, rng: jax.Array, images: jax.Array,
                       tx: optax.GradientTransformation) -> TrainState:
  """Initialises the method's networks and state and the optimizer at step 0.

  Args:
    method: a `ssljax.methods.Method`.
    rng: a typed PRNG key (`jax.random.key(seed)`); split into the
      initialisation key and the run's step key.
    images: a uint8 batch [B, H, W, C], used for shapes only.
    tx: the optimizer, e.g. `make_optimizer(config)`.

  Returns:
    A `TrainState` with `step == 0`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from ssljax.methods.base import Method
    >>> from ssljax.train import create_train_state
    >>> linear = Method(
    ...     name="linear", loss=None, post_update=None, encode=None,
    ...     init=lambda rng, images: (
    ...         {"w": jax.random.normal(rng, (images.shape[-1], 4))}, {}, ()))
    >>> state = create_train_state(linear, jax.random.key(0),
    ...                            jnp.zeros((2, 8, 8, 3), jnp.uint8),
    ...                            optax.sgd(0.1))
    >>> print(int(state.step), state.params["w"].shape)
    0 (3, 4)
  """
  init_rng, rng = jax.random.split(rng)
  # A weakly typed leaf (`jnp.full(n, 0.1)`) comes back strongly typed from
  # the step, and the changed input type would compile the step a second
  # time; fixing the types here keeps it to one compilation.
  params, model_state, method_state = jax.tree.map(
      lambda x: jnp.asarray(x, jnp.result_type(x)),
      method.init(init_rng, images))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    model_state=model_state, opt_state=tx.init(params),
                    method_state=method_state, rng=rng)
