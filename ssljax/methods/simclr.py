"""SimCLR: contrast two augmented views of each image against the batch.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020.

Two "simclr" views per image go through the backbone f and an MLP projector
g; with z = g(f(x)) and N images, each of the 2N projections has its other
view as positive and the other 2N − 2 as negatives (NT-Xent, eq. 1):

    loss = mean_i −log exp(cos(z_i, z_p(i)) / T)
                       / Σ_{j≠i} exp(cos(z_i, z_j) / T)

Defaults are the paper's ImageNet recipe: ResNet-50, projector 2048 → 128,
T = 0.1 (the value of the official ImageNet runs at batch 4096). The CIFAR
configs use solo-learn's recipe (hidden 2048, output 256, T = 0.2).

Differences from the paper: the projector's output layer has no BatchNorm
(solo-learn's head; the official TF code keeps one); both views go through
the network in one call, so BatchNorm statistics are over the 2N views, as
in the official code's concatenated batch. Under `jax.jit` on a mesh the
negatives and BatchNorm statistics are global, as with the paper's
cross-replica all-gather and global BN.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("simclr")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import ml_collections

from ssljax import models
from ssljax.losses import contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """SimCLR's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="simclr", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("simclr"),
      proj_hidden_dim=2048, proj_dim=128, temperature=0.1))


def network(config) -> models.Model:
  """Backbone and 2-layer MLP projector."""
  return _shared.projector_network(config)


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config))


def objective(config, run: _shared.Online):
  """NT-Xent between the projections of the two views."""
  z = run.outputs["projection"]
  return contrastive.nt_xent(z[0], z[1], temperature=config.method.temperature)


loss = _shared.stateless_loss(network, objective)


METHOD = Method(name="simclr", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
