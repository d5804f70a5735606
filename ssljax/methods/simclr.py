"""SimCLR: contrast two augmented views of each image against the batch.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020; the official TF code
(google-research/simclr).

Two "simclr" views per image go through the backbone f and an MLP projector
g; with z = g(f(x)) and N images, each of the 2N projections has its other
view as positive and the other 2N − 2 as negatives (NT-Xent, eq. 1):

    loss = mean_i −log exp(cos(z_i, z_p(i)) / T)
                       / Σ_{j≠i} exp(cos(z_i, z_j) / T)

Defaults are the paper's ImageNet recipe: ResNet-50, projector 2048 → 128,
T = 0.1 (the official ImageNet runs at batch 4096). The two views go through
the network as one concatenated batch, as the official code does, so
BatchNorm statistics are over the 2N views (`view_batchnorm="joint"`).
Under `jax.jit` on a mesh the negatives and BatchNorm statistics are
global, as with the paper's cross-replica all-gather and global BN.
Differences from the official code are listed in docs/fidelity.md.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.simclr(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                         proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

from collections.abc import Mapping

from ssljax import losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method


def simclr(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _shared.augment_config("simclr"),
           dtype: str = "float32", proj_hidden_dim: int = 2048,
           proj_dim: int = 128, proj_layers: int = 2,
           temperature: float = 0.1, view_batchnorm: str = "joint"
           ) -> Method:
  """SimCLR (see the module docstring).

  Args:
    backbone: a backbone name of `ssljax.models.get`, or a `models.Model`.
    backbone_kwargs: keyword arguments of a named backbone.
    augment: the views' recipe (`_shared.augment_config`).
    dtype: compute dtype; parameters stay float32.
    proj_hidden_dim, proj_dim, proj_layers: the MLP projector.
    temperature: T of NT-Xent.
    view_batchnorm: "joint" (the official concatenated batch) or
      "per_view".
  """
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = _shared.with_projector(setup, proj_hidden_dim, proj_dim,
                                 num_layers=proj_layers)

  def objective(run, batch):
    del batch  # Unsupervised.
    z = run.outputs["projection"]
    return losses.nt_xent(z[0], z[1], temperature=temperature)

  return _shared.stateless_method(
      "simclr", setup, model, objective,
      joint=_shared.check_view_batchnorm(view_batchnorm, "simclr"))
