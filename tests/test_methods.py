"""ssljax.methods: the registry and `build(config)`, every factory training on
toy images without a config, the post-update semantics (EMA, queue, centre,
SwAV's prototypes), BatchNorm passes per view or joint, the objectives
against numpy references, the factories' checks, checkpoints of every kind
of method state, and the experiment configs (every preset, short runs, one
real 3-step run on MNIST-5k).

References are written from the papers' formulas and the official code with
explicit loops. Shapes are tiny (16×16 images, a CNN of 8 channels, heads of
16-32 units, cheap views): most of the file's CPU time is compiling one
train step per method.
"""

from __future__ import annotations

import functools
import importlib
import math

import jax
import jax.numpy as jnp
import jax.test_util
import ml_collections
import numpy as np
import pytest

from _toy_data import alternating_batches, shape_images
from configs import common
from ssljax import data, losses, methods, models, train
from ssljax.methods import _shared
from ssljax.methods.dino import DINOUpdate
from ssljax.methods.moco_v3 import contrast, official_settings
from ssljax.methods.nnclr import objective as nnclr_objective
from ssljax.methods.simsiam import objective as simsiam_objective
from ssljax.methods.supcon import objective as supcon_objective
from ssljax.methods.swav import objective as swav_objective
from ssljax.state import queue
from ssljax.train import checkpoint
from ssljax.train.loop import fit_to_run

NAMES = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins",
         "vicreg", "dino", "swav", "nnclr", "supcon", "dcl")
MOMENTUM = ("moco_v2", "moco_v3", "byol", "dino")
QUEUED = ("moco_v2", "nnclr", "swav")
# The official code runs each view through the network on its own.
PER_VIEW = ("byol", "moco_v2", "moco_v3", "simsiam", "barlow_twins", "vicreg",
            "nnclr")
GROUP_A = ("moco_v3", "simsiam", "barlow_twins", "vicreg", "nnclr", "supcon",
           "swav")
BATCH = 32
TOTAL_STEPS = 40

# Tiny sizes for every factory parameter of that name.
TINY = dict(backbone="tiny_cnn", proj_hidden_dim=32, proj_dim=16,
            pred_hidden_dim=32, queue_size=2 * BATCH, out_dim=32,
            hidden_dim=32, bottleneck_dim=16, num_prototypes=16)
# Views without colour operations compile several times faster.
CHEAP = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
             solarize_prob=0.0)
# Learning rates (base, per 256 images) that make the toy loss go down in a
# few steps with Adam.
LEARNING_RATE = dict(barlow_twins=2e-2, vicreg=2e-2, dino=3e-2, swav=2e-2)


def cheap_augment(name, **overrides):
  """The method's preset kind with cheap views: "byol" or "multicrop"."""
  default = methods.parameters(methods.get(name))["augment"].default
  if default["preset"] == "multicrop":
    return {"preset": "multicrop", "num_local": 2, **CHEAP, **overrides}
  return {"preset": "byol", **CHEAP, **overrides}


def momentum_schedule(base=0.99, final=1.0, steps=TOTAL_STEPS):
  return methods.schedule({"schedule": "cosine", "base": base,
                           "final": final, "steps": steps})


def build(name, **overrides):
  """The registered factory with tiny sizes, cheap views and a cosine EMA."""
  factory = methods.get(name)
  accepted = methods.parameters(factory)
  kwargs = {k: v for k, v in TINY.items() if k in accepted}
  kwargs["augment"] = cheap_augment(name)
  if "momentum" in accepted:
    kwargs["momentum"] = momentum_schedule()
  return factory(**{**kwargs, **overrides})


def toy_images(n=2 * BATCH, size=16, seed=0):
  """Toy images of 4 shapes, labels cycling 0..3."""
  return shape_images(np.arange(n) % 4, size, seed)


def batches(n_steps):
  return alternating_batches(*toy_images(), BATCH, n_steps)


def step_config(name="simclr", devices=1, **optimizer):
  """The hand-made config of the train step: optimizer and mesh only."""
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=TOTAL_STEPS, mesh=dict(data=devices),
      optimizer=dict(name="adamw", learning_rate=LEARNING_RATE.get(name, 3e-3),
                     weight_decay=0.0, momentum=0.9, warmup_steps=0,
                     **optimizer)))


def run_steps(method, config, steps):
  """Host copies of the states before/after each step, and the metrics."""
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  state = train.create_train_state(method, jax.random.key(0), steps[0], tx)
  state = jax.device_put(state, train.replicated(mesh))
  step_fn = train.make_train_step(config, method, tx, mesh)
  history, metrics = [jax.device_get(state)], []
  for batch in steps:
    state, m = step_fn(state, jax.device_put(batch, train.data_sharded(mesh)))
    history.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return history, metrics


def init(name, **overrides):
  method = build(name, **overrides)
  return method, method.init(jax.random.key(0), batches(1)[0])


def tree_allclose(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), **tol), a, b)


def numpy_cosine_momentum(t, total, base, final):
  progress = min(t / total, 1.0)
  return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


def subtree(tree, path):
  return functools.reduce(lambda node, key: node[key], path, tree)


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_lse(values, axis=-1):
  values = np.asarray(values, np.float64)
  top = values.max(axis=axis, keepdims=True)
  return (top + np.log(np.exp(values - top).sum(axis=axis, keepdims=True))
          ).squeeze(axis)


# --------------------------------------------------------------- registry ---


def test_registry_lists_every_method_by_its_factory_name():
  assert set(NAMES) <= set(methods.names())
  for name in NAMES:
    factory = methods.get(name)
    assert factory.__name__ == name and factory is getattr(methods, name)
    assert build(name).name == name


def test_registry_rejects_unknown_names_and_lists_valid_ones():
  for call in (lambda: methods.get("simclr2"),
               lambda: methods.build({"method": {"name": "simclr2"}})):
    with pytest.raises(ValueError, match="'simclr2'") as info:
      call()
    for name in NAMES:
      assert name in str(info.value)


def test_build_rejects_an_unknown_key_and_lists_the_parameters():
  with pytest.raises(ValueError, match=r"config\.method\.tau") as info:
    methods.build({"method": {"name": "simsiam", "tau": 0.5}})
  for parameter in methods.parameters(methods.simsiam):
    assert parameter in str(info.value)


def tiny_barlow_twins(**kwargs):
  """A user's factory, reachable as "test_methods:tiny_barlow_twins"."""
  return methods.barlow_twins(backbone="tiny_cnn", proj_hidden_dim=8,
                              proj_dim=4, **kwargs)


def test_registry_is_open():
  methods.register("tiny_barlow_twins", tiny_barlow_twins, replace=True)
  method = methods.build({"method": {"name": "tiny_barlow_twins",
                                     "lambda_": 0.01}})
  assert "tiny_barlow_twins" in methods.names()
  assert method.name == "barlow_twins"
  with pytest.raises(ValueError, match="already registered"):
    methods.register("tiny_barlow_twins", tiny_barlow_twins)
  assert methods.build({"method": {
      "name": "test_methods:tiny_barlow_twins"}}).name == "barlow_twins"
  assert methods.build({"method": {"name": "ssljax.methods.simsiam:simsiam",
                                   "backbone": "tiny_cnn"}}).name == "simsiam"
  with pytest.raises(ValueError, match="cannot import"):
    methods.build({"method": {"name": "test_methods:no_such_factory"}})


def test_build_turns_schedules_into_functions():
  method = methods.build({"method": {
      "name": "moco_v3", "backbone": "tiny_cnn", "proj_hidden_dim": 8,
      "proj_dim": 4, "pred_hidden_dim": 8, "augment": cheap_augment("moco_v3"),
      "momentum": {"schedule": "cosine", "base": 0.9, "final": 1.0,
                   "steps": 10}}})
  params, model_state, state = method.init(jax.random.key(0), batches(1)[0])
  _, out = jax.jit(method.loss)(params, model_state, state, batches(1)[0],
                                jax.random.key(1), 5)
  np.testing.assert_allclose(out.metrics["momentum"], 0.95, rtol=1e-6)


# ----------------------------------------------------------- training runs ---

STEPS = 16
FREEZE_STEPS = 4  # DINO's last layer and SwAV's prototypes, in the runs
QUEUE_START = 3   # SwAV's queue starts filling, in the runs
RUN_OVERRIDES = {
    # DINO's center is held (it is tested on its own below): as it learns
    # the batch mean, the teacher's targets get flatter and the loss rises
    # for reasons other than learning.
    "dino": dict(freeze_last_layer_steps=FREEZE_STEPS, center_momentum=1.0,
                 warmup_teacher_temp=0.04, teacher_temp=0.05,
                 warmup_teacher_temp_steps=8),
    "swav": dict(freeze_prototypes_steps=FREEZE_STEPS,
                 queue_start_steps=QUEUE_START),
}


@functools.cache
def training_run(name):
  """16 Adam steps of the tiny method on toy images."""
  method = build(name, **RUN_OVERRIDES.get(name, {}))
  return run_steps(method, step_config(name), batches(STEPS))


@pytest.mark.parametrize("name", NAMES)
def test_factories_train_without_a_config_and_the_loss_goes_down(name):
  history, metrics = training_run(name)
  values = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(values)), values
  # Queued methods start from random unit negatives, easier than the real
  # ones that fill the queue (2 batches) in the first two steps.
  start = 2 if name in QUEUED else 0
  assert values[-4:].mean() < values[start:start + 4].mean(), values
  assert int(history[-1].step) == STEPS


@pytest.mark.parametrize("name", MOMENTUM)
def test_training_moves_the_target_by_the_scheduled_momentum(name):
  history, metrics = training_run(name)
  for t in range(STEPS):
    before, after = history[t].method_state, history[t + 1].method_state
    # θt ← m·θt + (1 − m)·θ with the new online parameters.
    m = numpy_cosine_momentum(t, TOTAL_STEPS, 0.99, 1.0)
    np.testing.assert_allclose(metrics[t]["momentum"], m, rtol=1e-6)
    online = {k: history[t + 1].params[k] for k in before.target.params}
    want = jax.tree.map(lambda tgt, o: m * tgt + (1 - m) * o,
                        jax.tree.map(np.float64, before.target.params),
                        jax.tree.map(np.float64, online))
    tree_allclose(after.target.params, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ("moco_v2", "nnclr"))
def test_training_pushes_every_batch_into_the_queue(name):
  history, _ = training_run(name)
  for t in range(STEPS):
    before, after = history[t].method_state, history[t + 1].method_state
    size = before.queue.buffer.shape[0]
    assert int(after.queue.ptr) == (int(before.queue.ptr) + BATCH) % size
    assert int(after.queue.count) == min(int(before.queue.count) + BATCH,
                                         size)


@pytest.mark.parametrize("name, part", [
    ("dino", ("projector", models.DINO_LAST_LAYER)),
    ("swav", (models.PROTOTYPES,))])
def test_training_freezes_a_part_for_its_first_steps(name, part):
  history, _ = training_run(name)
  for t in range(STEPS):
    parts = [subtree(history[s].params, part) for s in (t, t + 1)]
    # SwAV renormalises its (unit) prototypes after every step: rounding.
    unchanged = all(np.allclose(a, b, rtol=0, atol=1e-6) for a, b in zip(
        *map(jax.tree.leaves, parts)))
    assert unchanged == (t < FREEZE_STEPS), t


def test_training_warms_the_dino_teacher_temperature_up_linearly():
  _, metrics = training_run("dino")
  for t in range(STEPS):
    np.testing.assert_allclose(metrics[t]["teacher_temp"],
                               0.04 + 0.01 * min(t / 8, 1.0), rtol=1e-6)


def test_training_swav_prototypes_stay_unit_norm_and_the_queue_starts_late():
  history, metrics = training_run("swav")
  for t in range(STEPS + 1):
    kernel = history[t].params[models.PROTOTYPES]["kernel"]
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0,
                               rtol=1e-5)
  for t in range(STEPS):
    # Filled from QUEUE_START on (2 batches), used once full.
    count = int(history[t + 1].method_state.queue.count)
    assert count == min(max(t + 1 - QUEUE_START, 0) * BATCH, 2 * BATCH), t
    assert metrics[t]["queue_in_use"] == float(t >= QUEUE_START + 2), t


# ------------------------------------------------ post-update semantics ---


def target_update(name, state):
  """The `StepOutput.update` a momentum method hands to `post_update`, with
  the target's BatchNorm statistics `state` (and the other parts' inputs)."""
  if name in ("byol", "moco_v3"):
    return state
  if name == "moco_v2":
    return state, jnp.ones((BATCH, 16))
  return DINOUpdate(state, jnp.ones((2, BATCH, TINY["out_dim"])))


@pytest.mark.parametrize("name", MOMENTUM)
def test_post_update_moves_the_target_by_one_minus_momentum(name):
  method, (params, _, method_state) = init(
      name, momentum=momentum_schedule(0.9, 0.99, 10))
  new_params = jax.tree.map(lambda x: x + 1.0, params)
  target_state = jax.tree.map(lambda x: x + 5.0,
                              method_state.target.model_state)
  _, new = method.post_update(new_params, method_state,
                              target_update(name, target_state), 3)
  m = 0.99 - 0.09 * (math.cos(math.pi * 0.3) + 1) / 2
  # θt ← m·θt + (1 − m)·θ, θ the online parameters after the update.
  old = jax.tree.map(np.float64, method_state.target.params)
  online = jax.tree.map(np.float64, {k: new_params[k] for k in old})
  tree_allclose(new.target.params,
                jax.tree.map(lambda t, o: m * t + (1 - m) * o, old, online),
                rtol=1e-5, atol=1e-6)
  tree_allclose(new.target.model_state, target_state)


def queue_update(name, state, rows):
  if name == "moco_v2":
    return state.target.model_state, rows
  return rows


@pytest.mark.parametrize("name", QUEUED)
def test_post_update_pushes_the_rows_into_the_queue(name):
  method, (params, _, state) = init(name, queue_size=3 * BATCH // 2)
  width = state.queue.buffer.shape[1]
  for i in range(2):
    _, state = method.post_update(params, state, queue_update(
        name, state, jnp.full((BATCH, width), float(i + 1))), 0)
  # 2 pushes of 32 rows into 48: rows 0-15 are overwritten by the second.
  assert int(state.queue.ptr) == 16 and int(state.queue.count) == 48
  buffer = np.asarray(state.queue.buffer)
  np.testing.assert_array_equal(buffer[:16], 2.0)
  np.testing.assert_array_equal(buffer[16:32], 1.0)
  np.testing.assert_array_equal(buffer[32:], 2.0)


def test_post_update_dino_center():
  method, (params, _, state) = init("dino", center_momentum=0.9)
  logits = np.random.default_rng(0).normal(size=(2, BATCH, 32))
  center = state.center + 1.0
  _, new = method.post_update(
      params, state._replace(center=center),
      DINOUpdate(state.target.model_state, jnp.asarray(logits, jnp.float32)),
      0)
  want = 0.9 * np.asarray(center) + 0.1 * logits.reshape(-1, 32).mean(axis=0)
  np.testing.assert_allclose(new.center, want, rtol=1e-5, atol=1e-6)


def test_swav_post_update_normalises_the_prototypes_in_place():
  method, (params, _, state) = init("swav")
  kernel = params[models.PROTOTYPES]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-6)
  scaled = {**params, models.PROTOTYPES: {
      "kernel": kernel * jnp.linspace(0.5, 4.0, kernel.shape[1])}}
  rows = jnp.ones((BATCH, state.queue.buffer.shape[1]))
  new_params, _ = method.post_update(scaled, state, rows, 0)
  np.testing.assert_allclose(new_params[models.PROTOTYPES]["kernel"], kernel,
                             rtol=1e-5, atol=1e-7)
  tree_allclose(new_params["backbone"], params["backbone"])


def test_swav_queue_fills_from_its_start_step():
  method, (params, _, state) = init("swav", queue_start_steps=5)
  rows = jnp.ones((BATCH, state.queue.buffer.shape[1]))
  _, before = method.post_update(params, state, rows, 4)
  assert int(before.queue.count) == 0
  _, after = method.post_update(params, state, rows, 5)
  assert int(after.queue.count) == BATCH


def test_swav_freezes_the_prototypes_through_the_optimizer():
  method, (params, _, _) = init("swav", freeze_prototypes_steps=3)
  for step, frozen in ((2, True), (3, False)):
    mask = method.frozen(params, jnp.int32(step))
    assert all(bool(m) == frozen for m in
               jax.tree.leaves(mask[models.PROTOTYPES]))
    assert not any(bool(m) for m in jax.tree.leaves(mask["backbone"]))


# -------------------------------------------- BatchNorm passes and heads ---


def counting_backbone(width=4):
  """A backbone that counts its forward calls and rows in `model_state`;
  features = per-channel image means · a [C, width] kernel."""

  def init_fn(rng, x):
    count = jnp.zeros((), jnp.int32)
    return ({"kernel": jax.random.normal(rng, (x.shape[-1], width))},
            {"calls": count, "rows": count})

  def apply(params, model_state, x, *, train):
    features = jnp.mean(x, axis=(1, 2)) @ params["kernel"]
    if train:
      model_state = {"calls": model_state["calls"] + 1,
                     "rows": model_state["rows"] + x.shape[0]}
    return features, model_state

  return models.Model(init=init_fn, apply=apply)


def counted_loss(name, **overrides):
  """`method.loss` of a method on the counting backbone, jitted."""
  method = build(name, backbone=counting_backbone(), **overrides)
  batch = batches(1)[0]
  params, model_state, state = method.init(jax.random.key(0), batch)
  value, out = jax.jit(method.loss)(params, model_state, state, batch,
                                    jax.random.key(1), 0)
  return method, params, value, out


# (backbone calls, rows) of the online and the momentum network in one loss:
# 2 views of BATCH images, DINO and SwAV 2 global + 2 local crops.
BACKBONE_CALLS = {
    "simclr": (1, 2), "dcl": (1, 2), "supcon": (1, 2), "dino": (2, 4),
    "swav": (2, 4), "byol": (2, 2), "moco_v3": (2, 2), "simsiam": (2, 2),
    "barlow_twins": (2, 2), "vicreg": (2, 2), "nnclr": (2, 2),
    # MoCo v2 (not symmetrised): queries of view 1, keys of view 2.
    "moco_v2": (1, 1)}
TARGET_CALLS = {"byol": (2, 2), "moco_v3": (2, 2), "moco_v2": (1, 1),
                "dino": (1, 2)}


def target_model_state(name, update):
  if name == "moco_v2":
    return update[0]
  return update.target_model_state if name == "dino" else update


@pytest.mark.parametrize("name", NAMES)
def test_views_meet_batchnorm_as_the_official_code(name):
  """Per view: one backbone call per view (BatchNorm statistics per view),
  as the official code; joint: one call per group of equal-sized views."""
  parameters = methods.parameters(methods.get(name))
  if "view_batchnorm" in parameters:
    assert parameters["view_batchnorm"].default == (
        "per_view" if name in PER_VIEW else "joint")
  *_, out = counted_loss(name)

  def counts(model_state):
    return (int(model_state["backbone"]["calls"]),
            int(model_state["backbone"]["rows"]) // BATCH)

  assert counts(out.model_state) == BACKBONE_CALLS[name]
  if name in TARGET_CALLS:
    assert counts(target_model_state(name, out.update)) == TARGET_CALLS[name]


@pytest.mark.parametrize("name, calls", [("moco_v3", 1), ("simsiam", 1),
                                         ("swav", 4)])
def test_the_other_view_batchnorm_option(name, calls):
  other = "joint" if name in PER_VIEW else "per_view"
  *_, out = counted_loss(name, view_batchnorm=other)
  assert int(out.model_state["backbone"]["calls"]) == calls
  if name == "moco_v3":  # the momentum encoder follows the option too
    assert int(out.update["backbone"]["calls"]) == 1


def test_swav_head_batchnorm_spans_all_crops():
  """`src/resnet50.py`: the backbone per crop size, the projection head once
  over all crops, so its first BatchNorm's running mean moves by 0.1 · the
  mean over every crop's hidden activations."""
  augment = cheap_augment("swav")
  method, params, _, out = counted_loss("swav", augment=augment)
  views = _shared.views(augment).make(jax.random.key(1), batches(1)[0])
  kernel = params["backbone"]["kernel"]
  features = np.concatenate([np.mean(v, axis=(1, 2)) @ kernel for v in views])
  hidden = features @ params["projector"]["layers"]["linear0"]["kernel"]
  running = out.model_state["projector"]["layers"]["bn0"]["mean"]
  np.testing.assert_allclose(running, 0.1 * hidden.mean(axis=0), rtol=1e-4,
                             atol=1e-6)
  assert int(out.model_state["backbone"]["calls"]) == 2  # 16² and 8² crops
  del method


def moco_v3_shapes(backbone, **kwargs):
  method = build("moco_v3", backbone=backbone, **kwargs)
  images = jnp.zeros((BATCH, 16, 16, 3), jnp.uint8)
  return method, jax.eval_shape(method.init, jax.random.key(0), images)


def test_moco_v3_heads_follow_the_official_builder():
  vit = {"backbone_kwargs": {"image_size": 16, "patch_size": 4, "depth": 1}}
  for backbone, kwargs, projector_bns, predictor_last_bn in (
      ("tiny_cnn", {}, ["bn0", "bn1"], False),
      ("vit_tiny", vit, ["bn0", "bn1", "bn2"], True)):
    method, (params, model_state, _) = moco_v3_shapes(backbone, **kwargs)
    assert sorted(model_state["projector"]["layers"]) == projector_bns
    assert ("bn1" in model_state["predictor"]["layers"]) == predictor_last_bn
    assert (method.frozen is not None) == (backbone == "vit_tiny")
    if method.frozen is not None:
      mask = method.frozen(params, jnp.int32(10**6))
      frozen_paths = {jax.tree_util.keystr(path) for path, m in
                      jax.tree_util.tree_flatten_with_path(mask)[0] if m}
      assert frozen_paths == {"['backbone']['patch_embed']['bias']",
                              "['backbone']['patch_embed']['kernel']"}
  defaults = methods.parameters(methods.moco_v3)
  assert defaults["momentum"].default == 0.99


def test_moco_v3_settings_follow_the_backbone():
  assert official_settings("vit_small") == dict(
      proj_layers=3, pred_last_bn=True, temperature=0.2, stop_grad_conv1=True)
  assert official_settings(counting_backbone()) == official_settings(
      "resnet50") == dict(proj_layers=2, pred_last_bn=False, temperature=1.0,
                          stop_grad_conv1=False)
  # T = 1.0 on a ResNet-like backbone when T is left to the factory.
  batch = batches(1)[0]
  values = []
  for temperature in (None, 1.0):
    method = build("moco_v3", temperature=temperature)
    params, model_state, state = method.init(jax.random.key(0), batch)
    values.append(jax.jit(method.loss)(params, model_state, state, batch,
                                       jax.random.key(1), 0)[0])
  np.testing.assert_allclose(values[0], values[1], rtol=1e-6)


def test_simsiam_heads_follow_the_official_builder():
  method = build("simsiam", proj_hidden_dim=None)
  params, model_state, _ = jax.eval_shape(method.init, jax.random.key(0),
                                          batches(1)[0])
  layers = params["projector"]["layers"]
  # 3 linear layers at the backbone's width (8), BN without affine last.
  assert [layers[f"linear{i}"]["kernel"].shape for i in range(3)] == [
      (8, 8), (8, 8), (8, TINY["proj_dim"])]
  assert sorted(model_state["projector"]["layers"]) == ["bn0", "bn1", "bn2"]
  assert "bn2" not in layers
  predictor = params["predictor"]["layers"]
  assert predictor["linear0"]["kernel"].shape == (TINY["proj_dim"],
                                                  TINY["pred_hidden_dim"])


@pytest.mark.parametrize("name", GROUP_A)
def test_heads_start_from_pytorch_linear_draws(name):
  """The official heads are `nn.Linear`s: weights and biases U(±1/√fan_in)
  (a LeCun-normal draw exceeds the bound in a third of its entries)."""
  method, (params, model_state, state) = init(name)
  # (SwAV's prototypes are drawn so too, then normalised.)
  for part in ("projector", "predictor"):
    for layer in jax.tree.leaves(params.get(part, {}), is_leaf=lambda x: (
        isinstance(x, dict) and "kernel" in x)):
      if not isinstance(layer, dict):
        continue  # BatchNorm's scale and offset
      bound = 1 / math.sqrt(layer["kernel"].shape[0])
      for leaf in jax.tree.leaves(layer):
        assert np.abs(leaf).max() <= bound and np.abs(leaf).max() > bound / 2
  if name == "moco_v3":  # the momentum encoder starts as a copy
    tree_allclose(state.target.params, {k: params[k] for k in
                                        state.target.params})
  del model_state


def test_supcon_head_has_no_batchnorm_and_keeps_the_backbone_width():
  method = build("supcon", proj_hidden_dim=None)
  params, model_state, _ = jax.eval_shape(method.init, jax.random.key(0),
                                          batches(1)[0])
  assert params["projector"]["layers"]["linear0"]["kernel"].shape == (8, 8)
  assert jax.tree.leaves(model_state["projector"]) == []


# ----------------------------------------- objectives vs numpy references ---


def test_simsiam_objective_is_the_symmetrised_negative_cosine():
  rng = np.random.default_rng(1)
  p, z = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
  value = simsiam_objective(jnp.asarray(p), jnp.asarray(z))
  d = lambda a, b: -np.mean(np.sum(unit(a) * unit(b), axis=1))
  np.testing.assert_allclose(value, 0.5 * d(p[0], z[1]) + 0.5 * d(p[1], z[0]),
                             rtol=1e-5)
  grad_z = jax.grad(simsiam_objective, argnums=1)(jnp.asarray(p),
                                                  jnp.asarray(z))
  assert not np.any(np.asarray(grad_z))


def np_nnclr(anchor, other, support, t):
  anchor, other, support = unit(anchor), unit(other), unit(support)
  nearest = support[np.argmax(anchor @ support.T, axis=1)]
  logits = nearest @ other.T / t
  return np.mean(np_lse(logits) - np.diag(logits))


def test_nnclr_objective_matches_numpy():
  rng = np.random.default_rng(2)
  z, p, support = (rng.normal(size=s) for s in ((2, 6, 4), (2, 6, 4),
                                                 (10, 4)))
  value = nnclr_objective(jnp.asarray(z), jnp.asarray(p), jnp.asarray(support),
                          temperature=0.3)
  want = 0.5 * (np_nnclr(z[0], p[1], support, 0.3)
                + np_nnclr(z[1], p[0], support, 0.3))
  np.testing.assert_allclose(value, want, rtol=1e-5)


def np_supcon(z, labels, t):
  """L^sup_out of [V, B, D] views, anchors in view-major order."""
  n_views, batch, _ = z.shape
  z = unit(z).reshape(n_views * batch, -1)
  labels = np.tile(labels, n_views)
  terms = []
  for i in range(len(z)):
    others = [j for j in range(len(z)) if j != i]
    positives = [j for j in others if labels[j] == labels[i]]
    denominator = np_lse([z[i] @ z[a] / t for a in others])
    terms.append(-np.mean([z[i] @ z[p] / t - denominator for p in positives]))
  return np.mean(terms)


def test_supcon_objective_is_the_official_scaled_loss():
  rng = np.random.default_rng(3)
  z, labels = rng.normal(size=(2, 6, 3)), np.array([0, 1, 0, 2, 1, 2])
  value = supcon_objective(jnp.asarray(z), jnp.asarray(labels),
                           temperature=0.1, base_temperature=0.07)
  np.testing.assert_allclose(value, 0.1 / 0.07 * np_supcon(z, labels, 0.1),
                             rtol=1e-5)


def test_supcon_needs_labels():
  method, (params, model_state, state) = init("supcon")
  with pytest.raises(ValueError, match="label"):
    method.loss(params, model_state, state, {"image": batches(1)[0]["image"]},
                jax.random.key(1), 0)


def test_moco_v3_contrast_matches_numpy():
  rng = np.random.default_rng(4)
  q, k = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  value = contrast(jnp.asarray(q), jnp.asarray(k), temperature=0.2)
  logits = unit(q) @ unit(k).T / 0.2
  np.testing.assert_allclose(
      value, 2 * 0.2 * np.mean(np_lse(logits) - np.diag(logits)), rtol=1e-5)
  for bad, match in (((q[0], k[0]), "query"), ((q, k[:3]), "shapes")):
    with pytest.raises(ValueError, match=match):
      contrast(*bad, temperature=0.2)
  with pytest.raises(ValueError, match="temperature"):
    contrast(q, k, temperature=0.0)
  # No gradient reaches the keys.
  grad_k = jax.grad(lambda k: contrast(jnp.asarray(q), k,
                                               temperature=0.2))(jnp.asarray(k))
  assert not np.any(np.asarray(grad_k))


def np_sinkhorn(scores, epsilon=0.05, iterations=3):
  """`distributed_sinkhorn` of `main_swav.py` on one process."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T  # K × B
  n_prototypes, batch = q.shape
  q /= q.sum()
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True) * n_prototypes
    q /= q.sum(axis=0, keepdims=True) * batch
  return (q * batch).T


def np_swav(scores, queued=None, t=0.1):
  """`main_swav.py`'s loss: codes of crops 0 and 1 (with the queue's scores
  before the batch's), predicted by every other crop."""
  n_views, batch, _ = scores.shape
  total = 0.0
  for i in range(2):
    out = scores[i] if queued is None else np.concatenate([queued[i],
                                                           scores[i]])
    q = np_sinkhorn(out)[-batch:]
    for v in range(n_views):
      if v != i:
        log_p = scores[v] / t - np_lse(scores[v] / t)[:, None]
        total += -np.mean(np.sum(q * log_p, axis=1)) / (n_views - 1)
  return total / 2


@pytest.mark.parametrize("n_views", [2, 4])  # 2 global (+ 2 local) views
def test_swav_objective_matches_the_official_loss(n_views):
  rng = np.random.default_rng(5)
  scores = unit(rng.normal(size=(n_views, 6, 5)))
  queued = unit(rng.normal(size=(2, 4, 5)))
  s, qs = jnp.asarray(scores, jnp.float32), jnp.asarray(queued, jnp.float32)
  np.testing.assert_allclose(swav_objective(s), np_swav(scores), rtol=1e-4)
  np.testing.assert_allclose(swav_objective(s), losses.swav(s), rtol=1e-6)
  np.testing.assert_allclose(swav_objective(s, qs, jnp.bool_(True)),
                             np_swav(scores, queued), rtol=1e-4)
  np.testing.assert_allclose(swav_objective(s, qs, jnp.bool_(False)),
                             np_swav(scores), rtol=1e-4)


def _contrast_of_query(rng):
  """contrast(q, k) as a function of q, the only input with a gradient."""
  key = rng.normal(size=(4, 3))
  fn = lambda q, t: contrast(q, jnp.asarray(key, q.dtype), temperature=t)
  return fn, rng.normal(size=(4, 3)), fn


def _swav_of_scores(rng):
  """The queued SwAV objective as a function of the scores; its gradient is
  that of the cross-entropy with the codes held (they are targets)."""
  scores, queued = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 4, 5))
  codes = np.stack([np_sinkhorn(np.concatenate([queued[i], scores[i]]))[4:]
                    for i in range(2)])
  fn = lambda s, t: swav_objective(s, jnp.asarray(queued, s.dtype),
                                   jnp.bool_(True), temperature=t)
  held = lambda s, t: losses.swapped_prediction(jnp.asarray(codes, s.dtype),
                                                s, temperature=t)
  return fn, scores, held


@pytest.mark.parametrize("make", [_contrast_of_query, _swav_of_scores])
def test_method_objectives_are_stable_and_differentiable(make):
  fn, x, held = make(np.random.default_rng(7))
  with jax.enable_x64(True):
    jax.test_util.check_grads(lambda a: held(a, 0.5), (x,), order=1,
                              modes=["rev"])
    np.testing.assert_allclose(jax.grad(fn)(x, 0.5), jax.grad(held)(x, 0.5),
                               rtol=1e-6, atol=1e-12)
  value32 = fn(jnp.asarray(x, jnp.float32), 0.5)
  value16 = jax.jit(fn, static_argnums=1)(jnp.asarray(x, jnp.bfloat16), 0.5)
  assert value16.dtype == jnp.float32
  np.testing.assert_allclose(value16, value32, rtol=3e-2)
  for temperature in (1e-3, 1e3):
    for inputs in (np.zeros_like(x), x):
      value, grad = jax.value_and_grad(fn)(jnp.asarray(inputs, jnp.float32),
                                           temperature)
      assert np.isfinite(value) and np.all(np.isfinite(grad))


def projections(method_name, **overrides):
  """(loss, [2, B, D] projections recomputed by hand) of a method on the
  counting backbone: each view through the backbone and the 3-layer
  projector on its own, BatchNorm in training mode."""
  augment = cheap_augment(method_name)
  method, params, value, _ = counted_loss(method_name, augment=augment,
                                          **overrides)
  views = _shared.views(augment).make(jax.random.key(1), batches(1)[0])
  projector = models.projector(None, TINY["proj_hidden_dim"],
                               TINY["proj_dim"], num_layers=3)
  _, state = projector.init(jax.random.key(0), jnp.zeros((1, 4)))
  z = [projector.apply(params["projector"], state,
                       jnp.mean(v, axis=(1, 2)) @ params["backbone"]["kernel"],
                       train=True)[0] for v in views]
  del method
  return value, np.asarray(z, np.float64)


def test_barlow_twins_loss_is_the_official_objective_of_each_view():
  value, z = projections("barlow_twins", lambda_=0.02, scale=0.5)
  z1, z2 = ((x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) for x in z)
  c = z1.T @ z2 / len(z1)
  off = c - np.diag(np.diag(c))
  np.testing.assert_allclose(
      value, 0.5 * (np.sum((1 - np.diag(c)) ** 2) + 0.02 * np.sum(off ** 2)),
      rtol=1e-4)


def test_vicreg_loss_is_the_official_objective_of_each_view():
  value, z = projections("vicreg", sim_weight=2.0, var_weight=3.0,
                         cov_weight=0.5)

  def regularisers(x):
    x = x - x.mean(0)
    cov = x.T @ x / (len(x) - 1)
    std = np.sqrt(np.diag(cov) + 1e-4)
    off = cov - np.diag(np.diag(cov))
    return np.mean(np.maximum(0, 1 - std)), np.sum(off ** 2) / x.shape[1]

  (v1, c1), (v2, c2) = regularisers(z[0]), regularisers(z[1])
  want = (2.0 * np.mean((z[0] - z[1]) ** 2) + 3.0 * (v1 + v2) / 2
          + 0.5 * (c1 + c2))
  np.testing.assert_allclose(value, want, rtol=1e-4)


# --------------------------------------------------- factories' checks ---

BAD_HYPER_PARAMETERS = [
    ("moco_v3", dict(temperature=0.0), "temperature"),
    ("moco_v3", dict(momentum=1.5), "momentum"),
    ("moco_v3", dict(momentum="cosine"), "momentum"),
    ("moco_v3", dict(proj_layers=0), "proj_layers"),
    ("moco_v3", dict(stop_grad_conv1=True), "stop_grad_conv1"),
    ("moco_v3", dict(view_batchnorm="both"), "view_batchnorm"),
    ("simsiam", dict(proj_dim=0), "proj_dim"),
    ("simsiam", dict(proj_hidden_dim=-1), "proj_hidden_dim"),
    ("simsiam", dict(pred_hidden_dim=2.5), "pred_hidden_dim"),
    ("barlow_twins", dict(lambda_=-1.0), "lambda_"),
    ("barlow_twins", dict(scale=0.0), "scale"),
    ("vicreg", dict(cov_weight=-1.0), "cov_weight"),
    ("vicreg", dict(proj_hidden_dim=0), "proj_hidden_dim"),
    ("nnclr", dict(queue_size=0), "queue_size"),
    ("nnclr", dict(temperature=-0.1), "temperature"),
    ("supcon", dict(base_temperature=0.0), "base_temperature"),
    ("supcon", dict(temperature=0.0), "temperature"),
    ("swav", dict(epsilon=0.0), "epsilon"),
    ("swav", dict(sinkhorn_iters=0), "sinkhorn_iters"),
    ("swav", dict(queue_size=-1), "queue_size"),
    ("swav", dict(freeze_prototypes_steps=1.5), "freeze_prototypes_steps"),
    ("swav", dict(num_prototypes=0), "num_prototypes"),
    ("swav", dict(augment={"preset": "none"}), "augment"),
    ("swav", dict(view_batchnorm="global"), "view_batchnorm"),
    ("simclr", dict(view_batchnorm="global"), "view_batchnorm"),
]


@pytest.mark.parametrize("name, kwargs, match", BAD_HYPER_PARAMETERS,
                         ids=[f"{n}-{m}" for n, _, m in BAD_HYPER_PARAMETERS])
def test_bad_hyper_parameters_raise_when_the_factory_is_called(name, kwargs,
                                                              match):
  with pytest.raises(ValueError, match=f"`{match}`"):
    build(name, **kwargs)


# ------------------------------------------------------ shared plumbing ---


def test_forward_groups_equal_sized_views_and_stacks_the_outputs():
  net = models.compose(models.get("tiny_cnn"),
                       projector=models.projector(None, 32, 16))
  rng = np.random.default_rng(6)
  views = [jnp.asarray(rng.normal(size=(3, s, s, 1)), jnp.float32)
           for s in (16, 16, 8)]
  params, model_state = net.init(jax.random.key(0), views[0])
  out, state = _shared.forward(net, params, model_state, views, joint=True,
                               train=False)
  assert out["projection"].shape == (3, 3, 16)
  for v, view in enumerate(views):
    single, _ = net.apply(params, model_state, view, train=False)
    np.testing.assert_allclose(out["projection"][v], single["projection"],
                               rtol=1e-5, atol=1e-6)
  tree_allclose(state, model_state)


def test_queue_rows_and_queue_views_are_inverse():
  views = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  rows = _shared.queue_rows(views)
  np.testing.assert_array_equal(rows[1], np.concatenate([views[0, 1],
                                                         views[1, 1]]))
  q = queue.push(queue.init(3, 8), rows)
  np.testing.assert_array_equal(_shared.queue_views(q.buffer, 2), views)


def test_augment_config_rejects_overrides_the_preset_lacks():
  with pytest.raises(ValueError, match="num_local"):
    _shared.augment_config("byol", num_local=2)
  assert "num_local" in _shared.augment_config("multicrop")


def test_encode_returns_eval_features_of_raw_or_normalised_images():
  method, (params, model_state, state) = init("byol")
  images = toy_images()[0][:4]
  features = method.encode(params, model_state, state, jnp.asarray(images))
  assert features.shape == (4, 8)
  normalised = (images / 255.0 - 0.1307) / 0.3081
  again = method.encode(params, model_state, state,
                        jnp.asarray(normalised, jnp.float32))
  np.testing.assert_allclose(features, again, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ("simclr", "swav"))
def test_bfloat16_compute_gives_a_close_float32_loss(name):
  values = {}
  for dtype in ("float32", "bfloat16"):
    method, (params, model_state, state) = init(name, dtype=dtype)
    value = jax.jit(method.loss)(params, model_state, state, batches(1)[0],
                                 jax.random.key(1), 0)[0]
    assert value.dtype == jnp.float32 and np.isfinite(value)
    values[dtype] = float(value)
  np.testing.assert_allclose(values["bfloat16"], values["float32"], rtol=5e-2)


# ------------------------------------------------------------ checkpoints ---

# One method per kind of state: (), the EMA target, target and queue,
# target and centre, the support set, SwAV's queue and none.
CHECKPOINTED = {"simsiam": {}, "moco_v3": {}, "moco_v2": {}, "dino": {},
                "nnclr": {}, "swav": {},
                "swav_without_queue": {"queue_size": 0}}


def test_method_states_round_trip_through_an_orbax_checkpoint(tmp_path):
  states = {}
  for key, overrides in CHECKPOINTED.items():
    name = key.split("_without")[0]
    method = build(name, **overrides)
    states[key] = method.init(jax.random.key(1), batches(1)[0])[2]
  config = ml_collections.ConfigDict({"seed": 0})
  with checkpoint.Checkpointer(str(tmp_path)) as saver:
    saver.save(1, states, {"position": 0}, config)
  with checkpoint.Checkpointer(str(tmp_path)) as loader:
    restored, _ = loader.restore(config, jax.eval_shape(lambda: states),
                                 data=False)
  for key, state in states.items():
    assert type(restored[key]) is type(state), key
    tree_allclose(restored[key], state)
  assert restored["swav_without_queue"].queue is None


# ---------------------------------------------------------------- configs ---


def config_module(name):
  return importlib.import_module(f"configs.{name}")


@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_for_every_preset(name):
  module = config_module(name)
  assert module.get_config().dataset.name == "mnist5k"
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    steps_per_epoch = config.dataset.train_size // config.batch_size
    assert config.total_steps == int(config.total_epochs * steps_per_epoch)
    # imagefolder's size is read from the folder (`resolve_dataset`).
    assert (0 <= config.optimizer.warmup_steps < config.total_steps
            or preset == "imagefolder")
    assert config.optimizer.name in ("lars", "sgd", "adamw")
    assert config.compute_dtype in ("float32", "bfloat16")
    assert set(config.method) - {"name"} <= set(
        methods.parameters(methods.get(name)))
    assert methods.build(config).name == name
  if name in GROUP_A:
    assert f"docs/fidelity.md#{name}" in module.__doc__


@pytest.mark.parametrize("name", methods.names())
def test_configs_fit_a_short_run(name, caplog):
  """`--config.total_steps=N` shorter than the epoch-counted settings: they
  shrink with the run, one log line says which, and the method and
  optimizer still build (imagefolder's run has no size before its folder
  is scanned: test_imagefolder_cli trains it)."""
  for preset in set(common.PRESETS) - {"imagefolder"}:
    for steps in (1, 5):
      config = config_module(name).get_config(preset)
      config.total_steps = steps
      caplog.clear()
      fitted = fit_to_run(config)
      longer = [key for key in config.get("epoch_settings", ())
                if subtree(config, key.split(".")) > steps]
      for key in longer:
        assert 0 <= subtree(fitted, key.split(".")) <= steps, key
      said = [r.getMessage() for r in caplog.records
              if "shrunk with the run" in r.getMessage()]
      assert len(said) == (1 if longer else 0), (preset, steps)
      for key in longer:
        assert key in said[0], (preset, steps, key)
      train.learning_rate_schedule(fitted)
      assert methods.build(fitted).name == name


@pytest.mark.parametrize("name", ["simclr", "dcl", "moco_v2", "moco_v3",
                                  "byol", "simsiam", "barlow_twins",
                                  "vicreg", "nnclr", "supcon", "swav",
                                  "dino"])
def test_imagenet100_trains_at_solo_learns_global_batch(name):
  """solo-learn's `scripts/pretrain/imagenet-100/*.yaml` give `batch_size:
  128` per GPU on `devices: [0, 1]`, a global batch of 256 (its rate scales
  with batch_size × devices / 256); CIFAR's 256 are on one GPU."""
  for preset in ("imagenet100", "cifar10"):
    assert config_module(name).get_config(preset).batch_size == 256, preset


def test_lars_applies_the_rate_where_each_official_code_does():
  """After the momentum in PyTorch's order (BYOL's `scale_by_lars` then the
  rate, the LARS of Barlow Twins, VICReg and MoCo v3, SwAV's LARC over SGD,
  solo-learn's LARS for every cifar and imagenet100 preset), before it in
  SimCLR's TF LARS (and so DCL's, NNCLR's and SupCon's ImageNet presets)."""
  after = ("byol", "barlow_twins", "vicreg", "moco_v3", "swav")
  for name in (*after, "simclr", "dcl", "nnclr", "supcon"):
    module = config_module(name)
    for preset in ("cifar10", "imagenet100"):
      assert module.get_config(preset).optimizer.lars_rate_after_momentum
    assert module.get_config(
        "imagenet2012").optimizer.lars_rate_after_momentum == (name in after)


def test_official_recipes_of_group_a():
  """The parameter groups and settings of the official code (see
  docs/fidelity.md), preset by preset."""
  simsiam_ = {p: config_module("simsiam").get_config(p)
              for p in common.PRESETS}
  for preset, config in simsiam_.items():
    assert tuple(config.optimizer.constant_lr_parts) == ("predictor",)
    assert config.optimizer.exclude_bias_and_norm == (
        config.optimizer.name != "sgd"), preset
  assert simsiam_["imagenet2012"].method.proj_hidden_dim == 2048
  barlow = config_module("barlow_twins").get_config("imagenet2012")
  assert (barlow.optimizer.learning_rate, barlow.optimizer.bias_lr_scale,
          barlow.optimizer.weight_decay, barlow.batch_size) == (
              0.2, 0.0048 / 0.2, 1e-6, 2048)
  assert barlow.optimizer.exclude_bias_and_norm
  assert (barlow.method.lambda_, barlow.method.scale) == (0.0051, 1.0)
  assert (barlow.method.proj_hidden_dim, barlow.method.proj_dim) == (8192,
                                                                     8192)
  swav_ = config_module("swav").get_config("imagenet2012")
  assert not swav_.optimizer.exclude_bias_and_norm
  assert (swav_.method.freeze_prototypes_steps, swav_.method.queue_size,
          swav_.method.view_batchnorm) == (313, 0, "joint")
  for preset in ("cifar10", "imagenet100"):
    config = config_module("swav").get_config(preset)
    assert config.method.view_batchnorm == "per_view"
    assert config.method.augment.blur_prob == 0.5
  for preset in ("cifar10", "imagenet100"):
    config = config_module("supcon").get_config(preset)
    assert config.method.view_batchnorm == "per_view"
    assert config.method.base_temperature == config.method.temperature
    assert (config.method.augment.brightness, config.method.augment.blur_prob
            ) == (0.8, 0.5)
    for name in ("simclr", "dcl"):  # solo-learn's views, one at a time
      assert config_module(name).get_config(
          preset).method.view_batchnorm == "per_view", (name, preset)
  for name in ("simclr", "dcl"):  # the official TF code concatenates
    for preset in ("imagenet2012", "mnist5k"):
      assert config_module(name).get_config(
          preset).method.view_batchnorm == "joint", (name, preset)
  for name in ("simclr", "byol", "moco_v3", "dino"):
    # Biases and norm parameters without weight decay and LARS adaptation.
    assert config_module(name).get_config(
        "imagenet2012").optimizer.exclude_bias_and_norm, name
  moco = config_module("moco_v3").get_config("imagenet2012")
  assert moco.method.temperature == 1.0
  assert dict(moco.method.momentum) == {"schedule": "cosine", "base": 0.99,
                                        "final": 1.0,
                                        "steps": moco.total_steps}
  assert moco.method.augment.scale == (0.2, 1.0)
  vicreg_ = config_module("vicreg").get_config("imagenet2012")
  assert (vicreg_.optimizer.learning_rate, vicreg_.optimizer.weight_decay,
          vicreg_.batch_size) == (0.2, 1e-6, 2048)
  for name in ("simsiam", "barlow_twins", "vicreg"):
    kwargs = config_module(name).get_config("imagenet2012").method
    assert kwargs.backbone_kwargs.zero_init_residual


def test_factory_defaults_are_the_official_ones():
  def defaults(factory):
    return {k: p.default for k, p in methods.parameters(factory).items()}
  swav_ = defaults(methods.swav)
  assert {k: swav_[k] for k in ("num_prototypes", "proj_dim",
                                "proj_hidden_dim", "temperature", "epsilon",
                                "sinkhorn_iters", "freeze_prototypes_steps")
          } == dict(num_prototypes=3000, proj_dim=128, proj_hidden_dim=2048,
                    temperature=0.1, epsilon=0.05, sinkhorn_iters=3,
                    freeze_prototypes_steps=313)
  specs = _shared.views(swav_["augment"]).specs(224)
  assert [(s.size, s.scale) for s in specs] == (
      [(224, (0.14, 1.0))] * 2 + [(96, (0.05, 0.14))] * 6)
  for spec in specs:  # SwAV's own colour distortion on every crop
    assert (spec.brightness, spec.contrast, spec.saturation, spec.hue,
            spec.jitter_prob, spec.grayscale_prob, spec.blur_prob,
            spec.solarize_prob) == (0.8, 0.8, 0.8, 0.2, 0.8, 0.2, 0.5, 0.0)
  assert {k: defaults(methods.barlow_twins)[k] for k in (
      "lambda_", "scale", "proj_dim")} == dict(lambda_=0.0051, scale=1.0,
                                               proj_dim=8192)
  assert {k: defaults(methods.vicreg)[k] for k in (
      "sim_weight", "var_weight", "cov_weight", "proj_hidden_dim")} == dict(
          sim_weight=25.0, var_weight=25.0, cov_weight=1.0,
          proj_hidden_dim=8192)
  assert {k: defaults(methods.simsiam)[k] for k in (
      "proj_hidden_dim", "proj_dim", "pred_hidden_dim")} == dict(
          proj_hidden_dim=None, proj_dim=2048, pred_hidden_dim=512)
  assert {k: defaults(methods.supcon)[k] for k in (
      "temperature", "base_temperature", "proj_dim", "view_batchnorm")} == dict(
          temperature=0.1, base_temperature=0.07, proj_dim=128,
          view_batchnorm="joint")
  (spec, _) = _shared.views(defaults(methods.supcon)["augment"]).specs(32)
  assert (spec.scale, spec.brightness, spec.contrast, spec.saturation,
          spec.hue, spec.blur_prob) == ((0.2, 1.0), 0.4, 0.4, 0.4, 0.1, 0.0)
  assert {k: defaults(methods.nnclr)[k] for k in (
      "temperature", "queue_size", "proj_dim", "pred_hidden_dim")} == dict(
          temperature=0.1, queue_size=98304, proj_dim=256,
          pred_hidden_dim=4096)


def test_config_overrides_are_typed_and_epochs_follow_the_batch():
  config = config_module("dino").get_config(
      "cifar10,batch_size=500,total_epochs=3,method.student_temp=0.2,"
      "method.augment.global_scale=(0.3,1.0),optimizer.name=sgd")
  assert config.batch_size == 500 and config.total_steps == 300
  assert config.method.student_temp == 0.2
  assert tuple(config.method.augment.global_scale) == (0.3, 1.0)
  assert config.optimizer.name == "sgd"
  # 1 epoch frozen, 10 of warm-up: 100 steps each at 500 images a step.
  assert config.method.freeze_last_layer_steps == 100
  assert config.optimizer.warmup_steps == 1000
  config.batch_size = 250  # as an ml_collections flag would, after the fact
  assert config.total_steps == 600
  assert config.method.freeze_last_layer_steps == 200
  config.total_steps = 7  # set by hand, it stops following
  config.batch_size = 100
  assert config.total_steps == 7


@pytest.mark.parametrize("arg, match", [
    ("cifar10,method.nope=1", "method.nope"),
    ("cifar10,nope.deeper=1", "nope.deeper"),
    ("cifar10,batch_size=big", "batch_size"),
    ("cifar10,method.temperature=(1,2)", "method.temperature"),
    ("svhn", "preset"),
    ("batch_size=3", "preset"),
])
def test_config_errors_name_the_key(arg, match):
  with pytest.raises(ValueError, match=match):
    config_module("simclr").get_config(arg)


def test_configs_are_locked():
  config = config_module("byol").get_config("mnist5k")
  with pytest.raises(AttributeError):
    config.method.not_a_field = 1


def test_a_short_mnist5k_run_through_the_training_loop(tmp_path):
  """`train.train` on the real mnist5k recipe of SwAV, shortened to 3 steps
  (`--config.total_steps=3`): its queue start and frozen prototypes shrink
  with the run, the loop runs the method's post-update and freeze."""
  config = config_module("swav").get_config(
      "mnist5k,batch_size=16,method.backbone_kwargs.widths=(8,8),"
      "method.backbone_kwargs.strides=(1,2),"
      "method.backbone_kwargs.pooling='avg',method.proj_hidden_dim=16,"
      "method.proj_dim=8,method.num_prototypes=10,method.queue_size=16")
  config.total_steps = 3
  config.checkpoint_every = 3
  config.log_every = 1
  batches_ = data.load("mnist5k", "train", batch_size=16, seed=0,
                       data_dir=str(tmp_path / "data"))
  metrics = train.train(config, str(tmp_path / "run"), data=batches_)
  assert metrics["step"] == 3 and np.isfinite(metrics["loss"])
  records = train.read_metrics(str(tmp_path / "run"))
  assert [r["step"] for r in records] == [1, 2, 3]
  # The queue's start (5 of 30 epochs) shrinks to step 1 of 3: one batch
  # fills it, the last step uses it.
  assert [r["queue_in_use"] for r in records] == [0.0, 0.0, 1.0]
  state = train.restore_state(config, str(tmp_path / "run"),
                              image_shape=(28, 28, 1))
  kernel = state.params[models.PROTOTYPES]["kernel"]
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)
