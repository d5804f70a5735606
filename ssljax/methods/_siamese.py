"""What the two-branch methods of group A share: MoCo v3, SimSiam, Barlow
Twins, VICReg, NNCLR, SupCon and SwAV.

* `check_counts`, `check_momentum`: the factories' hyper-parameter checks,
  raised when the factory is called, not at the first step;
* `mlp`: an MLP head whose hidden width may follow its input (SimSiam's
  projector and SupCon's head keep the backbone's width, 2048 on a
  ResNet-50), with or without BatchNorm;
* `torch_heads`, `with_torch_heads`: heads drawn as PyTorch's `nn.Linear`,
  where the official (PyTorch) code of all seven starts;
* `projection_method`: the whole `Method` of Barlow Twins and VICReg, a
  loss of the two views' projections by a 3-layer projector.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import jax

from ssljax import _common, models
from ssljax.methods import _shared
from ssljax.methods.base import Method, Schedule

PyTree = Any

# The parts of a `compose`d network that are heads: redrawn by
# `torch_heads`, while the backbone keeps its own initialisation.
HEADS = ("projector", "predictor", models.PROTOTYPES)


def check_counts(fn: str, minimum: int = 1, **values) -> None:
  """Every value a Python int >= `minimum`; the error names the argument.

  Example:
    >>> check_counts("nnclr", proj_dim=256, queue_size=98304)
    >>> check_counts("nnclr", proj_dim=0)
    Traceback (most recent call last):
    ...
    ValueError: nnclr: `proj_dim` must be a Python int >= 1, got 0.
  """
  for name, value in values.items():
    _common.check_count(value, name, fn, minimum=minimum)


def check_momentum(momentum: Schedule, fn: str) -> None:
  """An EMA momentum: a number in [0, 1], or a `step -> value` schedule.

  Example:
    >>> check_momentum(lambda step: 0.99, "moco_v3")
    >>> check_momentum(1.5, "moco_v3")
    Traceback (most recent call last):
    ...
    ValueError: moco_v3: `momentum` must be in [0, 1], got 1.5.
  """
  if callable(momentum):
    return
  if not isinstance(momentum, numbers.Real):
    raise ValueError(f"{fn}: `momentum` must be a number in [0, 1] or a "
                     f"`step -> value` schedule, got {momentum!r}.")
  _common.check_in_range(momentum, 0, 1, "momentum", fn)


def mlp(hidden_dim: Optional[int], out_dim: int, kw: dict, *,
        num_layers: int = 2, use_bn: bool = True, last_bn: bool = False,
        name: str = "projector") -> models.Model:
  """`models.MLP` as a head: (Linear [-BN] - ReLU) × (num_layers − 1),
  Linear [, BN without affine]; a hidden width of None is the input's.

  Args:
    hidden_dim: hidden width, or None for the input width (read at `init`).
    out_dim: output width.
    kw: `dtype` and `param_dtype` (`_shared.Setup.kw`).
    num_layers, use_bn, last_bn: as `models.MLP`.
    name: the head's name in error messages.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> head = mlp(None, 4, {}, num_layers=3, last_bn=True)
    >>> params, state = head.init(jax.random.key(0), jnp.ones((2, 6)))
    >>> print(params["layers"]["linear1"]["kernel"].shape,
    ...       sorted(state["layers"]))
    (6, 6) ['bn0', 'bn1', 'bn2']
  """
  return models.from_builder(
      lambda rngs, x: models.MLP(
          x.shape[-1], hidden_dim or x.shape[-1], out_dim,
          num_layers=num_layers, use_bn=use_bn, last_bn=last_bn, rngs=rngs,
          **kw),
      name=name)


def torch_heads(params: PyTree, rng: jax.Array) -> PyTree:
  """`params` whose heads (`HEADS`) have every dense layer drawn again as
  PyTorch's `nn.Linear`: weights and biases U(−1/√fan_in, 1/√fan_in)
  (`_shared.torch_linear_init`); the backbone is kept.

  Example:
    >>> import jax.numpy as jnp
    >>> params = {"backbone": {"kernel": jnp.full((4, 4), 9.0)},
    ...           "projector": {"kernel": jnp.full((4, 2), 9.0)}}
    >>> new = torch_heads(params, jax.random.key(0))
    >>> print(float(new["backbone"]["kernel"][0, 0]),
    ...       bool(jnp.all(jnp.abs(new["projector"]["kernel"]) <= 0.5)))
    9.0 True
  """
  return {part: _shared.redraw_dense(
      tree, jax.random.fold_in(rng, i), _shared.torch_linear_init,
      _shared.torch_linear_init) if part in HEADS else tree
          for i, (part, tree) in enumerate(params.items())}


def with_torch_heads(method: Method) -> Method:
  """`method` whose `init` draws the heads as `torch_heads`; only for a
  method whose state does not depend on the parameters (no EMA target)."""

  def init(rng, batch):
    params, model_state, method_state = method.init(rng, batch)
    return (torch_heads(params, jax.random.fold_in(rng, 1)), model_state,
            method_state)

  return method._replace(init=init)


def projection_method(name: str, setup: _shared.Setup, proj_hidden_dim: int,
                      proj_dim: int, pair_loss: Callable, *, joint: bool
                      ) -> Method:
  """The `Method` whose loss is `pair_loss(z1, z2)` of the two views'
  projections by a 3-layer projector (Linear-BN-ReLU twice, then Linear:
  Barlow Twins' `--projector`, VICReg's `--mlp`), heads drawn as PyTorch's;
  it carries no state."""
  check_counts(name, proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim)
  model = _shared.with_projector(setup, proj_hidden_dim, proj_dim,
                                 num_layers=3)

  def objective(run, batch):
    del batch  # Unsupervised.
    z = run.outputs["projection"]
    return pair_loss(z[0], z[1])

  return with_torch_heads(_shared.stateless_method(name, setup, model,
                                                   objective, joint=joint))
