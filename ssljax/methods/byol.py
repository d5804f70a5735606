"""BYOL: predict an EMA target network's projection of the other view.

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised
Learning", NeurIPS 2020.

The online network (backbone, projector g, predictor q) sees two "byol"
views; the target network (backbone and projector, no predictor) is an
exponential moving average of the online one, θt ← m·θt + (1 − m)·θ, with m
following the cosine schedule m(t) = 1 − (1 − m0)(cos(πt/T) + 1)/2 from
m0 = 0.996 to 1 (section 3.2). With p = q(g(f(v))) and z' = g'(f'(v')),
the loss is symmetrised by swapping the views and summed (eq. 2):

    loss = ||p̄1 − z̄'2||² + ||p̄2 − z̄'1||²,   x̄ = x / ||x||,

with no gradient through the target. Defaults follow the paper (projector
and predictor 4096 → 256, m0 = 0.996); the CIFAR configs use solo-learn's
m0 = 0.99.

Differences from the paper: both views go through each network in one call,
so BatchNorm statistics are over the 2B views (the paper normalises each
view's batch separately); the target network's BatchNorm statistics are its
own, updated by its train-mode forward pass.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("byol")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      pred_hidden_dim=16)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> print(sorted(params), sorted(method_state.target.params))
  ['backbone', 'predictor', 'projector'] ['backbone', 'projector']
"""

from __future__ import annotations

import ml_collections

from ssljax import models
from ssljax.losses import non_contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """BYOL's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="byol", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"),
      proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096,
      base_momentum=0.996, final_momentum=1.0))


def networks(config) -> tuple[models.Model, models.Model]:
  """(online, target): 2-layer projector, predictor on the online side."""
  return _shared.predictor_networks(config, _shared.projector(config))


def init(config, rng, images):
  return _shared.init(config, rng, images, networks(config)[0],
                      target_parts=_shared.TARGET_PARTS)


# byol(p1, z'2) + byol(p2, z'1).
loss = _shared.momentum_loss(networks, lambda config: non_contrastive.byol)


METHOD = Method(name="byol", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
