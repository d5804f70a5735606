"""Backbone + heads as one `Model` whose outputs are a dict.

    features       = backbone(x)
    projection     = projector(features)                    if projector
    prediction     = predictor(projection)                  if predictor
    scores         = prototypes(projection, else features)  if prototypes
    logits         = classifier(projection, else features)  if classifier
    reconstruction = decoder(features)                      if decoder

The parts are any `Model`s (built-in, `from_linen`, `from_nnx`...), composed
through the functional protocol only. `params` and `model_state` are dicts
keyed by part ("backbone", "projector", "predictor", "prototypes",
"classifier", "decoder"), so a method can take `params["backbone"]` for
evaluation, EMA a subset of parts for a target network, or mask a part in the
optimizer.

With `towers`, the backbone is shared by T siamese towers (the late fusion of
the jigsaw and relative-patch networks): inputs [B, T, ...] give features
[B, T, D], and the heads see each example's T feature vectors concatenated,
[B, T·D].
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ssljax.models.base import Model

# Output key of each part, in the order the parts run.
OUTPUT_KEYS = {"backbone": "features", "projector": "projection",
               "predictor": "prediction", "prototypes": "scores",
               "classifier": "logits", "decoder": "reconstruction"}

# How the T towers meet the backbone (`compose(towers=...)`): "joint", one
# call over all B·T crops (BatchNorm statistics over all of them);
# "per_view", one call per tower position (statistics per position, as
# separate siamese towers compute them).
TOWERS = ("joint", "per_view")


def _towers_backbone(backbone: Model, towers: str) -> Model:
  """The backbone on [B, T, ...] inputs: features [B, T, D], the same
  parameters as `backbone`."""

  def apply(params, model_state, x, *, train: bool):
    if towers == "joint":
      features, model_state = backbone.apply(
          params, model_state, x.reshape(-1, *x.shape[2:]), train=train)
      return features.reshape(*x.shape[:2], -1), model_state
    outputs = []
    for t in range(x.shape[1]):  # BatchNorm state threads through in order.
      features, model_state = backbone.apply(params, model_state, x[:, t],
                                             train=train)
      outputs.append(features)
    return jnp.stack(outputs, axis=1), model_state

  def init(rng, x):
    return backbone.init(rng, x[:, 0])

  return Model(init=init, apply=apply)


def compose(backbone: Model, *, projector: Optional[Model] = None,
            predictor: Optional[Model] = None,
            prototypes: Optional[Model] = None,
            classifier: Optional[Model] = None,
            decoder: Optional[Model] = None,
            towers: Optional[str] = None) -> Model:
  """Chains a backbone and optional heads into one `Model`.

  Args:
    backbone: images -> features [B, D].
    projector: features -> projection (an MLP projector or a DINO head).
    predictor: projection -> prediction (BYOL/SimSiam); needs `projector`.
    prototypes: projection (or features without projector) -> scores.
    classifier: projection (or features without projector) -> logits (the
      pretext tasks' heads).
    decoder: features -> reconstruction (the autoencoders' decoders).
    towers: None, or "joint" / "per_view" (`TOWERS`): inputs are [B, T, ...]
      crops, each of the T crops of an example goes through the shared
      backbone (all B·T in one call, or one call per tower position t), the
      "features" output is [B, T, D] and the heads read [B, T·D].

  Returns:
    A `Model` whose `apply` returns `({"features": ..., "projection": ...,
    "prediction": ..., "scores": ..., "logits": ..., "reconstruction":
    ...}, model_state)` with the keys of the parts given;
    `params`/`model_state` are `{part name: part tree}`.

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

    Three crops per example through siamese towers, then a classifier:

    >>> towers = models.compose(models.get("tiny_cnn"),
    ...                         classifier=models.projector(None, 16, 5),
    ...                         towers="joint")
    >>> x = jnp.ones((2, 3, 8, 8, 1))
    >>> params, state = towers.init(jax.random.key(0), x)
    >>> out, _ = towers.apply(params, state, x, train=False)
    >>> print(out["features"].shape, out["logits"].shape)
    (2, 3, 8) (2, 5)
  """
  if predictor is not None and projector is None:
    raise ValueError("compose: `predictor` needs a `projector` (it maps the "
                     "projection).")
  if towers is not None and towers not in TOWERS:
    raise ValueError(f"compose: `towers` must be None or one of {TOWERS}, "
                     f"got {towers!r}.")
  given = {"backbone": backbone if towers is None
           else _towers_backbone(backbone, towers),
           "projector": projector, "predictor": predictor,
           "prototypes": prototypes, "classifier": classifier,
           "decoder": decoder}
  parts = {name: given[name] for name in OUTPUT_KEYS
           if given[name] is not None}
  head_input = "features" if projector is None else "projection"
  sources = {"projector": "features", "predictor": "projection",
             "prototypes": head_input, "classifier": head_input,
             "decoder": "features"}

  def part_input(name: str, x, outputs: dict):
    if name == "backbone":
      return x
    inputs = outputs[sources[name]]
    if towers is not None and sources[name] == "features":
      # The heads see an example's T feature vectors side by side.
      return inputs.reshape(inputs.shape[0], -1)
    return inputs

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
    if towers is not None and x.ndim < 3:
      raise ValueError(f"compose: with `towers` the inputs must be [B, T, "
                       f"...] crops, got shape {x.shape}.")
    outputs, new_state = {}, {}
    for name, part in parts.items():
      outputs[OUTPUT_KEYS[name]], new_state[name] = part.apply(
          params[name], model_state[name], part_input(name, x, outputs),
          train=train)
    return outputs, new_state

  return Model(init=init, apply=apply)
