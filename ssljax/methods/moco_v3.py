"""MoCo v3: in-batch contrast of online predictions against momentum keys.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision
Transformers", ICCV 2021; the official code (facebookresearch/moco-v3).

The online network is backbone, projector and predictor; the momentum
encoder is the EMA of backbone and projector, θk ← m·θk + (1 − m)·θ (the
official runs use BYOL's cosine schedule from m0 = 0.99 to 1,
`--moco-m-cos`: pass `momentum` as that schedule, as the configs do). The
keys of the batch are the negatives (no queue). With q = the online
prediction and k = the momentum projection, both l2-normalised, and N
images,

    ctr(q, k) = 2T · mean_i −log exp(q_i·k_i / T) / Σ_j exp(q_i·k_j / T)
    loss = ctr(q1, k2) + ctr(q2, k1)

(Algorithm 1; the factor 2T is the official code's, which keeps the
gradient's scale independent of T). No gradient flows into the keys.

The heads follow `moco/builder.py`: on a ResNet (`MoCo_ResNet`) a 2-layer
projector 4096 → 256 ending in BatchNorm without affine and a 2-layer
predictor without a last BatchNorm; on a ViT (`MoCo_ViT`, a backbone name
starting with "vit") a 3-layer projector and a predictor ending in
BatchNorm, and the patch embedding frozen (`--stop-grad-conv1`, as every
official ViT command). T = 1.0 on a ResNet (`main_moco.py`'s default and
the ResNet-50 commands), 0.2 on a ViT (the ViT commands); the views are
BYOL's ("byol": asymmetric blur and solarisation, jitter (0.4, 0.4, 0.2,
0.1)). Each view goes through each network in its own call, so BatchNorm
statistics are per view (`view_batchnorm="per_view"`), as in the official
`forward`. Under `jax.jit` on a mesh the logits q·kᵀ are over the global
batch, as with the official all-gather of the keys. Differences from the
official code: see docs/fidelity.md#moco_v3.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.moco_v3(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                          proj_dim=8, pred_hidden_dim=16, momentum=0.99)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, round(float(out.metrics["momentum"]), 4))
  () 0.99
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Optional

import jax
import jax.numpy as jnp
import optax

from ssljax import _common, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method, Schedule

# Where the ViT keeps its patch embedding, which `stop_grad_conv1` freezes.
PATCH_EMBEDDING = ("backbone", "patch_embed")


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


def _is_vit(backbone: str | models.Model) -> bool:
  return isinstance(backbone, str) and backbone.startswith("vit")


def official_settings(backbone: str | models.Model) -> dict:
  """The settings of the official code that depend on the backbone: the
  ViT's (`MoCo_ViT`, the ViT commands) for a name starting with "vit", the
  ResNet's (`MoCo_ResNet`, `main_moco.py`'s defaults) otherwise.

  Example:
    >>> official_settings("vit_small")
    {'proj_layers': 3, 'pred_last_bn': True, 'temperature': 0.2, \
'stop_grad_conv1': True}
    >>> official_settings("resnet50")["temperature"]
    1.0
  """
  vit = _is_vit(backbone)
  return dict(proj_layers=3 if vit else 2, pred_last_bn=vit,
              temperature=0.2 if vit else 1.0, stop_grad_conv1=vit)


def moco_v3(*, backbone: str | models.Model = "resnet50",
            backbone_kwargs: Mapping | None = None,
            augment: Mapping = _shared.augment_config("byol"),
            dtype: str = "float32", proj_hidden_dim: int = 4096,
            proj_dim: int = 256, pred_hidden_dim: int = 4096,
            proj_layers: Optional[int] = None,
            pred_last_bn: Optional[bool] = None,
            temperature: Optional[float] = None,
            momentum: Schedule = 0.99,
            stop_grad_conv1: Optional[bool] = None,
            view_batchnorm: str = "per_view") -> Method:
  """MoCo v3 (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the projector (`--moco-mlp-dim`,
      `--moco-dim`).
    pred_hidden_dim: the 2-layer predictor's hidden width.
    proj_layers: linear layers of the projector; None: the official
      setting of the backbone (`official_settings`: 3 on a ViT, else 2).
    pred_last_bn: BatchNorm without affine after the predictor; None: on a
      ViT only.
    temperature: T; None: 0.2 on a ViT, 1.0 otherwise.
    momentum: the momentum encoder's EMA momentum m(step), a number or a
      schedule.
    stop_grad_conv1: freeze the ViT's patch embedding; None: on a ViT.
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "moco_v3"
  given = dict(proj_layers=proj_layers, pred_last_bn=pred_last_bn,
               temperature=temperature, stop_grad_conv1=stop_grad_conv1)
  settings = {**official_settings(backbone),
              **{k: v for k, v in given.items() if v is not None}}
  proj_layers, pred_last_bn, temperature, stop_grad_conv1 = (
      settings[k] for k in given)
  _siamese.check_counts(fn, proj_hidden_dim=proj_hidden_dim,
                        proj_dim=proj_dim, pred_hidden_dim=pred_hidden_dim,
                        proj_layers=proj_layers)
  _common.check_positive(temperature, "temperature", fn)
  _siamese.check_momentum(momentum, fn)
  if stop_grad_conv1 and not _is_vit(backbone):
    raise ValueError(f"{fn}: `stop_grad_conv1` freezes a ViT's patch "
                     f"embedding; `backbone` {backbone!r} is not a ViT name.")
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  predictor = models.projector(None, pred_hidden_dim, proj_dim,
                               last_bn=pred_last_bn, **setup.kw)
  heads = functools.partial(_shared.with_projector, setup, proj_hidden_dim,
                            proj_dim, num_layers=proj_layers, last_bn=True)
  method = _shared.momentum_method(
      fn, setup, heads(predictor=predictor), heads(),
      functools.partial(contrast, temperature=temperature),
      momentum=momentum, joint=joint)

  def init(rng, batch):
    # The heads start from PyTorch's draw, the momentum encoder as a copy.
    params, model_state, _ = method.init(rng, batch)
    params = _siamese.torch_heads(params, jax.random.fold_in(rng, 1))
    return params, model_state, _shared.MomentumState(
        _shared.init_target(params, model_state))

  def frozen(params, step):
    del step  # Frozen for the whole run.
    return _shared.frozen_at(params, PATCH_EMBEDDING, jnp.bool_(True))

  return method._replace(init=init,
                         frozen=frozen if stop_grad_conv1 else None)
