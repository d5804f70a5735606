"""The functional model protocol the core uses to see a network.

    apply_fn(params, model_state, x, *, train) -> (outputs, new_model_state)

`params` are the trainable leaves, `model_state` the rest (BatchNorm running
statistics); both are plain pytrees so they can be sharded, donated and
checkpointed. Any Flax Linen or NNX module (or a hand-written function) that
fits this signature plugs into every method.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

PyTree = Any


class Model(NamedTuple):
  """A network as two pure functions.

  Attributes:
    init: `init(rng, x) -> (params, model_state)`.
    apply: `apply(params, model_state, x, *, train) -> (outputs, model_state)`.
  """
  init: Callable[..., tuple[PyTree, PyTree]]
  apply: Callable[..., tuple[Any, PyTree]]
