"""DeepCluster, DeeperCluster and SeLa: the pseudo-label methods.

The shared helpers (`ssljax.methods._pseudo_labels`) are checked against
numpy written from the papers' formulas (PCA-whitening, class-balancing
weights, heads, cross-entropy), scikit-learn's NMI and explicit loops; the
clusterings against blobs whose clusters are known (up to a permutation);
SeLa's labels against a numpy transcription of the official Sinkhorn-Knopp
(`optimize_L_sk`). Each method then trains a few steps on toy images in a
simulation of the training loop: the dataset pass (features of every
example in dataset order, stacked, then `update` and the optimizer reset
of the re-drawn heads) before step 0 and every `every(config)` steps, and
batches that carry "index". Shapes are tiny (16×16 images, a CNN of 8
channels).
"""

import functools

import chex
import jax
import jax.flatten_util
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from sklearn.metrics import normalized_mutual_info_score

from _toy_data import shape_images
from configs import common
from ssljax import methods, pretext, train
from ssljax.methods import _pseudo_labels as pl
from ssljax.methods import _shared, deepcluster, deepercluster, sela

MODULES = {"deepcluster": deepcluster, "deepercluster": deepercluster,
           "sela": sela}
N, BATCH, SIZE = 32, 16, 16
# Small settings of each method for the toy images.
TOY = {
    "deepcluster": dict(proj_hidden_dim=32, proj_dim=16, num_clusters=4,
                        pca_dim=8, kmeans_iters=10),
    "deepercluster": dict(proj_hidden_dim=32, proj_dim=16, num_clusters=4,
                          num_super_clusters=2, pca_dim=8, kmeans_iters=10),
    "sela": dict(num_clusters=4, num_heads=2, sinkhorn_iters=50),
}


def toy_config(name, **method_fields) -> ml_collections.ConfigDict:
  """One device, Adam, no augmentation (compiles fast), N toy images."""
  config = ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, seed=0, mesh=dict(data=1),
      compute_dtype="float32", dataset=dict(train_size=N),
      method=MODULES[name].default_config(),
      optimizer=dict(name="adamw", learning_rate=0.5, weight_decay=0.0,
                     momentum=0.9, warmup_steps=0)))
  config.method.update(backbone="tiny_cnn", **TOY[name])
  config.method.augment = _shared.augment_config("none")
  config.method.update(method_fields)
  return config


def toy_images():
  """N toy images of 4 shapes, each with a bright corner mark so that their
  rotations can be told apart (DeeperCluster's targets)."""
  images = shape_images(np.arange(N) % 4, SIZE)[0]
  images[:, :3, :3] = 255
  return images


@functools.cache
def initialised(name):
  """(params, model_state, method_state) of `name` on the toy config, built
  once per module (eager network initialisation is slow); read-only."""
  return MODULES[name].init(toy_config(name), jax.random.key(0),
                            toy_images()[:BATCH])


def rand(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def same_partition(a, b):
  """True when labellings a and b group the rows identically."""
  a, b = np.asarray(a), np.asarray(b)
  return all(len(set(b[a == i])) == 1 for i in set(a)) and (
      len(set(a)) == len(set(b)))


# ========================================================== the helpers ===


def test_lookup_takes_each_examples_row():
  labels = np.arange(30, dtype=np.int32).reshape(3, 10) * 7 % 11
  weights = np.linspace(0.5, 2.0, 10).astype(np.float32)
  state = pl.PseudoLabels(jnp.asarray(labels), jnp.asarray(weights))
  index = np.array([9, 0, 4, 4, 2], np.int32)
  got_labels, got_weights = jax.jit(pl.lookup)(state, jnp.asarray(index))
  for h in range(3):
    for b, i in enumerate(index):
      assert got_labels[h, b] == labels[h, i]
      assert got_weights[b] == weights[i]
  assert pl.lookup(pl.PseudoLabels(jnp.asarray(labels)), index)[1] is None


@pytest.mark.parametrize("index", [np.array([0.0, 1.0]), np.array([[0, 1]]),
                                   np.array([0, 10]), np.array([-1, 0])])
def test_lookup_rejects_bad_index(index):
  state = pl.PseudoLabels(jnp.zeros((1, 10), jnp.int32))
  with pytest.raises(ValueError, match="index"):
    pl.lookup(state, index)


def test_heads_match_numpy():
  heads = pl.init_heads(jax.random.key(0), num_heads=3, in_dim=40,
                        num_classes=50)
  kernel, bias = np.asarray(heads["kernel"]), np.asarray(heads["bias"])
  assert kernel.shape == (3, 40, 50) and np.all(bias == 0)
  assert abs(kernel.std() - pl.HEAD_INIT_STD) < 1e-3
  heads = {"kernel": jnp.asarray(rand((2, 5, 4))),
           "bias": jnp.asarray(rand((2, 4), 1))}
  x = rand((3, 5), 2)
  want = np.zeros((2, 3, 4))
  for h in range(2):
    for b in range(3):
      for k in range(4):
        want[h, b, k] = sum(x[b, d] * heads["kernel"][h, d, k]
                            for d in range(5)) + heads["bias"][h, k]
  np.testing.assert_allclose(pl.apply_heads(heads, x), want, rtol=1e-5,
                             atol=1e-6)
  low = pl.apply_heads(heads, jnp.asarray(x, jnp.bfloat16))
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, want, atol=0.05)
  with pytest.raises(ValueError, match="x"):
    pl.apply_heads(heads, x[:, :4])
  uniform = pl.init_heads(jax.random.key(0), num_heads=3, in_dim=40,
                          num_classes=50, std=None)
  bound = 40 ** -0.5  # PyTorch's nn.Linear default
  for leaf in (uniform["kernel"], uniform["bias"]):
    assert np.all(np.abs(leaf) <= bound) and np.abs(leaf).max() > 0.9 * bound
  fresh = pl.reinit_heads(heads, jax.random.key(1))
  assert fresh["kernel"].shape == (2, 5, 4) and np.all(fresh["bias"] == 0)
  with pytest.raises(ValueError, match="num_classes"):
    pl.init_heads(jax.random.key(0), num_heads=1, in_dim=2, num_classes=0)


def test_weighted_cross_entropy_matches_numpy_and_has_gradients():
  logits, labels = rand((2, 3, 5)), np.array([[4, 0, 2]])
  weights = np.array([0.5, 1.0, 2.0], np.float32)
  want = 0.0
  for v in range(2):
    for b in range(3):
      row = logits[v, b].astype(np.float64)
      log_p = row[labels[0, b]] - np.log(np.sum(np.exp(row)))
      want += -weights[b] * log_p
  value = pl.cross_entropy(jnp.asarray(logits), labels, weights)
  np.testing.assert_allclose(value, want / 6, rtol=1e-5)
  low = pl.cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, weights)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, want / 6, rtol=2e-2)
  extreme = jnp.asarray(logits) * 1e4
  value, grad = jax.value_and_grad(pl.cross_entropy)(extreme, labels, weights)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  with jax.enable_x64(True):
    check_grads(
        lambda z: pl.cross_entropy(z, labels, weights.astype(np.float64)),
        (logits.astype(np.float64),), order=1, modes=["rev"])


def _numpy_pca_whiten(x, dim):
  """From the SVD X̄ = U S Vᵀ, the whitened components: √N U[:, :dim]."""
  x = np.asarray(x, np.float64)
  u, _, _ = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
  return np.sqrt(len(x)) * u[:, :dim]


def test_pca_whiten_matches_numpy_svd_up_to_sign():
  # Distinct variances per direction, so the components are well defined.
  x = rand((60, 6)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2]) + 3.0
  x = x @ np.linalg.qr(rand((6, 6), 1))[0].astype(np.float32)
  got = np.asarray(jax.jit(pl.pca_whiten, static_argnums=1)(x, 4))
  want = _numpy_pca_whiten(x, 4)
  signs = np.sign(np.sum(got * want, axis=0))
  np.testing.assert_allclose(got * signs, want, atol=2e-3)
  np.testing.assert_allclose(got.T @ got / 60, np.eye(4), atol=1e-3)
  low = pl.pca_whiten(jnp.asarray(x, jnp.bfloat16), 4)
  assert low.dtype == jnp.float32


def test_pca_whiten_is_finite_without_variance():
  # Rank 2 in 5 dimensions, and a constant input: floored eigenvalues.
  x = rand((10, 2)) @ rand((2, 5), 1)
  assert np.all(np.isfinite(pl.pca_whiten(x, 5)))
  assert np.all(np.isfinite(pl.preprocess_features(np.ones((4, 3)), 8)))


def test_preprocess_features_whitens_to_unit_rows():
  x = rand((20, 6))
  y = np.asarray(pl.preprocess_features(x, 4))
  want = _numpy_pca_whiten(x, 4)
  want /= np.linalg.norm(want, axis=1, keepdims=True)
  np.testing.assert_allclose(np.abs(y), np.abs(want), atol=2e-3)
  assert pl.preprocess_features(x, 256).shape == (20, 6)  # min(pca_dim, D)


@pytest.mark.parametrize("dim", [0, 7, 2.0])
def test_pca_whiten_rejects_bad_dim(dim):
  with pytest.raises(ValueError, match="dim"):
    pl.pca_whiten(rand((10, 6)), dim)


def test_balance_weights_match_loops():
  labels = np.array([0, 0, 0, 1, 4, 4, 5, 5, 5, 5])  # clusters 2, 3 empty
  for groups in (1, 2, 3):
    per = 6 // groups
    got = np.asarray(jax.jit(pl.balance_weights, static_argnums=(1,),
                             static_argnames="num_groups")(
                                 labels, 6, num_groups=groups))
    want = []
    filled_groups = sum(
        any(labels // per == g) for g in range(groups))
    for y in labels:
      size = np.sum(labels == y)
      group = y // per
      filled = len({c for c in labels if c // per == group})
      want.append(len(labels) / (filled_groups * filled * size))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # The sampler is uniform over the (non-empty) groups and classes.
    np.testing.assert_allclose(got.mean(), 1.0, rtol=1e-6)
  with pytest.raises(ValueError, match="num_groups"):
    pl.balance_weights(labels, 6, num_groups=4)
  with pytest.raises(ValueError, match="labels"):
    pl.balance_weights(labels, 5)


def test_nmi_matches_sklearn():
  rng = np.random.default_rng(0)
  a = rng.integers(0, 7, 200)
  cases = [(a, rng.integers(0, 5, 200)),             # unrelated
           (a, (a * 3 + 1) % 7),                      # relabelled: 1
           (a, np.where(rng.random(200) < 0.3, 0, a)),  # noisy copy
           (a, np.zeros(200, int)),                   # one side constant: 0
           (np.zeros(5, int), np.full(5, 3)),         # both constant: 1
           (np.array([1, 2]), np.array([0, 0]))]
  nmi = jax.jit(pl.normalized_mutual_information)
  for x, y in cases:
    np.testing.assert_allclose(nmi(x, y), normalized_mutual_info_score(x, y),
                               atol=1e-5)
  with pytest.raises(ValueError, match="b"):
    pl.normalized_mutual_information(a, a[:-1])
  with pytest.raises(ValueError, match="a"):
    pl.normalized_mutual_information(a.astype(float), a)


def test_cluster_statistics_match_numpy():
  labels = np.array([[0, 0, 0, 1, 1, 3], [2, 2, 2, 2, 2, 2]])
  got = pl.cluster_statistics(labels, 5)
  counts = [np.bincount(row, minlength=5) for row in labels]
  p = [c / 6 for c in counts]
  entropy = [-sum(q * np.log(q) for q in row if q > 0) for row in p]
  np.testing.assert_allclose(got["label_entropy"], np.mean(entropy),
                             rtol=1e-6)
  np.testing.assert_allclose(got["empty_clusters"], (2 + 4) / 2)
  np.testing.assert_allclose(got["clusters_used_fraction"], (3 + 1) / 10)
  np.testing.assert_allclose(got["largest_cluster_fraction"], (0.5 + 1) / 2)


def test_every_is_reassign_epochs_of_steps():
  config = toy_config("deepcluster", reassign_epochs=1.5)
  assert pl.every(config) == 3  # 1.5 epochs of 32 // 16 steps
  config.method.reassign_epochs = 0.1
  assert pl.every(config) == 1
  config.method.reassign_epochs = 0.0
  with pytest.raises(ValueError, match="reassign_epochs"):
    pl.every(config)


# ==================================================== the loop, simulated ===


def _zero_reset(opt_state, keys):
  """The loop's reset: zero the optimizer state under the `reset` keys."""
  def zero(path, leaf):
    names = {getattr(p, "key", None) for p in path}
    return jnp.zeros_like(leaf) if names & set(keys) else leaf
  return jax.tree_util.tree_map_with_path(zero, opt_state)


def simulate(config, method, n_steps):
  """Runs the training loop's protocol; returns (the states just before and
  after each dataset pass, the metrics of each pass, the losses)."""
  images = toy_images()
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config)
  state = train.create_train_state(config, method, jax.random.key(0),
                                   images[:BATCH], tx)
  step = train.make_train_step(config, method, tx, mesh)
  passes = method.dataset_update
  features = jax.jit(functools.partial(passes.features, config))
  update = jax.jit(functools.partial(passes.update, config))
  order = np.random.default_rng(0).permutation(N)
  snapshots, updates, losses = [], [], []
  for t in range(n_steps):
    if t % passes.every(config) == 0:
      before = jax.device_get(state)
      stacked = jnp.concatenate([
          features(state.params, state.model_state, state.method_state,
                   images[i:i + BATCH]) for i in range(0, N, BATCH)])
      params, method_state, metrics = update(
          state.params, state.model_state, state.method_state, stacked,
          jax.random.key(t), t)
      state = state._replace(params=params, method_state=method_state,
                             opt_state=_zero_reset(state.opt_state,
                                                   passes.reset))
      updates.append(jax.device_get(metrics))
      snapshots.append((before, jax.device_get(state)))
    index = order[t % 2 * BATCH:][:BATCH].astype(np.int32)
    batch = {"image": images[index], "label": np.zeros(BATCH, np.int32),
             "index": index}
    state, metrics = step(state, jax.device_put(batch,
                                                train.data_sharded(mesh)))
    losses.append(float(metrics["loss"]))
  return snapshots, updates, np.array(losses)


def assert_learns(losses):
  assert np.all(np.isfinite(losses)), losses
  assert losses[-3:].mean() < losses[:3].mean(), losses


@pytest.mark.parametrize("name", list(MODULES))
def test_method_trains_in_the_simulated_loop(name):
  # One dataset pass before step 0 and one at step 8; the loss decreases
  # within each labelling.
  config = toy_config(name, reassign_epochs=4.0)
  method = MODULES[name].METHOD
  snapshots, updates, losses = simulate(config, method, 16)
  assert len(updates) == 2
  assert_learns(losses[:8])
  assert_learns(losses[8:])
  for metrics in updates:
    assert all(np.isfinite(v) for v in metrics.values()), metrics
  (_, first), (before, after) = snapshots
  labels = after.method_state.labels
  assert labels.shape == (TOY[name].get("num_heads", 1), N)
  assert labels.min() >= 0 and labels.max() < config.method.num_clusters
  # The heads in `reset` are re-drawn by each pass; the other parameters
  # (SeLa's heads included) go on training across the passes.
  reset = method.dataset_update.reset
  for key in reset:
    for leaf in ("kernel", "bias"):
      assert not np.any(np.isclose(after.params[key][leaf],
                                   before.params[key][leaf]))
  for key in set(after.params) - set(reset):
    chex.assert_trees_all_equal(after.params[key], before.params[key])
  # The backbone learned between the passes.
  assert not np.allclose(
      jax.flatten_util.ravel_pytree(first.params["backbone"])[0],
      jax.flatten_util.ravel_pytree(after.params["backbone"])[0])


# ============================================================ DeepCluster ===


def blobs(sizes, centers, seed=0, noise=0.05):
  rng = np.random.default_rng(seed)
  rows = [c + noise * rng.normal(size=(s, len(c)))
          for s, c in zip(sizes, centers)]
  truth = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
  return np.concatenate(rows).astype(np.float32), truth


def test_deepcluster_update_recovers_blobs_and_redraws_the_classifier():
  # One component kept: the blobs' direction if PCA ranks them right (the
  # noise directions, whitened to unit variance, would hide it).
  config = toy_config("deepcluster", num_clusters=2, proj_dim=6, pca_dim=1)
  features, truth = blobs([20, 12], [np.full(6, 1.0), -np.full(6, 1.0)])
  params = {"classifier": pl.init_heads(jax.random.key(0), num_heads=1,
                                        in_dim=6, num_classes=2)}
  params["classifier"]["bias"] += 1.0
  previous = np.arange(N, dtype=np.int32)[None] % 3
  state = pl.PseudoLabels(jnp.asarray(previous), jnp.ones(N))
  new_params, new_state, metrics = jax.jit(
      functools.partial(deepcluster.update, config))(
          params, {}, state, features, jax.random.key(1), 0)
  labels = np.asarray(new_state.labels[0])
  assert same_partition(labels, truth)
  sizes = np.where(truth == 0, 20, 12)
  np.testing.assert_allclose(new_state.weights, N / (2 * sizes), rtol=1e-6)
  np.testing.assert_allclose(metrics["nmi_previous"],
                             normalized_mutual_info_score(labels,
                                                          previous[0]),
                             atol=1e-5)
  assert metrics["empty_clusters"] == 0
  np.testing.assert_allclose(metrics["largest_cluster_fraction"], 20 / N)
  assert metrics["kmeans_loss"] < 0.1
  assert np.all(new_params["classifier"]["bias"] == 0)
  assert not np.allclose(new_params["classifier"]["kernel"],
                         params["classifier"]["kernel"])


def test_deepcluster_features_are_the_heads_input_before_relu():
  config = toy_config("deepcluster")
  images = toy_images()[:4]
  params, model_state, state = initialised("deepcluster")
  got = pl.projection_features(config, params, model_state, state, images)
  net = pl.mlp_network(config)
  inputs = (images / 255.0 - 0.1307) / 0.3081  # MNIST's default statistics
  outputs, _ = net.apply(pl.network_params(params), model_state, inputs,
                         train=False)
  np.testing.assert_allclose(got, outputs["projection"], rtol=1e-5,
                             atol=1e-6)
  assert np.any(got < 0)  # no ReLU


def test_deepcluster_loss_weights_each_example_by_its_row():
  config = toy_config("deepcluster")
  images = toy_images()[:BATCH]
  params, model_state, _ = initialised("deepcluster")
  labels = np.arange(N, dtype=np.int32)[None] % 4
  weights = np.linspace(0.2, 3.0, N).astype(np.float32)
  state = pl.PseudoLabels(jnp.asarray(labels), jnp.asarray(weights))
  index = np.arange(N, dtype=np.int32)[::-2][:BATCH]
  value, out = deepcluster.loss(
      config, params, model_state, state,
      {"image": images, "index": index}, jax.random.key(1), 0)
  # Without augmentation the views are the images: the same forward pass.
  run = _shared.online(config, pl.mlp_network(config),
                       pl.network_params(params), model_state, images,
                       jax.random.key(1))
  logits = np.asarray(pl.apply_heads(
      params["classifier"], jax.nn.relu(run.outputs["projection"][0])))[0]
  want = 0.0
  for b, i in enumerate(index):
    row = logits[b].astype(np.float64)
    want -= weights[i] * (row[labels[0, i]] - np.log(np.exp(row).sum()))
  np.testing.assert_allclose(value, want / BATCH, rtol=1e-5)
  assert out.embeddings.shape == (BATCH, 8)


def test_deepcluster_loss_on_8_devices_matches_one(mesh8):
  config = toy_config("deepcluster")
  images = toy_images()[:BATCH]
  params, model_state, _ = initialised("deepcluster")
  state = pl.PseudoLabels(jnp.asarray(np.arange(N)[None] % 4, jnp.int32),
                          jnp.linspace(0.5, 1.5, N))
  batch = {"image": images, "index": np.arange(N, dtype=np.int32)[1::2]}
  fn = jax.jit(lambda b: deepcluster.loss(config, params, model_state, state,
                                          b, jax.random.key(1), 0)[0])
  sharded = jax.device_put(batch, NamedSharding(mesh8, P("data")))
  np.testing.assert_allclose(fn(sharded), fn(batch), rtol=1e-5)


@pytest.fixture(scope="module")
def mesh8():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def test_loss_needs_the_batch_index():
  config = toy_config("deepcluster")
  images = toy_images()[:BATCH]
  params, model_state, state = initialised("deepcluster")
  with pytest.raises(ValueError, match="index"):
    deepcluster.loss(config, params, model_state, state, {"image": images},
                     jax.random.key(1), 0)


BAD_CONFIGS = [
    ("deepcluster", "num_clusters", N + 1),
    ("deepcluster", "num_clusters", 0),
    ("deepcluster", "pca_dim", 0),
    ("deepcluster", "kmeans_iters", -1),
    ("deepcluster", "reassign_epochs", 0.0),
    ("deepercluster", "num_super_clusters", 3),
    ("deepercluster", "num_super_clusters", 0),
    ("sela", "num_heads", 0),
    ("sela", "lambda_", -1.0),
    ("sela", "sinkhorn_iters", 0),
    ("sela", "num_clusters", N + 1),
]


@pytest.mark.parametrize("name,key,value", BAD_CONFIGS)
def test_bad_config_raises_naming_the_key(name, key, value):
  config = toy_config(name, **{key: value})
  module = MODULES[name]
  with pytest.raises(ValueError, match=key):
    module.init(config, jax.random.key(0), toy_images()[:BATCH])
  with pytest.raises(ValueError, match=key):
    module.update(config, {}, {}, None, np.zeros((N, 4), np.float32),
                  jax.random.key(0), 0)


def test_update_rejects_features_of_another_size():
  config = toy_config("deepcluster")
  with pytest.raises(ValueError, match="features"):
    deepcluster.update(config, {}, {}, None, np.zeros((N - 1, 4), np.float32),
                       jax.random.key(0), 0)


# ========================================================== DeeperCluster ===


def test_hierarchical_kmeans_nests_subclusters_in_superclusters():
  # Two super-blobs far apart, each of two sub-blobs.
  corners = [np.array(c, float) for c in
             ([0, 0, 0], [0, 3, 0], [30, 0, 0], [30, 3, 0])]
  x, truth = blobs([8, 6, 10, 5], corners)
  labels = np.asarray(jax.jit(
      functools.partial(deepercluster.hierarchical_kmeans, iterations=10),
      static_argnums=(1, 2))(x, 4, 2, key=jax.random.key(0)))
  assert same_partition(labels, truth)
  assert same_partition(labels // 2, truth // 2)


def test_hierarchical_kmeans_keeps_subclusters_inside_with_empty_ones():
  # A super-cluster of 2 rows cannot fill its k/m = 4 sub-clusters: its
  # empty ones are re-seeded, possibly from the other super-cluster, yet
  # every row stays in a sub-cluster of its own super-cluster.
  corners = [np.array(c, float) for c in
             ([0, 0], [0, 3], [3, 0], [3, 3], [40, 40])]
  x, truth = blobs([7, 7, 7, 7, 2], corners)
  labels = np.asarray(jax.jit(
      functools.partial(deepercluster.hierarchical_kmeans, iterations=10),
      static_argnums=(1, 2))(x, 8, 2, key=jax.random.key(1)))
  assert labels.min() >= 0 and labels.max() < 8
  assert same_partition(labels // 4, truth == 4)


def test_hierarchical_kmeans_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_super_clusters"):
    deepercluster.hierarchical_kmeans(rand((10, 2)), 4, 3, iterations=1,
                                      key=jax.random.key(0))
  with pytest.raises(ValueError, match="num_clusters"):
    deepercluster.hierarchical_kmeans(rand((10, 2)), 12, 3, iterations=1,
                                      key=jax.random.key(0))


def test_hierarchical_targets_and_loss_match_loops():
  k, m = 6, 3
  per = k // m
  labels = np.array([0, 5, 3, 3, 1])
  rotations = np.array([2, 0, 3, 1, 0])
  super_class, sub_class = deepercluster.hierarchical_targets(
      labels, rotations, num_clusters=k, num_super_clusters=m)
  for n in range(5):
    assert super_class[n] == 4 * (labels[n] // per) + rotations[n]
    assert sub_class[n] == labels[n] % per
  super_logits, sub_logits = rand((5, 4 * m)), rand((4 * m, 5, per), 1)
  weights = np.array([1.0, 0.5, 2.0, 1.0, 0.1], np.float32)
  want = 0.0
  for n in range(5):
    s, j = super_class[n], sub_class[n]
    up = super_logits[n].astype(np.float64)
    down = sub_logits[s, n].astype(np.float64)
    want -= weights[n] * (up[s] - np.log(np.exp(up).sum())
                          + down[j] - np.log(np.exp(down).sum()))
  loss = functools.partial(deepercluster.hierarchical_loss,
                           super_class=super_class, sub_class=sub_class)
  np.testing.assert_allclose(loss(super_logits, sub_logits, weights=weights),
                             want / 5, rtol=1e-5)
  with jax.enable_x64(True):
    check_grads(
        lambda a, b: loss(a, b, weights=weights.astype(np.float64)),
        (super_logits.astype(np.float64), sub_logits.astype(np.float64)),
        order=1, modes=["rev"])
  with pytest.raises(ValueError, match="sub_logits"):
    loss(super_logits, sub_logits[:, :4], weights=weights)


def test_deepercluster_loss_rotates_each_example_and_finds_its_targets():
  config = toy_config("deepercluster", num_clusters=6, num_super_clusters=3)
  images = toy_images()[:BATCH]
  params, model_state, _ = deepercluster.init(config, jax.random.key(0),
                                              images)
  labels = (np.arange(N) * 5 % 6).astype(np.int32)
  weights = np.linspace(0.2, 3.0, N).astype(np.float32)
  state = pl.PseudoLabels(jnp.asarray(labels[None]), jnp.asarray(weights))
  index = np.arange(N, dtype=np.int32)[::-2][:BATCH]
  rng = jax.random.key(1)
  value, out = deepercluster.loss(config, params, model_state, state,
                                  {"image": images, "index": index}, rng, 0)
  # The rotations drawn with the second half of the key (no augmentation:
  # the view is the image itself).
  _, rotations = pretext.random_rotation(jax.random.split(rng)[1],
                                         images / 255.0)
  rotated = np.stack([np.rot90(images[b], rotations[b], axes=(0, 1))
                      for b in range(BATCH)])
  outputs, _ = pl.mlp_network(config).apply(
      pl.network_params(params), model_state,
      (rotated / 255.0 - 0.1307) / 0.3081, train=True)
  hidden = jax.nn.relu(outputs["projection"])
  up = np.asarray(pl.apply_heads(params["super_classifier"], hidden))[0]
  down = np.asarray(pl.apply_heads(params["sub_classifier"], hidden))
  want = 0.0
  for b, i in enumerate(index):
    s, j = 4 * (labels[i] // 2) + rotations[b], labels[i] % 2
    row_s, row_j = up[b].astype(np.float64), down[s, b].astype(np.float64)
    want -= weights[i] * (row_s[s] - np.log(np.exp(row_s).sum())
                          + row_j[j] - np.log(np.exp(row_j).sum()))
  np.testing.assert_allclose(value, want / BATCH, rtol=1e-5)
  assert len(set(np.asarray(rotations).tolist())) > 1
  assert out.embeddings.shape == (BATCH, 8)


def test_deepercluster_update_balances_over_superclusters():
  config = toy_config("deepercluster", num_clusters=4, num_super_clusters=2,
                      proj_dim=3, pca_dim=2)
  corners = [np.array(c, float) for c in
             ([0, 0, 0], [0, 3, 0], [30, 0, 0], [30, 3, 0])]
  # Each side of either axis holds 16 rows: the whitened blobs sit at
  # (±1, ±1), and the super-clusters pair neighbouring blobs.
  features, truth = blobs([9, 7, 7, 9], corners)
  params = {
      "super_classifier": pl.init_heads(jax.random.key(0), num_heads=1,
                                        in_dim=3, num_classes=8),
      "sub_classifier": pl.init_heads(jax.random.key(1), num_heads=8,
                                      in_dim=3, num_classes=2)}
  state = pl.init_state(config, 1, weighted=True)
  new_params, new_state, metrics = deepercluster.update(
      config, params, {}, state, features, jax.random.key(1), 0)
  labels = np.asarray(new_state.labels[0])
  assert same_partition(labels, truth)
  # Whitening equalises the two directions, so either may split the
  # super-clusters; each holds two neighbouring blobs.
  for c in range(2):
    assert len(set(truth[labels // 2 == c])) == 2
  # Super-class drawn uniformly (1/2), then its sub-class (1/2), then the
  # example within: w = N / (2 · 2 · |sub-cluster|).
  sizes = np.array([np.sum(labels == y) for y in labels])
  np.testing.assert_allclose(new_state.weights, N / (4 * sizes), rtol=1e-6)
  assert metrics["nmi_previous"] == 0  # the initial labels are constant
  for key in ("super_classifier", "sub_classifier"):
    assert not np.allclose(new_params[key]["kernel"], params[key]["kernel"])


# ================================================================= SeLa ===


def numpy_self_label(logits, lambda_, iterations):
  """The official `optimize_L_sk` (self-label), float64, fixed iterations:
  P^λ [K, N], r ← (1/K) / (P c), c ← (1/N) / (rᵀ P), labels = argmax_k of
  diag(r) P diag(c)."""
  logits = np.asarray(logits, np.float64)
  p = np.exp(logits - logits.max(axis=1, keepdims=True))
  p = (p / p.sum(axis=1, keepdims=True)).T ** lambda_
  k, n = p.shape
  r, c = np.ones((k, 1)) / k, np.ones((n, 1)) / n
  for _ in range(iterations):
    r = (1 / k) / (p @ c)
    c = (1 / n) / (r.T @ p).T
  return np.argmax(p * c.T * r, axis=0)


def test_sinkhorn_labels_match_the_official_algorithm_and_equipartition():
  logits = 0.3 * rand((120, 4)) + np.array([0.6, 0.2, 0.0, -0.3], np.float32)
  got = np.asarray(jax.jit(functools.partial(
      sela.sinkhorn_labels, lambda_=25.0, iterations=200))(logits))
  np.testing.assert_array_equal(got, numpy_self_label(logits, 25.0, 200))
  counts = np.bincount(got, minlength=4)
  assert np.all(np.abs(counts - 30) <= 3), counts
  # Without the equipartition most examples would take cluster 0.
  assert np.bincount(np.argmax(logits, 1), minlength=4).max() > 50


def test_sela_update_labels_every_head_from_its_outputs():
  config = toy_config("sela", num_heads=3, num_clusters=4, sinkhorn_iters=100)
  features = rand((N, 5))
  heads = {"kernel": jnp.asarray(rand((3, 5, 4), 1)),
           "bias": jnp.asarray(rand((3, 4), 2))}
  state = pl.PseudoLabels(jnp.zeros((3, N), jnp.int32))
  params, new_state, metrics = jax.jit(functools.partial(
      sela.update, config))({"heads": heads}, {}, state, features,
                            jax.random.key(0), 0)
  assert params["heads"] is not None and new_state.weights is None
  for h in range(3):
    logits = features @ np.asarray(heads["kernel"][h]) + np.asarray(
        heads["bias"][h])
    np.testing.assert_array_equal(new_state.labels[h],
                                  numpy_self_label(logits, 25.0, 100))
  counts = [np.bincount(row, minlength=4) / N for row in new_state.labels]
  entropy = np.mean([-sum(q * np.log(q) for q in row if q > 0)
                     for row in counts])
  np.testing.assert_allclose(metrics["label_entropy"], entropy, rtol=1e-5)
  assert metrics["label_entropy"] > 0.9 * np.log(4)
  assert metrics["nmi_previous"] == 0  # the previous labels are constant


def test_sela_labels_eval_mode_backbone_features():
  config = toy_config("sela")
  images = toy_images()[:BATCH]
  params, model_state, state = initialised("sela")
  got = sela.eval_features(config, params, model_state, state, images)
  inputs = (images / 255.0 - 0.1307) / 0.3081  # MNIST's default statistics
  outputs, _ = sela.network(config).apply(
      {"backbone": params["backbone"]}, model_state, inputs, train=False)
  np.testing.assert_allclose(got, outputs["features"], rtol=1e-5, atol=1e-6)
  assert got.dtype == jnp.float32


def test_sela_loss_averages_heads_and_views():
  config = toy_config("sela")
  images = toy_images()[:BATCH]
  params, model_state, _ = initialised("sela")
  labels = (np.arange(2 * N).reshape(2, N) * 3 % 4).astype(np.int32)
  state = pl.PseudoLabels(jnp.asarray(labels))
  index = np.arange(BATCH, dtype=np.int32) * 2
  value, _ = sela.loss(config, params, model_state, state,
                       {"image": images, "index": index}, jax.random.key(1),
                       0)
  features, _ = sela.network(config).apply(
      {"backbone": params["backbone"]}, model_state,
      (images / 255.0 - 0.1307) / 0.3081, train=True)
  logits = np.asarray(pl.apply_heads(params["heads"], features["features"]))
  want = 0.0
  for h in range(2):
    for b, i in enumerate(index):
      row = logits[h, b].astype(np.float64)
      want -= row[labels[h, i]] - np.log(np.exp(row).sum())
  np.testing.assert_allclose(value, want / (2 * BATCH), rtol=1e-5)


# ================================================================ configs ===


@pytest.mark.parametrize("name", list(MODULES))
def test_configs_build_every_preset(name):
  assert methods.get(name) is MODULES[name].METHOD
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  for preset in common.PRESETS:
    config = module.get_config(preset)
    assert config.method.name == name
    assert config.method.num_clusters <= config.dataset.train_size
    assert pl.every(config) >= 1
  mnist = module.get_config("mnist5k")
  assert mnist.method.backbone == "small_cnn"
  assert pl.every(mnist) == round(mnist.method.reassign_epochs * (4000 // 256))
