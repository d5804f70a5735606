"""SupCon: supervised contrastive learning — a method that uses labels.

Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020; the
official code (HobbitLong/SupContrast, `losses.py`, `main_supcon.py`).

Like SimCLR (two views, backbone, MLP head), but every view of the same
class is a positive: with z the l2-normalised projections of the 2N views
and P(i) the other views sharing i's label, L^sup_out (eq. 2), scaled as
the official `SupConLoss` by T / T_base,

    loss = T / T_base · mean_i −1/|P(i)| Σ_{p∈P(i)} log exp(z_i·z_p / T)
                                          / Σ_{a≠i} exp(z_i·z_a / T).

The labels come from the batch ("label", int [B]). Defaults are the
official command's and `SupConResNet`'s: T = 0.1, T_base = 0.07 (set
`base_temperature=temperature` for the paper's unscaled loss), a head
Linear-ReLU-Linear without BatchNorm at the backbone's width (2048 on a
ResNet-50) to 128, and the official views (crop scale (0.2, 1), jitter
(0.4, 0.4, 0.4, 0.1) with p 0.8, grayscale 0.2, no blur). Both views go
through the network in one call (`torch.cat([images[0], images[1]])`), so
BatchNorm statistics are over the 2N views (`view_batchnorm="joint"`); the
CIFAR configs follow solo-learn (per-view calls, a 2048-wide head, T 0.2,
no scaling). Differences from the official code: see
docs/fidelity.md#supcon.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.supcon(backbone="tiny_cnn", proj_dim=8)
  >>> batch = {"image": jnp.zeros((4, 16, 16, 3), jnp.uint8),
  ...          "label": jnp.array([0, 0, 1, 1])}
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 batch)
  >>> loss, _ = method.loss(params, model_state, method_state, batch,
  ...                       jax.random.key(1), 0)
  >>> print(loss.shape)
  ()
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Optional

import jax
import jax.numpy as jnp

from ssljax import _common, losses, models
from ssljax.methods import _shared, _siamese
from ssljax.methods.base import Method


def objective(projection: jax.Array, labels: jax.Array, *,
              temperature: float, base_temperature: float) -> jax.Array:
  """T / T_base · L^sup_out of [V, B, D] projections with [B] labels.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[1.0, 0.0], [1.0, 0.0]]] * 2)  # all views equal
    >>> value = objective(z, jnp.array([0, 0]), temperature=1.0,
    ...                   base_temperature=1.0)
    >>> print(round(float(value), 4))  # log 3: 3 equal candidates
    1.0986
  """
  features = jnp.swapaxes(projection, 0, 1)
  return temperature / base_temperature * losses.supcon(
      features, labels, temperature=temperature)


def supcon(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _shared.augment_config(
               "simclr", scale=(0.2, 1.0), brightness=0.4, contrast=0.4,
               saturation=0.4, hue=0.1, blur_prob=0.0),
           dtype: str = "float32", proj_hidden_dim: Optional[int] = None,
           proj_dim: int = 128, temperature: float = 0.1,
           base_temperature: float = 0.07, view_batchnorm: str = "joint"
           ) -> Method:
  """SupCon (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    proj_hidden_dim: the head's hidden width; None: the backbone's feature
      width, as `SupConResNet`'s "mlp" head.
    proj_dim: the head's output (`feat_dim`).
    temperature: T (`--temp`).
    base_temperature: T_base; the loss is scaled by T / T_base.
    view_batchnorm: "joint" (the official concatenated batch) or
      "per_view".

  Raises:
    ValueError: naming the argument, for a bad hyper-parameter.
  """
  fn = "supcon"
  _siamese.check_counts(fn, proj_dim=proj_dim)
  if proj_hidden_dim is not None:
    _siamese.check_counts(fn, proj_hidden_dim=proj_hidden_dim)
  _common.check_positive(temperature, "temperature", fn)
  _common.check_positive(base_temperature, "base_temperature", fn)
  joint = _shared.check_view_batchnorm(view_batchnorm, fn)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(setup.backbone, projector=_siamese.mlp(
      proj_hidden_dim, proj_dim, setup.kw, use_bn=False))

  def loss(run, batch):
    return objective(run.outputs["projection"], _shared.labels_of(batch, fn),
                     temperature=temperature,
                     base_temperature=base_temperature)

  return _siamese.with_torch_heads(_shared.stateless_method(
      fn, setup, model, loss, joint=joint))
