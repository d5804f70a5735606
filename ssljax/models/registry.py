"""`get(name, **kwargs)`: backbones by name, for configs."""

from __future__ import annotations

from ssljax.models.base import Model
from ssljax.models.resnet import resnet18, resnet34, resnet50
from ssljax.models.tiny import small_cnn, tiny_cnn
from ssljax.models.vit import vit_small, vit_tiny

BACKBONES = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "vit_tiny": vit_tiny,
    "vit_small": vit_small,
    "tiny_cnn": tiny_cnn,
    "small_cnn": small_cnn,
}


def get(name: str, **kwargs) -> Model:
  """The backbone `name` as a `Model`, built with the keyword `kwargs`.

  Args:
    name: one of "resnet18", "resnet34", "resnet50", "vit_tiny", "vit_small",
      "tiny_cnn", "small_cnn".
    **kwargs: keyword arguments of that backbone's factory (e.g.
      `stem="cifar"` for ResNets, `patch_size=4` for ViTs, `dtype`).

  Returns:
    A `Model` mapping images [B, H, W, C] to features [B, D].

  Raises:
    ValueError: unknown `name` (the message lists the valid names).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import models
    >>> model = models.get("tiny_cnn", width=4)
    >>> params, state = model.init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))
    >>> print(sum(p.size for p in jax.tree.leaves(params)))
    268
  """
  if name not in BACKBONES:
    raise ValueError(f"models.get: unknown `name` {name!r}; valid names: "
                     f"{', '.join(sorted(BACKBONES))}.")
  return BACKBONES[name](**kwargs)
