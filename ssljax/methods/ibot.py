"""iBOT: masked image modelling with an online tokenizer, and DINOv2's options.

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, "iBOT: Image BERT Pre-Training
with Online Tokenizer", ICLR 2022; the official code (bytedance/ibot).
Options of Oquab et al., "DINOv2: Learning Robust Visual Features without
Supervision", TMLR 2024 (facebookresearch/dinov2).

DINO's self-distillation of the [CLS] token plus a masked-patch term. The
student (a ViT with a mask token and stochastic depth, and a DINO head
shared by the [CLS] and the patch tokens) sees 2 global and N local crops;
each global crop has its own block-wise mask (`models.ibot_masks`), its
masked patch embeddings replaced by the mask token. The teacher, an EMA of
the student (momentum m, cosine to 1 in the recipes), sees the global crops
unmasked. With the teacher's outputs centred and sharpened,
P_t = softmax((t − c) / τ_t), and the student's P_s = softmax(s / τ_s),

    L_cls = mean over pairs (global i, crop j ≠ i) of H(P_t^cls[i], P_s^cls[j])
            (`losses.dino`)
    L_mim = mean over global crops v and images of the mean over masked
            patches of H(P_t^patch[v], P_s^patch[v])   (`losses.ibot_patch`)
    loss  = λ1·L_cls + λ2·L_mim [+ w·Σ_v KoLeo(student [CLS] features of v)]

and the two centres follow the teacher's means, c ← m_c·c + (1 − m_c)·mean,
after the step (the patch centre over every patch token). τ_t warms up
linearly from `warmup_teacher_temp` to `teacher_temp` (the patches' from
`warmup_teacher_patch_temp` to `teacher_patch_temp`) over
`warmup_teacher_temp_steps`; the head's last layer is frozen for
`freeze_last_layer_steps`. `encode` is the teacher's [CLS] feature, the
network iBOT's k-NN and linear evaluations read (`--checkpoint_key
teacher`).

DINOv2's options: `koleo_weight` (0.1 in DINOv2) adds the KoLeo
regulariser (`losses.koleo`) on the student's [CLS] features of each global
crop; `centering="sinkhorn_knopp"` replaces the centred softmax by
Sinkhorn-Knopp codes (3 iterations at τ_t, `ssljax.state.sinkhorn`) of the
batch's [CLS] outputs and of its masked patch outputs, and the centres stay
put.

Defaults follow the released ViT-S/16 recipe (README: shared head of 8192
outputs without normalised last layer, τ_t 0.07, 10 local crops, global
scale (0.25, 1), local (0.05, 0.25), masking ratio 0 or U(0.1, 0.5) per
image, student stochastic depth 0.1). The ViT has no BatchNorm, so the
method has no `view_batchnorm`; equal-sized crops share a forward call, as
in the official multi-crop wrapper. Differences from the official code are
listed in docs/fidelity.md#ibot.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.ibot(
  ...     backbone="vit_tiny",
  ...     backbone_kwargs={"patch_size": 4, "image_size": 16, "depth": 1},
  ...     out_dim=32, hidden_dim=16, bottleneck_dim=8,
  ...     augment={"preset": "multicrop", "num_local": 2})
  >>> images = jnp.zeros((4, 16, 16, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 0)
  >>> print(method_state.patch_center.shape, sorted(out.metrics)[:2])
  (32,) ['cls_loss', 'momentum']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import losses, models, state
from ssljax.methods import _mim, _registry, _shared
from ssljax.methods.base import Method, Schedule, StepOutput
from ssljax.methods.dino import (NUM_GLOBAL, last_layer_frozen,
                                 official_head_init, official_patch_embed)
from ssljax.state import center as center_lib

CENTERINGS = ("centering", "sinkhorn_knopp")
# DINOv2's Sinkhorn-Knopp iterations.
SINKHORN_ITERATIONS = 3
# The released ViT-S/16 recipe's crops (README).
AUGMENT = _shared.augment_config("multicrop", num_local=10,
                                 global_scale=(0.25, 1.0),
                                 local_scale=(0.05, 0.25))


class IBOTState(NamedTuple):
  """iBOT's state: the EMA teacher and the [K] centres of its [CLS] and
  patch outputs."""
  target: _shared.Target
  center: jax.Array
  patch_center: jax.Array


class IBOTUpdate(NamedTuple):
  """What the loss hands to `post_update`: the teacher's new model state
  and the batch means of its [CLS] and patch outputs, [1, K] each."""
  target_model_state: Any
  cls_mean: jax.Array
  patch_mean: jax.Array


def ibot(*, backbone: str = "vit_small",
         backbone_kwargs: Mapping | None = None, augment: Mapping = AUGMENT,
         dtype: str = "float32", out_dim: int = 8192, hidden_dim: int = 2048,
         bottleneck_dim: int = 256, head_layers: int = 3,
         norm_last_layer: bool = False, student_temp: float = 0.1,
         warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
         warmup_teacher_patch_temp: float = 0.04,
         teacher_patch_temp: float = 0.07, warmup_teacher_temp_steps: int = 0,
         center_momentum: float = 0.9, patch_center_momentum: float = 0.9,
         momentum: Schedule = 0.996, freeze_last_layer_steps: int = 0,
         cls_weight: float = 1.0, patch_weight: float = 1.0,
         pred_ratio: tuple = (0.0, 0.3), pred_ratio_var: tuple = (0.0, 0.2),
         pred_shape: str = "block",
         pred_aspect: tuple = (0.3, 1 / 0.3), drop_path_rate: float = 0.1,
         koleo_weight: float = 0.0, koleo_group_size: Optional[int] = None,
         centering: str = "centering") -> Method:
  """iBOT (see the module docstring).

  Args:
    backbone: a ViT preset ("vit_tiny", "vit_small", "vit_base").
    backbone_kwargs: its arguments (`patch_size`, `image_size`, `depth`,
      `pos_embed`, `remat`...); the mask token is always on.
    augment, dtype: as `methods.dino`; the first 2 views are the global
      crops, the others local.
    out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer: the
      DINO head shared by the [CLS] and patch tokens.
    student_temp: τ_s.
    warmup_teacher_temp, teacher_temp: the [CLS] τ_t's warm-up and value.
    warmup_teacher_patch_temp, teacher_patch_temp: the patches' τ_t.
    warmup_teacher_temp_steps: steps of both warm-ups.
    center_momentum, patch_center_momentum: m_c of the two centres.
    momentum: the teacher's EMA momentum, a number or a schedule.
    freeze_last_layer_steps: steps during which the head's last layer
      does not move.
    cls_weight, patch_weight: λ1, λ2.
    pred_ratio, pred_ratio_var, pred_shape, pred_aspect: the masks
      (`models.ibot_masks`).
    drop_path_rate: the student's stochastic depth (the teacher has none).
    koleo_weight: w of DINOv2's KoLeo term, 0 for none.
    koleo_group_size: KoLeo's neighbours are searched within consecutive
      groups of this many images (DINOv2 searches each GPU's batch), None
      for the whole batch.
    centering: "centering" (iBOT) or "sinkhorn_knopp" (DINOv2).
  """
  fn = "ibot"
  _check(fn, centering=centering, koleo_weight=koleo_weight,
         koleo_group_size=koleo_group_size, backbone_kwargs=backbone_kwargs)
  for name, value in (("student_temp", student_temp),
                      ("warmup_teacher_temp", warmup_teacher_temp),
                      ("teacher_temp", teacher_temp),
                      ("warmup_teacher_patch_temp", warmup_teacher_patch_temp),
                      ("teacher_patch_temp", teacher_patch_temp)):
    if not value > 0:
      raise ValueError(f"{fn}: `{name}` must be > 0, got {value}.")
  masking = dict(ratio=tuple(pred_ratio), ratio_var=tuple(pred_ratio_var),
                 shape=pred_shape, aspect=tuple(pred_aspect))
  # Checks the mask settings now rather than at the first step.
  jax.eval_shape(lambda: models.ibot_masks(jax.random.key(0), 1, 3, 3,
                                           **masking))
  vits = [_mim.vit(backbone, backbone_kwargs, dtype, fn,
                   defaults={"pool": "cls"},
                   required={"pool": "cls", "mask_token": True,
                             "drop_path_rate": rate})
          for rate in (drop_path_rate, 0.0)]
  setup = _shared.setup(vits[1].model, None, augment, dtype)
  if len(setup.views.specs(224)) < NUM_GLOBAL:
    raise ValueError(f"{fn}: `augment` must make at least {NUM_GLOBAL} "
                     f"views (the global crops), got {dict(augment)}.")
  head = models.dino_head(None, out_dim, hidden_dim, bottleneck_dim,
                          head_layers, norm_last_layer, **setup.kw)
  student, teacher = (models.compose(v.model, projector=head) for v in vits)
  dim, p = vits[0].dim, vits[0].patch_size
  temperatures = [_registry.schedule({
      "schedule": "linear", "start": start, "end": end,
      "steps": warmup_teacher_temp_steps})
                  for start, end in ((warmup_teacher_temp, teacher_temp),
                                     (warmup_teacher_patch_temp,
                                      teacher_patch_temp))]
  sinkhorn = centering == "sinkhorn_knopp"

  def forward(vit, params, model_state, x, **keywords):
    """Head outputs of every token [n, 1 + N, K] (or of the pooled [CLS],
    [n, K], with `tokens=False`), and the features."""
    features, vit_state = vit.apply(params["backbone"],
                                    model_state["backbone"], x, train=True,
                                    **keywords)
    logits, head_state = head.apply(params["projector"],
                                    model_state["projector"],
                                    features.reshape(-1, dim), train=True)
    return (logits.reshape(*features.shape[:-1], -1), features,
            {"backbone": vit_state, "projector": head_state})

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, student, rng, batch)
    params = dict(params, projector=official_head_init(
        params["projector"], jax.random.fold_in(rng, 1)),
                  backbone=official_patch_embed(params["backbone"],
                                                jax.random.fold_in(rng, 2)))
    _, teacher_state = _shared.initialize(setup, teacher, rng, batch)
    return params, model_state, IBOTState(
        _shared.Target(state.ema.init(params), teacher_state),
        center_lib.init(out_dim), center_lib.init(out_dim))

  def loss(params, model_state, method_state, batch, rng, step):
    view_rng, mask_rng = jax.random.split(rng)
    views = setup.views.make(view_rng, batch)
    crops = jnp.concatenate(views[:NUM_GLOBAL])
    b = views[0].shape[0]
    rows, cols = _mim.grid(views[0], p)
    mask = jnp.concatenate([
        models.ibot_masks(jax.random.fold_in(mask_rng, v), b, rows, cols,
                          **masking) for v in range(NUM_GLOBAL)])
    student_out, student_tokens, model_state = forward(
        vits[0].model, params, model_state, crops, mask=mask, tokens=True)
    cls_logits = [student_out[:, 0]]
    if len(views) > NUM_GLOBAL:
      local_out, _, model_state = forward(
          vits[0].model, params, model_state,
          jnp.concatenate(views[NUM_GLOBAL:]))
      cls_logits.append(local_out)
    teacher_out, _, target_state = forward(
        vits[1].model, *method_state.target, crops, tokens=True)
    teacher_out = jax.lax.stop_gradient(teacher_out)
    by_view = lambda x: x.reshape(-1, b, *x.shape[1:])  # noqa: E731
    teacher_cls, teacher_patch = teacher_out[:, 0], teacher_out[:, 1:]
    tau, tau_patch = (t(step) for t in temperatures)
    if sinkhorn:
      zero = jnp.zeros(out_dim)
      cls_targets = (jnp.log(state.sinkhorn(
          teacher_cls, epsilon=tau, iterations=SINKHORN_ITERATIONS)),
                     zero, 1.0)
      patch_codes = _mim.masked_sinkhorn(
          teacher_patch.reshape(-1, out_dim), mask.reshape(-1),
          epsilon=tau_patch, iterations=SINKHORN_ITERATIONS)
      patch_targets = (jnp.log(patch_codes).reshape(teacher_patch.shape),
                       zero, 1.0)
    else:
      cls_targets = (teacher_cls, method_state.center, tau)
      patch_targets = (teacher_patch, method_state.patch_center, tau_patch)
    cls_loss = losses.dino(
        jnp.concatenate([by_view(x) for x in cls_logits]),
        by_view(cls_targets[0]), cls_targets[1], student_temp=student_temp,
        teacher_temp=cls_targets[2])
    patch_loss = losses.ibot_patch(
        by_view(student_out[:, 1:]), by_view(patch_targets[0]),
        patch_targets[1], by_view(mask), student_temp=student_temp,
        teacher_temp=patch_targets[2])
    value = cls_weight * cls_loss + patch_weight * patch_loss
    metrics = {"cls_loss": cls_loss, "patch_loss": patch_loss,
               "teacher_temp": tau, "teacher_patch_temp": tau_patch,
               "momentum": _shared.at(momentum, step)}
    if koleo_weight:
      features = by_view(student_tokens[:, 0])
      metrics["koleo"] = sum(_koleo(features[v], koleo_group_size)
                             for v in range(NUM_GLOBAL))
      value = value + koleo_weight * metrics["koleo"]
    return value, StepOutput(
        model_state=model_state, metrics=metrics,
        update=IBOTUpdate(target_state, jnp.mean(teacher_cls, 0)[None],
                          jnp.mean(teacher_patch, (0, 1))[None]),
        embeddings=jax.lax.stop_gradient(student_tokens[:b, 0]))

  def post_update(params, method_state, update: IBOTUpdate, step):
    target = _shared.update_target(method_state.target, params,
                                   _shared.at(momentum, step),
                                   update.target_model_state)
    if sinkhorn:  # DINOv2 centres with Sinkhorn-Knopp, not with c.
      return params, method_state._replace(target=target)
    return params, IBOTState(
        target,
        center_lib.update(method_state.center, update.cls_mean,
                          center_momentum),
        center_lib.update(method_state.patch_center, update.patch_mean,
                          patch_center_momentum))

  return Method(name="ibot", init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(setup, target=True),
                frozen=last_layer_frozen(freeze_last_layer_steps),
                crops=setup.views.specs, backbone=vits[1].with_drop_path)


def _check(fn: str, *, centering, koleo_weight, koleo_group_size,
           backbone_kwargs) -> None:
  if centering not in CENTERINGS:
    raise ValueError(f"{fn}: `centering` must be one of {CENTERINGS}, got "
                     f"{centering!r}.")
  if not koleo_weight >= 0:
    raise ValueError(f"{fn}: `koleo_weight` must be >= 0, got "
                     f"{koleo_weight}.")
  if koleo_group_size is not None and not (
      isinstance(koleo_group_size, int) and koleo_group_size >= 2):
    raise ValueError(f"{fn}: `koleo_group_size` must be None or an int >= "
                     f"2, got {koleo_group_size!r}.")
  if "drop_path_rate" in dict(backbone_kwargs or {}):
    raise ValueError(f"{fn}: set the student's stochastic depth with "
                     f"`drop_path_rate`, not `backbone_kwargs` (the teacher "
                     f"has none).")


def _koleo(features: jax.Array, group_size: Optional[int]) -> jax.Array:
  """KoLeo over the batch, or the mean over groups of `group_size`
  consecutive images."""
  if group_size is None:
    return losses.koleo(features)
  if features.shape[0] % group_size:
    raise ValueError(f"ibot: `koleo_group_size` ({group_size}) must divide "
                     f"the batch ({features.shape[0]}).")
  groups = features.reshape(-1, group_size, features.shape[-1])
  return jnp.mean(jax.vmap(losses.koleo)(groups))
