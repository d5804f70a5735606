"""Breadth methods: supervised metric learning (`metric`) with its P×K
sampler, the CLIP-style dual encoder (`clip`) and CPC (`cpc`).

Each method trains a few Adam steps on toy images through
`ssljax.train.make_train_step`; the batch plumbing (class grouping, pairs,
center updates, the two towers, patch grids, causal context, the contrast
set) is checked against numpy references written with explicit loops, and
a step on 8 fake devices against one device. Sizes are tiny (16×16 images,
a CNN of 8 channels): the time goes into compiling the steps.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from _toy_data import alternating_batches, shape_images
from configs import common
from ssljax import losses, methods, train
from ssljax.data import _balanced
from ssljax.methods import _shared, clip, cpc, metric

BATCH = 16
P, K = 4, 4  # classes per batch, images per class
# Views of crops and flips only: the colour ops and blur (tested in
# test_augment.py) triple the compile time of a step.
CHEAP_VIEWS = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                   solarize_prob=0.0)


def toy_images(n=2 * BATCH, size=16, seed=0):
  """Toy images of 4 shapes, class by class in blocks of K (a P×K batch
  layout)."""
  return shape_images((np.arange(n) // K) % P, size, seed)


def batches(n_steps):
  return alternating_batches(*toy_images(), BATCH, n_steps)


def tiny_config(module, **method_fields) -> ml_collections.ConfigDict:
  """A one-device toy config for the method in `module`, with Adam (the
  base rate is per 256 images: 3e-3 at this batch)."""
  config = ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, seed=0, mesh=dict(data=1),
      compute_dtype="float32", method=module.default_config(),
      optimizer=dict(name="adamw", learning_rate=5e-2, weight_decay=0.0,
                     momentum=0.9, warmup_steps=0)))
  tiny = dict(backbone="tiny_cnn", proj_hidden_dim=32, proj_dim=16)
  config.method.update({k: v for k, v in tiny.items() if k in config.method})
  config.method.augment.update(CHEAP_VIEWS)
  config.method.update(method_fields)
  return config


def run_steps(config, method, steps):
  """Host copies of the state after each step, and the metrics."""
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, trainable=method.optimizer_mask)
  state = train.create_train_state(config, method, jax.random.key(0),
                                   jnp.asarray(steps[0]["image"]), tx)
  state = jax.device_put(state, train.replicated(mesh))
  step_fn = train.make_train_step(config, method, tx, mesh)
  history, metrics = [jax.device_get(state)], []
  for batch in steps:
    state, m = step_fn(state, jax.device_put(batch, train.data_sharded(mesh)))
    history.append(jax.device_get(state))
    metrics.append(jax.device_get(m))
  return history, metrics


def assert_loss_goes_down(metrics):
  losses = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(losses)), losses
  assert losses[-3:].mean() < losses[:3].mean(), losses


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ================================================================ metric ===


def test_metric_training_lowers_the_loss():
  # The center loss: parameters (class weights) and state (centers) both.
  config = tiny_config(metric, loss="center_loss", num_classes=P)
  history, metrics = run_steps(config, metric.METHOD, batches(12))
  assert_loss_goes_down(metrics)
  assert int(history[-1].step) == 12
  # The centers are state, not parameters, and they move every step.
  assert set(history[-1].params["class_weights"]) == {"kernel", "bias"}
  for before, after in zip(history[:-1], history[1:]):
    assert not np.allclose(before.method_state.centers,
                           after.method_state.centers)


@pytest.mark.parametrize("loss", metric.LOSSES)
def test_metric_every_loss_gives_a_finite_loss_and_gradient(loss):
  # One plain view: compiles faster; the views are tested above. Semi-hard
  # triplets on these easy images need a wide margin to give a gradient.
  config = tiny_config(metric, loss=loss, num_classes=P, classes_per_batch=P,
                       mining="semi_hard",
                       margin=2.0 if loss == "triplet" else None)
  config.method.augment = _shared.augment_config("none")
  batch = batches(1)[0]
  params, model_state, state = metric.init(config, jax.random.key(0), batch)
  has_weights = loss in ("center_loss", "sphereface", "cosface", "arcface")
  assert ("class_weights" in params) == has_weights
  (value, _), grads = jax.jit(jax.value_and_grad(
      lambda p: metric.loss(config, p, model_state, state, batch,
                            jax.random.key(1), 0), has_aux=True))(params)
  norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), grads)
  assert np.isfinite(value) and np.isfinite(jax.tree.leaves(norms)).all()
  # Every part of the network, and the class weights, get a gradient.
  assert all(sum(jax.tree.leaves(part)) > 0 for part in norms.values())


@pytest.mark.parametrize("mining", ["batch_hard", "batch_all", "semi_hard"])
def test_metric_triplet_mining_reaches_the_loss(mining):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(1, 8, 3)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
  config = tiny_config(metric, loss="triplet", mining=mining, margin=0.5)
  value, _ = metric.OBJECTIVES["triplet"](config, jnp.asarray(z),
                                          jnp.asarray(labels), {}, None)
  # The wiring (normalisation, mining, margin) against the library loss,
  # which tests/test_losses_metric.py checks against numpy.
  np.testing.assert_allclose(
      value, losses.batch_triplet(jnp.asarray(_unit(z[0])), labels, margin=0.5,
                           mining=mining), rtol=1e-6)


def _grouped_numpy(z, labels, classes):
  """[V, B, D] -> [P, V·K, D] with explicit loops: image p·K + k, view v at
  column k·V + v."""
  n_views, batch, _ = z.shape
  per_class = batch // classes
  x = [[None] * (n_views * per_class) for _ in range(classes)]
  y = np.zeros((classes, n_views * per_class), int)
  for p in range(classes):
    for k in range(per_class):
      for v in range(n_views):
        x[p][k * n_views + v] = z[v, p * per_class + k]
        y[p, k * n_views + v] = labels[p * per_class + k]
  return np.array(x), y


def test_metric_group_by_class_matches_loops():
  z = np.arange(2 * 6 * 3, dtype=np.float32).reshape(2, 6, 3)
  labels = np.array([5, 5, 5, 7, 7, 7])
  config = tiny_config(metric, classes_per_batch=2)
  x, y = metric.group_by_class(config, jnp.asarray(z), jnp.asarray(labels))
  want_x, want_y = _grouped_numpy(z, labels, 2)
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)
  assert np.all(want_y == np.array([[5], [7]]))


def test_metric_contrastive_pair_objective_matches_numpy():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(2, 6, 3)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  config = tiny_config(metric, loss="contrastive_pair", classes_per_batch=3,
                       margin=1.5)
  value, _ = metric.OBJECTIVES["contrastive_pair"](
      config, jnp.asarray(z), jnp.asarray(labels), {}, None)
  x, y = _grouped_numpy(_unit(z), labels, 3)
  n_classes, m, _ = x.shape
  terms = []
  for p in range(n_classes):
    for j in range(m):
      # Similar: the next sample of the class; dissimilar: the same
      # position in the next class.
      for q, i in ((p, (j + 1) % m), ((p + 1) % n_classes, j)):
        d = np.linalg.norm(x[p, j] - x[q, i])
        same = y[p, j] == y[q, i]
        terms.append(d ** 2 if same else max(0.0, 1.5 - d) ** 2)
  np.testing.assert_allclose(value, np.mean(terms), rtol=1e-5)


def test_metric_n_pair_objective_matches_numpy():
  rng = np.random.default_rng(2)
  z = rng.normal(size=(1, 6, 3)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  config = tiny_config(metric, loss="n_pair", classes_per_batch=3,
                       normalize=False, l2_reg=0.0)
  value, _ = metric.OBJECTIVES["n_pair"](config, jnp.asarray(z),
                                         jnp.asarray(labels), {}, None)
  x, _ = _grouped_numpy(z, labels, 3)
  n_classes, m, _ = x.shape
  total = 0.0
  for j in range(m):
    for p in range(n_classes):
      a, pos = x[p, j], x[p, (j + 1) % m]
      total += np.log(1 + sum(np.exp(a @ x[q, (j + 1) % m] - a @ pos)
                              for q in range(n_classes) if q != p))
  np.testing.assert_allclose(value, total / (m * n_classes), rtol=1e-5)


def test_metric_center_loss_objective_and_post_update_match_numpy():
  rng = np.random.default_rng(3)
  z = rng.normal(size=(1, 4, 3)).astype(np.float32)
  labels = np.array([0, 1, 1, 2])
  centers = rng.normal(size=(3, 3)).astype(np.float32)
  kernel = rng.normal(size=(3, 3)).astype(np.float32)
  bias = rng.normal(size=3).astype(np.float32)
  config = tiny_config(metric, loss="center_loss", center_weight=0.1,
                       center_alpha=0.5)
  state = metric.MetricState(jnp.asarray(centers))
  value, update = metric.OBJECTIVES["center_loss"](
      config, jnp.asarray(z), jnp.asarray(labels),
      {"class_weights": {"kernel": kernel, "bias": bias}}, state)
  x = z[0]
  softmax = 0.0
  for i, c in enumerate(labels):
    logits = x[i] @ kernel + bias
    softmax += np.log(np.sum(np.exp(logits))) - logits[c]
  center = np.mean([0.5 * np.sum((x[i] - centers[c]) ** 2)
                    for i, c in enumerate(labels)])
  np.testing.assert_allclose(value, softmax / 4 + 0.1 * center, rtol=1e-5)
  # Wen et al., eq. 4: c_j ← c_j − α Σ_i δ(y_i=j)(c_j − x_i) / (1 + n_j).
  new = metric.post_update(config, {}, state, update, 0).centers
  for j in range(3):
    members = [x[i] for i in range(4) if labels[i] == j]
    delta = sum(centers[j] - m for m in members) / (1 + len(members))
    np.testing.assert_allclose(new[j], centers[j] - 0.5 * delta, rtol=1e-5)
  # The centers get no gradient from the loss.
  grad = jax.grad(lambda c: metric.OBJECTIVES["center_loss"](
      config, jnp.asarray(z), jnp.asarray(labels),
      {"class_weights": {"kernel": kernel, "bias": bias}},
      metric.MetricState(c))[0])(jnp.asarray(centers))
  assert not np.any(np.asarray(grad))


def test_metric_rejects_bad_configs_and_unlabelled_batches():
  images = jnp.asarray(toy_images()[0][:BATCH])
  config = tiny_config(metric, loss="proxy_nca")
  with pytest.raises(ValueError, match="loss") as info:
    metric.init(config, jax.random.key(0), images)
  for name in metric.LOSSES:
    assert name in str(info.value)
  config = tiny_config(metric, loss="n_pair", classes_per_batch=0)
  config.method.augment = _shared.augment_config("none")
  params, model_state, state = metric.init(config, jax.random.key(0), images)
  batch = batches(1)[0]
  with pytest.raises(ValueError, match="label"):
    metric.loss(config, params, model_state, state, images,
                jax.random.key(1), 0)
  for classes in (0, 3):  # not a positive divisor of the batch
    config.method.classes_per_batch = classes
    with pytest.raises(ValueError, match="classes_per_batch"):
      metric.loss(config, params, model_state, state, batch,
                  jax.random.key(1), 0)
  config = tiny_config(metric, loss="arcface", num_classes=1)
  with pytest.raises(ValueError, match="num_classes"):
    metric.init(config, jax.random.key(0), images)


# --------------------------------------------------------- P×K sampler ---


def _records(labels):
  return [{"image": np.full((2, 2, 1), i % 256, np.uint8), "label": int(c)}
          for i, c in enumerate(labels)]


def test_balanced_batches_are_p_by_k_deterministic_and_resumable():
  labels = np.repeat(np.arange(6), [5, 3, 7, 2, 4, 6])  # 1, 3: fewer than K
  records = _records(labels)
  make = lambda **kw: _balanced.balanced(
      records, classes_per_batch=3, samples_per_class=4, seed=7,
      process_index=0, process_count=1, **kw)
  it = make()
  first = [next(it) for _ in range(20)]
  for batch in first:
    assert batch["image"].shape == (12, 2, 2, 1)
    assert batch["label"].dtype == np.int32
    groups = batch["label"].reshape(3, 4)
    assert np.all(groups == groups[:, :1])            # K of each class
    assert len(set(groups[:, 0])) == 3                 # P distinct classes
    # Images are the records of those indices (image value = index).
    idx = batch["image"][:, 0, 0, 0]
    np.testing.assert_array_equal(labels[idx], batch["label"])
    for c in set(groups[:, 0]) - {1, 3}:               # no repeats if >= K
      assert len(set(idx[batch["label"] == c])) == 4
  # Same seed, same stream (labels given or read from the records).
  again = make(labels=labels)
  for batch in first:
    np.testing.assert_array_equal(next(again)["image"], batch["image"])
  # Resume from a saved state.
  state = it.get_state()
  following = next(it)
  resumed = make()
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["image"], following["image"])
  assert resumed.get_state() == {"next_index": 21}
  # Another seed, another stream.
  other = _balanced.balanced(records, classes_per_batch=3,
                             samples_per_class=4, seed=8, process_index=0,
                             process_count=1)
  assert any(not np.array_equal(next(other)["image"], b["image"])
             for b in first[:5])


def test_balanced_processes_share_one_global_batch():
  labels = np.arange(40) % 5
  records = _records(labels)
  parts = [next(_balanced.balanced(records, classes_per_batch=4,
                                   samples_per_class=2, seed=1,
                                   process_index=i, process_count=2))
           for i in range(2)]
  whole = next(_balanced.balanced(records, classes_per_batch=4,
                                  samples_per_class=2, seed=1,
                                  process_index=0, process_count=1))
  np.testing.assert_array_equal(
      np.concatenate([p["label"] for p in parts]), whole["label"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(classes_per_batch=6), "classes_per_batch"),
    (dict(classes_per_batch=0), "classes_per_batch"),
    (dict(samples_per_class=2.5), "samples_per_class"),
    (dict(labels=np.zeros(3, int)), "labels"),
    (dict(labels=np.zeros(20)), "labels"),
    (dict(process_count=3), "batch_size"),
])
def test_balanced_rejects_bad_arguments(kwargs, match):
  records = _records(np.arange(20) % 5)
  options = dict(classes_per_batch=2, samples_per_class=2, seed=0,
                 process_index=0, process_count=1)
  with pytest.raises(ValueError, match=match):
    _balanced.balanced(records, **{**options, **kwargs})


# ================================================================== clip ===


def test_clip_training_lowers_the_loss_and_learns_the_temperature():
  config = tiny_config(clip)
  history, metrics = run_steps(config, clip.METHOD, batches(8))
  assert_loss_goes_down(metrics)
  np.testing.assert_allclose(metrics[0]["temperature"], 0.07, rtol=1e-5)
  assert history[-1].params["log_scale"] != history[0].params["log_scale"]
  # The towers share no weights and both train.
  for name in clip.TOWERS:
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         history[0].params[name], history[-1].params[name])
    assert all(jax.tree.leaves(moved)), name


def test_clip_loss_is_symmetric_info_nce_of_the_two_towers():
  config = tiny_config(clip, init_temperature=0.5)
  images = jnp.asarray(toy_images()[0][:6])
  params, model_state, state = clip.init(config, jax.random.key(0), images)
  rng = jax.random.key(3)
  value, out = jax.jit(lambda p: clip.loss(config, p, model_state, state,
                                           images, rng, 0))(params)

  @jax.jit
  def towers(params):
    views = _shared.make_views(config, rng, images)
    return [clip.tower(config).apply(params[name], model_state[name], view,
                                     train=True)[0]["projection"]
            for name, view in zip(clip.TOWERS, views)]

  a, b = [np.asarray(x, np.float64) for x in towers(params)]
  logits = _unit(a) @ _unit(b).T / 0.5
  n = len(logits)
  rows = [np.log(np.sum(np.exp(logits[i]))) - logits[i, i] for i in range(n)]
  cols = [np.log(np.sum(np.exp(logits[:, j]))) - logits[j, j]
          for j in range(n)]
  np.testing.assert_allclose(value, 0.5 * (np.mean(rows) + np.mean(cols)),
                             rtol=1e-4)
  np.testing.assert_allclose(out.metrics["temperature"], 0.5, rtol=1e-6)
  features = jax.jit(lambda p: clip.encode(config, p, model_state,
                                           images))(params)
  assert features.shape == (6, 8)


def test_clip_scale_is_clamped_at_max_scale():
  config = tiny_config(clip, max_scale=100.0)
  images = jnp.asarray(toy_images()[0][:4])
  params, model_state, state = clip.init(config, jax.random.key(0), images)
  grad = jax.jit(jax.grad(lambda p: clip.loss(
      config, p, model_state, state, images, jax.random.key(1), 0)[0]))
  assert grad(params)["log_scale"] != 0
  params["log_scale"] = jnp.asarray(np.log(100.0) + 1.0, jnp.float32)
  np.testing.assert_allclose(clip.temperature(config, params), 0.01,
                             rtol=1e-6)
  assert grad(params)["log_scale"] == 0


def test_clip_rejects_bad_configs():
  images = jnp.asarray(toy_images()[0][:4])
  for field in ("init_temperature", "max_scale"):
    with pytest.raises(ValueError, match=field):
      clip.init(tiny_config(clip, **{field: 0.0}), jax.random.key(0), images)
  config = tiny_config(clip)
  params, model_state, state = clip.init(config, jax.random.key(0), images)
  config.method.augment = _shared.augment_config("multicrop", num_local=1)
  with pytest.raises(ValueError, match="augment"):  # raised while tracing
    jax.jit(lambda p: clip.loss(config, p, model_state, state, images,
                                jax.random.key(1), 0))(params)


# =================================================================== cpc ===


def cpc_config(**fields):
  return tiny_config(cpc, **{**dict(patch_size=8, patch_stride=4,
                                    context_dim=8, prediction_steps=2),
                             **fields})


def test_cpc_training_lowers_the_loss():
  config = cpc_config()
  history, metrics = run_steps(config, cpc.METHOD, batches(8))
  assert_loss_goes_down(metrics)
  assert set(history[-1].params) == {"backbone", "context", "predictors"}


def test_cpc_patches_match_loops():
  images = np.arange(2 * 11 * 11).reshape(2, 11, 11, 1)
  config = cpc_config(patch_size=5, patch_stride=3, prediction_steps=1)
  grid = np.asarray(cpc.patches(config, jnp.asarray(images)))
  assert grid.shape == (2, 3, 3, 5, 5, 1)  # (11 − 5) // 3 + 1 = 3
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(
          grid[:, i, j], images[:, 3 * i:3 * i + 5, 3 * j:3 * j + 5])


def test_cpc_context_sees_only_the_rows_above():
  config = cpc_config(context_layers=2, context_kernel=3)
  net = cpc.context_network(config)
  z = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 4)),
                  jnp.float32)
  params, state = net.init(jax.random.key(0), z)
  # d(sum of output row r) / d(input row s), for every r and s.
  jacobian = jax.jit(jax.jacrev(lambda z: jnp.sum(
      net.apply(params, state, z, train=True)[0][0], axis=(1, 2))))(z)
  reach = np.abs(np.asarray(jacobian)[:, 0]).sum(axis=(2, 3))  # [r, s]
  for row in range(6):
    # Two layers of kernel 3 reach 4 rows up, and nothing below.
    np.testing.assert_array_equal(reach[row] > 0, [row - 4 <= r <= row
                                                   for r in range(6)])


def test_cpc_loss_matches_numpy():
  rng = np.random.default_rng(1)
  n, g, d, dc, steps = 2, 4, 3, 5, 2
  z = rng.normal(size=(n, g, g, d))
  c = rng.normal(size=(n, g, g, dc))
  w = rng.normal(size=(steps, dc, d))
  config = cpc_config(prediction_steps=steps)
  queries, index = cpc.predictions(config, {"predictors": jnp.asarray(w)},
                                   jnp.asarray(c), jnp.asarray(z))
  value = cpc.contrastive_loss(queries, index, jnp.asarray(z))
  keys = z.reshape(-1, d)
  terms = []
  for b in range(n):
    for i in range(g):
      for j in range(g):
        for k in range(1, steps + 1):
          if i + k < g:
            q = c[b, i, j] @ w[k - 1]
            logits = keys @ q
            terms.append(np.log(np.sum(np.exp(logits)))
                         - q @ z[b, i + k, j])
  assert len(terms) == len(queries)
  np.testing.assert_allclose(value, np.mean(terms), rtol=1e-5)


def test_cpc_encode_mean_pools_patch_features_and_checks_the_grid():
  config = cpc_config()
  images = jnp.asarray(toy_images()[0][:3])
  params, model_state, _ = cpc.init(config, jax.random.key(0), images)
  features = cpc.encode(config, params, model_state, images)
  grid = np.asarray(cpc.patches(config, images))
  per_patch = _shared.encode(config, params, model_state,
                             jnp.asarray(grid.reshape(-1, 8, 8, 1)))
  np.testing.assert_allclose(
      features, np.asarray(per_patch).reshape(3, 9, -1).mean(axis=1),
      rtol=1e-5, atol=1e-6)
  # "concat": patch (i, j)'s features at columns [(3i + j)·D, (3i + j + 1)·D).
  concat = cpc.encode(cpc_config(grid_pooling="concat"), params, model_state,
                      images)
  np.testing.assert_allclose(
      concat, np.asarray(per_patch).reshape(3, -1), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="grid_pooling"):
    cpc.encode(cpc_config(grid_pooling="max"), params, model_state, images)
  with pytest.raises(ValueError, match="grid_pooling"):  # Before training.
    cpc.init(cpc_config(grid_pooling="max"), jax.random.key(0), images)
  for fields in (dict(prediction_steps=3), dict(patch_size=20)):
    with pytest.raises(ValueError, match="prediction_steps"):
      cpc.init(cpc_config(**fields), jax.random.key(0), images)
  with pytest.raises(ValueError, match="patch_stride"):
    cpc.init(cpc_config(patch_stride=0), jax.random.key(0), images)


def test_cpc_bfloat16_compute_gives_a_close_float32_loss():
  values = {}
  for dtype in ("float32", "bfloat16"):
    config = cpc_config()
    config.method.augment = _shared.augment_config("none")  # compiles fast
    config.compute_dtype = dtype
    batch = batches(1)[0]
    params, model_state, state = cpc.init(config, jax.random.key(0), batch)
    value = jax.jit(lambda p: cpc.loss(config, p, model_state, state, batch,
                                       jax.random.key(1), 0)[0])(params)
    assert value.dtype == jnp.float32 and np.isfinite(value)
    values[dtype] = float(value)
  np.testing.assert_allclose(values["bfloat16"], values["float32"],
                             rtol=2e-2)


# ========================================================== 8 devices ===


@pytest.mark.parametrize("module, fields", [
    (metric, dict(loss="contrastive_pair", classes_per_batch=P)),
    (cpc, dict(patch_size=8, patch_stride=4, context_dim=8,
               prediction_steps=2)),
], ids=["metric_pairs", "cpc"])
def test_eight_devices_equal_one(module, fields):
  """A train step on the batch sharded over 8 devices equals the step on
  one device: the P×K grouping of the pairs, CPC's contrast set over all
  patches and BatchNorm all see the global batch."""
  assert jax.device_count() == 8
  runs = {}
  for devices in (8, 1):
    config = tiny_config(module, **fields)
    config.method.augment = _shared.augment_config("none")  # compiles fast
    # SGD: Adam would blow the rounding differences of zero gradients up.
    config.optimizer.update(name="sgd", learning_rate=0.5)
    config.mesh.data = devices
    runs[devices] = run_steps(config, module.METHOD, batches(1))
  (history8, metrics8), (history1, metrics1) = runs[8], runs[1]
  np.testing.assert_allclose(metrics8[0]["loss"], metrics1[0]["loss"],
                             rtol=1e-5)

  def check(x, y):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    np.testing.assert_allclose(x, y, rtol=1e-5,
                               atol=1e-5 * max(1.0, np.abs(y).max()))

  for part in ("params", "model_state", "method_state"):
    jax.tree.map(check, getattr(history8[-1], part),
                 getattr(history1[-1], part))


# ================================================================ configs ===


def test_breadth_methods_are_registered():
  for module in (metric, clip, cpc):
    assert methods.get(module.METHOD.name) is module.METHOD


@pytest.mark.parametrize("name", ["metric", "clip", "cpc"])
def test_breadth_configs_build_for_every_preset(name):
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  assert module.get_config().dataset.name == "mnist5k"
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    assert 0 <= config.optimizer.warmup_steps < config.total_steps
    if name == "metric":
      assert config.method.num_classes == config.dataset.num_classes
      assert config.batch_size % config.method.classes_per_batch == 0
  if name == "metric":
    config = module.get_config("cifar100,method.num_classes=7")
    assert config.method.num_classes == 7
