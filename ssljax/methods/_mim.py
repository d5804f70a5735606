"""What the masked-image-modelling methods (MAE, iBOT, I-JEPA) share.

* `vit`: a method's ViT from a preset name (`models.VIT_SIZES`), with the
  method's official position embedding, pooling and masking options as
  defaults that `backbone_kwargs` may change, and the ones it needs fixed,
  and the same ViT with another stochastic depth for fine-tuning;
* `one_view` / `one_crop`: MAE and I-JEPA train on a single crop of each
  image, the first view of their `augment` recipe;
* `masked_sinkhorn`: DINOv2's Sinkhorn-Knopp codes of the masked patch
  tokens only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import models
from ssljax.methods import _shared

VIT_NAMES = tuple(models.VIT_SIZES)


class ViT(NamedTuple):
  """A method's ViT and the facts the method's other parts need."""
  model: models.Model
  dim: int
  num_heads: int
  patch_size: int
  # `rate -> Model`: the same ViT with stochastic depth `rate`
  # (`Method.backbone`, for fine-tuning).
  with_drop_path: Callable[[float], models.Model]


def vit(backbone, backbone_kwargs: Optional[Mapping], dtype: str, fn: str, *,
        defaults: Mapping, required: Optional[Mapping] = None) -> ViT:
  """The ViT `backbone` (a preset name) built with `defaults`, then the
  user's `backbone_kwargs`, then `required` (which the user may only
  repeat); `dtype` computes, parameters stay float32."""
  if not _shared.is_vit_preset(backbone):
    raise ValueError(
        f"{fn}: `backbone` must be a ViT preset, one of {VIT_NAMES} (the "
        f"method masks its patch tokens), got {backbone!r}.")
  kwargs = {**defaults, **dict(backbone_kwargs or {})}
  for key, value in (required or {}).items():
    if kwargs.get(key, value) != value:
      raise ValueError(f"{fn}: `backbone_kwargs[{key!r}]` must be {value!r} "
                       f"for this method, got {kwargs[key]!r}.")
    kwargs[key] = value

  def build(**changes) -> models.Model:
    try:
      return getattr(models, backbone)(**{**kwargs, **changes},
                                       dtype=jnp.dtype(dtype),
                                       param_dtype=jnp.float32)
    except TypeError as error:
      raise ValueError(f"{fn}: bad `backbone_kwargs` for {backbone}: "
                       f"{error}") from None

  dim, num_heads = models.VIT_SIZES[backbone]
  return ViT(build(), dim, num_heads, kwargs.get("patch_size", 16),
             lambda rate: build(drop_path_rate=rate))


def check_heads(dim: int, num_heads: int, name: str, fn: str) -> None:
  """A transformer's width must split into its heads."""
  if not (isinstance(dim, int) and isinstance(num_heads, int) and dim > 0
          and num_heads > 0 and dim % num_heads == 0):
    raise ValueError(f"{fn}: `{name}` ({dim}) must be a positive multiple of "
                     f"its number of heads ({num_heads}).")


def grid(images: jax.Array, patch_size: int) -> tuple[int, int]:
  """The (rows, columns) patch grid of [B, H, W, C] images."""
  return images.shape[1] // patch_size, images.shape[2] // patch_size


def one_view(setup: _shared.Setup, rng: jax.Array, batch) -> jax.Array:
  """The single normalised view [B, s, s, C] of each image."""
  return setup.views.make(rng, batch, count=1)[0]


def one_crop(setup: _shared.Setup) -> Callable:
  """`Method.crops` of a single-view method: the recipe's first view."""
  return lambda image_size: setup.views.specs(image_size)[:1]


def masked_sinkhorn(scores: jax.Array, valid: jax.Array, *, epsilon: float,
                    iterations: int = 3) -> jax.Array:
  """Sinkhorn-Knopp codes of the valid rows of `scores` [R, K] only.

  `ssljax.state.sinkhorn` restricted to the R' = Σ valid rows, as DINOv2's
  `iBOTPatchLoss.sinkhorn_knopp_teacher` runs on the masked patch tokens
  (B there is the number of masked tokens): the valid rows of the result
  sum to 1 and its columns to about R'/K. Invalid rows are uniform (1/K);
  a loss weighs them by 0. No gradient flows through the codes.

  Args:
    scores: [R, K] teacher logits.
    valid: [R] bool.
    epsilon: the temperature ε (the teacher's).
    iterations: Sinkhorn-Knopp iterations.

  Returns:
    [R, K] float32 codes.
  """
  rows = valid[:, None]
  log_p = jnp.where(rows, jax.lax.stop_gradient(
      scores.astype(jnp.float32)) / epsilon, -jnp.inf)
  log_n = jnp.log(jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0))
  log_k = math.log(scores.shape[1])

  def normalise_rows(log_p):
    lse = jax.nn.logsumexp(log_p, axis=1, keepdims=True)
    return jnp.where(rows, log_p - lse - log_n, -jnp.inf)

  log_p = log_p - jax.nn.logsumexp(log_p)
  for _ in range(iterations):
    log_p = log_p - jax.nn.logsumexp(log_p, axis=0, keepdims=True) - log_k
    log_p = normalise_rows(log_p)
  return jnp.where(rows, jnp.exp(log_p + log_n), 1.0 / scores.shape[1])
