"""DINO: self-distillation of a momentum teacher into a multi-crop student.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers",
ICCV 2021; the official code (facebookresearch/dino).

The student (backbone and DINO head: MLP, l2-normalisation, weight-normed
last layer to K logits) sees 2 global and N local "multicrop" views; the
teacher, an EMA of the student with momentum m (the paper's cosine schedule
from 0.996 to 1: pass it as `momentum`), sees the global views only. With
the teacher outputs centred and sharpened (Algorithm 1, eq. 3),

    P_t = softmax((t − c) / τ_t),   P_s = softmax(s / τ_s),
    loss = mean over pairs (global i, view j ≠ i) of −Σ_k P_t[i] log P_s[j],

and the centre follows the teacher's batch mean, c ← m_c·c + (1 − m_c)·
mean(t), after the step. τ_s = 0.1; τ_t warms up linearly from
`warmup_teacher_temp` to `teacher_temp` over `warmup_teacher_temp_steps`
and stays there. The last layer is frozen (no update, its optimizer state
untouched: `Method.frozen`) during the first `freeze_last_layer_steps`.
Views of equal size share a forward call, as in the official multi-crop
wrapper. `encode` is the teacher's backbone, the network the official
`eval_knn.py` / `eval_linear.py` evaluate (`--checkpoint_key teacher`).

Defaults are `main_dino.py`'s: ViT-S/16 (`vit_small`, the default `--arch`),
K = 65536, head 2048 → 256 with 3 layers, no BatchNorm (use_bn_in_head
False) and a fixed-norm last layer (norm_last_layer True), τ_t = 0.04 with
no warm-up and no frozen last layer (the configs freeze it for the first
epoch), m = 0.996 (a cosine schedule to 1 in the configs), 2 global + 8 local
crops; a ViT student with stochastic depth 0.1 (`--drop_path_rate`,
linear over the blocks), the teacher without. The head starts as the
official `DINOHead`: its MLP's weights from
N(0, 0.02²) (timm's trunc_normal_ cuts at ±2 absolute, so no truncation at
that std), biases 0, and the last layer's V from PyTorch's default Linear
draw U(±1/√bottleneck_dim), which sets its norm and so the last layer's
effective step; the teacher starts as a copy of the student. The ViT and
ResNet-50 recipes (AdamW with a cosine weight decay 0.04 → 0.4 and
per-parameter clipping at 3; the README's SGD command) are in
configs/dino.py. Where this differs from the official code:
docs/fidelity.md#dino.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from ssljax import methods
  >>> method = methods.dino(
  ...     backbone="tiny_cnn", hidden_dim=16, bottleneck_dim=8, out_dim=32,
  ...     teacher_temp=0.07, warmup_teacher_temp_steps=10,
  ...     augment={"preset": "multicrop", "num_local": 2})
  >>> images = jnp.zeros((4, 28, 28, 1), jnp.uint8)
  >>> params, model_state, method_state = method.init(jax.random.key(0),
  ...                                                 images)
  >>> loss, out = method.loss(params, model_state, method_state,
  ...                         {"image": images}, jax.random.key(1), 5)
  >>> print(out.update.teacher_logits.shape,
  ...       round(float(out.metrics["teacher_temp"]), 4))
  (2, 4, 32) 0.055
  >>> print(round(float(params["projector"]["mlp"]["layers"]["linear0"]
  ...                         ["kernel"].std()), 2))  # N(0, 0.02²)
  0.02
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ssljax import _common, losses, models
from ssljax.methods import _registry, _shared
from ssljax.methods.base import Method, Schedule, StepOutput
from ssljax.state import center as center_lib

# The teacher sees the first views, the global crops of "multicrop".
NUM_GLOBAL = 2
# `DINOHead._init_weights`: trunc_normal_(std=.02) on the MLP's Linears.
MLP_STDDEV = 0.02


class DINOState(NamedTuple):
  """DINO's state: the EMA teacher and the [K] centre of its outputs."""
  target: _shared.Target
  center: jax.Array


class DINOUpdate(NamedTuple):
  """What the loss hands to `post_update`."""
  target_model_state: Any
  teacher_logits: jax.Array


def dino(*, backbone: str | models.Model = "vit_small",
         backbone_kwargs: Mapping | None = None,
         augment: Mapping = _shared.augment_config("multicrop"),
         dtype: str = "float32", out_dim: int = 65536, hidden_dim: int = 2048,
         bottleneck_dim: int = 256, head_layers: int = 3,
         norm_last_layer: bool = True, student_temp: float = 0.1,
         warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.04,
         warmup_teacher_temp_steps: int = 0, center_momentum: float = 0.9,
         momentum: Schedule = 0.996, freeze_last_layer_steps: int = 0,
         drop_path_rate: float | None = None) -> Method:
  """DINO (see the module docstring).

  Args:
    backbone, backbone_kwargs, augment, dtype: as `methods.simclr`.
    out_dim, hidden_dim, bottleneck_dim, head_layers, norm_last_layer: the
      DINO head (`models.dino_head`).
    student_temp: τ_s.
    warmup_teacher_temp, teacher_temp, warmup_teacher_temp_steps: τ_t goes
      linearly from the first to the second over that many steps.
    center_momentum: m_c of the centre.
    momentum: the teacher's EMA momentum m(step), a number or a schedule.
    freeze_last_layer_steps: steps during which the head's last layer does
      not move.
    drop_path_rate: the student ViT's stochastic depth (the teacher has
      none); None: `main_dino.py`'s 0.1 for a ViT preset backbone, none for
      other backbones (the official ResNets have none).

  Raises:
    ValueError: naming the argument, for a non-positive size or
      temperature, a negative step count, a momentum outside [0, 1], a
      `drop_path_rate` outside [0, 0.99] or set for a backbone that is not a
      ViT preset, or one in `backbone_kwargs`.
  """
  _check(out_dim=out_dim, hidden_dim=hidden_dim,
         bottleneck_dim=bottleneck_dim, head_layers=head_layers,
         student_temp=student_temp, warmup_teacher_temp=warmup_teacher_temp,
         teacher_temp=teacher_temp,
         warmup_teacher_temp_steps=warmup_teacher_temp_steps,
         freeze_last_layer_steps=freeze_last_layer_steps,
         center_momentum=center_momentum, momentum=momentum)
  teacher_setup = _shared.setup(backbone, backbone_kwargs, augment, dtype)
  rate = student_drop_path(backbone, backbone_kwargs, drop_path_rate)
  vit = _shared.is_vit_preset(backbone)
  setup = (_shared.setup(backbone, {**dict(backbone_kwargs or {}),
                                    "drop_path_rate": rate}, augment, dtype)
           if rate else teacher_setup)
  head = models.dino_head(None, out_dim, hidden_dim, bottleneck_dim,
                          head_layers, norm_last_layer, **setup.kw)
  model, teacher_model = (models.compose(s.backbone, projector=head)
                          for s in (setup, teacher_setup))
  temperature = _registry.schedule({
      "schedule": "linear", "start": warmup_teacher_temp,
      "end": teacher_temp, "steps": warmup_teacher_temp_steps})

  def init(rng, batch):
    params, model_state = _shared.initialize(setup, model, rng, batch)
    params = dict(params, projector=official_head_init(
        params["projector"], jax.random.fold_in(rng, 1)))
    if vit:
      params["backbone"] = official_patch_embed(params["backbone"],
                                                jax.random.fold_in(rng, 2))
    # Without drop path the two networks hold the same state.
    _, teacher_state = (_shared.initialize(teacher_setup, teacher_model, rng,
                                           batch) if rate
                        else (params, model_state))
    return params, model_state, DINOState(
        _shared.init_target(params, teacher_state), center_lib.init(out_dim))

  def loss(params, model_state, method_state, batch, rng, step):
    run = _shared.online(setup, model, params, model_state, batch, rng,
                         joint=True)
    teacher, target_state = _shared.target_forward(
        teacher_model, method_state.target, run.views[:NUM_GLOBAL],
        joint=True)
    teacher_logits = teacher["projection"]
    tau = temperature(step)
    value = losses.dino(run.outputs["projection"], teacher_logits,
                        method_state.center, student_temp=student_temp,
                        teacher_temp=tau)
    return value, _shared.step_output(
        run, {"teacher_temp": tau, "momentum": _shared.at(momentum, step)},
        DINOUpdate(target_state, teacher_logits))

  def post_update(params, method_state, update: DINOUpdate, step):
    return params, DINOState(
        _shared.update_target(method_state.target, params,
                              _shared.at(momentum, step),
                              update.target_model_state),
        center_lib.update(method_state.center, update.teacher_logits,
                          center_momentum))

  return Method(name="dino", init=init, loss=loss, post_update=post_update,
                encode=_shared.encoder(teacher_setup, target=True),
                frozen=last_layer_frozen(freeze_last_layer_steps),
                crops=setup.views.specs)


def student_drop_path(backbone, backbone_kwargs: Mapping | None,
                      rate: float | None) -> float:
  """The student's stochastic depth: `rate`, or `main_dino.py`'s
  `--drop_path_rate` 0.1 for its ViTs when None (0 for other backbones)."""
  vit = _shared.is_vit_preset(backbone)
  if "drop_path_rate" in dict(backbone_kwargs or {}):
    raise ValueError("dino: set the student's stochastic depth with "
                     "`drop_path_rate`, not `backbone_kwargs` (the teacher "
                     "has none).")
  if rate is None:
    return 0.1 if vit else 0.0
  _common.check_in_range(rate, 0.0, 0.99, "drop_path_rate", "dino")
  if rate and not vit:
    raise ValueError(f"dino: `drop_path_rate` applies to a ViT preset "
                     f"backbone ({', '.join(models.VIT_SIZES)}), got "
                     f"{backbone!r}.")
  return rate


def official_patch_embed(vit: dict, rng: jax.Array) -> dict:
  """A ViT's parameters with the patch embedding PyTorch's default Conv2d
  draw, where the official DINO and iBOT ViTs leave it (`_init_weights`
  redraws only Linear and LayerNorm layers)."""
  return dict(vit, patch_embed=_shared.torch_conv_init(vit["patch_embed"],
                                                       rng))


def official_head_init(head: dict, rng: jax.Array) -> dict:
  """The DINO head's parameters as the official `DINOHead` draws them.

  The MLP's kernels from N(0, 0.02²) and its biases 0 (`_init_weights`;
  timm's `trunc_normal_(std=.02)` truncates at ±2 absolute, 100 std, so the
  draw is a plain normal, not Flax's truncated one); the last layer's V from
  PyTorch's default `nn.Linear` draw U(±1/√bottleneck_dim), as it is built
  after `apply(_init_weights)`; its scale g (if learnt) at 1.
  """
  normal = lambda key, shape, fan_in: MLP_STDDEV * jax.random.normal(
      key, shape)
  zeros = lambda key, shape, fan_in: jnp.zeros(shape)
  mlp_rng, last_rng = jax.random.split(rng)
  return dict(
      head,
      mlp=_shared.redraw_dense(head["mlp"], mlp_rng, normal, zeros),
      **{models.DINO_LAST_LAYER: _shared.redraw_dense(
          head[models.DINO_LAST_LAYER], last_rng,
          _shared.torch_linear_init)})


def _check(**values) -> None:
  """DINO's hyper-parameter checks, at factory time."""
  for name in ("out_dim", "hidden_dim", "bottleneck_dim", "head_layers"):
    _common.check_count(values[name], name, "dino", minimum=1)
  for name in ("warmup_teacher_temp_steps", "freeze_last_layer_steps"):
    _common.check_count(values[name], name, "dino")
  for name in ("student_temp", "warmup_teacher_temp", "teacher_temp"):
    _common.check_positive(values[name], name, "dino")
  for name in ("center_momentum", "momentum"):
    _common.check_in_range(values[name], 0.0, 1.0, name, "dino")


def last_layer_frozen(steps: int):
  """`Method.frozen` holding the head's last layer (`models.DINO_LAST_LAYER`)
  still for the first `steps` steps, as DINO's `freeze_last_layer`."""

  def frozen(params, step):
    return _shared.frozen_at(params, ("projector", models.DINO_LAST_LAYER),
                             step < steps)

  return frozen
