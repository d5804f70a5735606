"""CPC on images: predict the latents of patches below from the context above.

van den Oord, Li & Vinyals, "Representation Learning with Contrastive
Predictive Coding", 2018 (sec. 3.2, images); Hénaff et al., "Data-Efficient
Image Recognition with Contrastive Predictive Coding", ICML 2020.

Each augmented view is cut into a G×G grid of overlapping square patches
(`patch_size`, `patch_stride`; G = (S − patch_size) // patch_stride + 1)
and the backbone encodes every patch, z_ij = f(x_ij). A context network
g_ar turns the latents into contexts c_ij that see only rows <= i: a stack
of `context_layers` convolutions over the grid, each causal along rows (a
`context_kernel`×`context_kernel` kernel padded only above, so output row i
reads input rows i − k + 1 .. i) and centred along columns, ReLU in between,
with residual connections (a PixelCNN-style masked stack; the receptive
field reaches `context_layers`·(k − 1) rows up). For each offset k = 1..K
(`prediction_steps`), a linear head W_k predicts the latent k rows below,
ẑ = W_k c_ij, scored against z_{i+k,j} by a raw dot product:

    loss = mean over (image, i, j, k) with i + k < G of
           −log exp(ẑ · z⁺) / Σ_{z ∈ Z} exp(ẑ · z),

where Z is every patch latent of every image in the batch (the positive
once, the other patches of its image and all patches of the other images as
negatives), CPC v2's contrast set. This is `losses.info_nce` (eq. 4) with
those negatives; it is computed as one softmax over all latents with the
library's blockwise row logsumexp, since `info_nce`'s shared negatives
cannot leave out each query's own positive.

Every view of `config.method.augment` is a separate image of the batch.
`encode` mean-pools the patch features over the grid, as Hénaff et al.'s
linear evaluation does (`grid_pooling="mean"`), or concatenates them in
row-major order (`"concat"`), which keeps where each patch lies: on small
centred images such as digits the class is in that layout (mnist5k, 10
epochs: kNN 0.850 with the mean).

Differences from the papers: the backbone's BatchNorm statistics are over
all patches of the batch (Hénaff et al. replace BN by layer norm because BN
lets patches of one image share information); the contrast set is the
global batch under `jax.jit` on a mesh; patches are augmented as whole
views, not one by one.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import cpc
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=cpc.default_config()))
  >>> config.method.update(backbone="tiny_cnn", patch_size=8, patch_stride=4,
  ...                      context_dim=8, prediction_steps=2)
  >>> images = jnp.zeros((2, 16, 16, 3), jnp.uint8)
  >>> params, model_state, state = cpc.init(config, jax.random.key(0),
  ...                                       images)
  >>> print(params["predictors"].shape)  # K, context dim, latent dim
  (2, 8, 8)
  >>> loss, out = cpc.loss(config, params, model_state, state, images,
  ...                      jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (2, 8)
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from ssljax import _common, models
from ssljax.losses import _blockwise
from ssljax.methods import _shared
from ssljax.methods.base import Method, StepOutput


def default_config() -> ml_collections.ConfigDict:
  """CPC v1's image setting: 64-pixel patches with stride 32 (a 7×7 grid on
  256 pixels), predictions up to 5 rows below."""
  return ml_collections.ConfigDict(dict(
      name="cpc", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"), patch_size=64, patch_stride=32,
      context_dim=512, context_layers=2, context_kernel=3,
      prediction_steps=5, grid_pooling="mean"))


# ----------------------------------------------------------- the grid ---


def grid_size(config, side: int) -> int:
  """G, the patches per row and column of an image of `side` pixels."""
  fn = "cpc"
  size, stride = config.method.patch_size, config.method.patch_stride
  _common.check_count(size, "config.method.patch_size", fn, minimum=1)
  _common.check_count(stride, "config.method.patch_stride", fn, minimum=1)
  grid = (side - size) // stride + 1 if size <= side else 0
  steps = config.method.prediction_steps
  _common.check_count(steps, "config.method.prediction_steps", fn, minimum=1)
  if grid <= steps:
    raise ValueError(
        f"{fn}: `config.method.prediction_steps` = {steps} needs a grid of "
        f"more rows, got {grid} patches of {size} with stride {stride} on "
        f"{side}-pixel images.")
  return grid


def patches(config, images: jax.Array) -> jax.Array:
  """[N, S, S, C] -> [N, G, G, p, p, C]: patch (i, j) starts at row i·stride,
  column j·stride."""
  grid = grid_size(config, min(images.shape[1:3]))
  size, stride = config.method.patch_size, config.method.patch_stride
  rows = [jnp.stack([images[:, i * stride:i * stride + size,
                            j * stride:j * stride + size]
                     for j in range(grid)], axis=1) for i in range(grid)]
  return jnp.stack(rows, axis=1)


# ------------------------------------------------------------ networks ---


class RowCausalContext(nnx.Module):
  """Context g_ar over a grid of latents [N, G, G, D] -> [N, G, G, dim],
  output row i depending on input rows <= i only (see module docstring)."""

  def __init__(self, in_dim: int, dim: int, *, num_layers: int,
               kernel_size: int, dtype=None, param_dtype=jnp.float32,
               rngs: nnx.Rngs):
    # Padding k − 1 rows above and none below makes row i see rows i−k+1..i.
    padding = ((kernel_size - 1, 0), (kernel_size // 2, kernel_size // 2))
    self.convs = nnx.List([
        nnx.Conv(in_dim if layer == 0 else dim, dim,
                 (kernel_size, kernel_size), padding=padding, dtype=dtype,
                 param_dtype=param_dtype, rngs=rngs)
        for layer in range(num_layers)])

  def __call__(self, z: jax.Array) -> jax.Array:
    c = self.convs[0](z)
    for conv in self.convs[1:]:
      c = c + conv(nnx.relu(c))
    return c


def context_network(config) -> models.Model:
  """`RowCausalContext` with the config's sizes, as a `Model`."""
  method = config.method
  fn = "cpc"
  for name in ("context_dim", "context_layers", "context_kernel"):
    _common.check_count(method[name], f"config.method.{name}", fn, minimum=1)
  return models.from_builder(lambda rngs, z: RowCausalContext(
      z.shape[-1], method.context_dim, num_layers=method.context_layers,
      kernel_size=method.context_kernel, rngs=rngs,
      **_shared.dtype_kwargs(config)), name="cpc_context")


def _latents(config, params, model_state, views: jax.Array, *, train: bool
             ) -> tuple[jax.Array, Optional[dict]]:
  """Backbone latents of every patch, [N, G, G, D], and the new BN state."""
  grid = patches(config, views)
  flat = grid.reshape(-1, *grid.shape[3:])
  z, state = _shared.backbone(config).apply(params, model_state, flat,
                                            train=train)
  return z.reshape(*grid.shape[:3], -1), state


GRID_POOLINGS = ("mean", "concat")


def check_grid_pooling(config) -> str:
  """`config.method.grid_pooling`, checked (at `init`, so that a bad value
  stops the run before training rather than at its first evaluation)."""
  pooling = config.method.grid_pooling
  if pooling not in GRID_POOLINGS:
    raise ValueError(f"cpc: `config.method.grid_pooling` must be one of "
                     f"{GRID_POOLINGS}, got {pooling!r}.")
  return pooling


def init(config, rng, images):
  """Backbone (on patch-sized inputs), context network and the K linear
  predictors W_k [context_dim, D]."""
  check_grid_pooling(config)
  images, _ = _shared.split_batch(images)
  backbone_rng, context_rng, head_rng, view_rng = jax.random.split(rng, 4)
  view = jax.eval_shape(
      lambda: _shared.make_views(config, view_rng, images)[0])
  grid = jax.eval_shape(lambda: patches(config, jnp.zeros(view.shape)))
  params, model_state = {}, {}
  params["backbone"], model_state["backbone"] = _shared.backbone(config).init(
      backbone_rng, jnp.zeros((1, *grid.shape[3:]), view.dtype))
  z = jax.eval_shape(lambda: _latents(config, params["backbone"],
                                      model_state["backbone"],
                                      jnp.zeros(view.shape), train=False)[0])
  params["context"], model_state["context"] = context_network(config).init(
      context_rng, jnp.zeros(z.shape, z.dtype))
  method = config.method
  params["predictors"] = jax.nn.initializers.lecun_normal(
      in_axis=1, out_axis=2)(head_rng, (method.prediction_steps,
                                        method.context_dim, z.shape[-1]))
  return params, model_state, _shared.MethodState()


def predictions(config, params, contexts: jax.Array, latents: jax.Array
                ) -> tuple[jax.Array, jax.Array]:
  """(queries [Q, D], index [Q] of each positive in the flattened latents).

  Query (n, i, j, k) is W_k c_{n,i,j} for every i + k < G; its positive is
  latent (n, i + k, j), at flat index ((n·G) + i + k)·G + j.
  """
  n, grid = latents.shape[:2]
  queries, index = [], []
  flat = jnp.arange(n * grid * grid).reshape(n, grid, grid)
  for k in range(1, config.method.prediction_steps + 1):
    w = params["predictors"][k - 1].astype(contexts.dtype)
    queries.append((contexts[:, :grid - k] @ w).reshape(-1, w.shape[-1]))
    index.append(flat[:, k:].reshape(-1))
  return jnp.concatenate(queries), jnp.concatenate(index)


def contrastive_loss(queries: jax.Array, index: jax.Array,
                     latents: jax.Array) -> jax.Array:
  """mean_q [logsumexp_z(ẑ_q · z) − ẑ_q · z_{index_q}] over all latents z."""
  queries, latents = _common.to_compute(queries, latents)
  keys = latents.reshape(-1, latents.shape[-1])
  positive = jnp.sum(queries * keys[index], axis=-1)
  return jnp.mean(_blockwise.row_logsumexp(queries, keys) - positive)


def loss(config, params, model_state, method_state, images, rng, step):
  """CPC's InfoNCE over the patch grids of every view of the batch."""
  del method_state, step  # Nothing is carried between steps.
  images, _ = _shared.split_batch(images)
  views = jnp.concatenate(_shared.make_views(config, rng, images))
  z, backbone_state = _latents(config, params["backbone"],
                               model_state["backbone"], views, train=True)
  c, context_state = context_network(config).apply(
      params["context"], model_state["context"], z, train=True)
  queries, index = predictions(config, params, c, z)
  return contrastive_loss(queries, index, z), StepOutput(
      model_state={"backbone": backbone_state, "context": context_state},
      metrics={}, update={},
      embeddings=jax.lax.stop_gradient(
          jnp.mean(z[:images.shape[0]], axis=(1, 2))))


def encode(config, params, model_state, images):
  """Backbone features of the patches in eval mode, pooled over the grid by
  `config.method.grid_pooling`: their mean [N, D] or their row-major
  concatenation [N, G·G·D]."""
  pooling = check_grid_pooling(config)
  images, _ = _shared.split_batch(images)
  grid = patches(config, images)
  flat = grid.reshape(-1, *grid.shape[3:])
  features = _shared.encode(config, params, model_state, flat)
  features = features.reshape(grid.shape[0], -1, features.shape[-1])
  return features.mean(axis=1) if pooling == "mean" else \
      features.reshape(grid.shape[0], -1)


METHOD = Method(name="cpc", init=init, loss=loss,
                post_update=_shared.post_update, encode=encode,
                default_config=default_config)
