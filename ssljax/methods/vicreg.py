"""VICReg: invariance plus variance and covariance regularisation.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance
Regularization for Self-Supervised Learning", ICLR 2022; the official code
(facebookresearch/vicreg, `main_vicreg.py`).

Both views go through backbone and a 3-layer "expander" (Linear-BN-ReLU
twice, then Linear: `--mlp 8192-8192-8192`); on the embeddings z1, z2
[N, D],

    loss = λ·mean (z1 − z2)² + μ·(v(z1) + v(z2))/2 + ν·(c(z1) + c(z2)),
    v(z) = mean_d relu(1 − sqrt(Var(z_d) + 1e-4)),
    c(z) = Σ_{i≠j} Cov(z)_ij² / D,

with λ = μ = 25, ν = 1 (`--sim-coeff`, `--std-coeff`, `--cov-coeff`). The
views are BYOL's (asymmetric blur and solarisation, `augmentations.py`),
each its own forward call, so BatchNorm statistics are per view
(`view_batchnorm="per_view"`), as the official `forward` does. Differences
from the official code: see docs/fidelity.md#vicreg.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.vicreg(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                         proj_dim=8)
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
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method


def vicreg(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _shared.augment_config("byol"),
           dtype: str = "float32", proj_hidden_dim: int = 8192,
           proj_dim: int = 8192, sim_weight: float = 25.0,
           var_weight: float = 25.0, cov_weight: float = 1.0,
           view_batchnorm: str = "per_view") -> Method:
  """VICReg (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim, proj_dim: the 3-layer expander.
    sim_weight, var_weight, cov_weight: λ, μ, ν.
    view_batchnorm: "per_view" (the official code) or "joint".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "vicreg"
  for name, value in (("sim_weight", sim_weight), ("var_weight", var_weight),
                      ("cov_weight", cov_weight)):
    _common.check_non_negative(value, name, fn)
  return _siamese.projection_method(
      fn, _shared.setup(backbone, backbone_kwargs, augment, dtype),
      proj_hidden_dim, proj_dim,
      functools.partial(losses.vicreg, sim_weight=sim_weight,
                        var_weight=var_weight, cov_weight=cov_weight),
      joint=_shared.check_view_batchnorm(view_batchnorm, fn))
