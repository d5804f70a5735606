"""SimSiam: predict the other view's projection, stop-gradient, no target.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021;
the official code (facebookresearch/simsiam).

One network (backbone, projector, predictor) sees both views; with p the
predictor's output and z the projection, the loss (eq. 3-4) is

    loss = ½ D(p1, stopgrad(z2)) + ½ D(p2, stopgrad(z1)),
    D(p, z) = −mean_b cos(p_b, z_b).

There is no momentum encoder: the stop-gradient alone prevents collapse.
The heads are `simsiam/builder.py`'s: a 3-layer projector (Linear-BN-ReLU
twice at the backbone's width, 2048 on a ResNet-50, then Linear to 2048
and BatchNorm without affine) and a bottleneck predictor 2048 → 512 → 2048
(Linear-BN-ReLU-Linear). The views are MoCo v2's (crop scale (0.2, 1),
jitter (0.4, 0.4, 0.4, 0.1), blur p 0.5), each its own forward call, so
BatchNorm statistics are per view (`view_batchnorm="per_view"`), as the
official `forward` runs the encoder on x1 and x2 separately.

The official recipe also keeps the predictor's learning rate constant
(`--fix-pred-lr`) and decays every parameter, biases and BatchNorm
included, with SGD: parameter groups of the optimizer, which the configs
set (`optimizer.constant_lr_parts=("predictor",)`,
`optimizer.exclude_bias_and_norm=False`). Differences from the official
code: see docs/fidelity.md#simsiam.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.simsiam(backbone="tiny_cnn", proj_dim=16,
  ...                          pred_hidden_dim=4)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, _ = method.loss(params, model_state, method_state,
  ...                       {"image": images}, jax.random.key(1), 0)
  >>> print(-1.0 <= float(loss) <= 1.0)  # a negative cosine
  True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import jax

from ssljax import losses, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method


def objective(prediction: jax.Array, projection: jax.Array) -> jax.Array:
  """½ D(p1, z2) + ½ D(p2, z1) of [2, B, D] predictions and projections,
  gradient stopped through z.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[1.0, 0.0]], [[0.0, 1.0]]])
    >>> print(float(objective(z[::-1], z)))  # each p equals the other z
    -1.0
  """
  return 0.5 * _shared.swapped_pairs_sum(losses.simsiam, prediction,
                                         projection)


def simsiam(*, backbone: str | models.Model = "resnet50",
            backbone_kwargs: Mapping | None = None,
            augment: Mapping = _shared.augment_config(
                "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
                saturation=0.4, hue=0.1),
            dtype: str = "float32", proj_hidden_dim: Optional[int] = None,
            proj_dim: int = 2048, pred_hidden_dim: int = 512,
            view_batchnorm: str = "per_view") -> Method:
  """SimSiam (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim: the projector's hidden width; None: the backbone's
      feature width, as the official projector.
    proj_dim: the projection (`--dim`).
    pred_hidden_dim: the predictor's bottleneck (`--pred-dim`).
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "simsiam"
  _siamese.check_counts(fn, proj_dim=proj_dim,
                        pred_hidden_dim=pred_hidden_dim)
  if proj_hidden_dim is not None:
    _siamese.check_counts(fn, proj_hidden_dim=proj_hidden_dim)
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(
      setup.backbone,
      projector=_siamese.mlp(proj_hidden_dim, proj_dim, setup.kw,
                             num_layers=3, last_bn=True),
      predictor=models.predictor(None, pred_hidden_dim, proj_dim, **setup.kw))

  def loss(run, batch):
    del batch  # Unsupervised.
    return objective(run.outputs["prediction"], run.outputs["projection"])

  return _siamese.with_torch_heads(_shared.stateless_method(
      fn, setup, model, loss, joint=joint))
