"""ssljax.train: schedules, optimizers, mesh helpers, state and the jitted step.

References are written independently in numpy from the papers' update rules
(LARS: You et al. 2017; AdamW: Loshchilov & Hutter 2019; SGD with momentum;
cosine schedule with linear warm-up: Loshchilov & Hutter 2017, Goyal et al.
2017's linear scaling). The step is compared with an explicit, unjitted
composition of the method's loss gradient, the numpy optimizer and the EMA.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _multihost_toy as toy
from ssljax import methods, train


def numpy_lr(t, *, base, batch_size, warmup, total):
  peak = base * batch_size / 256
  if t < warmup:
    return peak * t / warmup
  return peak * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def numpy_update(name, params, grads, slots, t, *, lr, wd, momentum,
                 trainable=None, eta=1e-3, b2=0.999, eps=1e-8):
  """One step of the paper's rule on dicts of numpy arrays (t counts from 0).

  Weight decay and LARS's trust ratio apply to rank >= 2 leaves only;
  leaves with `trainable[k] == False` do not move.
  """
  new = {}
  for k, w in params.items():
    if trainable is not None and not trainable[k]:
      new[k] = w
      continue
    g = grads[k].astype(np.float64)
    decay = wd if w.ndim > 1 else 0.0
    if name in ("lars", "lars_torch"):
      g = g + decay * w
      if w.ndim > 1:
        w_norm, g_norm = np.linalg.norm(w), np.linalg.norm(g)
        g = g * (eta * w_norm / g_norm if w_norm > 0 and g_norm > 0 else 1.0)
      if name == "lars":  # optax / SimCLR's TF LARS: the rate, then momentum
        slots[k] = momentum * slots.get(k, 0.0) + lr * g
        new[k] = w - slots[k]
      else:  # PyTorch's buffer (solo-learn, moco-v3, swav's LARC)
        slots[k] = momentum * slots.get(k, 0.0) + g
        new[k] = w - lr * slots[k]
    elif name == "sgd":
      slots[k] = momentum * slots.get(k, 0.0) + g + decay * w
      new[k] = w - lr * slots[k]
    elif name == "adamw":
      m, v = slots.get(k, (0.0, 0.0))
      m = momentum * m + (1 - momentum) * g
      v = b2 * v + (1 - b2) * g * g
      slots[k] = (m, v)
      m_hat, v_hat = m / (1 - momentum ** (t + 1)), v / (1 - b2 ** (t + 1))
      new[k] = w - lr * (m_hat / (np.sqrt(v_hat) + eps) + decay * w)
  return new


def tree_allclose(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), **tol), a, b)


# ------------------------------------------------------------- schedule ---


@pytest.mark.parametrize("warmup", [0, 3, 12])
def test_learning_rate_schedule_matches_formula(warmup):
  """Including a run that is all warm-up (a short run's shrunk one): its
  12 steps 0 .. 11 warm up."""
  config = toy.make_config(batch_size=512, total_steps=12,
                           **{"optimizer.learning_rate": 0.3,
                              "optimizer.warmup_steps": warmup})
  schedule = train.learning_rate_schedule(config)
  for t in range(13 if warmup < 12 else 12):
    want = numpy_lr(t, base=0.3, batch_size=512, warmup=warmup, total=12)
    np.testing.assert_allclose(float(schedule(t)), want, rtol=1e-5, atol=1e-7)
  # Linear scaling: the peak is base × B / 256.
  np.testing.assert_allclose(float(schedule(warmup)), 0.6, rtol=1e-6)


@pytest.mark.parametrize("field,value", [
    ("optimizer.warmup_steps", 13), ("optimizer.warmup_steps", -1),
    ("optimizer.learning_rate", 0.0), ("total_steps", 0)])
def test_learning_rate_schedule_rejects_bad_values(field, value):
  config = toy.make_config(**{"total_steps": 12, field: value})
  with pytest.raises(ValueError, match=f"config.{field}"):
    train.learning_rate_schedule(config)


# ------------------------------------------------------------ optimizer ---


def test_decay_mask_excludes_biases_and_norm_parameters():
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
            "bn": {"scale": jnp.ones(2)}, "dense": jnp.ones((2, 2))}
  assert train.decay_mask(params) == {
      "conv": {"kernel": True, "bias": False}, "bn": {"scale": False},
      "dense": True}


@pytest.mark.parametrize("name", ["lars", "lars_torch", "adamw", "sgd"])
def test_optimizer_matches_numpy_reference(name):
  """lars_torch: `lars_rate_after_momentum`, the order of PyTorch's
  momentum buffer (solo-learn's `LARS.step`); over a warm-up the two LARS
  differ."""
  config = toy.make_config(batch_size=128, total_steps=10, **{
      "optimizer.name": name.split("_")[0], "optimizer.learning_rate": 0.4,
      "optimizer.weight_decay": 0.05, "optimizer.momentum": 0.9,
      "optimizer.warmup_steps": 2,
      "optimizer.lars_rate_after_momentum": name == "lars_torch"})
  rng = np.random.default_rng(0)
  params = {"kernel": rng.normal(size=(3, 2)).astype(np.float32),
            "bias": rng.normal(size=2).astype(np.float32)}
  tx = train.make_optimizer(config)
  state, current = tx.init(params), params
  ref, slots = {k: v.astype(np.float64) for k, v in params.items()}, {}
  for t in range(4):
    grads = {k: rng.normal(size=v.shape).astype(np.float32)
             for k, v in params.items()}
    updates, state = jax.jit(tx.update)(grads, state, current)
    current = optax.apply_updates(current, updates)
    lr = numpy_lr(t, base=0.4, batch_size=128, warmup=2, total=10)
    ref = numpy_update(name, ref, grads, slots, t, lr=lr, wd=0.05,
                       momentum=0.9)
  tree_allclose(current, ref, rtol=2e-5, atol=1e-6)
  for k in params:
    assert not np.allclose(current[k], params[k])


def test_frozen_schedule_stops_updates_and_optimizer_state():
  """A leaf frozen for the first 2 updates neither moves nor accumulates
  momentum then (as PyTorch skips a parameter without gradient); after,
  it moves like a fresh parameter of the same optimizer."""
  config = toy.make_config(**{"optimizer.name": "sgd",
                              "optimizer.warmup_steps": 0,
                              "optimizer.weight_decay": 0.1})
  params = {"a": jnp.ones((2, 2)), "late": jnp.ones((2, 2))}
  tx = train.make_optimizer(
      config, frozen=lambda p, t: {"a": jnp.bool_(False), "late": t < 2})
  reference = train.make_optimizer(config)
  state, ref_state = tx.init(params), reference.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  moved = []
  for t in range(4):
    updates, state = tx.update(grads, state, params)
    ref_updates, ref_state = reference.update(grads, ref_state, params)
    moved.append(float(jnp.abs(updates["late"]).max()))
    np.testing.assert_allclose(updates["a"], ref_updates["a"], rtol=1e-6)
    if t == 2:
      # Its first real update: the rate of step 2, no momentum from before.
      lr = train.learning_rate_schedule(config)(2)
      np.testing.assert_allclose(updates["late"], -lr * (1.0 + 0.1),
                                 rtol=1e-5)
    params = optax.apply_updates(params, updates)
  assert moved[:2] == [0.0, 0.0] and moved[2] > 0 and moved[3] > 0


def test_parameter_groups_follow_the_official_code():
  """exclude_bias_and_norm=False decays biases too; bias_lr_scale scales
  the biases' updates; constant_lr_parts keep the peak rate; clip_grad per
  parameter clips each tensor to the norm; weight_decay_end schedules the
  decay (numpy from the rules)."""
  base = {"optimizer.name": "sgd", "optimizer.momentum": 0.0,
          "optimizer.warmup_steps": 0, "optimizer.weight_decay": 0.5,
          "total_steps": 4}
  params = {"head": {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.ones(2)},
            "pred": {"kernel": jnp.ones((2, 2))}}
  grads = jax.tree.map(jnp.ones_like, params)

  def first_update(**fields):
    config = toy.make_config(**base, **{f"optimizer.{k}": v
                                        for k, v in fields.items()})
    tx = train.make_optimizer(config)
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates, train.learning_rate_schedule(config)

  updates, lr = first_update(exclude_bias_and_norm=False)
  np.testing.assert_allclose(updates["head"]["bias"], -lr(0) * 1.5, rtol=1e-6)
  updates, lr = first_update()
  np.testing.assert_allclose(updates["head"]["bias"], -lr(0) * 1.0, rtol=1e-6)
  updates, lr = first_update(bias_lr_scale=0.25)
  np.testing.assert_allclose(updates["head"]["bias"], -0.25 * lr(0),
                             rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], -lr(0) * 2.0,
                             rtol=1e-6)
  config = toy.make_config(**base, **{"optimizer.constant_lr_parts":
                                      ("pred",)})
  tx, lr = train.make_optimizer(config), train.learning_rate_schedule(config)
  state = tx.init(params)
  for t in range(3):
    updates, state = tx.update(grads, state, params)
  np.testing.assert_allclose(updates["pred"]["kernel"], -lr(0) * 1.5,
                             rtol=1e-6)
  np.testing.assert_allclose(updates["head"]["kernel"], -lr(2) * 2.0,
                             rtol=1e-6)
  big = jax.tree.map(lambda x: 10 * jnp.ones_like(x), params)
  config = toy.make_config(**{**base, "optimizer.clip_grad": 3.0,
                              "optimizer.clip_per_parameter": True,
                              "optimizer.weight_decay": 0.0})
  tx, lr = train.make_optimizer(config), train.learning_rate_schedule(config)
  updates, _ = tx.update(big, tx.init(params), params)
  for leaf in jax.tree.leaves(updates):
    np.testing.assert_allclose(np.linalg.norm(leaf), 3.0 * lr(0), rtol=1e-5)
  config = toy.make_config(**base, **{"optimizer.weight_decay_end": 0.1,
                                      "optimizer.exclude_bias_and_norm":
                                      False})
  tx, lr = train.make_optimizer(config), train.learning_rate_schedule(config)
  state = tx.init(params)
  zero = jax.tree.map(jnp.zeros_like, params)
  for t in range(3):
    updates, state = tx.update(zero, state, params)
    decay = 0.1 + 0.5 * 0.4 * (1 + math.cos(math.pi * t / 4))
    np.testing.assert_allclose(updates["head"]["bias"], -lr(t) * decay,
                               rtol=1e-5)


@pytest.mark.parametrize("field,value", [
    ("optimizer.name", "rmsprop"), ("optimizer.weight_decay", -1.0),
    ("optimizer.momentum", -0.5), ("optimizer.momentum", 1.5)])
def test_make_optimizer_rejects_bad_values(field, value):
  config = toy.make_config(**{field: value})
  with pytest.raises(ValueError, match=f"config.{field}"):
    train.make_optimizer(config)


# ------------------------------------------------------------- sharding ---


def test_make_mesh_spans_the_devices_and_checks_its_size():
  assert train.make_mesh(toy.make_config()).shape == {"data": 8}
  assert train.make_mesh(toy.make_config(**{"mesh.data": 2})).shape == {
      "data": 2}
  for size in (0, 9):
    with pytest.raises(ValueError, match="config.mesh.data"):
      train.make_mesh(toy.make_config(**{"mesh.data": size}))


def test_check_batch_size():
  mesh = train.make_mesh(toy.make_config())
  assert train.check_batch_size(32, mesh, process_count=2) == 16
  for batch_size in (12, 0, -8):
    with pytest.raises(ValueError, match="config.batch_size"):
      train.check_batch_size(batch_size, mesh, process_count=1)
  with pytest.raises(ValueError, match="config.batch_size"):
    train.check_batch_size(8, mesh, process_count=3)


# ----------------------------------------------------------------- step ---


def init_state(config, mesh, method, shape=(16, 8, 8, 1)):
  tx = train.make_optimizer(config, frozen=method.frozen)
  state = jax.jit(
      lambda: train.create_train_state(
          method, jax.random.key(0), {"image": jnp.zeros(shape, jnp.uint8)},
          tx),
      out_shardings=train.replicated(mesh))()
  return state, tx


def toy_batches(n, batch_size=16):
  images, labels = toy.toy_images()
  it = toy.ArrayIterator(images, labels, global_batch=batch_size)
  return [next(it) for _ in range(n)]


def host_copy(state):
  """A numpy copy of a state. (On CPU `jax.device_get` may return views of
  the device buffers, which would stop the step from donating them.)"""
  data = jax.tree.map(np.array,
                      state._replace(rng=jax.random.key_data(state.rng)))
  return data._replace(rng=jax.random.wrap_key_data(data.rng))


def run_steps(config, batches, method=None):
  """Runs the jitted step of `method` (default: the config's); returns the
  states before and after each step (host copies), each step's metrics and
  the number of compilations after the first step."""
  method = methods.build(config) if method is None else method
  mesh = train.make_mesh(config)
  state, tx = init_state(config, mesh, method,
                         shape=batches[0]["image"].shape)
  step_fn = train.make_train_step(config, method, tx, mesh)
  history = [host_copy(state)]
  metrics = []
  compiles = []

  def on_event(event, duration_secs, **kwargs):
    del duration_secs, kwargs
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  jax.monitoring.register_event_duration_secs_listener(on_event)
  try:
    for batch in batches:
      previous = state
      state, m = step_fn(state,
                         jax.device_put(batch, train.data_sharded(mesh)))
      assert all(x.is_deleted() for x in jax.tree.leaves(previous))  # donated
      history.append(host_copy(state))
      metrics.append(jax.tree.map(np.array, m))
      if len(metrics) == 1:
        compiles.clear()
  finally:
    jax.monitoring.unregister_event_duration_listener(on_event)
  return history, metrics, len(compiles)


@pytest.fixture(scope="module")
def eight_device_run():
  return run_steps(toy.make_config(), toy_batches(3))


def test_step_matches_explicit_update():
  """Two steps against loss-gradient + numpy SGD + numpy EMA, by hand."""
  config = toy.make_config(**{"mesh.data": 1, "optimizer.name": "sgd",
                              "optimizer.weight_decay": 0.01,
                              "optimizer.warmup_steps": 1})
  batches = toy_batches(2)
  history, metrics, _ = run_steps(config, batches)
  state = history[0]
  params = jax.tree.map(np.float64, state.params)
  model_state, ema = state.model_state, state.method_state["ema"]
  slots = {}
  grad_fn = jax.jit(jax.value_and_grad(toy.TOY.loss, has_aux=True))
  for t, batch in enumerate(batches):
    flat_params = jax.tree.map(np.float32, params)
    (loss, out), grads = grad_fn(flat_params, model_state, None, batch,
                                 jax.random.fold_in(state.rng, t), t)
    lr = numpy_lr(t, base=0.5, batch_size=16, warmup=1, total=6)
    flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(x) for p, x in
                         jax.tree_util.tree_flatten_with_path(tree)[0]}
    trainable = flat(jax.tree.map(jnp.logical_not, toy.frozen(params, t)))
    new = numpy_update("sgd", flat(params), flat(grads), slots, t, lr=lr,
                       wd=0.01, momentum=0.9, trainable=trainable)
    params = jax.tree.unflatten(jax.tree.structure(params), [
        new[jax.tree_util.keystr(p)]
        for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]])
    ema = jax.tree.map(lambda e, p: 0.9 * e + 0.1 * p, ema, params)
    model_state = out.model_state
    got = metrics[t]
    np.testing.assert_allclose(got["loss"], loss, rtol=1e-5)
    np.testing.assert_allclose(got["learning_rate"], lr, rtol=1e-6)
    want_norm = math.sqrt(sum(float(np.sum(np.square(g)))
                              for g in jax.tree.leaves(grads)))
    np.testing.assert_allclose(got["grad_norm"], want_norm, rtol=1e-5)
    np.testing.assert_allclose(got["rng_probe"], jax.random.uniform(
        jax.random.fold_in(state.rng, t)))
    tree_allclose(history[t + 1].params, params, rtol=1e-4, atol=1e-6)
    tree_allclose(history[t + 1].method_state["ema"], ema, rtol=1e-4,
                  atol=1e-6)
    tree_allclose(history[t + 1].model_state, model_state, rtol=1e-5,
                  atol=1e-6)
    assert int(history[t + 1].step) == t + 1
  # The frozen leaf never moved; the others did.
  np.testing.assert_array_equal(history[-1].params["proj"]["bias"],
                                history[0].params["proj"]["bias"])
  assert not np.allclose(history[-1].params["conv"]["kernel"],
                         history[0].params["conv"]["kernel"])


def test_step_global_view_equals_one_device(eight_device_run):
  """8 devices with the batch sharded == 1 device: BatchNorm statistics,
  negatives and gradients are global."""
  history8, metrics8, _ = eight_device_run
  history1, metrics1, _ = run_steps(toy.make_config(**{"mesh.data": 1}),
                                    toy_batches(3))
  tree_allclose(metrics8, metrics1, rtol=1e-5, atol=1e-6)
  tree_allclose(history8[-1].params, history1[-1].params, rtol=1e-5,
                atol=1e-6)
  tree_allclose(history8[-1].model_state, history1[-1].model_state, rtol=1e-5,
                atol=1e-6)
  tree_allclose(history8[-1].method_state, history1[-1].method_state,
                rtol=1e-5, atol=1e-6)


def test_step_compiles_once_and_keeps_dtypes(eight_device_run):
  history, metrics, compiles_after_first_step = eight_device_run
  # The toy's weakly typed initial bias would force a second compilation if
  # create_train_state did not fix the types.
  assert compiles_after_first_step == 0
  for before, after in zip(jax.tree.leaves(history[0]),
                           jax.tree.leaves(history[-1])):
    assert before.dtype == after.dtype and before.shape == after.shape
  assert set(metrics[0]) == {"loss", "learning_rate", "grad_norm",
                             "rng_probe", "feature_std"}


def test_step_keys_are_fold_in_of_the_step(eight_device_run):
  history, metrics, _ = eight_device_run
  rng = history[0].rng
  for t, m in enumerate(metrics):
    np.testing.assert_allclose(
        m["rng_probe"], jax.random.uniform(jax.random.fold_in(rng, t)))
  assert len({float(m["rng_probe"]) for m in metrics}) == len(metrics)


def test_bfloat16_compute_keeps_float32_params(eight_device_run):
  _, metrics32, _ = eight_device_run
  history, metrics, _ = run_steps(
      toy.make_config(**{"method.dtype": "bfloat16"}), toy_batches(3))
  for m in metrics:
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
  assert {x.dtype for x in jax.tree.leaves(history[-1].params)} == {
      np.dtype(np.float32)}
  np.testing.assert_allclose(metrics[-1]["loss"], metrics32[-1]["loss"],
                             rtol=2e-2)


def test_create_train_state_fixes_weak_types():
  config = toy.make_config()
  state = train.create_train_state(
      toy.TOY, jax.random.key(0), jnp.zeros((4, 8, 8, 1), jnp.uint8),
      train.make_optimizer(config))
  assert int(state.step) == 0 and state.step.dtype == jnp.int32
  assert not any(x.weak_type for x in jax.tree.leaves(
      (state.params, state.model_state, state.method_state)))
  assert jax.dtypes.issubdtype(state.rng.dtype, jax.dtypes.prng_key)


def test_simclr_from_the_registry_trains_on_the_mesh():
  """A method of the registry through the same step (views without random
  augmentations, to keep compilation short)."""
  config = toy.make_config()
  config.method = dict(name="simclr", backbone="tiny_cnn", proj_hidden_dim=16,
                       proj_dim=8, temperature=0.2, augment={"preset": "none"})
  simclr = methods.build(config)
  images, labels = toy.toy_images(n=48, size=8, channels=3)
  batches = [{"image": images[i:i + 16], "label": labels[i:i + 16]}
             for i in (0, 16, 32)]
  history, metrics, compiles_after_first_step = run_steps(
      config, batches, method=simclr)
  assert compiles_after_first_step == 0
  for m in metrics:
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
  kernel = lambda state: state.params["backbone"]["conv_bn0"]["conv"]["kernel"]
  assert not np.allclose(kernel(history[-1]), kernel(history[0]))


# -------------------------------------------------------------- metrics ---


def test_metrics_writer(tmp_path):
  with train.MetricsWriter(str(tmp_path), active=False) as writer:
    writer.write(1, {"loss": 1.0})
  assert os.listdir(tmp_path) == []
  with train.MetricsWriter(str(tmp_path)) as writer:
    for step in (1, 2, 3):
      writer.write(step, {"loss": 1.0 / step, "knn_top1": float("nan")})
  # Resuming from step 2 drops what the interrupted run logged after it.
  with train.MetricsWriter(str(tmp_path), start_step=2) as writer:
    writer.write(3, {"loss": 0.25})
  assert train.read_metrics(str(tmp_path)) == [
      {"step": 1, "loss": 1.0, "knn_top1": None},
      {"step": 2, "loss": 0.5, "knn_top1": None},
      {"step": 3, "loss": 0.25}]
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def test_adamw_counts_steps_per_parameter_through_a_freeze():
  """After 3 frozen steps a parameter's first AdamW update is a fresh
  Adam's first update, ±lr (PyTorch's per-parameter step count), not the
  tiny bias-corrected value a global count of 4 would give."""
  config = toy.make_config(**{"optimizer.name": "adamw",
                              "optimizer.warmup_steps": 0,
                              "optimizer.weight_decay": 0.0})
  params = {"late": jnp.ones(3)}
  tx = train.make_optimizer(config, frozen=lambda p, t: {"late": t < 3})
  state = tx.init(params)
  grads = {"late": jnp.array([0.5, -2.0, 1e-3])}
  for t in range(4):
    updates, state = tx.update(grads, state, params)
  lr = train.learning_rate_schedule(config)(3)
  np.testing.assert_allclose(updates["late"], -lr * np.sign(grads["late"]),
                             rtol=1e-4)
