"""Barlow Twins: make the views' cross-correlation matrix the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction", ICML 2021.

Both "byol" views go through backbone and a 3-layer projector (8192 wide in
the paper); with z standardised over the batch and C = ẑ1ᵀẑ2 / N,

    loss = scale · (Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²),

λ = 0.0051 (the official value) and scale = 1 (the current official code;
solo-learn's CIFAR recipe, which the CIFAR configs follow, uses 0.1 with a
2048-wide projector).

Differences from the paper: both views go through the network in one call,
so the projector's hidden BatchNorm statistics are over the 2N views; the
official code uses LARS with separate rates for biases (0.0048) and weights
(0.2), while `ssljax.train` uses one rate and excludes biases from LARS's
adaptation and weight decay.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("barlow_twins")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> print(params["projector"]["layers"]["linear2"]["kernel"].shape)
  (16, 8)
"""

from __future__ import annotations

import ml_collections

from ssljax import models
from ssljax.losses import non_contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """Barlow Twins' hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="barlow_twins", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"),
      proj_hidden_dim=8192, proj_dim=8192, lambda_=0.0051, scale=1.0))


def network(config) -> models.Model:
  """Backbone and 3-layer projector."""
  return _shared.projector_network(config, num_layers=3)


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config))


def objective(config, run: _shared.Online):
  """scale · Barlow Twins loss of the two views' projections."""
  z = run.outputs["projection"]
  return config.method.scale * non_contrastive.barlow_twins(
      z[0], z[1], lambda_=config.method.lambda_)


loss = _shared.stateless_loss(network, objective)


METHOD = Method(name="barlow_twins", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
