"""CLIP-style dual encoder on two augmentation families of each image.

Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021 (Figure 3), with the two modalities replaced by two
views of an image made by different augmentation recipes.

Two towers that share no weights, encoder A (backbone f_A and a linear
projection W_A) and encoder B (f_B, W_B), embed view 1 and view 2 of each
image into a joint space; with z_A, z_B l2-normalised and a learned scale
s = exp(t), the loss is CLIP's symmetric InfoNCE over the batch,

    logits_ij = s · z_A,i · z_B,j,
    loss = ½ (mean_i CE(logits_i:, i) + mean_j CE(logits_:j, j)).

The views come from `config.method.augment`; the default "byol" preset is
asymmetric, so the towers see two families: view 1 always blurred, never
solarised; view 2 rarely blurred, solarised with probability 0.2 (Grill et
al. 2020, Table 6). `encode` returns tower A's backbone features.

Temperature: t starts at log(1 / `init_temperature`) (CLIP: 1/0.07) and the
scale is clamped to at most `max_scale` = 100. CLIP clamps the parameter in
place after each step; here the clamp, s = exp(min(t, log max_scale)), is in
the forward pass (`post_update` may not change parameters): the scale in use
is the same, and t above the clamp gets no gradient. As a rank-0 parameter
it gets no weight decay (CLIP excludes it too).

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax.methods import clip
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=clip.default_config()))
  >>> config.method.update(backbone="tiny_cnn", proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, state = clip.init(config, jax.random.key(0),
  ...                                        images)
  >>> print(sorted(params), round(float(clip.temperature(config, params)), 4))
  ['encoder_a', 'encoder_b', 'log_scale'] 0.07
  >>> loss, out = clip.loss(config, params, model_state, state, images,
  ...                       jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import _common, models
from ssljax.losses import contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method, StepOutput

TOWERS = ("encoder_a", "encoder_b")


def default_config() -> ml_collections.ConfigDict:
  """CLIP's ResNet-50 recipe: linear projections to a 1024-d joint space,
  T₀ = 0.07, scale at most 100."""
  return ml_collections.ConfigDict(dict(
      name="clip", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("byol"), proj_dim=1024,
      init_temperature=0.07, max_scale=100.0))


def tower(config) -> models.Model:
  """One encoder: backbone and a linear projection to `proj_dim`."""
  return models.compose(_shared.backbone(config), projector=models.projector(
      None, config.method.proj_dim, config.method.proj_dim, num_layers=1,
      **_shared.dtype_kwargs(config)))


def temperature(config, params) -> jax.Array:
  """T = 1 / min(exp(t), max_scale), t = `params["log_scale"]`."""
  max_log = math.log(config.method.max_scale)
  return jnp.exp(-jnp.minimum(params["log_scale"], max_log))


def init(config, rng, images):
  """Both towers (independent initialisations) and t = −log T₀."""
  fn = "clip.init"
  _common.check_positive(config.method.init_temperature,
                         "config.method.init_temperature", fn)
  _common.check_positive(config.method.max_scale, "config.method.max_scale",
                         fn)
  params, model_state = {}, {}
  for name, key in zip(TOWERS, jax.random.split(rng)):
    params[name], model_state[name], _ = _shared.init(config, key, images,
                                                      tower(config))
  params["log_scale"] = jnp.asarray(-math.log(config.method.init_temperature),
                                    jnp.float32)
  return params, model_state, _shared.MethodState()


def loss(config, params, model_state, method_state, images, rng, step):
  """Symmetric InfoNCE between tower A on view 1 and tower B on view 2."""
  del method_state, step  # Nothing is carried between steps.
  images, _ = _shared.split_batch(images)
  views = _shared.make_views(config, rng, images)
  if len(views) != 2:
    raise ValueError(
        f"clip.loss: `config.method.augment` must make 2 views (one per "
        f"tower), got {len(views)} from preset "
        f"{config.method.augment.preset!r}.")
  net = tower(config)
  outputs, new_state = {}, {}
  for name, view in zip(TOWERS, views):
    outputs[name], new_state[name] = net.apply(
        params[name], model_state[name], view, train=True)
  t = temperature(config, params)
  value = contrastive.clip(outputs["encoder_a"]["projection"],
                           outputs["encoder_b"]["projection"], temperature=t)
  return value, StepOutput(
      model_state=new_state, metrics={"temperature": t}, update={},
      embeddings=jax.lax.stop_gradient(outputs["encoder_a"]["features"]))


def encode(config, params, model_state, images):
  """Tower A's backbone features in eval mode."""
  return _shared.encode(config, params["encoder_a"],
                        model_state["encoder_a"], images)


METHOD = Method(name="clip", init=init, loss=loss,
                post_update=_shared.post_update, encode=encode,
                default_config=default_config)
