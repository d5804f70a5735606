"""MoCo v3: in-batch contrast of online predictions against momentum keys.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021.

The online network is backbone, projector (3 layers, BatchNorm without
affine on the output) and predictor (2 layers); the momentum encoder is the
EMA of backbone and projector, m following BYOL's cosine schedule from 0.99
to 1. The keys of the batch are the negatives (no queue). With q = the
online prediction and k = the momentum projection, both l2-normalised, and
N images,

    ctr(q, k) = 2T · mean_i −log exp(q_i·k_i / T) / Σ_j exp(q_i·k_j / T)
    loss = ctr(q1, k2) + ctr(q2, k1)

(Algorithm 1; the factor 2T is the official code's, which keeps the
gradient's scale independent of T). No gradient flows into the keys.
Defaults: T = 0.2, projector and predictor 4096 → 256, the "byol" views;
the official ResNet-50 runs use T = 1.0 (see `configs/moco_v3.py`).

Differences from the paper: both views go through each network in one call,
so BatchNorm statistics are over the 2N views. Under `jax.jit` on a mesh the
logits q·kᵀ are over the global batch, as with the official all-gather of
the keys.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("moco_v3")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      pred_hidden_dim=16)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 0)
  >>> print(round(float(out.metrics["momentum"]), 4))
  0.99
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from ssljax import _common, models
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """MoCo v3's hyper-parameters (T of the paper's ViT runs)."""
  return ml_collections.ConfigDict(dict(
      name="moco_v3", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"),
      proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096,
      temperature=0.2, base_momentum=0.99, final_momentum=1.0))


def networks(config) -> tuple[models.Model, models.Model]:
  """(online, momentum encoder): 3-layer projector ending in BatchNorm,
  predictor on the online side."""
  return _shared.predictor_networks(
      config, _shared.projector(config, num_layers=3, last_bn=True))


def contrast(query: jax.Array, key: jax.Array, *, temperature) -> jax.Array:
  """ctr(q, k) of the module docstring: 2T · cross-entropy over the batch.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.methods.moco_v3 import contrast
    >>> q = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(contrast(q, q, temperature=0.5)), 4))  # log(1+e^-2)
    0.1269
  """
  fn = "moco_v3.contrast"
  _common.check_rank(query, 2, "query", fn)
  _common.check_same_shape(fn, query=query, key=key)
  _common.check_positive(temperature, "temperature", fn)
  query, key = _common.to_compute(query, key)
  query = _common.l2_normalize(query)
  key = jax.lax.stop_gradient(_common.l2_normalize(key))
  logits = query @ key.T / temperature
  labels = jnp.arange(logits.shape[0])
  return 2 * temperature * jnp.mean(
      optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def init(config, rng, images):
  return _shared.init(config, rng, images, networks(config)[0],
                      target_parts=_shared.TARGET_PARTS)


# ctr(q1, k2) + ctr(q2, k1).
loss = _shared.momentum_loss(networks, lambda config: functools.partial(
    contrast, temperature=config.method.temperature))


METHOD = Method(name="moco_v3", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
