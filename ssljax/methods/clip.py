"""CLIP-style dual encoder on two augmentation families of each image.

Radford et al., "Learning Transferable Visual Models From Natural Language
Supervision", ICML 2021 (Figure 3); the official code (openai/CLIP, the
model) and its training reproduction (mlfoundations/open_clip), with the two
modalities replaced by two views of an image made by different augmentation
recipes.

Two towers that share no weights, encoder A (backbone f_A and a linear
projection W_A) and encoder B (f_B, W_B), embed view 1 and view 2 of each
image into a joint space; with z_A, z_B l2-normalised and a learned logit
scale s = exp(t), the loss is CLIP's symmetric InfoNCE over the batch,

    logits_ij = s · z_A,i · z_B,j,
    loss = ½ (mean_i CE(logits_i:, i) + mean_j CE(logits_:j, j)).

The default "byol" recipe is asymmetric, so the towers see two families:
view 1 always blurred, never solarised; view 2 rarely blurred, solarised
with probability 0.2 (Grill et al. 2020, Table 6). Each tower runs once, on
its own view, so BatchNorm statistics are per tower as in CLIP's two
encoders (there is no `view_batchnorm` choice to make). `encode` returns
tower A's backbone features, before the projection (I_f of the paper's
Figure 3, the features its linear probes of ViTs read).

The logit scale follows the official code: t starts at log(1 /
`init_temperature`) (CLIP: log(1/0.07)), the loss uses exp(t) unclamped,
and after each optimizer step `post_update` clamps t in place to
[0, log `max_scale`] (open_clip's `clamp_logit_scale`, max_scale = 100). As
a rank-0 parameter t gets no weight decay (CLIP excludes it too).
Defaults are CLIP's ResNet-50 recipe (a 1024-d joint space); differences
from the official code are listed in docs/fidelity.md#clip.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.clip(backbone="tiny_cnn", proj_dim=8)
  >>> images = jnp.zeros((4, 16, 16, 3), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> print(sorted(params), round(float(temperature(params)), 4))
  ['encoder_a', 'encoder_b', 'log_scale'] 0.07
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(loss.shape, out.embeddings.shape)
  () (4, 8)
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from ssljax import _common, losses, models
from ssljax.methods import _breadth, _shared
from ssljax.methods.base import Method, StepOutput

TOWERS = ("encoder_a", "encoder_b")
# The key of t, the log of the logit scale, in `params`.
LOG_SCALE = "log_scale"


def temperature(params) -> jax.Array:
  """T = 1 / s = exp(−t), t = `params["log_scale"]`."""
  return jnp.exp(-params[LOG_SCALE])


def clip(*, backbone: str | models.Model = "resnet50",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = _shared.augment_config("byol"),
         dtype: str = "float32", proj_dim: int = 1024,
         init_temperature: float = 0.07, max_scale: float = 100.0
         ) -> Method:
  """CLIP on two views (see the module docstring).

  Args:
    backbone, backbone_kwargs, dtype: as `methods.simclr`; both towers have
      this architecture and their own weights.
    augment: the views' recipe; it must make exactly two views, one per
      tower.
    proj_dim: the joint space; each tower's linear projection maps its
      features to it.
    init_temperature: T₀ = 1 / s₀ at initialisation.
    max_scale: the logit scale is clamped to [1, max_scale] after each step.

  Raises:
    ValueError: naming the argument for a non-positive `proj_dim` or
      `init_temperature`, a `max_scale` below 1, or a recipe that does not
      make two views.
  """
  fn = "clip"
  _common.check_count(proj_dim, "proj_dim", fn, minimum=1)
  _common.check_positive(init_temperature, "init_temperature", fn)
  if not max_scale >= 1:
    raise ValueError(f"{fn}: `max_scale` must be >= 1 (the logit scale is "
                     f"clamped to [1, max_scale]), got {max_scale}.")
  setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  if _breadth.view_count(setup) != 2:
    raise ValueError(f"{fn}: `augment` must make 2 views (one per tower), "
                     f"got {_breadth.view_count(setup)} from preset "
                     f"{augment['preset']!r}.")
  tower = models.compose(setup.backbone, projector=models.projector(
      None, proj_dim, proj_dim, num_layers=1, **setup.kw))
  max_log_scale = math.log(max_scale)
  encode_tower_a = _shared.encoder(setup)

  def init(rng, batch):
    params, model_state = {}, {}
    for name, key in zip(TOWERS, jax.random.split(rng)):
      params[name], model_state[name] = _shared.initialize(setup, tower, key,
                                                           batch)
    params[LOG_SCALE] = jnp.asarray(-math.log(init_temperature), jnp.float32)
    return params, model_state, ()

  def loss(params, model_state, method_state, batch, rng, step):
    del method_state, step  # Nothing is carried between steps.
    outputs, new_state = {}, {}
    for name, view in zip(TOWERS, setup.views.make(rng, batch)):
      outputs[name], new_state[name] = tower.apply(
          params[name], model_state[name], view, train=True)
    t = temperature(params)
    value = losses.clip(outputs["encoder_a"]["projection"],
                        outputs["encoder_b"]["projection"], temperature=t)
    return value, StepOutput(
        model_state=new_state, metrics={"temperature": t}, update=(),
        embeddings=jax.lax.stop_gradient(outputs["encoder_a"]["features"]))

  def post_update(params, method_state, update, step):
    del update, step  # The clamp holds at every step.
    return ({**params, LOG_SCALE: jnp.clip(params[LOG_SCALE], 0.0,
                                           max_log_scale)}, method_state)

  def encode(params, model_state, method_state, images):
    return encode_tower_a(params["encoder_a"], model_state["encoder_a"],
                          method_state, images)

  return Method(name="clip", init=init, loss=loss, post_update=post_update,
                encode=encode, crops=setup.views.specs)
