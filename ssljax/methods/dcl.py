"""DCL: SimCLR with the positive pair decoupled from the denominator.

Yeh, Hong, Hsu, Liu, Chen & LeCun, "Decoupled Contrastive Learning", ECCV
2022.

SimCLR's network and views; the loss is `ssljax.losses.dcl`, NT-Xent
without the positive in the denominator (eq. 6), whose gradient no longer
shrinks with easy positives, so that small batches train well. With
`weighted=True` it is DCLW, the positive term weighted by the negative von
Mises-Fisher weight of scale `sigma` = 0.5. Defaults are the paper's
ImageNet settings on SimCLR (T = 0.1, projector 2048 → 128).

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

from collections.abc import Mapping

from ssljax import losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method


def dcl(*, backbone: str | models.Model = "resnet50",
        backbone_kwargs: Mapping | None = None,
        augment: Mapping = _shared.augment_config("simclr"),
        dtype: str = "float32", proj_hidden_dim: int = 2048,
        proj_dim: int = 128, temperature: float = 0.1,
        weighted: bool = False, sigma: float = 0.5,
        view_batchnorm: str = "joint") -> Method:
  """DCL (see the module docstring); arguments as `methods.simclr`, plus
  `weighted` (DCLW) and its `sigma`."""
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = _shared.with_projector(setup, proj_hidden_dim, proj_dim)

  def objective(run, batch):
    del batch  # Unsupervised.
    z = run.outputs["projection"]
    return losses.dcl(z[0], z[1], temperature=temperature, weighted=weighted,
                      sigma=sigma)

  return _shared.stateless_method(
      "dcl", setup, model, objective,
      joint=_shared.check_view_batchnorm(view_batchnorm, "dcl"))
