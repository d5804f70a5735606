"""NNCLR: nearest neighbours from a support set as positives.

Dwibedi, Aytar, Tompson, Sermanet & Zisserman, "With a Little Help from My
Friends: Nearest-Neighbor Contrastive Learning of Visual Representations",
ICCV 2021.

Backbone, a 3-layer projector (output z) and a 2-layer predictor (output p)
see two "byol" views. The support set Q is a queue of past projections of
the first view; NN(z) = argmax_{q∈Q} cos(z, q) replaces z as the anchor
(eq. 2), and the loss is symmetrised and averaged:

    ctr(z, p') = mean_i −log exp(NN(z_i)·p'_i / T) / Σ_k exp(NN(z_i)·p'_k / T)
    loss = ½ ctr(z1, p2) + ½ ctr(z2, p1),

then the normalised z1 of the batch are enqueued. No gradient flows through
the neighbour lookup. Defaults follow the paper (T = 0.1, |Q| = 98304,
projector 2048 → 256 ending in BatchNorm, predictor 4096); the CIFAR configs use
solo-learn's recipe (T = 0.2, |Q| = 65536).

Differences from the paper: the support set starts as random unit vectors
(as in solo-learn) rather than empty, so the first |Q|/B steps may pick a
random neighbour; both views go through the network in one call, so
BatchNorm statistics are over the 2N views.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("nnclr")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      pred_hidden_dim=16, queue_size=32)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> _, out = method.loss(config, params, model_state, method_state, images,
  ...                      jax.random.key(1), 0)
  >>> state = method.post_update(config, params, method_state, out.update, 0)
  >>> print(int(state.queue.ptr), state.queue.buffer.shape)
  4 (32, 8)
"""

from __future__ import annotations

import ml_collections

from ssljax import _common, models
from ssljax.losses import contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """NNCLR's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="nnclr", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"),
      proj_hidden_dim=2048, proj_dim=256, pred_hidden_dim=4096,
      temperature=0.1, queue_size=98304))


def network(config) -> models.Model:
  """Backbone, 3-layer projector ending in BatchNorm, predictor."""
  return _shared.predictor_networks(
      config, _shared.projector(config, num_layers=3, last_bn=True))[0]


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config),
                      queue_size=config.method.queue_size,
                      queue_width=config.method.proj_dim)


def loss(config, params, model_state, method_state, images, rng, step):
  del step  # The support set is the only state; no schedule.
  run = _shared.online(config, network(config), params, model_state, images,
                       rng)
  z = run.outputs["projection"]
  support = method_state.queue.buffer
  value = 0.5 * _shared.swapped_pairs_sum(
      lambda anchor, other: contrastive.nnclr(
          anchor, other, support, temperature=config.method.temperature),
      z, run.outputs["prediction"])
  return value, _shared.step_output(
      run, update={"queue": _common.l2_normalize(z[0])})


METHOD = Method(name="nnclr", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
