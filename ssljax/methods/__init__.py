"""Self-supervised methods as pure functions, by name.

    method = ssljax.methods.get("byol")
    params, model_state, method_state = method.init(config, rng, images)
    loss, aux = method.loss(config, params, model_state, method_state,
                            images, rng, step)
    method_state = method.post_update(config, new_params, method_state,
                                      aux.update, step)

See `ssljax.methods.base` for the protocol. Each method's module docstring
gives its paper, recipe and how this implementation differs from it; its
`default_config()` holds the paper's hyper-parameters and `configs/` the
dataset recipes.

Example:
  >>> from ssljax import methods
  >>> print(methods.get("byol").name, "supcon" in methods.names())
  byol True
"""

from __future__ import annotations

from ssljax.methods import (barlow_twins, byol, clip, colorization,
                            context_encoder, cpc, deepcluster, deepercluster,
                            denoising_autoencoder, dino, exemplar, jigsaw,
                            metric, moco_v2, moco_v3, nnclr, pcl,
                            relative_patch, rotation, sela, simclr, simsiam,
                            supcon, swav, vicreg)
from ssljax.methods.base import DatasetUpdate, Method, StepOutput

_REGISTRY = {module.METHOD.name: module.METHOD for module in (
    simclr, moco_v2, moco_v3, byol, simsiam, barlow_twins, vicreg, dino, swav,
    nnclr, supcon, rotation, jigsaw, relative_patch, context_encoder,
    colorization, denoising_autoencoder, exemplar, metric, clip, cpc, pcl,
    deepcluster, deepercluster, sela)}


def names() -> tuple[str, ...]:
  """The registered method names, sorted."""
  return tuple(sorted(_REGISTRY))


def get(name: str) -> Method:
  """The `Method` registered as `name`.

  Raises:
    ValueError: if `name` is unknown; the message lists the valid names.
  """
  if name not in _REGISTRY:
    raise ValueError(f"methods.get: unknown method `name` {name!r}; valid "
                     f"names: {', '.join(names())}.")
  return _REGISTRY[name]


__all__ = ["DatasetUpdate", "Method", "StepOutput", "get", "names"]
