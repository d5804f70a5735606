"""A method's `DatasetUpdate` (clustering methods) run inside `train`.

Before step 0 and before every step t with t % every == 0, `train` encodes
the whole train split with the method's `features` (sharded and data
parallel, like evaluation), hands the [N, D] features in dataset order to
the method's jitted `update`, and restarts the optimizer state of the
parameters it re-initialised. Its randomness is a function of (seed, t), so a
resumed run, which repeats the pass of the step it resumes at, continues
exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from ssljax.train import evaluation, optim
from ssljax.train.sharding import replicated
from ssljax.train.state import TrainState

# fold_in(fold_in(rng, t), _SALT) keys the pass at step t, apart from the
# step's own key fold_in(rng, t).
_SALT = 0x0C1A55


class DatasetPass(NamedTuple):
  """`run(state) -> (state, metrics)`, due before every update t + 1 with
  t % every == 0."""
  every: int
  run: Callable


def reset_entries(opt_state, params: Mapping, keys) -> object:
  """`opt_state` with the parts that mirror `params[k]`, k in `keys`, zeroed.

  Optimizer states (momentum traces, Adam moments, also inside masked
  states) hold copies of the params dict; zero is their initial value, so
  those parameters continue as under a freshly initialised optimizer.
  Counters and other scalars are kept.
  """
  return optim.map_param_trees(
      lambda tree: {k: jax.tree.map(jnp.zeros_like, v) if k in keys else v
                    for k, v in tree.items()}, opt_state, params=params)


def make_dataset_update(config, method, mesh) -> DatasetPass:
  """The method's pass over the train set, `run(state) -> (state, metrics)`.

  Args:
    config: the run's config (`dataset`, `batch_size`, ...).
    method: a `Method` with a `dataset_update`.
    mesh: the training mesh.

  Returns:
    Its interval in steps, and `run`, a function of a replicated `TrainState`
    (which it consumes) giving the new state and the update's metrics as
    floats.

  Raises:
    ValueError: if the interval is not a positive int.
  """
  spec = method.dataset_update
  every = spec.every
  if isinstance(every, bool) or not isinstance(every, int) or every < 1:
    raise ValueError(f"train: {method.name}'s dataset pass interval must be a "
                     f"positive number of steps, got {every!r}.")
  encoder = evaluation.make_encoder(
      lambda tree, images: spec.features(*tree, images), mesh)
  sharding = replicated(mesh)

  @functools.partial(jax.jit, out_shardings=sharding, donate_argnums=0)
  def update(state: TrainState, features: jax.Array):
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), _SALT)
    params, method_state, metrics = spec.update(
        state.params, state.model_state, state.method_state, features, rng,
        state.step)
    opt_state = reset_entries(state.opt_state, params, spec.reset)
    return state._replace(params=params, method_state=method_state,
                          opt_state=opt_state), metrics

  def run(state: TrainState):
    features, _ = evaluation.encode_split(
        config, encoder, (state.params, state.model_state, state.method_state),
        "train", mesh=mesh)
    if len(features) != config.dataset.train_size:
      raise ValueError(
          f"train: `config.dataset.train_size` = {config.dataset.train_size}"
          f" but the train split of {config.dataset.name!r} has "
          f"{len(features)} examples; {method.name}'s per-example state is "
          f"sized by the former.")
    features = jax.make_array_from_process_local_data(sharding, features)
    state, metrics = update(state, features)
    return state, {k: float(v) for k, v in jax.device_get(metrics).items()}

  return DatasetPass(every, run)


def check_indexed(method, batch: Mapping) -> None:
  """Methods with a dataset pass need batches that carry "index"."""
  if method.dataset_update is not None and "index" not in batch:
    raise ValueError(
        f"train: {method.name} keeps per-example state and needs batches "
        f"with 'index' (the examples' rows in the train split, as "
        f"`ssljax.data.load` gives); the given data has only "
        f"{sorted(batch)}.")

