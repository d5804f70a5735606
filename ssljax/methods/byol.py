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
`{"schedule": "cosine", ...}`); a number is a constant momentum. Defaults
follow the paper (projector and predictor 4096 → 256). Each view goes
through the networks in its own call, so BatchNorm statistics are per view,
as in the official code (`view_batchnorm="per_view"`). Differences from
the official code are listed in docs/fidelity.md.

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
"""

from __future__ import annotations

from collections.abc import Mapping

from ssljax import losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method, Schedule


def byol(*, backbone: str | models.Model = "resnet50",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = _shared.augment_config("byol"),
         dtype: str = "float32", proj_hidden_dim: int = 4096,
         proj_dim: int = 256, pred_hidden_dim: int = 4096,
         momentum: Schedule = 0.996, view_batchnorm: str = "per_view"
         ) -> Method:
  """BYOL (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the 2-layer projector.
    pred_hidden_dim: the 2-layer predictor's hidden width.
    momentum: the target's EMA momentum m(step), a number or a schedule.
    view_batchnorm: "per_view" (the official code) or "joint".
  """
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  predictor = models.predictor(None, pred_hidden_dim, proj_dim, **setup.kw)
  return _shared.momentum_method(
      "byol", setup,
      _shared.with_projector(setup, proj_hidden_dim, proj_dim,
                             predictor=predictor),
      _shared.with_projector(setup, proj_hidden_dim, proj_dim), losses.byol,
      momentum=momentum,
      joint=_shared.check_view_batchnorm(view_batchnorm, "byol"))
