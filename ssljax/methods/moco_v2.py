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
view v: each queue row stores both views' keys side by side.

Defaults are the official code's (`main_moco.py --mlp --moco-t 0.2
--aug-plus --cos`): T = 0.2, K = 65536 (a queue of random unit vectors at
first), m = 0.999, the head Linear(2048)-ReLU-Linear(128) with biases and
PyTorch's default Linear draw U(±1/√fan_in) of weights and biases, the
aug+ views (crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) with p 0.8,
grayscale 0.2, blur p 0.5). Query and key encoders run each view in its own
call (`view_batchnorm="per_view"`). The official encoders are
DistributedDataParallel without SyncBatchNorm: BatchNorm statistics per GPU
(32 images on its 8 GPUs), the keys' after a random shuffle of the batch
over the GPUs ("shuffling BN", He et al. sec. 3.3). `bn_groups=G` does that:
statistics over G equal slices of each view, the key encoder's slices cut
from a randomly permuted batch (and the outputs put back in order), the
running statistics those of the first slice (DDP broadcasts rank 0's).
The default, 1, is the library's global BatchNorm; the ImageNet config sets
8. `encode` is the query encoder's backbone, what `main_lincls.py` loads.
The optimiser (SGD 0.03 × B/256, weight decay 1e-4 on every parameter,
cosine, no warm-up) is in configs/moco_v2.py. Where this differs from the
official code: docs/fidelity.md#moco_v2.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.moco_v2(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                          proj_dim=8, queue_size=16, symmetric=True)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> _, _, method_state = method.init(jax.random.key(0), images)
  >>> print(method_state.queue.buffer.shape)  # both views' keys per row
  (16, 16)
  >>> shuffled = methods.moco_v2(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                            proj_dim=8, queue_size=16, bn_groups=2)
  >>> params, model_state, method_state = shuffled.init(jax.random.key(0),
  ...                                                   images)
  >>> loss, _ = shuffled.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape)
  ()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

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


def grouped(model: models.Model, groups: int,
            shuffle: Optional[jax.Array] = None) -> models.Model:
  """`model` with BatchNorm statistics per group, as per-GPU BatchNorm.

  The batch [B, ...] is cut into `groups` consecutive slices of B / groups
  examples, each run through `model` on its own (`jax.vmap`), so that each
  slice is normalised with its own statistics; with the key `shuffle` the
  slices are cut from a random permutation of the batch and the outputs put
  back in the batch's order (MoCo's shuffling BN). The new running
  statistics are those of the first slice, as DistributedDataParallel
  broadcasts rank 0's buffers. `groups=1` returns `model`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> net = models.projector(None, 4, 2)
    >>> x = jax.random.normal(jax.random.key(0), (4, 3))
    >>> params, state = net.init(jax.random.key(1), x)
    >>> out, _ = grouped(net, 2).apply(params, state, x, train=True)
    >>> first, _ = net.apply(params, state, x[:2], train=True)
    >>> print(bool(jnp.allclose(out[:2], first, atol=1e-6)))
    True
  """
  if groups == 1:
    return model

  def apply(params, model_state, x, *, train):
    size = x.shape[0]
    if size % groups:
      raise ValueError(f"moco_v2: the batch ({size}) must split into "
                       f"`bn_groups`={groups} equal slices.")
    order = None if shuffle is None else jax.random.permutation(shuffle, size)
    if order is not None:
      x = x[order]
    outputs, states = jax.vmap(
        lambda part: model.apply(params, model_state, part, train=train))(
            x.reshape(groups, size // groups, *x.shape[1:]))
    outputs = jax.tree.map(lambda y: y.reshape(size, *y.shape[2:]), outputs)
    if order is not None:
      outputs = jax.tree.map(lambda y: y[jnp.argsort(order)], outputs)
    return outputs, jax.tree.map(lambda state: state[0], states)

  return model._replace(apply=apply)


def moco_v2(*, backbone: str | models.Model = "resnet50",
            backbone_kwargs: Mapping | None = None,
            augment: Mapping = _shared.augment_config(
                "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                saturation=0.4, hue=0.1),
            dtype: str = "float32", proj_hidden_dim: int = 2048,
            proj_dim: int = 128, temperature: float = 0.2,
            queue_size: int = 65536, momentum: Schedule = 0.999,
            symmetric: bool = False, bn_groups: int = 1,
            view_batchnorm: str = "per_view") -> Method:
  """MoCo v2 (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the MLP head.
    temperature: T.
    queue_size: K, the number of queued negatives.
    momentum: the key encoder's EMA momentum m(step).
    symmetric: both directions (MoCo V2+) instead of the paper's one.
    bn_groups: BatchNorm statistics over this many slices of each view, the
      keys' after shuffling (the official per-GPU BatchNorm); 1: global.
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a non-positive size or
      temperature, a momentum outside [0, 1] or an unknown
      `view_batchnorm`.
  """
  for arg, value in (("proj_hidden_dim", proj_hidden_dim),
                     ("proj_dim", proj_dim), ("queue_size", queue_size),
                     ("bn_groups", bn_groups)):
    _common.check_count(value, arg, "moco_v2", minimum=1)
  _common.check_positive(temperature, "temperature", "moco_v2")
  _common.check_in_range(momentum, 0.0, 1.0, "momentum", "moco_v2")
  joint = _shared.check_view_batchnorm(view_batchnorm, "moco_v2")
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(setup.backbone, projector=moco_head(
      proj_hidden_dim, proj_dim, setup.kw))
  directions = 2 if symmetric else 1

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, model, rng, batch)
    params = dict(params, projector=_shared.redraw_dense(
        params["projector"], jax.random.fold_in(rng, 1),
        _shared.torch_linear_init, _shared.torch_linear_init))
    queue = queue_lib.init(queue_size, directions * proj_dim, key=rng)
    return params, model_state, MoCoState(
        _shared.init_target(params, model_state), queue)

  def loss(params, model_state, method_state, batch, rng, step):
    shuffle = None
    if bn_groups > 1:
      rng, shuffle = jax.random.split(rng)
    views = setup.views.make(rng, batch)
    # Queries of views[:directions], keys of the other view of each.
    queries, model_state = _shared.forward(
        grouped(model, bn_groups), params, model_state, views[:directions],
        joint=joint)
    keys, target_state = _shared.target_forward(
        grouped(model, bn_groups, shuffle), method_state.target,
        views[::-1][:directions], joint=joint)
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
