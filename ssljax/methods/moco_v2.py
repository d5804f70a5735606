"""MoCo v2: contrast queries against a momentum encoder's keys and a queue.

He et al., "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick & He, "Improved Baselines with
Momentum Contrastive Learning" (MoCo v2), 2020; the official code
(facebookresearch/moco).

The query encoder (backbone and a Linear-ReLU-Linear head, v2's MLP) is
trained; the key encoder is its exponential moving average, θk ← m·θk +
(1 − m)·θq. With q, k l2-normalised and a queue Q of K past keys as
negatives,

    ctr(q, k, Q) = mean_b −log exp(q_b·k_b / T)
                              / (exp(q_b·k_b / T) + Σ_j exp(q_b·Q_j / T)),

loss = ctr(q1, k2, Q) as in the official code (query of view 1, key of view
2), and the batch's keys are enqueued after the step (FIFO). With
`symmetric=True` (solo-learn's "MoCo V2+", the CIFAR recipes)
loss = ½ (ctr(q1, k2, Q2) + ctr(q2, k1, Q1)), where Q_v holds past keys of
view v: each queue row stores both views' keys side by side. Defaults are
the paper's: T = 0.2, K = 65536, m = 0.999, head 2048 → 128, MoCo v2's
augmentation (crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1), blur p 0.5).
Query and key encoders run each view in its own call (BatchNorm statistics
per view, `view_batchnorm="per_view"`). Differences from the official code
(no shuffling BatchNorm...) are listed in docs/fidelity.md.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.moco_v2(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                          proj_dim=8, queue_size=16, symmetric=True)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> _, _, method_state = method.init(jax.random.key(0), images)
  >>> print(method_state.queue.buffer.shape)  # both views' keys per row
  (16, 16)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ssljax import _common, losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method, Schedule
from ssljax.state import queue as queue_lib


class MoCoState(NamedTuple):
  """MoCo's state: the momentum (key) encoder and the queue of keys."""
  target: _shared.Target
  queue: queue_lib.QueueState


def moco_head(hidden_dim: int, out_dim: int, kw: dict) -> models.Model:
  """MoCo v2's Linear-ReLU-Linear head (no BatchNorm)."""
  return models.from_builder(
      lambda rngs, x: models.MLP(x.shape[-1], hidden_dim, out_dim,
                                 use_bn=False, rngs=rngs, **kw),
      name="moco_v2_head")


def moco_v2(*, backbone: str | models.Model = "resnet50",
            backbone_kwargs: Mapping | None = None,
            augment: Mapping = _shared.augment_config(
                "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                saturation=0.4, hue=0.1),
            dtype: str = "float32", proj_hidden_dim: int = 2048,
            proj_dim: int = 128, temperature: float = 0.2,
            queue_size: int = 65536, momentum: Schedule = 0.999,
            symmetric: bool = False, view_batchnorm: str = "per_view"
            ) -> Method:
  """MoCo v2 (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the MLP head.
    temperature: T.
    queue_size: K, the number of queued negatives.
    momentum: the key encoder's EMA momentum m(step).
    symmetric: both directions (MoCo V2+) instead of the paper's one.
    view_batchnorm: "per_view" (the official code) or "joint".
  """
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(setup.backbone, projector=moco_head(
      proj_hidden_dim, proj_dim, setup.kw))
  joint = _shared.check_view_batchnorm(view_batchnorm, "moco_v2")
  directions = 2 if symmetric else 1

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, model, rng, batch)
    queue = queue_lib.init(queue_size, directions * proj_dim, key=rng)
    return params, model_state, MoCoState(
        _shared.init_target(params, model_state), queue)

  def loss(params, model_state, method_state, batch, rng, step):
    views = setup.views.make(rng, batch)
    # Queries of views[:directions], keys of the other view of each.
    queries, model_state = _shared.forward(model, params, model_state,
                                           views[:directions], joint=joint)
    keys, target_state = _shared.target_forward(
        model, method_state.target, views[::-1][:directions], joint=joint)
    keys = _common.l2_normalize(keys["projection"])
    negatives = _shared.queue_views(method_state.queue.buffer, directions)
    value = sum(losses.moco(q, k, n, temperature=temperature) for q, k, n in
                zip(queries["projection"], keys, negatives[::-1]))
    run = _shared.Online(views, queries, model_state)
    return value / directions, _shared.step_output(
        run, {"momentum": _shared.at(momentum, step)},
        (target_state, _shared.queue_rows(keys[::-1])))

  def post_update(params, method_state, update, step):
    target_state, rows = update
    return params, MoCoState(
        _shared.update_target(method_state.target, params,
                              _shared.at(momentum, step), target_state),
        queue_lib.push(method_state.queue, rows))

  return Method(name="moco_v2", init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup), crops=setup.views.specs)
