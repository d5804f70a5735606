"""Barlow Twins: make the views' cross-correlation matrix the identity.

Zbontar, Jing, Misra, LeCun & Deny, "Barlow Twins: Self-Supervised Learning
via Redundancy Reduction", ICML 2021; the official code
(facebookresearch/barlowtwins, `main.py`).

Both "byol" views go through backbone and a 3-layer projector
(Linear-BN-ReLU twice, then Linear: 8192-8192-8192); with z standardised
over the batch and C = ẑ1ᵀẑ2 / N,

    loss = scale · (Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²),

λ = 0.0051 and scale = 1, as the current official `main.py` (it dropped
the paper's `--scale-loss`; solo-learn's CIFAR recipe, which the CIFAR
configs follow, uses 0.1 with a 2048-wide projector). Each view goes
through the network in its own call, so BatchNorm statistics are per view
(`view_batchnorm="per_view"`), as the official `forward` does.

The official LARS gives biases and BatchNorm parameters their own rate,
0.0048 against the weights' 0.2, and excludes them from weight decay and
LARS's adaptation: the imagenet2012 config sets those parameter groups
(`optimizer.bias_lr_scale=0.0048 / 0.2`, `exclude_bias_and_norm=True`).
Differences from the official code: see docs/fidelity.md#barlow_twins.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.barlow_twins(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                               proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> print(params["projector"]["layers"]["linear2"]["kernel"].shape)
  (16, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

from ssljax import _common, losses, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method


def barlow_twins(*, backbone: str | models.Model = "resnet50",
                 backbone_kwargs: Mapping | None = None,
                 augment: Mapping = _shared.augment_config("byol"),
                 dtype: str = "float32", proj_hidden_dim: int = 8192,
                 proj_dim: int = 8192, lambda_: float = 0.0051,
                 scale: float = 1.0, view_batchnorm: str = "per_view"
                 ) -> Method:
  """Barlow Twins (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the 3-layer projector (`--projector`).
    lambda_: λ, the weight of the off-diagonal terms (`--lambd`).
    scale: a factor on the whole loss.
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "barlow_twins"
  _common.check_non_negative(lambda_, "lambda_", fn)
  _common.check_positive(scale, "scale", fn)
  return _siamese.projection_method(
      fn, _shared.setup(backbone, backbone_kwargs, augment, dtype),
      proj_hidden_dim, proj_dim,
      lambda z1, z2: scale * losses.barlow_twins(z1, z2, lambda_=lambda_),
      joint=_shared.check_view_batchnorm(view_batchnorm, fn))
