"""ssljax.methods: the registry, every method training on toy images, the
post-update semantics (EMA, queue, center), frozen and normalised heads, the
objectives against numpy references, and the experiment configs.

References are written from the papers' formulas with explicit loops. Shapes
are tiny (16×16 images, a CNN of 8 channels, heads of 16-32 units): most of
the file's two minutes of CPU time is compiling one train step per method.
"""

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
from ssljax import methods, train
from ssljax.losses import clustering
from ssljax.methods import (_shared, barlow_twins, dino, moco_v3, simclr,
                            simsiam, supcon, swav, vicreg)
from ssljax.state import queue
from ssljax.state._sinkhorn import sinkhorn

NAMES = ("simclr", "moco_v2", "moco_v3", "byol", "simsiam", "barlow_twins",
         "vicreg", "dino", "swav", "nnclr", "supcon")
MOMENTUM = ("moco_v2", "moco_v3", "byol", "dino")
QUEUED = ("moco_v2", "nnclr", "swav")
BATCH = 32

# Tiny sizes for every method field that exists in its default config.
TINY = dict(backbone="tiny_cnn", proj_hidden_dim=32, proj_dim=16,
            pred_hidden_dim=32, queue_size=2 * BATCH, out_dim=32,
            hidden_dim=32, bottleneck_dim=16, num_prototypes=16)
# Learning rates (base, per 256 images) that make the toy loss go down in a
# few steps with Adam.
LEARNING_RATE = dict(barlow_twins=2e-2, vicreg=2e-2, dino=3e-2, swav=2e-2)


def toy_images(n=2 * BATCH, size=16, seed=0):
  """Toy images of 4 shapes, labels cycling 0..3."""
  return shape_images(np.arange(n) % 4, size, seed)


def batches(n_steps):
  return alternating_batches(*toy_images(), BATCH, n_steps)


def tiny_config(name, **method_fields) -> ml_collections.ConfigDict:
  """A toy experiment config for `name` on one device, with Adam."""
  method = methods.get(name)
  config = ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, seed=0, mesh=dict(data=1),
      compute_dtype="float32", method=method.default_config(),
      optimizer=dict(name="adamw", learning_rate=LEARNING_RATE.get(name, 3e-3),
                     weight_decay=0.0, momentum=0.9, warmup_steps=0)))
  for key, value in TINY.items():
    if key in config.method:
      config.method[key] = value
  if config.method.augment.preset == "multicrop":
    config.method.augment.num_local = 2
  config.method.update(method_fields)
  return config


def init_state(config, mesh):
  method = methods.get(config.method.name)
  tx = train.make_optimizer(config, trainable=method.optimizer_mask)
  state = train.create_train_state(config, method, jax.random.key(config.seed),
                                   jnp.zeros((BATCH, 16, 16, 1), jnp.uint8),
                                   tx)
  return jax.device_put(state, train.replicated(mesh)), tx


def run_steps(config, steps):
  """Host copies of the states before/after each step, and the metrics."""
  mesh = train.make_mesh(config)
  state, tx = init_state(config, mesh)
  step_fn = train.make_train_step(config, methods.get(config.method.name), tx,
                                  mesh)
  history, metrics = [jax.device_get(state)], []
  for batch in steps:
    state, m = step_fn(state, jax.device_put(batch, train.data_sharded(mesh)))
    history.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return history, metrics


def tree_allclose(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), **tol), a, b)


def numpy_cosine_momentum(t, total, base, final):
  progress = min(t / total, 1.0)
  return final - (final - base) * (math.cos(math.pi * progress) + 1) / 2


# --------------------------------------------------------------- registry ---


def test_registry_lists_every_method():
  # The pretext methods are checked in test_methods_pretext.py.
  assert set(NAMES) <= set(methods.names())
  for name in NAMES:
    method = methods.get(name)
    assert method.name == name
    assert method.default_config().name == name


def test_registry_rejects_unknown_names_and_lists_valid_ones():
  with pytest.raises(ValueError, match="'simclr2'") as info:
    methods.get("simclr2")
  for name in NAMES:
    assert name in str(info.value)


# ----------------------------------------------------------- training runs ---

STEPS = 16
FREEZE_STEPS = 4  # DINO's last layer and SwAV's prototypes, in the runs


@pytest.mark.parametrize("name", NAMES)
def test_training_steps_lower_the_loss_and_update_the_state(name):
  """16 Adam steps on toy images: finite losses that go down, and the
  method's state advancing as the paper says."""
  config = tiny_config(name, **{
      # DINO's center is held (it is tested on its own below): as it learns
      # the batch mean, the teacher's targets get flatter and the loss rises
      # for reasons other than learning.
      "dino": dict(freeze_last_layer_steps=FREEZE_STEPS, center_momentum=1.0),
      "swav": dict(freeze_prototypes_steps=FREEZE_STEPS),
  }.get(name, {}))
  history, metrics = run_steps(config, batches(STEPS))
  losses = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(losses)), losses
  # Queued methods start from random unit negatives, easier than the real
  # ones that fill the queue (2 batches) in the first two steps.
  start = 2 if name in QUEUED else 0
  assert losses[-4:].mean() < losses[start:start + 4].mean(), losses
  assert int(history[-1].step) == STEPS

  for t in range(STEPS):
    before, after = history[t].method_state, history[t + 1].method_state
    if name in MOMENTUM:
      # θt ← m·θt + (1 − m)·θ with the new online parameters.
      m = numpy_cosine_momentum(t, config.total_steps,
                                config.method.base_momentum,
                                config.method.final_momentum)
      np.testing.assert_allclose(metrics[t]["momentum"], m, rtol=1e-6)
      online = {k: history[t + 1].params[k] for k in before.target.params}
      want = jax.tree.map(lambda tgt, o: m * tgt + (1 - m) * o,
                          jax.tree.map(np.float64, before.target.params),
                          jax.tree.map(np.float64, online))
      tree_allclose(after.target.params, want, rtol=1e-5, atol=1e-7)
    if name in QUEUED:
      size = before.queue.buffer.shape[0]
      assert int(after.queue.ptr) == (int(before.queue.ptr) + BATCH) % size
      assert int(after.queue.count) == min(int(before.queue.count) + BATCH,
                                           size)
    frozen_part = {"dino": ("projector", "last_layer"),
                   "swav": ("prototypes",)}.get(name)
    if frozen_part:
      # No gradient for FREEZE_STEPS steps (so no Adam update: weight decay
      # is 0 here), then trained.
      parts = [functools.reduce(lambda tree, key: tree[key], frozen_part,
                                history[s].params) for s in (t, t + 1)]
      unchanged = all(np.array_equal(a, b) for a, b in zip(
          *map(jax.tree.leaves, parts)))
      assert unchanged == (t < FREEZE_STEPS), t
    if name == "swav":
      # The queue (2 batches) joins the Sinkhorn step once it is full.
      assert metrics[t]["queue_in_use"] == float(t >= 2)


# ------------------------------------------------ post-update semantics ---


def _init(name, **method_fields):
  config = tiny_config(name, **method_fields)
  images = jnp.asarray(toy_images()[0][:BATCH])
  return config, methods.get(name).init(config, jax.random.key(0), images)


@pytest.mark.parametrize("name", MOMENTUM)
def test_post_update_moves_the_target_by_one_minus_momentum(name):
  config, (params, model_state, method_state) = _init(
      name, base_momentum=0.9, final_momentum=0.99)
  config.total_steps = 10
  new_params = jax.tree.map(lambda x: x + 1.0, params)
  target_state = jax.tree.map(lambda x: x + 5.0,
                              method_state.target.model_state)
  update = {"target_model_state": target_state}
  if method_state.queue is not None:
    update["queue"] = jnp.ones((BATCH, method_state.queue.buffer.shape[1]))
  if method_state.center is not None:
    update["teacher_logits"] = jnp.ones((2, BATCH, config.method.out_dim))
  new = methods.get(name).post_update(config, new_params, method_state,
                                      update, 3)
  m = 0.99 - 0.09 * (math.cos(math.pi * 0.3) + 1) / 2
  moved = jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b),
                       new.target.params, method_state.target.params)
  # Target and online start equal, the online moved by 1: θt moves 1 − m.
  for leaf in jax.tree.leaves(moved):
    np.testing.assert_allclose(leaf, 1 - m, rtol=1e-5)
  tree_allclose(new.target.model_state, target_state)


@pytest.mark.parametrize("name", QUEUED)
def test_post_update_pushes_the_keys_into_the_queue(name):
  config, (params, _, state) = _init(name, queue_size=3 * BATCH // 2)
  width = state.queue.buffer.shape[1]
  keys = [jnp.full((BATCH, width), float(i + 1)) for i in range(2)]
  post = methods.get(name).post_update
  extra = {"target_model_state": state.target and state.target.model_state}
  for k in keys:
    state = post(config, params, state, {**extra, "queue": k}, 0)
  # 2 pushes of 32 rows into 48: rows 0-15 are overwritten by the second.
  assert int(state.queue.ptr) == 16 and int(state.queue.count) == 48
  buffer = np.asarray(state.queue.buffer)
  np.testing.assert_array_equal(buffer[:16], 2.0)
  np.testing.assert_array_equal(buffer[16:32], 1.0)
  np.testing.assert_array_equal(buffer[32:], 2.0)


def test_post_update_dino_center():
  config, (params, _, state) = _init("dino", center_momentum=0.9)
  logits = np.random.default_rng(0).normal(size=(2, BATCH, 32))
  center = state.center + 1.0
  new = dino.METHOD.post_update(
      config, params, state._replace(center=center),
      {"target_model_state": state.target.model_state,
       "teacher_logits": jnp.asarray(logits, jnp.float32)}, 0)
  want = 0.9 * np.asarray(center) + 0.1 * logits.reshape(-1, 32).mean(axis=0)
  np.testing.assert_allclose(new.center, want, rtol=1e-5, atol=1e-6)


def test_dino_teacher_temperature_warms_up_linearly():
  config = tiny_config("dino", teacher_temp_warmup_steps=20)
  for t in (0, 5, 19, 20, 33):
    want = 0.04 + 0.03 * min(t / 20, 1.0)
    np.testing.assert_allclose(dino.teacher_temperature(config, t), want,
                               rtol=1e-6)
  config.method.teacher_temp_warmup_steps = 0
  np.testing.assert_allclose(dino.teacher_temperature(config, 0), 0.07)


# --------------------------------------------------- frozen, normalised ---


def test_swav_scores_use_normalised_prototypes():
  """Rescaling each stored prototype leaves the loss unchanged: the scores
  use C / ||C||, so the prototypes in use always have unit norm."""
  config, (params, model_state, method_state) = _init("swav")
  loss = jax.jit(lambda p: swav.METHOD.loss(
      config, p, model_state, method_state, batches(1)[0], jax.random.key(1),
      0)[0])
  kernel = params["prototypes"]["kernel"]
  scaled = {**params, "prototypes": {
      "kernel": kernel * jnp.linspace(0.5, 4.0, kernel.shape[1])}}
  np.testing.assert_allclose(loss(scaled), loss(params), rtol=1e-5)


# ----------------------------------------- objectives vs numpy references ---


def _online(**outputs):
  return _shared.Online(views=(), outputs={k: jnp.asarray(v, jnp.float32)
                                           for k, v in outputs.items()},
                        model_state={}, labels=None)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_simclr_objective_is_nt_xent_over_both_views():
  z = np.random.default_rng(0).normal(size=(2, 4, 3))
  config = tiny_config("simclr", temperature=0.5)
  value = simclr.objective(config, _online(projection=z))
  u = _unit(np.concatenate([z[0], z[1]]))
  n, total = 4, 0.0
  for i in range(2 * n):
    positive = (i + n) % (2 * n)
    logits = [u[i] @ u[j] / 0.5 for j in range(2 * n) if j != i]
    total += -u[i] @ u[positive] / 0.5 + np.log(np.sum(np.exp(logits)))
  np.testing.assert_allclose(value, total / (2 * n), rtol=1e-5)


def test_simsiam_objective_is_the_symmetrised_negative_cosine():
  rng = np.random.default_rng(1)
  p, z = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
  value = simsiam.objective(tiny_config("simsiam"),
                            _online(prediction=p, projection=z))
  d = lambda a, b: -np.mean(np.sum(_unit(a) * _unit(b), axis=1))
  np.testing.assert_allclose(value, 0.5 * d(p[0], z[1]) + 0.5 * d(p[1], z[0]),
                             rtol=1e-5)


def test_barlow_twins_and_vicreg_objectives_use_their_weights():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(2, 6, 4))
  run = _online(projection=z)
  full = barlow_twins.objective(tiny_config("barlow_twins", scale=1.0), run)
  scaled = barlow_twins.objective(tiny_config("barlow_twins", scale=0.1), run)
  np.testing.assert_allclose(scaled, 0.1 * full, rtol=1e-5)
  invariance = vicreg.objective(
      tiny_config("vicreg", sim_weight=2.0, var_weight=0.0, cov_weight=0.0),
      run)
  np.testing.assert_allclose(invariance, 2.0 * np.mean((z[0] - z[1]) ** 2),
                             rtol=1e-5)


def test_supcon_needs_labels_and_uses_them():
  z = np.random.default_rng(3).normal(size=(2, 4, 3))
  config = tiny_config("supcon")
  with pytest.raises(ValueError, match="label"):
    supcon.objective(config, _online(projection=z))
  by_label = [supcon.objective(config, _online(projection=z)._replace(
      labels=jnp.asarray(labels))) for labels in ([0, 0, 1, 1], [0, 1, 2, 3])]
  assert np.isfinite(by_label).all() and not np.isclose(*by_label)


def test_moco_v3_contrast_matches_numpy():
  rng = np.random.default_rng(4)
  q, k = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
  value = moco_v3.contrast(jnp.asarray(q), jnp.asarray(k), temperature=0.2)
  qn, kn = _unit(q), _unit(k)
  terms = [-qn[i] @ kn[i] / 0.2 + np.log(sum(np.exp(qn[i] @ kn[j] / 0.2)
                                            for j in range(5)))
           for i in range(5)]
  np.testing.assert_allclose(value, 2 * 0.2 * np.mean(terms), rtol=1e-5)
  for bad, match in (((q[0], k[0]), "query"), ((q, k[:3]), "shapes")):
    with pytest.raises(ValueError, match=match):
      moco_v3.contrast(*bad, temperature=0.2)
  with pytest.raises(ValueError, match="temperature"):
    moco_v3.contrast(q, k, temperature=0.0)
  # No gradient reaches the keys.
  grad_k = jax.grad(lambda k: moco_v3.contrast(jnp.asarray(q), k,
                                               temperature=0.2))(jnp.asarray(k))
  assert not np.any(np.asarray(grad_k))


@pytest.mark.parametrize("n_views", [2, 4])  # 2 global (+ 2 local) views
def test_swav_swapped_prediction_matches_numpy_and_the_swav_loss(n_views):
  rng = np.random.default_rng(5)
  scores = rng.normal(size=(n_views, 6, 5))
  codes = np.asarray(jax.vmap(sinkhorn)(jnp.asarray(scores[:2], jnp.float32)))
  value = swav.swapped_prediction(jnp.asarray(codes), jnp.asarray(scores),
                                  temperature=0.1)
  total = 0.0
  for i in range(2):
    for v in range(n_views):
      if v != i:
        log_p = scores[v] / 0.1 - np.log(np.sum(np.exp(scores[v] / 0.1),
                                                axis=1, keepdims=True))
        total += -np.mean(np.sum(codes[i] * log_p, axis=1))
  np.testing.assert_allclose(value, total / (2 * (n_views - 1)), rtol=1e-5)
  # Without a queue it is the library's SwAV loss.
  np.testing.assert_allclose(
      value, clustering.swav(jnp.asarray(scores, jnp.float32),
                             temperature=0.1), rtol=1e-5)
  for bad_codes, bad_scores, match in (
      (codes[0], scores, "codes"), (codes, scores[0], "scores"),
      (codes[:, :3], scores, "match"), (codes, scores[:1], "match")):
    with pytest.raises(ValueError, match=match):
      swav.swapped_prediction(bad_codes, bad_scores, temperature=0.1)


def _contrast_of_query(rng):
  """contrast(q, k) as a function of q, the only input with a gradient."""
  key = rng.normal(size=(4, 3))
  return (lambda q, t: moco_v3.contrast(q, jnp.asarray(key, q.dtype),
                                        temperature=t)), rng.normal(size=(4, 3))


def _swapped_prediction_of_scores(rng):
  """swapped_prediction(q, s) as a function of s; the codes have no gradient."""
  scores = rng.normal(size=(3, 4, 5))
  codes = jax.vmap(sinkhorn)(jnp.asarray(scores[:2], jnp.float32))
  return (lambda s, t: swav.swapped_prediction(codes.astype(s.dtype), s,
                                               temperature=t)), scores


@pytest.mark.parametrize("make", [_contrast_of_query,
                                  _swapped_prediction_of_scores])
def test_method_losses_are_stable_and_differentiable(make):
  fn, x = make(np.random.default_rng(7))
  with jax.enable_x64(True):
    jax.test_util.check_grads(lambda a: fn(a, 0.5), (x,), order=1,
                              modes=["rev"])
  value32 = fn(jnp.asarray(x, jnp.float32), 0.5)
  value16 = jax.jit(fn, static_argnums=1)(jnp.asarray(x, jnp.bfloat16), 0.5)
  assert value16.dtype == jnp.float32
  np.testing.assert_allclose(value16, value32, rtol=3e-2)
  for temperature in (1e-3, 1e3):
    for inputs in (np.zeros_like(x), x):
      value, grad = jax.value_and_grad(fn)(jnp.asarray(inputs, jnp.float32),
                                           temperature)
      assert np.isfinite(value) and np.all(np.isfinite(grad))


# ------------------------------------------------------ shared plumbing ---


def test_forward_groups_equal_sized_views_and_stacks_the_outputs():
  config, (params, model_state, _) = _init("simclr")
  net = simclr.network(config)
  rng = np.random.default_rng(6)
  views = [jnp.asarray(rng.normal(size=(3, s, s, 1)), jnp.float32)
           for s in (16, 16, 8)]
  out, state = _shared.forward(net, params, model_state, views, train=False)
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
  np.testing.assert_array_equal(_shared.queue_views(q, 2), views)


def test_augment_config_rejects_overrides_the_preset_lacks():
  with pytest.raises(ValueError, match="num_local"):
    _shared.augment_config("byol", num_local=2)
  assert "num_local" in _shared.augment_config("multicrop")


def test_encode_returns_eval_features_of_raw_or_normalised_images():
  config, (params, model_state, _) = _init("byol")
  images = toy_images()[0][:4]
  features = methods.get("byol").encode(config, params, model_state,
                                        jnp.asarray(images))
  assert features.shape == (4, 8)
  normalised = (images / 255.0 - 0.1307) / 0.3081
  again = methods.get("byol").encode(config, params, model_state,
                                     jnp.asarray(normalised, jnp.float32))
  np.testing.assert_allclose(features, again, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_gives_a_close_float32_loss():
  losses = {}
  for dtype in ("float32", "bfloat16"):
    config, (params, model_state, state) = _init("simclr")
    config.compute_dtype = dtype
    value = jax.jit(lambda p: simclr.METHOD.loss(
        config, p, model_state, state, batches(1)[0], jax.random.key(1),
        0)[0])(params)
    assert value.dtype == jnp.float32 and np.isfinite(value)
    losses[dtype] = float(value)
  np.testing.assert_allclose(losses["bfloat16"], losses["float32"], rtol=5e-2)


# ---------------------------------------------------------------- configs ---


def _config_module(name):
  return importlib.import_module(f"configs.{name}")


@pytest.mark.parametrize("name", NAMES)
def test_every_config_builds_for_every_preset(name):
  module = _config_module(name)
  assert module.get_config().dataset.name == "mnist5k"
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    steps_per_epoch = config.dataset.train_size // config.batch_size
    assert config.total_steps == int(config.total_epochs * steps_per_epoch)
    assert 0 <= config.optimizer.warmup_steps < config.total_steps
    assert config.optimizer.name in ("lars", "sgd", "adamw")
    assert config.compute_dtype in ("float32", "bfloat16")


def test_config_overrides_are_typed_and_epochs_follow_the_batch():
  config = _config_module("dino").get_config(
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
    _config_module("simclr").get_config(arg)


def test_configs_are_locked():
  config = _config_module("byol").get_config("mnist5k")
  with pytest.raises(AttributeError):
    config.method.not_a_field = 1
