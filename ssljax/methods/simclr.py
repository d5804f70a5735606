"""SimCLR: contrast two augmented views of each image against the batch.

Chen, Kornblith, Norouzi & Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020; the official TF code
(google-research/simclr: `tf2/` and the TF1 code at its root).

Two "simclr" views per image go through the backbone f and the projection
head g; with z = g(f(x)) and N images, each of the 2N projections has its
other view as positive and the other 2N − 2 as negatives (NT-Xent, eq. 1):

    l_i = −log exp(cos(z_i, z_p(i)) / T) / Σ_{j≠i} exp(cos(z_i, z_j) / T),
    loss = (1/N) Σ_{i<N} (l_i + l_{i+N})    (`sum_views=True`),

the official `add_contrastive_loss` (mean of loss_a + loss_b over the N
images), twice eq. 1's mean over the 2N anchors (`sum_views=False`). The
factor matters beyond the loss value: LARS leaves biases and BatchNorm
parameters unadapted, so their steps scale with it, and weight decay weighs
against a gradient twice as large.

Defaults are the official code's (`tf2/run.py` flags): ResNet-50; the head
`ProjectionHead` of `num_proj_layers=3` linear layers of the features' width
(2048) then 128, each followed by BatchNorm and so without bias, the output
BatchNorm with a learnable scale but no offset (center=False), kernels drawn
from N(0, 0.01²); T = 0.1; the two views concatenated in one batch, so
BatchNorm statistics are over the 2N views (`view_batchnorm="joint"`),
global over the mesh as the official `global_bn`. The v1 paper's head (2
layers, no output BN; solo-learn's too) is `proj_layers=2,
proj_last_bn=False`. The optimiser (LARS without biases and norms, rate
0.3 × B/256, weight decay 1e-6, 10 warm-up epochs) is in configs/simclr.py.
Where this differs from the official code: docs/fidelity.md#simclr.

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
  >>> print(loss.shape, out.embeddings.shape, sorted(params["projector"]))
  () (4, 8) ['mlp', 'scale']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx
from flax.nnx.nn.dtypes import promote_dtype

from ssljax import _common, losses, models
from ssljax.methods import _shared
from ssljax.methods.base import Method

# The official `LinearLayer` kernels: RandomNormal(stddev=0.01).
KERNEL_STDDEV = 0.01


class ProjectionHead(nnx.Module):
  """google-research/simclr's projection head ("nonlinear" mode).

  (Linear-BN-ReLU) × (num_layers − 1), then Linear-BN: no Linear has a bias
  (BatchNorm follows each), the hidden BatchNorms have scale and offset, the
  output one a learnable scale γ but no offset. `last_bn=False` makes the
  output a plain Linear with bias (the v1 paper's head). Parameters:
  `mlp/layers/linear{i}`, `mlp/layers/bn{i}`, and `scale` (γ).
  """

  def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *,
               num_layers: int, last_bn: bool, dtype, param_dtype,
               rngs: nnx.Rngs):
    self.mlp = models.MLP(
        in_dim, hidden_dim, out_dim, num_layers=num_layers, last_bn=last_bn,
        kernel_init=nnx.initializers.normal(KERNEL_STDDEV), dtype=dtype,
        param_dtype=param_dtype, rngs=rngs)
    # models.MLP's output BatchNorm has no affine; the official one
    # (center=False, scale=True) has this learnable scale.
    self.scale = (nnx.Param(jnp.ones((out_dim,), param_dtype)) if last_bn
                  else None)
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.mlp(x)
    if self.scale is None:
      return x
    x, scale = promote_dtype((x, self.scale[...]), dtype=self.dtype)
    return x * scale


def projection_head(hidden_dim: int, out_dim: int, *, num_layers: int,
                    last_bn: bool, kw: dict) -> models.Model:
  """`ProjectionHead` as a `Model` that reads its input width at init."""
  return models.from_builder(
      lambda rngs, x: ProjectionHead(x.shape[-1], hidden_dim, out_dim,
                                     num_layers=num_layers, last_bn=last_bn,
                                     rngs=rngs, **kw),
      name="simclr_projector")


def contrastive_method(name: str, pair_loss: Callable, *,
                       backbone: str | models.Model,
                       backbone_kwargs: Optional[Mapping], augment: Mapping,
                       dtype: str, proj_hidden_dim: int, proj_dim: int,
                       proj_layers: int, proj_last_bn: bool,
                       temperature: float, sum_views: bool,
                       view_batchnorm: str) -> Method:
  """SimCLR's network and views with the objective `pair_loss(z1, z2,
  temperature=T)` (a mean over the 2N anchors), doubled with `sum_views`
  (SimCLR, DCL)."""
  for arg, value in (("proj_hidden_dim", proj_hidden_dim),
                     ("proj_dim", proj_dim), ("proj_layers", proj_layers)):
    _common.check_count(value, arg, name, minimum=1)
  _common.check_positive(temperature, "temperature", name)
  joint = _shared.check_view_batchnorm(view_batchnorm, name)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  model = models.compose(setup.backbone, projector=projection_head(
      proj_hidden_dim, proj_dim, num_layers=proj_layers,
      last_bn=proj_last_bn, kw=setup.kw))
  views = 2.0 if sum_views else 1.0

  def objective(run, batch):
    del batch  # Unsupervised.
    z = run.outputs["projection"]
    return views * pair_loss(z[0], z[1], temperature=temperature)

  return _shared.stateless_method(name, setup, model, objective, joint=joint)


def simclr(*, backbone: str | models.Model = "resnet50",
           backbone_kwargs: Mapping | None = None,
           augment: Mapping = _shared.augment_config("simclr"),
           dtype: str = "float32", proj_hidden_dim: int = 2048,
           proj_dim: int = 128, proj_layers: int = 3,
           proj_last_bn: bool = True, temperature: float = 0.1,
           sum_views: bool = True, view_batchnorm: str = "joint"
           ) -> Method:
  """SimCLR (see the module docstring).

  Args:
    backbone: a backbone name of `ssljax.models.get`, or a `models.Model`.
    backbone_kwargs: keyword arguments of a named backbone.
    augment: the views' recipe (`_shared.augment_config`).
    dtype: compute dtype; parameters stay float32.
    proj_hidden_dim, proj_dim, proj_layers: the projection head's hidden
      width, output width and number of linear layers.
    proj_last_bn: BatchNorm (learnable scale, no offset) on the head's
      output, as the official code; False: a Linear with bias.
    temperature: T of NT-Xent.
    sum_views: the official loss, the two views' anchor means summed; False:
      eq. 1's mean over the 2N anchors (half of it).
    view_batchnorm: "joint" (the official concatenated batch) or
      "per_view".

  Raises:
    ValueError: naming the argument, for a non-positive width, layer count
      or temperature, or an unknown `view_batchnorm`.
  """
  return contrastive_method(
      "simclr", losses.nt_xent, backbone=backbone,
      backbone_kwargs=backbone_kwargs, augment=augment, dtype=dtype,
      proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
      proj_layers=proj_layers, proj_last_bn=proj_last_bn,
      temperature=temperature, sum_views=sum_views,
      view_batchnorm=view_batchnorm)
