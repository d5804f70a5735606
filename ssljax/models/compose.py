"""Backbone + heads as one `Model` whose outputs are a dict.

    features   = backbone(x)
    projection = projector(features)                       if projector
    prediction = predictor(projection)                     if predictor
    scores     = prototypes(projection, else features)     if prototypes

The parts are any `Model`s (built-in, `from_linen`, `from_nnx`...), composed
through the functional protocol only. `params` and `model_state` are dicts
keyed by part ("backbone", "projector", "predictor", "prototypes"), so a
method can take `params["backbone"]` for evaluation, EMA a subset of parts for
a target network, or mask a part in the optimizer.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ssljax.models.base import Model

# Output key of each part, in the order the parts run.
OUTPUT_KEYS = {"backbone": "features", "projector": "projection",
               "predictor": "prediction", "prototypes": "scores"}


def compose(backbone: Model, *, projector: Optional[Model] = None,
            predictor: Optional[Model] = None,
            prototypes: Optional[Model] = None) -> Model:
  """Chains a backbone and optional heads into one `Model`.

  Args:
    backbone: images -> features [B, D].
    projector: features -> projection (an MLP projector or a DINO head).
    predictor: projection -> prediction (BYOL/SimSiam); needs `projector`.
    prototypes: projection (or features without projector) -> scores.

  Returns:
    A `Model` whose `apply` returns `({"features": ..., "projection": ...,
    "prediction": ..., "scores": ...}, model_state)` with the keys of the
    parts given; `params`/`model_state` are `{part name: part tree}`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax import models
    >>> model = models.compose(models.get("tiny_cnn"),
    ...                        projector=models.projector(8, 16, 4),
    ...                        predictor=models.predictor(4, 16, 4))
    >>> x = jnp.ones((2, 12, 12, 3))
    >>> params, state = model.init(jax.random.key(0), x)
    >>> out, state = model.apply(params, state, x, train=True)
    >>> print({k: v.shape for k, v in out.items()})
    {'features': (2, 8), 'projection': (2, 4), 'prediction': (2, 4)}
    >>> print(sorted(params))
    ['backbone', 'predictor', 'projector']
  """
  if predictor is not None and projector is None:
    raise ValueError("compose: `predictor` needs a `projector` (it maps the "
                     "projection).")
  given = {"backbone": backbone, "projector": projector,
           "predictor": predictor, "prototypes": prototypes}
  parts = {name: given[name] for name in OUTPUT_KEYS
           if given[name] is not None}
  sources = {"projector": "features", "predictor": "projection",
             "prototypes": "features" if projector is None else "projection"}

  def part_input(name: str, x, outputs: dict):
    return x if name == "backbone" else outputs[sources[name]]

  def init(rng, x):
    params, model_state, outputs = {}, {}, {}
    for (name, part), key in zip(parts.items(),
                                 jax.random.split(rng, len(parts))):
      inputs = part_input(name, x, outputs)
      params[name], model_state[name] = part.init(key, inputs)
      # The next part only needs the shape of this output: trace, don't run.
      out = jax.eval_shape(
          lambda p, s, i, part=part: part.apply(p, s, i, train=False)[0],
          params[name], model_state[name], inputs)
      outputs[OUTPUT_KEYS[name]] = jnp.zeros(out.shape, out.dtype)
    return params, model_state

  def apply(params, model_state, x, *, train: bool):
    for tree_name, tree in (("params", params), ("model_state", model_state)):
      if not isinstance(tree, dict) or set(tree) != set(parts):
        keys = sorted(tree) if isinstance(tree, dict) else type(tree).__name__
        raise ValueError(f"compose: `{tree_name}` must have keys "
                         f"{sorted(parts)}, got {keys}.")
    outputs, new_state = {}, {}
    for name, part in parts.items():
      outputs[OUTPUT_KEYS[name]], new_state[name] = part.apply(
          params[name], model_state[name], part_input(name, x, outputs),
          train=train)
    return outputs, new_state

  return Model(init=init, apply=apply)
