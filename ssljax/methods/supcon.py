"""SupCon: supervised contrastive learning — the one method here that uses
labels.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020.

Like SimCLR (two "simclr" views, backbone, MLP projector), but every view
of the same class is a positive: with z the l2-normalised projections of
the 2N views and P(i) the other views sharing i's label, L^sup_out (eq. 2)

    loss = mean_i −1/|P(i)| Σ_{p∈P(i)} log exp(z_i·z_p / T)
                                           / Σ_{a≠i} exp(z_i·z_a / T).

The labels come from the batch: `images` must be the batch dict
{"image": uint8 [B, H, W, C], "label": int [B]}, not the bare images.
Defaults follow the paper (projector 2048 → 128, T = 0.1); the CIFAR configs
use solo-learn's recipe (output 256, T = 0.2).

Differences from the paper: both views go through the network in one call,
so BatchNorm statistics are over the 2N views.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("supcon")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8)
  >>> batch = {"image": jnp.zeros((4, 16, 16, 3), jnp.uint8),
  ...          "label": jnp.array([0, 0, 1, 1])}
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), batch)
  >>> loss, _ = method.loss(config, params, model_state, method_state, batch,
  ...                       jax.random.key(1), 0)
  >>> print(loss.shape)
  ()
"""

from __future__ import annotations

import jax.numpy as jnp
import ml_collections

from ssljax import models
from ssljax.losses import contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """SupCon's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="supcon", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("simclr"),
      proj_hidden_dim=2048, proj_dim=128, temperature=0.1))


def network(config) -> models.Model:
  """Backbone and 2-layer MLP projector."""
  return _shared.projector_network(config)


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config))


def objective(config, run: _shared.Online):
  """L^sup_out of the two views' projections, [B, 2, D], with the labels."""
  if run.labels is None:
    raise ValueError(
        "supcon.loss: `images` must be the batch dict {'image': ..., "
        "'label': ...}; SupCon is supervised and needs the labels.")
  features = jnp.swapaxes(run.outputs["projection"], 0, 1)
  return contrastive.supcon(features, run.labels,
                            temperature=config.method.temperature)


loss = _shared.stateless_loss(network, objective)

METHOD = Method(name="supcon", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
