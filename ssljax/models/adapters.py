"""Flax NNX and Linen modules as a functional `Model`.

`Model.init(rng, x) -> (params, model_state)` and `Model.apply(params,
model_state, x, *, train) -> (outputs, model_state)`: both trees are plain
nested dicts of arrays, so they can be sharded, donated, EMA-averaged with
`jax.tree.map`, masked by key, and checkpointed with orbax.

NNX modules are split at this boundary with `nnx.split(module, nnx.Param,
...)`: the `nnx.Param` leaves are `params`, everything else (BatchNorm running
statistics, RNG counters of dropout) is `model_state`; `apply` re-assembles the
module with `nnx.merge`, which only wraps the arrays, so it costs nothing in a
compiled step. `train` switches the module with `.train()` / `.eval()`
(BatchNorm `use_running_average`, Dropout `deterministic`). In eval mode the
input `model_state` is returned as is.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from ssljax.models.base import Model

PyTree = Any
# build(rngs, x) -> nnx.Module; x is a jax.ShapeDtypeStruct of the input.
Builder = Callable[[nnx.Rngs, jax.ShapeDtypeStruct], nnx.Module]


def _split(module: nnx.Module):
  """(graphdef, params, model_state) with both states as plain dicts."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def _check_tree(fn: str, name: str, got: PyTree, want: PyTree) -> None:
  """`got` must have the keys and leaf shapes of the abstract tree `want`."""
  got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
  want_leaves = jax.tree_util.tree_flatten_with_path(want)[0]
  got_paths = [jax.tree_util.keystr(p) for p, _ in got_leaves]
  want_paths = [jax.tree_util.keystr(p) for p, _ in want_leaves]
  if got_paths != want_paths:
    missing = sorted(set(want_paths) - set(got_paths))[:3]
    extra = sorted(set(got_paths) - set(want_paths))[:3]
    raise ValueError(
        f"{fn}: `{name}` does not have this model's structure: missing "
        f"{missing}, unexpected {extra}.")
  for path, (_, g), (_, w) in zip(got_paths, got_leaves, want_leaves):
    if jnp.shape(g) != w.shape:
      raise ValueError(
          f"{fn}: `{name}{path}` must have shape {w.shape} for this model and "
          f"input, got {jnp.shape(g)}.")


def _nnx_model(skeleton: Callable, init: Callable, name: str) -> Model:
  """A `Model` whose apply merges NNX state into the graph of `skeleton(x)`.

  Args:
    skeleton: `skeleton(shape, dtype) -> (graphdef, abstract params, abstract
      model_state)` for inputs of that shape; must be cacheable.
    init: `init(rng, x) -> (params, model_state)`.
    name: model name used in error messages.
  """

  def apply(params, model_state, x, *, train: bool, **call_kwargs):
    graphdef, want_params, want_state = skeleton(
        tuple(jnp.shape(x)), jnp.result_type(x))
    _check_tree(name, "params", params, want_params)
    _check_tree(name, "model_state", model_state, want_state)
    # NNX writes BN statistics into its Variables in place: numpy leaves
    # (e.g. restored from disk) would be mutated, so hand it jax arrays.
    module = nnx.merge(graphdef, *jax.tree.map(jnp.asarray,
                                               (params, model_state)))
    if train:
      module.train()
    else:
      module.eval()
    outputs = module(x, **call_kwargs)
    if not train:
      return outputs, model_state
    return outputs, _split(module)[2]

  return Model(init=init, apply=apply)


def from_builder(build: Builder, *, name: str = "nnx_model") -> Model:
  """A `Model` from a function that builds a fresh NNX module.

  NNX modules are built with concrete input sizes, which `init` reads from the
  example input: `build(rngs, x)` receives `x` as a `jax.ShapeDtypeStruct`
  (use only its shape and dtype). `apply` rebuilds the graph (abstractly, with
  `nnx.eval_shape`, once per input shape) to merge the states into, checks
  that `params`/`model_state` match it, and hands its keyword arguments
  besides `train` on to the module's call (a ViT's masks, `tokens`).

  Args:
    build: `build(rngs: nnx.Rngs, x: jax.ShapeDtypeStruct) -> nnx.Module`.
    name: name used in error messages.

  Returns:
    A `Model`; `init(rng, x)` calls `build(nnx.Rngs(rng), x)`, so different
    keys give different weights.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from ssljax.models import from_builder
    >>> model = from_builder(
    ...     lambda rngs, x: nnx.Linear(x.shape[-1], 3, rngs=rngs))
    >>> params, state = model.init(jax.random.key(0), jnp.ones((2, 5)))
    >>> out, _ = model.apply(params, state, jnp.ones((2, 5)), train=True)
    >>> print(out.shape, params["kernel"].shape)
    (2, 3) (5, 3)
  """

  @functools.lru_cache(maxsize=None)
  def skeleton(shape, dtype):
    spec = jax.ShapeDtypeStruct(shape, dtype)
    return _split(nnx.eval_shape(lambda: build(nnx.Rngs(0), spec)))

  def init(rng, x):
    spec = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    return _split(build(nnx.Rngs(rng), spec))[1:]

  return _nnx_model(skeleton, init, name)


def from_nnx(module: nnx.Module | Builder, *, name: str = "nnx_model"
             ) -> Model:
  """A `Model` from a Flax NNX module (or a builder, see `from_builder`).

  With a module instance, `init` returns the instance's own (already
  initialised) weights whatever `rng` it is given: NNX initialises weights when
  a module is constructed, so to draw them from `rng` pass a builder
  `build(rngs, x) -> module` instead. The module is called as `module(x)`,
  after `.train()` or `.eval()`.

  Args:
    module: an `nnx.Module`, or a builder function.
    name: name used in error messages.

  Returns:
    A `Model` following the `ssljax.models.base` protocol.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> from ssljax.models import from_nnx
    >>> net = nnx.Sequential(nnx.Linear(4, 3, rngs=nnx.Rngs(0)),
    ...                      nnx.BatchNorm(3, rngs=nnx.Rngs(0)))
    >>> model = from_nnx(net)
    >>> params, state = model.init(jax.random.key(0), jnp.ones((2, 4)))
    >>> x = jnp.arange(8.0).reshape(2, 4)
    >>> out, new_state = model.apply(params, state, x, train=True)
    >>> print(out.shape, sorted(new_state["layers"][1]))
    (2, 3) ['mean', 'var']
  """
  if not isinstance(module, nnx.Module):
    return from_builder(module, name=name)
  graphdef, params, model_state = _split(module)
  abstract = (graphdef,) + jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
      (params, model_state))
  # Copies, so that a train step donating them leaves the next init intact.
  return _nnx_model(lambda shape, dtype: abstract,
                    lambda rng, x: jax.tree.map(jnp.copy,
                                                (params, model_state)),
                    name)


def from_linen(module: nn.Module, *, train_arg: Optional[str] = "train"
               ) -> Model:
  """A `Model` from a Flax Linen module.

  `params` is the "params" collection, `model_state` every other collection
  (e.g. "batch_stats"). In train mode the module is applied with those
  collections mutable, so BatchNorm updates its running statistics.

  Args:
    module: a Linen module.
    train_arg: name of the keyword argument of `module.__call__` that selects
      train mode (e.g. `train` for `nn.BatchNorm(use_running_average=not
      train)`), or None if it has none. `init` passes False, so dropout needs
      no RNG at initialisation.

  Returns:
    A `Model` following the `ssljax.models.base` protocol.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> import flax.linen as nn
    >>> from ssljax.models import from_linen
    >>> class Net(nn.Module):
    ...   @nn.compact
    ...   def __call__(self, x, train):
    ...     return nn.BatchNorm(use_running_average=not train)(nn.Dense(3)(x))
    >>> model = from_linen(Net())
    >>> params, state = model.init(jax.random.key(0), jnp.ones((2, 4)))
    >>> print(sorted(params), sorted(state))
    ['BatchNorm_0', 'Dense_0'] ['batch_stats']
  """

  def kwargs(train: bool) -> dict:
    return {} if train_arg is None else {train_arg: train}

  def init(rng, x):
    variables = dict(module.init(rng, x, **kwargs(False)))
    params = variables.pop("params", {})
    return params, variables

  def apply(params, model_state, x, *, train: bool):
    variables = {"params": params, **model_state}
    if not (train and model_state):
      return module.apply(variables, x, **kwargs(train)), model_state
    outputs, updates = module.apply(variables, x, mutable=list(model_state),
                                    **kwargs(train))
    return outputs, {**model_state, **updates}

  return Model(init=init, apply=apply)
