"""MoCo v2: contrast queries against a momentum encoder's keys and a queue.

He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick & He, "Improved Baselines with
Momentum Contrastive Learning" (MoCo v2), 2020.

The query encoder (backbone and a Linear-ReLU-Linear head, v2's MLP) is
trained; the key encoder is its exponential moving average, θk ← m·θk +
(1 − m)·θq. With q, k l2-normalised and a queue of K past keys as negatives,

    ctr(q, k, Q) = mean_b −log exp(q_b·k_b / T)
                              / (exp(q_b·k_b / T) + Σ_j exp(q_b·Q_j / T)),

and the keys of the batch are enqueued after the step (FIFO), the oldest
dropped. Defaults are the paper's: T = 0.2, K = 65536, m = 0.999, head
2048 → 128, MoCo v2's augmentation (crop scale (0.2, 1), jitter
(0.4, 0.4, 0.4, 0.1), blur p 0.5). The CIFAR configs use solo-learn's
"MoCo V2+" recipe: m from 0.99 to 0.999 on BYOL's cosine schedule, K = 32768,
head 2048 → 256.

The loss is symmetrised as in MoCo V2+ (the paper's is one direction):

    loss = ½ (ctr(q1, k2, Q2) + ctr(q2, k1, Q1)),

where Q_v holds past keys of view v: each queue row stores both views' keys
side by side, so one `QueueState` of width 2·D serves as solo-learn's two
queues.

Differences from the paper: no shuffling BatchNorm. Under `jax.jit` on a
mesh BatchNorm statistics are global over the batch, so shuffling across
devices would not change them; the key encoder's statistics are still
computed on key views only, in their own forward pass.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("moco_v2")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_hidden_dim=16, proj_dim=8,
  ...                      queue_size=16)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> _, _, method_state = method.init(config, jax.random.key(0), images)
  >>> print(method_state.queue.buffer.shape)  # both views' keys per row
  (16, 16)
"""

from __future__ import annotations

import functools

import ml_collections

from ssljax import _common, models
from ssljax.losses import contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method


def default_config() -> ml_collections.ConfigDict:
  """MoCo v2's hyper-parameters (ImageNet recipe of the paper)."""
  return ml_collections.ConfigDict(dict(
      name="moco_v2", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config(
          "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
          saturation=0.4, hue=0.1),
      proj_hidden_dim=2048, proj_dim=128, temperature=0.2, queue_size=65536,
      base_momentum=0.999, final_momentum=0.999))


def network(config) -> models.Model:
  """Backbone and MoCo v2's Linear-ReLU-Linear head (no BatchNorm)."""
  method, kw = config.method, _shared.dtype_kwargs(config)
  head = models.from_builder(
      lambda rngs, x: models.MLP(x.shape[-1], method.proj_hidden_dim,
                                 method.proj_dim, use_bn=False, rngs=rngs,
                                 **kw),
      name="moco_v2_head")
  return models.compose(_shared.backbone(config), projector=head)


def init(config, rng, images):
  method = config.method
  return _shared.init(config, rng, images, network(config),
                      target_parts=_shared.TARGET_PARTS,
                      queue_size=method.queue_size,
                      queue_width=2 * method.proj_dim)


def loss(config, params, model_state, method_state, images, rng, step):
  model = network(config)
  run = _shared.online(config, model, params, model_state, images, rng)
  keys, target_state = _shared.target_forward(model, method_state.target,
                                              run.views)
  keys = _common.l2_normalize(keys["projection"])
  negatives = _shared.queue_views(method_state.queue, 2)
  ctr = functools.partial(contrastive.moco,
                          temperature=config.method.temperature)
  value = 0.5 * _shared.swapped_pairs_sum(
      lambda query, key_and_queue: ctr(query, *key_and_queue),
      run.outputs["projection"], list(zip(keys, negatives)))
  return value, _shared.momentum_output(
      config, step, run, target_state,
      update={"queue": _shared.queue_rows(keys)})


METHOD = Method(name="moco_v2", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
