"""DCL: SimCLR with the positive pair decoupled from the denominator.

Yeh, Hong, Hsu, Liu, Chen & LeCun, "Decoupled Contrastive Learning", ECCV
2022. The authors released no code; this follows the paper on SimCLR's
official network and views (`methods.simclr`).

The loss is `ssljax.losses.dcl`, NT-Xent without the positive in the
denominator (eq. 6), whose gradient no longer shrinks with easy positives,
so that small batches train well:

    l_i = −cos(z_i, z_p(i)) / T + log Σ_{j ∉ {i, p(i)}} exp(cos(z_i, z_j) / T),

summed over the two views' anchor means as SimCLR's official loss
(`sum_views=True`; False: the mean over the 2N anchors). With
`weighted=True` it is DCLW, the positive term weighted by the negative von
Mises-Fisher weight of scale `sigma` = 0.5. Defaults are SimCLR's (the
official head of 3 layers with output BatchNorm, T = 0.1), the settings the
paper's ImageNet runs reuse; docs/fidelity.md#dcl lists the choices made
where the paper is silent.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.dcl(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                      proj_dim=8, weighted=True)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, _ = method.loss(params, model_state, method_state,
  ...                       {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape)
  ()
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from ssljax import _common, losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method
from ssljax.methods.simclr import contrastive_method


def dcl(*, backbone: str | models.Model = "resnet50",
        backbone_kwargs: Mapping | None = None,
        augment: Mapping = _shared.augment_config("simclr"),
        dtype: str = "float32", proj_hidden_dim: int = 2048,
        proj_dim: int = 128, proj_layers: int = 3, proj_last_bn: bool = True,
        temperature: float = 0.1, weighted: bool = False, sigma: float = 0.5,
        sum_views: bool = True, view_batchnorm: str = "joint") -> Method:
  """DCL (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype, proj_hidden_dim, proj_dim,
      proj_layers, proj_last_bn, sum_views, view_batchnorm: as
      `methods.simclr` (its official network and views).
    temperature: T of the decoupled loss (SimCLR's 0.1).
    weighted: DCLW: the positive term of image n weighted by
      w_n = 2 − N softmax_n(cos(z1_n, z2_n) / σ), without gradient
      (`losses.dcl`); False: plain DCL (w = 1).
    sigma: σ of the DCLW weight (the paper's 0.5).

  Raises:
    ValueError: naming the argument, as `methods.simclr`, and for a
      non-positive `sigma`.
  """
  _common.check_positive(sigma, "sigma", "dcl")
  return contrastive_method(
      "dcl", functools.partial(losses.dcl, weighted=weighted, sigma=sigma),
      backbone=backbone, backbone_kwargs=backbone_kwargs, augment=augment,
      dtype=dtype, proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
      proj_layers=proj_layers, proj_last_bn=proj_last_bn,
      temperature=temperature, sum_views=sum_views,
      view_batchnorm=view_batchnorm)
