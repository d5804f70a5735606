"""Breadth methods: supervised metric learning (`metric`) with its P×K
sampler, the CLIP-style dual encoder (`clip`) and CPC (`cpc`).

Each factory is built without an experiment config and trains a few steps
through `ssljax.train.make_train_step` (a hand-made config holds the
optimizer only); the batch plumbing (class grouping, pairs, center updates,
the two towers, patch grids, causal context, the contrast set) is checked
against numpy references written with explicit loops, a step on 8 fake
devices against one device, every bad hyper-parameter against a clear error
raised by the factory, and the corrections that follow the official code
(CLIP's in-place clamp of the logit scale, CPC v2's loss, Hermans et al.'s
triplet defaults) by tests that fail without them. Sizes are tiny (16×16
images, a CNN of 8 channels): the time goes into compiling the steps.
"""

import importlib
import inspect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from _toy_data import alternating_batches, shape_images
from configs import common
from ssljax import losses, methods, models, train
from ssljax.data import _balanced
from ssljax.methods import _shared
from ssljax.train import checkpoint

clip_module = importlib.import_module("ssljax.methods.clip")
cpc_module = importlib.import_module("ssljax.methods.cpc")
metric_module = importlib.import_module("ssljax.methods.metric")

BATCH = 16
P, K = 4, 4  # classes per batch, images per class
# Views of crops and flips only: the colour ops and blur (tested in
# test_augment.py) triple the compile time of a step.
CHEAP_VIEWS = {"preset": "byol", "jitter_prob": 0.0, "grayscale_prob": 0.0,
               "blur_prob": 0.0, "solarize_prob": 0.0}
NO_VIEWS = {"preset": "none"}
TINY = {
    "metric": dict(backbone="tiny_cnn", proj_hidden_dim=32, proj_dim=16,
                   augment=CHEAP_VIEWS),
    "clip": dict(backbone="tiny_cnn", proj_dim=16, augment=CHEAP_VIEWS),
    "cpc": dict(backbone="tiny_cnn", augment=CHEAP_VIEWS, patch_size=8,
                patch_stride=4, context_layers=2, context_dim=8,
                target_dim=8, prediction_steps=2, skip_steps=0),
}


def build(name, **kwargs):
  """The factory `name` with tiny sizes (and `kwargs` on top)."""
  return methods.get(name)(**{**TINY[name], **kwargs})


def toy_images(n=2 * BATCH, size=16, seed=0):
  """Toy images of 4 shapes, class by class in blocks of K (a P×K batch
  layout)."""
  return shape_images((np.arange(n) // K) % P, size, seed)


def batches(n_steps):
  return alternating_batches(*toy_images(), BATCH, n_steps)


def optimizer_config(devices=1, name="adamw", learning_rate=5e-2
                     ) -> ml_collections.ConfigDict:
  """What `make_train_step` reads besides the method: the optimizer, the
  batch and the mesh (the base rate is per 256 images)."""
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, seed=0, mesh=dict(data=devices),
      optimizer=dict(name=name, learning_rate=learning_rate,
                     weight_decay=0.0, momentum=0.9, warmup_steps=0)))


def run_steps(method, steps, config=None):
  """Host copies of the state after each step, and the metrics."""
  config = config or optimizer_config()
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config, frozen=method.frozen)
  state = train.create_train_state(method, jax.random.key(0),
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
  values = np.array([m["loss"] for m in metrics])
  assert np.all(np.isfinite(values)), values
  assert values[-3:].mean() < values[:3].mean(), values


def tree_allclose(a, b, **tol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(
      np.asarray(x, np.float64), np.asarray(y, np.float64), **tol), a, b)


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ======================================================= factory errors ===


@pytest.mark.parametrize("name, kwargs, match", [
    ("metric", dict(loss="proxy_nca"), "loss"),
    ("metric", dict(loss="n_pair", classes_per_batch=0), "classes_per_batch"),
    ("metric", dict(loss="contrastive_pair", classes_per_batch=-1),
     "classes_per_batch"),
    ("metric", dict(loss="arcface", num_classes=1), "num_classes"),
    ("metric", dict(loss="triplet", margin=-1.0), "margin"),
    ("metric", dict(loss="triplet", mining="hardest"), "mining"),
    ("metric", dict(loss="cosface", num_classes=4, scale=0.0), "scale"),
    ("metric", dict(loss="soft_nearest_neighbour", temperature=0.0),
     "temperature"),
    ("metric", dict(loss="n_pair", classes_per_batch=4, l2_reg=-1.0),
     "l2_reg"),
    ("metric", dict(loss="center_loss", center_alpha=2.0), "center_alpha"),
    ("metric", dict(loss="center_loss", center_weight=-1.0),
     "center_weight"),
    ("metric", dict(num_views=3), "num_views"),
    ("metric", dict(view_batchnorm="shared"), "view_batchnorm"),
    ("clip", dict(init_temperature=0.0), "init_temperature"),
    ("clip", dict(max_scale=0.5), "max_scale"),
    ("clip", dict(proj_dim=0), "proj_dim"),
    ("clip", dict(augment={"preset": "multicrop", "num_local": 1}),
     "augment"),
    ("clip", dict(augment=NO_VIEWS), "augment"),
    ("cpc", dict(patch_stride=0), "patch_stride"),
    ("cpc", dict(context_layers=0), "context_layers"),
    ("cpc", dict(target_dim=0), "target_dim"),
    ("cpc", dict(prediction_steps=2, skip_steps=2), "skip_steps"),
    ("cpc", dict(skip_steps=-1), "skip_steps"),
    ("cpc", dict(emb_scale=0.0), "emb_scale"),
    ("cpc", dict(grid_pooling="max"), "grid_pooling"),
    ("cpc", dict(num_views=3), "num_views"),
])
def test_factories_reject_bad_hyper_parameters(name, kwargs, match):
  with pytest.raises(ValueError, match=match) as info:
    build(name, **kwargs)
  if kwargs.get("loss") == "proxy_nca":
    for valid in metric_module.LOSSES:
      assert valid in str(info.value)


# ================================================================ metric ===


def test_metric_training_lowers_the_loss_and_round_trips_a_checkpoint(
    tmp_path):
  # The center loss: parameters (class weights) and state (centers) both.
  method = build("metric", loss="center_loss", num_classes=P)
  history, metrics = run_steps(method, batches(12))
  assert_loss_goes_down(metrics)
  assert int(history[-1].step) == 12
  # The centers are state, not parameters, and they move every step.
  assert set(history[-1].params["class_weights"]) == {"kernel", "bias"}
  assert isinstance(history[-1].method_state, metric_module.CenterLossState)
  for before, after in zip(history[:-1], history[1:]):
    assert not np.allclose(before.method_state.centers,
                           after.method_state.centers)
  # The method's state survives a checkpoint, as its own NamedTuple.
  config, state = optimizer_config(), history[-1]
  with checkpoint.Checkpointer(str(tmp_path)) as saver:
    saver.save(12, state, {}, config)
    saver.wait()
    restored, _ = saver.restore(config, jax.eval_shape(lambda: state),
                                data=False)
  assert isinstance(restored.method_state, metric_module.CenterLossState)
  tree_allclose(restored._replace(rng=()), state._replace(rng=()))
  np.testing.assert_array_equal(jax.random.key_data(restored.rng),
                                jax.random.key_data(state.rng))


@pytest.mark.parametrize("loss", metric_module.LOSSES)
def test_metric_every_loss_gives_a_finite_loss_and_gradient(loss):
  # One plain view: compiles faster; the views are tested above. Semi-hard
  # triplets on these easy images need a wide margin to give a gradient.
  method = build("metric", loss=loss, num_classes=P, classes_per_batch=P,
                 mining="semi_hard", augment=NO_VIEWS,
                 margin=2.0 if loss == "triplet" else None)
  batch = batches(1)[0]
  params, model_state, state = method.init(jax.random.key(0), batch)
  has_weights = loss in metric_module.CLASS_WEIGHT_LOSSES
  assert ("class_weights" in params) == has_weights
  (value, _), grads = jax.jit(jax.value_and_grad(
      lambda p: method.loss(p, model_state, state, batch, jax.random.key(1),
                            0), has_aux=True))(params)
  norms = jax.tree.map(lambda g: float(jnp.linalg.norm(g)), grads)
  assert np.isfinite(value) and np.isfinite(jax.tree.leaves(norms)).all()
  # Every part of the network, and the class weights, get a gradient.
  assert all(sum(jax.tree.leaves(part)) > 0 for part in norms.values())


def objective_of(loss, **overrides):
  """`metric_module.objective` with the factory's defaults."""
  defaults = methods.parameters(methods.metric)
  names = inspect.signature(metric_module.objective).parameters
  kwargs = {k: p.default for k, p in defaults.items() if k in names}
  kwargs.pop("loss")
  return metric_module.objective(loss, **{**kwargs, **overrides})


@pytest.mark.parametrize("options", [
    {},  # the defaults: Hermans et al.'s raw embeddings, Euclidean
    dict(normalize=True, squared=True, mining="semi_hard", margin=0.5),
    dict(mining="batch_all", margin=0.5),
])
def test_metric_triplet_wiring_reaches_the_loss(options):
  rng = np.random.default_rng(0)
  z = rng.normal(size=(1, 8, 3)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2, 3, 3], np.int32)
  value, update = objective_of("triplet", **options)(
      jnp.asarray(z), jnp.asarray(labels), {}, ())
  x = _unit(z[0]) if options.get("normalize") else z[0]
  # The wiring (normalisation, distance, mining, margin) against the
  # library loss, which tests/test_losses_metric.py checks against numpy.
  want = losses.batch_triplet(
      jnp.asarray(x), labels, margin=options.get("margin", 0.2),
      mining=options.get("mining", "batch_hard"),
      squared=options.get("squared", False))
  np.testing.assert_allclose(value, want, rtol=1e-6)
  assert update == ()


def test_metric_defaults_follow_hermans_et_al():
  """The official triplet-reid defaults: raw embeddings and Euclidean
  distances (the old defaults, l2-normalised squared distances, give
  another value), one view per image, the fc1024 head."""
  rng = np.random.default_rng(1)
  z = jnp.asarray(3.0 * rng.normal(size=(1, 8, 3)), jnp.float32)
  labels = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
  default, _ = objective_of("triplet")(z, labels, {}, ())
  facenet = objective_of("triplet", normalize=True, squared=True)
  assert not np.isclose(default, facenet(z, labels, {}, ())[0])
  np.testing.assert_allclose(
      default, losses.batch_triplet(z[0], labels, squared=False), rtol=1e-6)
  method = methods.metric(backbone="tiny_cnn")
  assert len(method.crops(256)) == 1
  params = jax.eval_shape(method.init, jax.random.key(0),
                          jnp.zeros((2, 16, 16, 3), jnp.uint8))[0]
  assert params["projector"]["layers"]["linear0"]["kernel"].shape == (8, 1024)
  assert params["projector"]["layers"]["linear1"]["kernel"].shape == (1024,
                                                                      128)


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
  x, y = metric_module.group_by_class(jnp.asarray(z), jnp.asarray(labels), 2)
  want_x, want_y = _grouped_numpy(z, labels, 2)
  np.testing.assert_array_equal(x, want_x)
  np.testing.assert_array_equal(y, want_y)
  assert np.all(want_y == np.array([[5], [7]]))
  with pytest.raises(ValueError, match="classes_per_batch"):
    metric_module.group_by_class(jnp.asarray(z), jnp.asarray(labels), 4)


def test_metric_contrastive_pair_objective_matches_numpy():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(2, 6, 3)).astype(np.float32)
  labels = np.array([0, 0, 1, 1, 2, 2])
  value, _ = objective_of("contrastive_pair", classes_per_batch=3,
                          normalize=True, margin=1.5)(
      jnp.asarray(z), jnp.asarray(labels), {}, ())
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
  value, _ = objective_of("n_pair", classes_per_batch=3, l2_reg=0.0)(
      jnp.asarray(z), jnp.asarray(labels), {}, ())
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
  classifier = {"kernel": rng.normal(size=(3, 3)).astype(np.float32),
                "bias": rng.normal(size=3).astype(np.float32)}
  state = metric_module.CenterLossState(jnp.asarray(centers))
  value, update = objective_of("center_loss", center_weight=0.1)(
      jnp.asarray(z), jnp.asarray(labels), {"class_weights": classifier},
      state)
  x = z[0]
  softmax = 0.0
  for i, c in enumerate(labels):
    logits = x[i] @ classifier["kernel"] + classifier["bias"]
    softmax += np.log(np.sum(np.exp(logits))) - logits[c]
  center = np.mean([0.5 * np.sum((x[i] - centers[c]) ** 2)
                    for i, c in enumerate(labels)])
  np.testing.assert_allclose(value, softmax / 4 + 0.1 * center, rtol=1e-5)
  # Wen et al., eq. 4: c_j ← c_j − α Σ_i δ(y_i=j)(c_j − x_i) / (1 + n_j).
  method = build("metric", loss="center_loss", num_classes=3,
                 center_alpha=0.5)
  params, new = method.post_update({}, state, update, 0)
  assert params == {}
  for j in range(3):
    members = [x[i] for i in range(4) if labels[i] == j]
    delta = sum(centers[j] - m for m in members) / (1 + len(members))
    np.testing.assert_allclose(new.centers[j], centers[j] - 0.5 * delta,
                               rtol=1e-5)
  # The centers get no gradient from the loss.
  grad = jax.grad(lambda c: objective_of("center_loss")(
      jnp.asarray(z), jnp.asarray(labels), {"class_weights": classifier},
      metric_module.CenterLossState(c))[0])(jnp.asarray(centers))
  assert not np.any(np.asarray(grad))


def test_metric_needs_labels_and_balanced_batches_when_traced():
  batch = batches(1)[0]
  method = build("metric", loss="contrastive_pair", classes_per_batch=3,
                 augment=NO_VIEWS)
  params, model_state, state = method.init(jax.random.key(0), batch)
  with pytest.raises(ValueError, match="label"):
    method.loss(params, model_state, state, {"image": batch["image"]},
                jax.random.key(1), 0)
  with pytest.raises(ValueError, match="classes_per_batch"):  # 3 ∤ 16
    method.loss(params, model_state, state, batch, jax.random.key(1), 0)


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
  history, metrics = run_steps(build("clip"), batches(8))
  assert_loss_goes_down(metrics)
  np.testing.assert_allclose(metrics[0]["temperature"], 0.07, rtol=1e-5)
  assert history[-1].params["log_scale"] != history[0].params["log_scale"]
  # The towers share no weights and both train.
  for name in clip_module.TOWERS:
    moved = jax.tree.map(lambda a, b: not np.allclose(a, b),
                         history[0].params[name], history[-1].params[name])
    assert all(jax.tree.leaves(moved)), name


def test_clip_loss_is_symmetric_info_nce_of_the_two_towers():
  method = build("clip", init_temperature=0.5)
  batch = {"image": jnp.asarray(toy_images()[0][:6])}
  params, model_state, state = method.init(jax.random.key(0), batch)
  rng = jax.random.key(3)
  value, out = jax.jit(lambda p: method.loss(p, model_state, state, batch,
                                             rng, 0))(params)
  tower = models.compose(models.get("tiny_cnn"), projector=models.projector(
      None, 16, 16, num_layers=1))

  @jax.jit
  def towers(params):
    views = _shared.views(CHEAP_VIEWS).make(rng, batch)
    return [tower.apply(params[name], model_state[name], view,
                        train=True)[0]["projection"]
            for name, view in zip(clip_module.TOWERS, views)]

  a, b = [np.asarray(x, np.float64) for x in towers(params)]
  logits = _unit(a) @ _unit(b).T / 0.5
  n = len(logits)
  rows = [np.log(np.sum(np.exp(logits[i]))) - logits[i, i] for i in range(n)]
  cols = [np.log(np.sum(np.exp(logits[:, j]))) - logits[j, j]
          for j in range(n)]
  np.testing.assert_allclose(value, 0.5 * (np.mean(rows) + np.mean(cols)),
                             rtol=1e-4)
  np.testing.assert_allclose(out.metrics["temperature"], 0.5, rtol=1e-6)
  features = jax.jit(lambda p: method.encode(p, model_state, state,
                                             batch["image"]))(params)
  assert features.shape == (6, 8)
  # Tower A's backbone, in eval mode.
  want, _ = models.get("tiny_cnn").apply(
      params["encoder_a"]["backbone"], model_state["encoder_a"]["backbone"],
      _shared.views(CHEAP_VIEWS).normalize(batch["image"]), train=False)
  np.testing.assert_allclose(features, want, rtol=1e-5, atol=1e-6)


def test_clip_clamps_the_logit_scale_after_the_step_as_open_clip():
  """open_clip clamps t to [0, log 100] in place after the optimizer step;
  the loss uses exp(t) unclamped, so t above the clamp still has a
  gradient (a clamp inside the loss would give none)."""
  method = build("clip", max_scale=100.0)
  batch = {"image": jnp.asarray(toy_images()[0][:4])}
  params, model_state, state = method.init(jax.random.key(0), batch)
  grad = jax.jit(jax.grad(lambda p: method.loss(
      p, model_state, state, batch, jax.random.key(1), 0)[0]))
  above = {**params, "log_scale": jnp.asarray(np.log(100.0) + 1.0,
                                              jnp.float32)}
  np.testing.assert_allclose(clip_module.temperature(above),
                             np.exp(-np.log(100.0) - 1.0), rtol=1e-6)
  assert grad(above)["log_scale"] != 0
  for t, want in ((np.log(100.0) + 1.0, np.log(100.0)), (-0.5, 0.0),
                  (1.0, 1.0)):
    clamped, new_state = method.post_update(
        {**params, "log_scale": jnp.asarray(t, jnp.float32)}, state, (), 0)
    np.testing.assert_allclose(clamped["log_scale"], want, rtol=1e-6)
    assert new_state == state
    tree_allclose(clamped["encoder_b"], params["encoder_b"])


# =================================================================== cpc ===


def test_cpc_training_lowers_the_loss():
  history, metrics = run_steps(build("cpc"), batches(8))
  assert_loss_goes_down(metrics)
  assert set(history[-1].params) == {"backbone", "context", "targets",
                                     "predictors"}


def test_cpc_patches_match_loops():
  images = np.arange(2 * 11 * 11).reshape(2, 11, 11, 1)
  grid = np.asarray(cpc_module.patches(jnp.asarray(images), 5, 3))
  assert grid.shape == (2, 3, 3, 5, 5, 1)  # (11 − 5) // 3 + 1 = 3
  for i in range(3):
    for j in range(3):
      np.testing.assert_array_equal(
          grid[:, i, j], images[:, 3 * i:3 * i + 5, 3 * j:3 * j + 5])


@pytest.mark.parametrize("layers", [1, 3])
def test_cpc_context_sees_only_the_rows_above(layers):
  net = cpc_module.PixelCNNContext(4, 8, num_layers=layers, rngs=nnx.Rngs(0))
  z = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 6, 4)),
                  jnp.float32)
  # d(sum of output row r) / d(input row s), for every r and s.
  jacobian = jax.jit(jax.jacrev(lambda z: jnp.sum(net(z)[0],
                                                  axis=(1, 2))))(z)
  reach = np.abs(np.asarray(jacobian)[:, 0]).sum(axis=(2, 3))  # [r, s]
  for row in range(6):
    # Each block reaches one row up (its 2×1 convolution), nothing below.
    np.testing.assert_array_equal(reach[row] > 0, [row - layers <= r <= row
                                                   for r in range(6)])


def test_cpc_loss_matches_numpy():
  """CPC v2's pseudocode: 1×1 targets of the latents, scaled 1×1
  predictions per offset, one softmax over every target of the batch per
  query, the offsets' mean losses summed."""
  rng = np.random.default_rng(1)
  n, g, d, dim_t, scale = 2, 5, 3, 4, 0.5
  rows_ahead = cpc_module.offsets(3, 1)
  assert rows_ahead == (2, 3)
  z, c = rng.normal(size=(n, g, g, d)), rng.normal(size=(n, g, g, d))
  params = {"targets": {"kernel": rng.normal(size=(d, dim_t)),
                        "bias": rng.normal(size=dim_t)},
            "predictors": {"kernel": rng.normal(size=(2, d, dim_t)),
                           "bias": rng.normal(size=(2, dim_t))}}
  value = cpc_module.objective(jax.tree.map(jnp.asarray, params),
                               jnp.asarray(c), jnp.asarray(z), rows_ahead,
                               scale)
  targets = z @ params["targets"]["kernel"] + params["targets"]["bias"]
  keys = targets.reshape(-1, dim_t)
  total = 0.0
  for h, k in enumerate(rows_ahead):
    w, b = (params["predictors"][key][h] for key in ("kernel", "bias"))
    terms = []
    for image in range(n):
      for i in range(g - k):
        for j in range(g):
          q = scale * (c[image, i, j] @ w + b)
          logits = keys @ q
          terms.append(np.log(np.sum(np.exp(logits)))
                       - q @ targets[image, i + k, j])
    total += np.mean(terms)
  np.testing.assert_allclose(value, total, rtol=1e-5)


def test_cpc_defaults_follow_the_papers():
  """CPC v2's pseudocode (5 context blocks of 256, 64-d targets, only 3
  rows ahead) on CPC v1's views (one per image: 73% crops, greyscale)."""
  method = methods.cpc(backbone="tiny_cnn", patch_size=4, patch_stride=2)
  params = jax.eval_shape(method.init, jax.random.key(0),
                          jnp.zeros((2, 16, 16, 3), jnp.uint8))[0]
  assert params["predictors"]["kernel"].shape == (1, 8, 64)
  assert params["targets"]["kernel"].shape == (8, 64)
  assert len(params["context"]["blocks"]) == 5
  assert params["context"]["blocks"][0]["reduce"]["kernel"].shape == (1, 1, 8,
                                                                      256)
  (view,) = method.crops(256)
  assert view.scale == (0.73, 0.73) and view.grayscale_prob == 1.0


def test_cpc_encode_pools_patch_features_and_checks_the_grid():
  images = jnp.asarray(toy_images()[0][:3])
  method = build("cpc")
  params, model_state, state = method.init(jax.random.key(0), images)
  features = method.encode(params, model_state, state, images)
  grid = cpc_module.patches(_shared.views(CHEAP_VIEWS).normalize(images), 8,
                            4)
  per_patch, _ = models.get("tiny_cnn").apply(
      params["backbone"], model_state["backbone"],
      grid.reshape(-1, 8, 8, 1), train=False)
  np.testing.assert_allclose(
      features, np.asarray(per_patch).reshape(3, 9, -1).mean(axis=1),
      rtol=1e-5, atol=1e-6)
  # "concat": patch (i, j)'s features at columns [(3i + j)·D, (3i + j + 1)·D).
  concat = build("cpc", grid_pooling="concat").encode(params, model_state,
                                                      state, images)
  np.testing.assert_allclose(
      concat, np.asarray(per_patch).reshape(3, -1), rtol=1e-5, atol=1e-6)
  # A grid of 3 rows cannot predict 3 rows ahead: stopped at `init`.
  for kwargs in (dict(prediction_steps=3), dict(patch_size=20)):
    with pytest.raises(ValueError, match="prediction_steps"):
      build("cpc", **kwargs).init(jax.random.key(0), images)


# ============================================================ bfloat16 ===


@pytest.mark.parametrize("name, kwargs", [
    ("cpc", dict(augment=NO_VIEWS)),
    ("metric", dict(augment=NO_VIEWS)),
    ("clip", {}),
])
def test_bfloat16_compute_gives_a_close_float32_loss(name, kwargs):
  values = {}
  batch = batches(1)[0]
  for dtype in ("float32", "bfloat16"):
    method = build(name, dtype=dtype, **kwargs)
    params, model_state, state = method.init(jax.random.key(0), batch)
    value = jax.jit(lambda p, m=method: m.loss(
        p, model_state, state, batch, jax.random.key(1), 0)[0])(params)
    assert value.dtype == jnp.float32 and np.isfinite(value)
    values[dtype] = float(value)
  # The triplet hinge is a difference of distances near the 0.2 margin:
  # bfloat16's rounding is judged against the margin (2.5%), not the value.
  np.testing.assert_allclose(values["bfloat16"], values["float32"],
                             rtol=2e-2, atol=5e-3)


# ========================================================== 8 devices ===


@pytest.mark.parametrize("name, kwargs", [
    ("metric", dict(loss="contrastive_pair", classes_per_batch=P,
                    augment=NO_VIEWS)),
    ("cpc", dict(augment=NO_VIEWS)),
    ("clip", {}),
], ids=["metric_pairs", "cpc", "clip"])
def test_eight_devices_equal_one(name, kwargs):
  """A train step on the batch sharded over 8 devices equals the step on
  one device: the P×K grouping of the pairs, CPC's contrast set over all
  patches, CLIP's batch of negatives and BatchNorm all see the global
  batch."""
  assert jax.device_count() == 8
  runs = {}
  for devices in (8, 1):
    # SGD: Adam would blow the rounding differences of zero gradients up.
    config = optimizer_config(devices, name="sgd", learning_rate=0.5)
    runs[devices] = run_steps(build(name, **kwargs), batches(1), config)
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
  for name in ("metric", "clip", "cpc"):
    assert methods.get(name) is getattr(methods, name)
    assert methods.get(name).__name__ == name


@pytest.mark.parametrize("name", ["metric", "clip", "cpc"])
def test_breadth_configs_build_for_every_preset(name):
  module = importlib.import_module(f"configs.{name}")
  assert module.get_config().dataset.name == "mnist5k"
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name and config.dataset.name == preset
    assert 0 <= config.optimizer.warmup_steps < max(config.total_steps, 1)
    if name == "metric":
      assert config.method.num_classes == config.dataset.num_classes
      if preset == "imagefolder":  # P×K only when set: classes unknown
        assert config.method.classes_per_batch == 0
      else:
        assert config.batch_size % config.method.classes_per_batch == 0
      if preset != "mnist5k":  # Hermans et al.: Adam without decay
        assert config.optimizer.weight_decay == 0.0
    assert methods.build(config).name == name
  if name == "metric":
    config = module.get_config("cifar100,method.num_classes=7")
    assert config.method.num_classes == 7
    config = module.get_config(
        "imagefolder,method.loss=arcface,method.classes_per_batch=8")
    assert config.method.classes_per_batch == 8
    config.dataset.num_classes = 37  # as `common.resolve_dataset` does
    assert config.method.num_classes == 37
    assert methods.build(config).name == "metric"
