"""I-JEPA: joint-embedding predictive architecture for images.

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas,
"Self-Supervised Learning from Images with a Joint-Embedding Predictive
Architecture", CVPR 2023; the official code (facebookresearch/ijepa).

From one crop of each image (no flips, no colour changes) the multi-block
sampler (`models.multiblock_masks`) draws T = 4 target blocks (15-20% of
the patches each, aspect 0.75-1.5) and a context block (85-100%, square)
from which the targets are removed. The context encoder, a ViT with fixed
sin-cos position embeddings and no [CLS] token, sees the context patches
only; a narrow predictor (`models.token_predictor`: width 384, 12 blocks)
receives its tokens and mask tokens at the positions of one target block,
once per block; the target encoder, an EMA of the context encoder, sees the
whole image, and its layer-normalised tokens at the block are the targets:

    loss = mean over blocks, images, tokens, features of
           smooth_l1(predictor(s_x, block) − LN(s_y)[block])   (`losses.ijepa`)

the official code's Huber loss (the paper's eq. 1 writes an L2 distance:
`distance="l2"`). The target encoder follows θ̄ ← m·θ̄ + (1 − m)·θ with m
rising linearly from 0.996 to 1 over the run in the recipes. `encode` is
the target encoder's mean-pooled tokens, the representation the paper
evaluates.

Static shapes: the context varies in size from image to image, and the
official collator truncates every context to the batch's smallest; here
the context has `max_block_area` slots, those beyond the batch's smallest
context marked invalid, ignored by attention and by the loss, which gives
the official values at the cost of computing the padding
(docs/fidelity.md#ijepa). The ViT has no BatchNorm, so the method has no
`view_batchnorm`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.ijepa(
  ...     backbone="vit_tiny",
  ...     backbone_kwargs={"patch_size": 4, "image_size": 16, "depth": 1},
  ...     predictor_dim=24, predictor_depth=1, min_keep=2)
  >>> images = jnp.zeros((2, 16, 16, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(sorted(params), out.embeddings.shape)
  ['backbone', 'predictor'] (2, 192)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import losses, models
from ssljax.losses.masked import DISTANCES
from ssljax.methods import _mim, _shared
from ssljax.methods.base import Method, Schedule, StepOutput

# One crop of scale (0.3, 1), nothing else (`configs/in1k_vith14_ep300`).
AUGMENT = _shared.augment_config(
    "byol", scale=(0.3, 1.0), flip_prob=0.0, jitter_prob=0.0,
    grayscale_prob=0.0, blur_prob=0.0, solarize_prob=0.0)


class IJEPAState(NamedTuple):
  """I-JEPA's state: the EMA target encoder."""
  target: _shared.Target


def ijepa(*, backbone: str = "vit_base",
          backbone_kwargs: Mapping | None = None, augment: Mapping = AUGMENT,
          dtype: str = "float32", predictor_dim: int = 384,
          predictor_depth: int = 12, predictor_heads: Optional[int] = None,
          num_targets: int = 4, target_scale: tuple = (0.15, 0.2),
          target_aspect: tuple = (0.75, 1.5),
          context_scale: tuple = (0.85, 1.0), min_keep: int = 10,
          allow_overlap: bool = False, mask_group_size: Optional[int] = None,
          momentum: Schedule = 0.996, distance: str = "smooth_l1"
          ) -> Method:
  """I-JEPA (see the module docstring).

  Args:
    backbone: a ViT preset ("vit_tiny", "vit_small", "vit_base").
    backbone_kwargs: its arguments (`patch_size`, `image_size`, `depth`,
      `remat`...); I-JEPA's defaults are `pos_embed="sincos"` and
      `pool="mean"` (no [CLS] token).
    augment, dtype: as `methods.simclr`; the first view is the crop.
    predictor_dim, predictor_depth: the predictor's width and blocks.
    predictor_heads: its heads, None for the encoder's (the official
      choice).
    num_targets, target_scale, target_aspect, context_scale, min_keep,
      allow_overlap, mask_group_size: the masks (`models.multiblock_masks`;
      `mask_group_size` is its `group_size`, the official per-GPU batch).
    momentum: the target encoder's EMA momentum, a number or a schedule.
    distance: "smooth_l1" (official code) or "l2" (paper).
  """
  fn = "ijepa"
  if distance not in DISTANCES:
    raise ValueError(f"{fn}: `distance` must be one of {DISTANCES}, got "
                     f"{distance!r}.")
  encoder = _mim.vit(backbone, backbone_kwargs, dtype, fn,
                     defaults={"pos_embed": "sincos", "pool": "mean"},
                     required={"pool": "mean"})
  heads = encoder.num_heads if predictor_heads is None else predictor_heads
  _mim.check_heads(predictor_dim, heads, "predictor_dim", fn)
  masking = dict(context_scale=tuple(context_scale),
                 target_scale=tuple(target_scale),
                 aspect=tuple(target_aspect), num_targets=num_targets,
                 min_keep=min_keep, allow_overlap=allow_overlap,
                 group_size=mask_group_size)
  # Checks the mask settings now rather than at the first step.
  jax.eval_shape(lambda: models.multiblock_masks(
      jax.random.key(0), mask_group_size or 1, 4, 4, **masking))
  setup = _shared.setup(encoder.model, None, augment, dtype)
  predictor = models.token_predictor(
      encoder.dim, encoder.dim, dim=predictor_dim, depth=predictor_depth,
      num_heads=heads, **setup.kw)
  p = encoder.patch_size

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, encoder.model, rng,
                                             batch)
    pred_params, pred_state = predictor.init(
        jax.random.fold_in(rng, 1), jnp.zeros((1, 1, encoder.dim)))
    params = {"backbone": params, "predictor": pred_params}
    model_state = {"backbone": model_state, "predictor": pred_state}
    return params, model_state, IJEPAState(
        _shared.init_target(params, model_state, ("backbone",)))

  def loss(params, model_state, method_state, batch, rng, step):
    view_rng, mask_rng = jax.random.split(rng)
    x = _mim.one_view(setup, view_rng, batch)
    b, (rows, cols) = x.shape[0], _mim.grid(x, p)
    blocks = models.multiblock_masks(mask_rng, b, rows, cols, **masking)
    target = method_state.target
    targets, target_state = encoder.model.apply(
        target.params["backbone"], target.model_state["backbone"], x,
        train=True, tokens=True)
    context, enc_state = encoder.model.apply(
        params["backbone"], model_state["backbone"], x, train=True,
        keep=blocks.context, keep_valid=blocks.context_valid, tokens=True)
    # One predictor pass per target block, as the official predictor
    # repeats the context for each block: rows [T·B] (block-major).
    def repeat(a):
      return jnp.tile(a, (num_targets,) + (1,) * (a.ndim - 1))

    target_index = blocks.targets.reshape(num_targets * b, -1)
    target_valid = blocks.target_valid.reshape(num_targets * b, -1)
    prediction, pred_state = predictor.apply(
        params["predictor"], model_state["predictor"], repeat(context),
        train=True, grid=(rows, cols), context_index=repeat(blocks.context),
        target_index=target_index,
        context_valid=repeat(blocks.context_valid), target_valid=target_valid)
    target_tokens = jnp.take_along_axis(
        repeat(jax.lax.stop_gradient(targets)), target_index[..., None],
        axis=1)
    value = losses.ijepa(prediction, target_tokens, target_valid,
                         distance=distance)
    weights = blocks.context_valid[..., None].astype(context.dtype)
    pooled = jnp.sum(context * weights, 1) / jnp.maximum(
        jnp.sum(weights, 1), 1)
    counts = {f"{name}_tokens": jnp.sum(valid, dtype=jnp.float32)
              for name, valid in (("context", blocks.context_valid[0]),
                                  ("target", blocks.target_valid[0, 0]))}
    return value, StepOutput(
        model_state={"backbone": enc_state, "predictor": pred_state},
        metrics={"momentum": _shared.at(momentum, step), **counts},
        update={"backbone": target_state},
        embeddings=jax.lax.stop_gradient(pooled))

  def post_update(params, method_state, update, step):
    return params, IJEPAState(_shared.update_target(
        method_state.target, params, _shared.at(momentum, step), update))

  return Method(name="ijepa", init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup, target=True),
                crops=_mim.one_crop(setup), backbone=encoder.with_drop_path)
