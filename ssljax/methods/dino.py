"""DINO: self-distillation of a momentum teacher into a multi-crop student.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021.

The student (backbone and DINO head: MLP, l2-normalisation, weight-normed
last layer to K logits) sees 2 global and N local "multicrop" views; the
teacher, an EMA of the student with m following BYOL's cosine schedule from
0.996 to 1, sees the global views only. With the teacher outputs centred
and sharpened (Algorithm 1, eq. 3),

    P_t = softmax((t − c) / τ_t),   P_s = softmax(s / τ_s),
    loss = mean over pairs (global i, view j ≠ i) of −Σ_k P_t[i] log P_s[j],

and the center follows the teacher's batch mean, c ← 0.9·c + 0.1·mean(t),
after the step. τ_s = 0.1; τ_t warms up linearly from 0.04 to 0.07 over
`teacher_temp_warmup_steps` (the paper's first 30 epochs) and stays there.
The last layer gets no gradient during the first `freeze_last_layer_steps`
(one epoch in the paper).

The last layer is frozen by zeroing its gradient inside the loss (not by an
optimizer mask, whose `Method.optimizer_mask` is fixed for the whole run):
the optimizer's weight decay still shrinks its weight-normalised kernel
during that time, which does not change the layer's output (W = V/||V||).

Defaults follow the paper (K = 65536, head 2048 → 256, norm_last_layer) with
2 global + 8 local crops; the CIFAR configs follow solo-learn (2 crops,
K = 4096, m from 0.9995).

Differences from the paper: no gradient clipping (the official runs clip
at norm 3.0) and a constant weight decay (the ViT runs raise it from 0.04 to
0.4), which `ssljax.train`'s optimizers do not do; views of equal size share
a forward call, as in the official multi-crop wrapper.

Example:
  >>> import jax, jax.numpy as jnp, ml_collections
  >>> from ssljax import methods
  >>> method = methods.get("dino")
  >>> config = ml_collections.ConfigDict(dict(
  ...     total_steps=10, method=method.default_config()))
  >>> config.method.update(backbone="tiny_cnn", hidden_dim=16,
  ...                      bottleneck_dim=8, out_dim=32,
  ...                      teacher_temp_warmup_steps=10)
  >>> config.method.augment.num_local = 2
  >>> images = jnp.zeros((4, 28, 28, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(
  ...     config, jax.random.key(0), images)
  >>> loss, out = method.loss(config, params, model_state, method_state,
  ...                         images, jax.random.key(1), 5)
  >>> print(out.update["teacher_logits"].shape,
  ...       round(float(out.metrics["teacher_temp"]), 4))
  (2, 4, 32) 0.055
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from ssljax import models
from ssljax.losses import non_contrastive
from ssljax.methods import _shared
from ssljax.methods.base import Method

# The teacher sees the first views, the global crops of "multicrop".
NUM_GLOBAL = 2


def default_config() -> ml_collections.ConfigDict:
  """DINO's hyper-parameters (the paper's defaults)."""
  return ml_collections.ConfigDict(dict(
      name="dino", backbone="resnet50", backbone_kwargs={},
      augment=_shared.augment_config("multicrop"),
      out_dim=65536, hidden_dim=2048, bottleneck_dim=256, head_layers=3,
      norm_last_layer=True, student_temp=0.1, warmup_teacher_temp=0.04,
      teacher_temp=0.07, teacher_temp_warmup_steps=0, center_momentum=0.9,
      base_momentum=0.996, final_momentum=1.0, freeze_last_layer_steps=0))


def network(config) -> models.Model:
  """Backbone and DINO head (student and teacher alike)."""
  method = config.method
  head = models.dino_head(
      None, method.out_dim, method.hidden_dim, method.bottleneck_dim,
      method.head_layers, method.norm_last_layer,
      **_shared.dtype_kwargs(config))
  return models.compose(_shared.backbone(config), projector=head)


def teacher_temperature(config, step) -> jax.Array:
  """τ_t(step): linear from `warmup_teacher_temp` to `teacher_temp` over
  `teacher_temp_warmup_steps`, then constant.

  Example:
    >>> import ml_collections
    >>> from ssljax.methods import dino
    >>> config = ml_collections.ConfigDict(dict(method=dict(
    ...     warmup_teacher_temp=0.04, teacher_temp=0.07,
    ...     teacher_temp_warmup_steps=30)))
    >>> print([round(float(dino.teacher_temperature(config, t)), 3)
    ...        for t in (0, 15, 30, 100)])
    [0.04, 0.055, 0.07, 0.07]
  """
  method = config.method
  warmup = method.teacher_temp_warmup_steps
  progress = (jnp.clip(jnp.asarray(step, jnp.float32) / warmup, 0.0, 1.0)
              if warmup else 1.0)
  return jnp.asarray(method.warmup_teacher_temp + progress * (
      method.teacher_temp - method.warmup_teacher_temp), jnp.float32)


def init(config, rng, images):
  return _shared.init(config, rng, images, network(config),
                      target_parts=_shared.TARGET_PARTS,
                      center_dim=config.method.out_dim)


def loss(config, params, model_state, method_state, images, rng, step):
  method = config.method
  model = network(config)
  params = _shared.freeze(params, ("projector", models.DINO_LAST_LAYER),
                          step < method.freeze_last_layer_steps)
  run = _shared.online(config, model, params, model_state, images, rng)
  teacher, target_state = _shared.target_forward(
      model, method_state.target, run.views[:NUM_GLOBAL])
  teacher_logits = teacher["projection"]
  temperature = teacher_temperature(config, step)
  value = non_contrastive.dino(
      run.outputs["projection"], teacher_logits, method_state.center,
      student_temp=method.student_temp, teacher_temp=temperature)
  return value, _shared.momentum_output(
      config, step, run, target_state,
      metrics={"teacher_temp": temperature},
      update={"teacher_logits": teacher_logits})


METHOD = Method(name="dino", init=init, loss=loss,
                post_update=_shared.post_update, encode=_shared.encode,
                default_config=default_config)
