"""SimSiam: predict the other view's projection, stop-gradient, no target.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021.

One network (backbone, 3-layer projector ending in BatchNorm without
affine, and a bottleneck predictor 2048 → 512 → 2048) sees both views; with
p = predictor output and z = projection, the loss (eq. 3-4) is

    loss = ½ D(p1, stopgrad(z2)) + ½ D(p2, stopgrad(z1)),
    D(p, z) = −mean_b cos(p_b, z_b).

There is no momentum encoder: the stop-gradient alone prevents collapse.
Defaults follow the paper (projector 2048, predictor hidden 512, MoCo v2's
augmentation); the CIFAR configs use solo-learn's recipe.

Differences from the paper: both views go through the network in one call,
so BatchNorm statistics are over the 2B views; the paper keeps the
predictor's learning rate constant while the rest decays, which needs a
per-part schedule that `ssljax.train` does not build (the predictor follows
the common schedule).

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("simsiam")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      pred_hidden_dim=4)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, _ = method.loss(config, params, model_state, method_state, images,
  ...                       jax.random.key(1), 0)
  >>> print(-1.0 <= float(loss) <= 1.0)  # a negative cosine
  True
"""

from __future__ import annotations

import ml_collections

from ssljax import models
from ssljax.losses import non_contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """SimSiam's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="simsiam", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config(
          "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
          saturation=0.4, hue=0.1),
      proj_hidden_dim=2048, proj_dim=2048, pred_hidden_dim=512))


def network(config) -> models.Model:
  """Backbone, 3-layer projector ending in BatchNorm, predictor."""
  return _shared.predictor_networks(
      config, _shared.projector(config, num_layers=3, last_bn=True))[0]


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config))


def objective(config, run: _shared.Online):
  """½ D(p1, z2) + ½ D(p2, z1), gradient stopped through z."""
  del config
  return 0.5 * _shared.swapped_pairs_sum(non_contrastive.simsiam,
                                         run.outputs["prediction"],
                                         run.outputs["projection"])


loss = _shared.stateless_loss(network, objective)


METHOD = Method(name="simsiam", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
