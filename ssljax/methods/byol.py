"""BYOL: predict an EMA target network's projection of the other view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020; the official JAX code (deepmind-research/byol).

The online network (backbone, projector g, predictor q) sees two "byol"
views; the target network (backbone and projector, no predictor) is an
exponential moving average of the online one, θt ← m·θt + (1 − m)·θ. With
p = q(g(f(v))) and z' = g'(f'(v')), the loss is symmetrised by swapping the
views and summed (eq. 2):

    loss = ||p̄1 − z̄'2||² + ||p̄2 − z̄'1||²,   x̄ = x / ||x||,

with no gradient through the target. The paper's m follows the cosine
schedule m(t) = 1 − (1 − m0)(cos(πt/T) + 1)/2 from m0 = 0.996 to 1 over the
T steps of the run: pass `momentum` as that schedule (the configs do:
`{"schedule": "cosine", ...}`); a number is a constant momentum.

Defaults follow the official code (`byol/configs/byol.py`, 1000-epoch
preset): projector and predictor Linear-BN-ReLU-Linear of 4096 → 256; each
view goes through the networks in its own call, so BatchNorm statistics are
per view (`view_batchnorm="per_view"`), global over the mesh as its
cross-replica BatchNorm; the target network is initialised from its own
random draw (`target_init="independent"`: `_make_initial_state` inits the
online and target parameters with two keys), not as a copy ("copy", as
solo-learn and most reimplementations). The optimiser (LARS without biases
and norms, rate 0.2 × B/256, weight decay 1.5e-6, 10 warm-up epochs) is in
configs/byol.py. `encode` is the online backbone, the network the official
`eval_experiment.py` evaluates. Where this differs from the official code:
docs/fidelity.md#byol.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.byol(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                       proj_dim=8, pred_hidden_dim=16)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> print(sorted(params), sorted(method_state.target.params))
  ['backbone', 'predictor', 'projector'] ['backbone', 'projector']
  >>> online, target = params["backbone"], method_state.target.params
  >>> print(jax.tree.all(jax.tree.map(jnp.array_equal, online,
  ...                                 target["backbone"])))  # drawn apart
  False
"""

from __future__ import annotations

from collections.abc import Mapping

import jax

from ssljax import _common, losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method, Schedule

# How the target network starts: its own random draw (the official code) or
# a copy of the online network.
TARGET_INITS = ("independent", "copy")


def byol(*, backbone: str | models.Model = "resnet50",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = _shared.augment_config("byol"),
         dtype: str = "float32", proj_hidden_dim: int = 4096,
         proj_dim: int = 256, pred_hidden_dim: int = 4096,
         momentum: Schedule = 0.996, target_init: str = "independent",
         view_batchnorm: str = "per_view") -> Method:
  """BYOL (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the 2-layer projector.
    pred_hidden_dim: the 2-layer predictor's hidden width.
    momentum: the target's EMA momentum m(step), a number or a schedule.
    target_init: "independent" (the official code: the target's own random
      draw) or "copy" (a copy of the online backbone and projector).
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a non-positive width, a momentum
      outside [0, 1], an unknown `target_init` or `view_batchnorm`.
  """
  for arg, value in (("proj_hidden_dim", proj_hidden_dim),
                     ("proj_dim", proj_dim),
                     ("pred_hidden_dim", pred_hidden_dim)):
    _common.check_count(value, arg, "byol", minimum=1)
  _common.check_in_range(momentum, 0.0, 1.0, "momentum", "byol")
  if target_init not in TARGET_INITS:
    raise ValueError(f"byol: `target_init` must be one of {TARGET_INITS}, "
                     f"got {target_init!r}.")
  joint = _shared.check_view_batchnorm(view_batchnorm, "byol")
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  predictor = models.predictor(None, pred_hidden_dim, proj_dim, **setup.kw)
  target_net = _shared.with_projector(setup, proj_hidden_dim, proj_dim)
  method = _shared.momentum_method(
      "byol", setup,
      _shared.with_projector(setup, proj_hidden_dim, proj_dim,
                             predictor=predictor),
      target_net, losses.byol, momentum=momentum, joint=joint)
  if target_init == "copy":
    return method

  def init(rng, batch):
    online_rng, target_rng = jax.random.split(rng)
    params, model_state, _ = method.init(online_rng, batch)
    target = _shared.Target(*_shared.initialize(setup, target_net,
                                                target_rng, batch))
    return params, model_state, _shared.MomentumState(target)

  return method._replace(init=init)
