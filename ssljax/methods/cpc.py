"""CPC on images: predict the latents of patches below from the context above.

van den Oord, Li & Vinyals, "Representation Learning with Contrastive
Predictive Coding", 2018 (sec. 3.2, images); Hénaff et al., "Data-Efficient
Image Recognition with Contrastive Predictive Coding" (CPC v2), ICML 2020,
whose appendix A.2 pseudocode is the authors' only released code for images
(the loss and the context network below follow it).

Each view is cut into a G×G grid of overlapping square patches
(`patch_size`, `patch_stride`; G = (S − patch_size) // patch_stride + 1)
and the backbone encodes every patch, z_ij = f(x_ij) [D]. A PixelCNN-style
context network turns the latents into contexts c_ij that see only rows
<= i: `context_layers` residual blocks, each

    h = ReLU(1×1 conv to `context_dim`), h = 1×3 conv (along the row),
    h = ReLU(2×1 conv over rows i − 1 and i), c ← c + 1×1 conv back to D,

then c = ReLU(c), so the context reaches `context_layers` rows up. Targets
are a linear map of the latents, t_ij = W z_ij + b [`target_dim`]; for each
offset k in `skip_steps` + 1 .. `prediction_steps` a linear head predicts
the target k rows below, ẑ = `emb_scale` · (W_k c_ij + b_k), scored by a raw
dot product against every target of the batch:

    loss = Σ_k mean over (image n, i, j) with i + k < G of
           −log exp(ẑ · t_{n,i+k,j}) / Σ_{t ∈ T} exp(ẑ · t),

where T holds every patch target of every image in the batch (the positive
once, the other patches of its image and all patches of the other images
as negatives), CPC v2's contrast set. This is `losses.info_nce` (eq. 4)
with those negatives, computed as one softmax over all targets with the
library's blockwise row logsumexp, since `info_nce`'s shared negatives
cannot leave out each query's own positive.

Defaults: CPC v2's pseudocode (5 context blocks of 256 channels, 64-d
targets, scale 0.1, predicting 3 rows ahead only: the nearer rows overlap
the context's patches) on CPC v1's geometry and views (64-pixel patches at
stride 32, one view per image: a random crop of 73% of the area, flipped
with p 0.5, converted to greyscale). `num_views` > 1 makes each further
view of `augment` another sample of the batch. The patches of all views go
through the backbone in one call. `encode` mean-pools the patch features
over the grid, as Hénaff et al.'s linear evaluation does
(`grid_pooling="mean"`), or concatenates them in row-major order
(`"concat"`), which keeps where each patch lies (small centred images such
as digits). Differences from the papers (BatchNorm instead of layer norm,
top-to-bottom predictions only, whole-view instead of per-patch
augmentation) are listed in docs/fidelity.md#cpc.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.cpc(backbone="tiny_cnn", patch_size=8, patch_stride=4,
  ...                      context_layers=1, context_dim=8, target_dim=4,
  ...                      prediction_steps=2, skip_steps=0)
  >>> images = jnp.zeros((2, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> print(params["predictors"]["kernel"].shape)  # offsets, D, target_dim
  (2, 8, 4)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (2, 8)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from ssljax import _common, losses, models
from ssljax.methods import _breadth, _shared
from ssljax.methods.base import Method, StepOutput
from ssljax.models.conv import Conv

GRID_POOLINGS = ("mean", "concat")


# ----------------------------------------------------------- the grid ---


def grid_size(side: int, patch_size: int, patch_stride: int) -> int:
  """G, the patches per row and column of an image of `side` pixels."""
  if patch_size > side:
    return 0
  return (side - patch_size) // patch_stride + 1


def patches(images: jax.Array, patch_size: int, patch_stride: int
            ) -> jax.Array:
  """[N, S, S, C] -> [N, G, G, p, p, C]: patch (i, j) starts at row
  i·stride, column j·stride.

  Example:
    >>> x = jnp.arange(25.0).reshape(1, 5, 5, 1)
    >>> grid = patches(x, 3, 2)
    >>> print(grid.shape, grid[0, 1, 0, :, 0, 0].tolist())
    (1, 2, 2, 3, 3, 1) [10.0, 15.0, 20.0]
  """
  grid = grid_size(min(images.shape[1:3]), patch_size, patch_stride)
  rows = [jnp.stack([images[:, i * patch_stride:i * patch_stride + patch_size,
                            j * patch_stride:j * patch_stride + patch_size]
                     for j in range(grid)], axis=1) for i in range(grid)]
  return jnp.stack(rows, axis=1)


def offsets(prediction_steps: int, skip_steps: int) -> tuple[int, ...]:
  """The rows ahead that are predicted: skip_steps + 1 .. prediction_steps.

  >>> offsets(3, 2), offsets(5, 0)
  ((3,), (1, 2, 3, 4, 5))
  """
  return tuple(range(skip_steps + 1, prediction_steps + 1))


# ------------------------------------------------------------ networks ---


class _ContextBlock(nnx.Module):
  """One residual block of the PixelCNN-style context (module docstring)."""

  def __init__(self, dim: int, hidden: int, conv: functools.partial):
    self.reduce = conv(dim, hidden, (1, 1))
    self.along_row = conv(hidden, hidden, (1, 3), padding=((0, 0), (1, 1)))
    # One row of padding above and none below: output row i reads input
    # rows i − 1 and i only.
    self.down = conv(hidden, hidden, (2, 1), padding=((1, 0), (0, 0)))
    self.expand = conv(hidden, dim, (1, 1))

  def __call__(self, c: jax.Array) -> jax.Array:
    h = nnx.relu(self.reduce(c))
    h = nnx.relu(self.down(self.along_row(h)))
    return c + self.expand(h)


class PixelCNNContext(nnx.Module):
  """Context over a grid of latents [N, G, G, D] -> [N, G, G, D], output
  row i depending on input rows i − num_layers .. i only.

  Example:
    >>> net = PixelCNNContext(4, 8, num_layers=2, rngs=nnx.Rngs(0))
    >>> print(net(jnp.ones((1, 5, 5, 4))).shape)
    (1, 5, 5, 4)
  """

  def __init__(self, dim: int, hidden: int, *, num_layers: int, dtype=None,
               param_dtype=jnp.float32, rngs: nnx.Rngs):
    conv = functools.partial(Conv, dtype=dtype, param_dtype=param_dtype,
                             rngs=rngs)
    self.blocks = nnx.List([_ContextBlock(dim, hidden, conv)
                            for _ in range(num_layers)])

  def __call__(self, z: jax.Array) -> jax.Array:
    for block in self.blocks:
      z = block(z)
    return nnx.relu(z)


def _linear_maps(rng: jax.Array, count: Sequence[int], in_dim: int,
                 out_dim: int) -> dict:
  """Kernel [*count, in, out] (LeCun normal, as Sonnet's 1×1 convolutions,
  each of the `count` maps with fan-in `in_dim`) and zero bias
  [*count, out]."""
  init = jax.nn.initializers.lecun_normal(
      in_axis=-2, out_axis=-1, batch_axis=tuple(range(len(count))))
  return {"kernel": init(rng, (*count, in_dim, out_dim)),
          "bias": jnp.zeros((*count, out_dim))}


def _apply_linear(maps: dict, x: jax.Array) -> jax.Array:
  return x @ maps["kernel"].astype(x.dtype) + maps["bias"].astype(x.dtype)


# ---------------------------------------------------------------- loss ---


def predictions(params: dict, contexts: jax.Array, rows_ahead: Sequence[int],
                emb_scale: float) -> list[tuple[jax.Array, jax.Array]]:
  """For each offset k: (queries [Q_k, T], index [Q_k] of each positive in
  the flattened targets).

  Query (n, i, j) of offset k is emb_scale · (W_k c_{n,i,j} + b_k) for every
  i + k < G; its positive is target (n, i + k, j), at flat index
  (n·G + i + k)·G + j.
  """
  n, grid = contexts.shape[:2]
  flat = jnp.arange(n * grid * grid).reshape(n, grid, grid)
  heads = params["predictors"]
  out = []
  for h, k in enumerate(rows_ahead):
    head = jax.tree.map(lambda x, h=h: x[h], heads)
    queries = emb_scale * _apply_linear(head, contexts[:, :grid - k])
    out.append((queries.reshape(-1, queries.shape[-1]),
                flat[:, k:].reshape(-1)))
  return out


def contrastive_loss(queries: jax.Array, index: jax.Array, keys: jax.Array
                     ) -> jax.Array:
  """mean_q [logsumexp_t(ẑ_q · t) − ẑ_q · t_{index_q}] over all targets t
  [M, T]."""
  queries, keys = _common.to_compute(queries, keys)
  positive = jnp.sum(queries * keys[index], axis=-1)
  return jnp.mean(losses.row_logsumexp(queries, keys) - positive)


def objective(params: dict, contexts: jax.Array, latents: jax.Array,
              rows_ahead: Sequence[int], emb_scale: float) -> jax.Array:
  """CPC v2's loss (module docstring): the targets t = W z + b of the
  latents [N, G, G, D], and Σ_k `contrastive_loss` of the offset-k
  predictions from the contexts [N, G, G, D] against all of them."""
  targets = _apply_linear(params["targets"], latents)
  keys = targets.reshape(-1, targets.shape[-1])
  return sum(contrastive_loss(queries, index, keys) for queries, index in
             predictions(params, contexts, rows_ahead, emb_scale))


# ------------------------------------------------------------- factory ---


def _check(fn: str, counts: Mapping[str, int], skip_steps: int,
           prediction_steps: int, emb_scale: float, grid_pooling: str
           ) -> None:
  """The factory's hyper-parameter checks."""
  for name, value in counts.items():
    _common.check_count(value, name, fn, minimum=1)
  _common.check_count(skip_steps, "skip_steps", fn)
  if skip_steps >= prediction_steps:
    raise ValueError(f"{fn}: `skip_steps` must be < `prediction_steps` = "
                     f"{prediction_steps} (some offset must be predicted), "
                     f"got {skip_steps}.")
  _common.check_positive(emb_scale, "emb_scale", fn)
  if grid_pooling not in GRID_POOLINGS:
    raise ValueError(f"{fn}: `grid_pooling` must be one of {GRID_POOLINGS}, "
                     f"got {grid_pooling!r}.")


def cpc(*, backbone: str | models.Model = "resnet50",
        backbone_kwargs: Mapping | None = None,
        augment: Mapping = _shared.augment_config(
            "simclr", scale=(0.73, 0.73), ratio=(1.0, 1.0), jitter_prob=0.0,
            grayscale_prob=1.0, blur_prob=0.0),
        dtype: str = "float32", num_views: int = 1, patch_size: int = 64,
        patch_stride: int = 32, context_layers: int = 5,
        context_dim: int = 256, target_dim: int = 64,
        emb_scale: float = 0.1, prediction_steps: int = 3,
        skip_steps: int = 2, grid_pooling: str = "mean") -> Method:
  """CPC (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`; the backbone
      encodes single patches.
    augment: the views' recipe; its first `num_views` views are used.
    num_views: views per image, each a separate sample.
    patch_size, patch_stride: the patch grid.
    context_layers, context_dim: the context's residual blocks and their
      width.
    target_dim: the targets' and predictions' dimension.
    emb_scale: the predictions' scale.
    prediction_steps, skip_steps: rows ahead predicted, skip_steps + 1 ..
      prediction_steps.
    grid_pooling: "mean" or "concat", how `encode` pools the patches.

  Raises:
    ValueError: naming the argument for a count below 1, `skip_steps` not
      below `prediction_steps`, a non-positive `emb_scale`, an unknown
      `grid_pooling`, or more `num_views` than the recipe makes; at `init`
      (when the image size is known), for a grid of at most
      `prediction_steps` rows.
  """
  fn = "cpc"
  _check(fn, dict(patch_size=patch_size, patch_stride=patch_stride,
                  context_layers=context_layers, context_dim=context_dim,
                  target_dim=target_dim, prediction_steps=prediction_steps),
         skip_steps, prediction_steps, emb_scale, grid_pooling)
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  used = _breadth.views_used(setup, num_views, fn)
  rows_ahead = offsets(prediction_steps, skip_steps)
  context = models.from_builder(lambda rngs, z: PixelCNNContext(
      z.shape[-1], context_dim, num_layers=context_layers, rngs=rngs,
      **setup.kw), name="cpc_context")

  def grid_of(images: jax.Array) -> jax.Array:
    side = min(images.shape[1:3])
    grid = grid_size(side, patch_size, patch_stride)
    if grid <= prediction_steps:
      raise ValueError(
          f"{fn}: `prediction_steps` = {prediction_steps} needs a grid of "
          f"more rows, got {grid} patches of {patch_size} with stride "
          f"{patch_stride} on {side}-pixel images.")
    return patches(images, patch_size, patch_stride)

  def latents(params, model_state, views, *, train):
    """Backbone latents of every patch [N, G, G, D], and the new state."""
    grid = grid_of(views)
    z, state = setup.backbone.apply(
        params, model_state, grid.reshape(-1, *grid.shape[3:]), train=train)
    return z.reshape(*grid.shape[:3], -1), state

  def init(rng, batch):
    backbone_rng, context_rng, target_rng, head_rng, view_rng = (
        jax.random.split(rng, 5))
    view = jax.eval_shape(lambda: used.make(view_rng, batch)[0])
    grid = jax.eval_shape(lambda: grid_of(jnp.zeros(view.shape)))
    params, model_state = {}, {}
    params["backbone"], model_state["backbone"] = setup.backbone.init(
        backbone_rng, jnp.zeros((1, *grid.shape[3:]), view.dtype))
    z = jax.eval_shape(lambda: latents(
        params["backbone"], model_state["backbone"], jnp.zeros(view.shape),
        train=False)[0])
    params["context"], model_state["context"] = context.init(
        context_rng, jnp.zeros(z.shape, z.dtype))
    dim = z.shape[-1]
    params["targets"] = _linear_maps(target_rng, (), dim, target_dim)
    params["predictors"] = _linear_maps(head_rng, (len(rows_ahead),), dim,
                                        target_dim)
    return params, model_state, ()

  def loss(params, model_state, method_state, batch, rng, step):
    del method_state, step  # Nothing is carried between steps.
    views = used.make(rng, batch)
    z, backbone_state = latents(params["backbone"], model_state["backbone"],
                                jnp.concatenate(views), train=True)
    c, context_state = context.apply(params["context"],
                                     model_state["context"], z, train=True)
    return objective(params, c, z, rows_ahead, emb_scale), StepOutput(
        model_state={"backbone": backbone_state, "context": context_state},
        metrics={}, update=(),
        embeddings=jax.lax.stop_gradient(
            jnp.mean(z[:views[0].shape[0]], axis=(1, 2))))

  def encode(params, model_state, method_state, images):
    del method_state  # CPC carries none.
    x = setup.views.normalize(_shared.first_image(images))
    features, _ = latents(params["backbone"], model_state["backbone"], x,
                          train=False)
    if grid_pooling == "mean":
      return features.mean(axis=(1, 2))
    return features.reshape(features.shape[0], -1)

  return Method(name="cpc", init=init, loss=loss, post_update=_shared.keep,
                encode=encode, crops=used.crops)
