"""VICReg: invariance plus variance and covariance regularisation.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022.

Both views go through backbone and a 3-layer "expander" (8192 wide in the
paper); on the embeddings z1, z2 [N, D],

    loss = λ·mean (z1 − z2)² + μ·(v(z1) + v(z2))/2 + ν·(c(z1) + c(z2)),
    v(z) = mean_d relu(1 − sqrt(Var(z_d) + 1e-4)),
    c(z) = Σ_{i≠j} Cov(z)_ij² / D,

with λ = μ = 25, ν = 1 (eqs. 1-6 and the official code). The views are
BYOL's (asymmetric blur and solarisation), as in the paper.

Differences from the paper: both views go through the network in one call,
so the expander's hidden BatchNorm statistics are over the 2N views.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("vicreg")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, _ = method.loss(config, params, model_state, method_state, images,
  ...                       jax.random.key(1), 0)
  >>> print(loss.shape)
  ()
"""

from __future__ import annotations

import ml_collections

from ssljax import models
from ssljax.losses import non_contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """VICReg's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="vicreg", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"),
      proj_hidden_dim=8192, proj_dim=8192, sim_weight=25.0, var_weight=25.0,
      cov_weight=1.0))


def network(config) -> models.Model:
  """Backbone and 3-layer expander."""
  return _shared.projector_network(config, num_layers=3)


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config))


def objective(config, run: _shared.Online):
  """VICReg loss of the two views' embeddings."""
  method = config.method
  z = run.outputs["projection"]
  return non_contrastive.vicreg(
      z[0], z[1], sim_weight=method.sim_weight, var_weight=method.var_weight,
      cov_weight=method.cov_weight)


loss = _shared.stateless_loss(network, objective)


METHOD = Method(name="vicreg", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
