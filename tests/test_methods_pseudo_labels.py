"""DeepCluster, DeeperCluster and SeLa: the pseudo-label methods.

The shared helpers (`ssljax.methods._pseudo_labels`) are checked against
numpy written from the papers' formulas (PCA-whitening, class-balancing
weights, heads, cross-entropy, the official Sobel layer), scikit-learn's NMI
and explicit loops; the clusterings against blobs whose clusters are known
(up to a permutation); SeLa's labels against a numpy transcription of the
official Sinkhorn-Knopp (`optimize_L_sk`) and its label schedule against the
official `optimize_times` loop. Each factory then trains a few steps on toy
images in a simulation of the training loop: the dataset pass (features of
every example in dataset order, stacked, then `update` and the loop's
optimizer reset of the re-drawn heads) before step 0 and every `every`
steps, and batches that carry "index". Shapes are tiny (16×16 images, a CNN
of 8 channels).
"""

import functools
import inspect

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
from PIL import Image
from sklearn.metrics import normalized_mutual_info_score

from _toy_data import shape_images
from configs import common
from ssljax import methods, models, pretext, train
from ssljax.data import augment as augment_lib
from ssljax.losses import classification
from ssljax.methods import _pseudo_labels as pl
from ssljax.methods import _shared
from ssljax.methods.deepcluster import CLASSIFIER
from ssljax.methods.deepercluster import (SUB_CLASSIFIER, SUPER_CLASSIFIER,
                                          hierarchical_kmeans,
                                          hierarchical_loss,
                                          hierarchical_targets)
from ssljax.methods.sela import (HEADS, grayscale_first_view, label_steps,
                                 sinkhorn_labels)
from ssljax.train import dataset_update

NAMES = ("deepcluster", "deepercluster", "sela")
N, BATCH, SIZE = 32, 16, 16
NO_VIEWS = _shared.augment_config("none")  # the images: compiles fast
# Small settings of each method for the toy images.
TOY = {
    "deepcluster": dict(proj_hidden_dim=32, proj_dim=16, num_clusters=4,
                        pca_dim=8, kmeans_iters=10),
    "deepercluster": dict(proj_hidden_dim=32, proj_dim=16, num_clusters=4,
                          num_super_clusters=2, pca_dim=8, kmeans_iters=10),
    "sela": dict(num_clusters=4, num_heads=2, sinkhorn_iters=50,
                 label_horizon=0),
}
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # the default one-channel statistics


def toy_method(name, **fields):
  """`methods.<name>` for the N toy images: tiny_cnn, no augmentation, a
  dataset pass every 8 steps, the official Sobel layer where it has one."""
  return getattr(methods, name)(**{
      "backbone": "tiny_cnn", "augment": NO_VIEWS, "num_examples": N,
      "reassign_every": 8, **TOY[name], **fields})


def toy_config() -> ml_collections.ConfigDict:
  """The optimizer's config only: one device, Adam."""
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, mesh=dict(data=1),
      optimizer=dict(name="adamw", learning_rate=0.5, weight_decay=0.0,
                     momentum=0.9, warmup_steps=0)))


def toy_images():
  """N toy images of 4 shapes, each with a bright corner mark so that their
  rotations can be told apart (DeeperCluster's targets)."""
  images = shape_images(np.arange(N) % 4, SIZE)[0]
  images[:, :3, :3] = 255
  return images


def methods_config_of(name, arg):
  """`configs/<name>.py`'s config of `arg` ("preset[,key=value...]")."""
  module = __import__(f"configs.{name}", fromlist=["get_config"])
  return module.get_config(arg)


def normalized(images):
  return (np.asarray(images, np.float32) / 255.0 - MNIST_MEAN) / MNIST_STD


@functools.cache
def initialised(name, **fields):
  """(method, (params, model_state, method_state)) of `toy_method(name)`,
  built once per module (eager initialisation is slow); read-only."""
  method = toy_method(name, **fields)
  return method, method.init(jax.random.key(0), toy_images()[:BATCH])


def plain_mlp(dim=16, hidden=32):
  """The k-means methods' network without the Sobel layer."""
  setup = pl.setup("tiny_cnn", None, NO_VIEWS, "float32", use_sobel=False)
  return pl.mlp_network(setup, hidden, dim)


def np_sobel(x):
  """The official layer with explicit loops: grey = (R + G + B) / 3 (the
  1×1 convolution of weights 1/3), then PyTorch's Conv2d(1, 2, 3,
  padding=1) of the Sobel kernels (a cross-correlation)."""
  x = np.asarray(x, np.float64)
  gray = x.mean(axis=-1)
  kernels = [[[1, 0, -1], [2, 0, -2], [1, 0, -1]],
             [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]]
  b, h, w = gray.shape
  out = np.zeros((b, h, w, 2))
  for n in range(b):
    for y in range(h):
      for x_ in range(w):
        for c in range(2):
          for i in range(3):
            for j in range(3):
              yy, xx = y + i - 1, x_ + j - 1
              if 0 <= yy < h and 0 <= xx < w:
                out[n, y, x_, c] += kernels[c][i][j] * gray[n, yy, xx]
  return out


def rand(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def same_partition(a, b):
  """True when labellings a and b group the rows identically."""
  a, b = np.asarray(a), np.asarray(b)
  return all(len(set(b[a == i])) == 1 for i in set(a)) and (
      len(set(a)) == len(set(b)))


def blobs(sizes, centers, seed=0, noise=0.05):
  rng = np.random.default_rng(seed)
  rows = [c + noise * rng.normal(size=(s, len(c)))
          for s, c in zip(sizes, centers)]
  truth = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
  return np.concatenate(rows).astype(np.float32), truth


@pytest.fixture(scope="module")
def mesh8():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


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
  value = classification.cross_entropy(jnp.asarray(logits), labels, weights)
  np.testing.assert_allclose(value, want / 6, rtol=1e-5)
  low = classification.cross_entropy(jnp.asarray(logits, jnp.bfloat16), labels, weights)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, want / 6, rtol=2e-2)
  extreme = jnp.asarray(logits) * 1e4
  value, grad = jax.value_and_grad(classification.cross_entropy)(extreme, labels, weights)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  with jax.enable_x64(True):
    check_grads(
        lambda z: classification.cross_entropy(z, labels, weights.astype(np.float64)),
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



def test_sobel_matches_the_official_layer():
  x = rand((2, 5, 6, 3))
  got = jax.jit(pl.sobel)(x)
  np.testing.assert_allclose(got, np_sobel(x), rtol=1e-5, atol=1e-5)
  one_channel = rand((1, 4, 4, 1), 1)
  np.testing.assert_allclose(pl.sobel(one_channel), np_sobel(one_channel),
                             rtol=1e-5, atol=1e-5)
  assert pl.sobel(jnp.asarray(x, jnp.bfloat16)).dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="images"):
    pl.sobel(x[0])


def test_the_official_networks_read_sobel_gradients():
  # By default DeepCluster and DeeperCluster put the fixed Sobel layer in
  # front of the backbone: its first convolution sees 2 channels, and the
  # features (training, dataset pass, `encode`) are those of the gradients.
  for name in ("deepcluster", "deepercluster"):
    assert inspect.signature(getattr(methods, name)).parameters[
        "sobel"].default is True
  method, (params, model_state, state) = initialised("deepcluster")
  kernels = [x for x in jax.tree.leaves(params["backbone"]) if x.ndim == 4]
  assert kernels[0].shape[2] == 2
  images = toy_images()[:4]
  backbone = models.get("tiny_cnn", dtype=jnp.float32,
                        param_dtype=jnp.float32)
  want, _ = backbone.apply(params["backbone"], model_state["backbone"],
                           jnp.asarray(np_sobel(normalized(images)),
                                       jnp.float32), train=False)
  got = method.encode(params, model_state, state, images)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  plain = toy_method("deepcluster", sobel=False)
  plain_params, _, _ = plain.init(jax.random.key(0), images)
  kernels = [x for x in jax.tree.leaves(plain_params["backbone"])
             if x.ndim == 4]
  assert kernels[0].shape[2] == 1


def test_mlp_heads_start_as_the_official_layers():
  # DeepCluster's AlexNet draws its linear layers N(0, 0.01²) with zero
  # biases; DeeperCluster's VGG keeps PyTorch's U(±1/√fan_in).
  # (A linear layer before a BatchNorm has no bias.)
  layers = initialised("deepcluster")[1][0]["projector"]["layers"]
  kernels = [v["kernel"] for v in layers.values() if "kernel" in v]
  assert len(kernels) == 2
  assert abs(float(np.std(np.concatenate([k.ravel() for k in kernels])))
             - 0.01) < 0.002
  assert all(np.all(v["bias"] == 0) for v in layers.values()
             if "kernel" in v and "bias" in v)
  layers = initialised("deepercluster")[1][0]["projector"]["layers"]
  for layer in layers.values():
    if "kernel" in layer:
      bound = layer["kernel"].shape[0] ** -0.5
      for leaf in layer.values():
        assert np.all(np.abs(leaf) <= bound)
        assert np.abs(leaf).max() > 0.8 * bound


# ==================================================== the loop, simulated ===


def simulate(method, n_steps):
  """Runs the training loop's protocol; returns (the states just before and
  after each dataset pass, and the last state; the metrics of each pass;
  the losses)."""
  images = toy_images()
  config = toy_config()
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config)
  state = train.create_train_state(method, jax.random.key(0),
                                   images[:BATCH], tx)
  step = train.make_train_step(config, method, tx, mesh)
  passes = method.dataset_update
  features = jax.jit(passes.features)
  update = jax.jit(passes.update)
  order = np.random.default_rng(0).permutation(N)
  snapshots, updates, losses = [], [], []
  for t in range(n_steps):
    if t % passes.every == 0:
      before = jax.device_get(state)
      stacked = jnp.concatenate([
          features(state.params, state.model_state, state.method_state,
                   images[i:i + BATCH]) for i in range(0, N, BATCH)])
      params, method_state, metrics = update(
          state.params, state.model_state, state.method_state, stacked,
          jax.random.key(t), t)
      state = state._replace(
          params=params, method_state=method_state,
          opt_state=dataset_update.reset_entries(state.opt_state, params,
                                                 passes.reset))
      updates.append(jax.device_get(metrics))
      snapshots.append((before, jax.device_get(state)))
    index = order[t % 2 * BATCH:][:BATCH].astype(np.int32)
    batch = {"image": images[index], "label": np.zeros(BATCH, np.int32),
             "index": index}
    state, metrics = step(state, jax.device_put(batch,
                                                train.data_sharded(mesh)))
    losses.append(float(metrics["loss"]))
  snapshots.append((jax.device_get(state),))
  return snapshots, updates, np.array(losses)


def assert_learns(method, start, end):
  """The loss of every toy example, with one key, is lower at `end` than
  at `start` (the training losses are too noisy to compare: random views,
  DeeperCluster's random rotations)."""
  batch = {"image": toy_images(), "index": np.arange(N, dtype=np.int32)}
  loss = jax.jit(lambda s: method.loss(s.params, s.model_state,
                                       s.method_state, batch,
                                       jax.random.key(99), 0)[0])
  first, last = float(loss(start)), float(loss(end))
  assert last < first, (first, last)


@pytest.mark.parametrize("name", NAMES)
def test_method_trains_in_the_simulated_loop(name):
  # One dataset pass before step 0 and one at step 8; the loss decreases
  # within each labelling.
  method = toy_method(name)
  assert method.dataset_update.every == 8
  snapshots, updates, losses = simulate(method, 16)
  assert len(updates) == 2 and np.all(np.isfinite(losses)), losses
  (_, first), (before, after), (last,) = snapshots
  assert_learns(method, first, before)
  assert_learns(method, after, last)
  for metrics in updates:
    assert all(np.isfinite(v) for v in metrics.values()), metrics
  labels = after.method_state.labels
  assert labels.shape == (TOY[name].get("num_heads", 1), N)
  assert labels.min() >= 0 and labels.max() < TOY[name]["num_clusters"]
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


def test_deepcluster_update_recovers_blobs_and_redraws_the_classifier():
  # One component kept: the blobs' direction if PCA ranks them right (the
  # noise directions, whitened to unit variance, would hide it).
  method = toy_method("deepcluster", num_clusters=2, proj_dim=6, pca_dim=1)
  features, truth = blobs([20, 12], [np.full(6, 1.0), -np.full(6, 1.0)])
  params = {CLASSIFIER: pl.init_heads(jax.random.key(0), num_heads=1,
                                      in_dim=6, num_classes=2)}
  params[CLASSIFIER]["bias"] += 1.0
  previous = np.arange(N, dtype=np.int32)[None] % 3
  state = pl.PseudoLabels(jnp.asarray(previous), jnp.ones(N))
  new_params, new_state, metrics = jax.jit(method.dataset_update.update)(
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
  assert np.all(new_params[CLASSIFIER]["bias"] == 0)
  assert not np.allclose(new_params[CLASSIFIER]["kernel"],
                         params[CLASSIFIER]["kernel"])


def test_deepcluster_features_are_the_heads_input_before_relu():
  method, (params, model_state, state) = initialised("deepcluster")
  images = toy_images()[:4]
  got = method.dataset_update.features(params, model_state, state, images)
  outputs, _ = plain_mlp().apply(
      pl.network_params(params), model_state,
      jnp.asarray(np_sobel(normalized(images)), jnp.float32), train=False)
  np.testing.assert_allclose(got, outputs["projection"], rtol=1e-4,
                             atol=1e-5)
  assert got.dtype == jnp.float32 and np.any(got < 0)  # no ReLU


def deepcluster_batch():
  """The toy batch of rows N-1, N-3, ..., with labels and weights per row."""
  labels = np.arange(N, dtype=np.int32)[None] % 4
  weights = np.linspace(0.2, 3.0, N).astype(np.float32)
  state = pl.PseudoLabels(jnp.asarray(labels), jnp.asarray(weights))
  index = np.arange(N, dtype=np.int32)[::-2][:BATCH]
  return state, {"image": toy_images()[index], "index": index}


def test_deepcluster_loss_weights_each_example_by_its_row():
  method, (params, model_state, _) = initialised("deepcluster")
  state, batch = deepcluster_batch()
  value, out = jax.jit(method.loss)(params, model_state, state, batch,
                                    jax.random.key(1), 0)
  # Without augmentation the view is the image, through the Sobel layer.
  outputs, _ = plain_mlp().apply(
      pl.network_params(params), model_state,
      jnp.asarray(np_sobel(normalized(batch["image"])), jnp.float32),
      train=True)
  logits = np.asarray(pl.apply_heads(
      params[CLASSIFIER], jax.nn.relu(outputs["projection"])))[0]
  want = 0.0
  for b, i in enumerate(batch["index"]):
    row = logits[b].astype(np.float64)
    want -= state.weights[i] * (row[state.labels[0, i]]
                                - np.log(np.exp(row).sum()))
  np.testing.assert_allclose(value, want / BATCH, rtol=1e-4)
  assert out.embeddings.shape == (BATCH, 8)


def test_deepcluster_loss_on_8_devices_matches_one(mesh8):
  method, (params, model_state, _) = initialised("deepcluster")
  state, batch = deepcluster_batch()
  fn = jax.jit(lambda b: method.loss(params, model_state, state, b,
                                     jax.random.key(1), 0)[0])
  sharded = jax.device_put(batch, NamedSharding(mesh8, P("data")))
  np.testing.assert_allclose(fn(sharded), fn(batch), rtol=1e-5)


def test_deepcluster_bfloat16_is_close_to_float32():
  method, (params, model_state, _) = initialised("deepcluster")
  low = toy_method("deepcluster", dtype="bfloat16")
  state, batch = deepcluster_batch()
  want, _ = method.loss(params, model_state, state, batch, jax.random.key(1),
                        0)
  got, out = low.loss(params, model_state, state, batch, jax.random.key(1),
                      0)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, want, rtol=5e-2)


def test_deepcluster_optimizer_follows_the_official_groups():
  # SGD over every parameter (biases and norms decayed too) with momentum,
  # and the classifier's own SGD without momentum (`optimizer_tl`): two
  # equal gradients move it by lr·(g + λw) each time, the rest by more.
  config = methods_config_of("deepcluster", "mnist5k")
  opt = config.optimizer
  assert (opt.name, opt.exclude_bias_and_norm, opt.momentum_free_parts) == (
      "sgd", False, (CLASSIFIER,))
  params = {"backbone": {"bias": jnp.ones(2), "kernel": jnp.ones((2, 2))},
            "projector": {"kernel": jnp.ones((2, 2))},
            CLASSIFIER: {"bias": jnp.ones((1, 3)),
                         "kernel": jnp.ones((1, 2, 3))}}
  grads = jax.tree.map(lambda x: 0.5 * jnp.ones_like(x), params)
  tx = train.make_optimizer(config)
  schedule = train.learning_rate_schedule(config)
  state = tx.init(params)
  trace = {}
  for t in range(2):
    updates, state = tx.update(grads, state, params)
    rate = float(schedule(t))
    g = 0.5 + opt.weight_decay * 1.0  # w = 1, decayed everywhere
    trace = {k: opt.momentum * trace.get(k, 0.0) + g for k in params}
    for key, leaf in updates.items():
      want = rate * (g if key == CLASSIFIER else trace[key])
      for x in jax.tree.leaves(leaf):
        np.testing.assert_allclose(x, -want, rtol=1e-5, atol=1e-9)


def test_loss_needs_the_batch_index():
  for name in NAMES:
    method, (params, model_state, state) = initialised(name)
    with pytest.raises(ValueError, match="index"):
      method.loss(params, model_state, state,
                  {"image": toy_images()[:BATCH]}, jax.random.key(1), 0)


BAD_ARGUMENTS = [
    ("deepcluster", "num_clusters", N + 1),
    ("deepcluster", "num_clusters", 0),
    ("deepcluster", "num_examples", 0),
    ("deepcluster", "pca_dim", 0),
    ("deepcluster", "kmeans_iters", -1),
    ("deepcluster", "reassign_every", 0),
    ("deepcluster", "reassign_every", 1.5),
    ("deepercluster", "num_super_clusters", 3),
    ("deepercluster", "num_super_clusters", 0),
    ("deepercluster", "num_clusters", N + 2),
    ("deepercluster", "pca_dim", 0),
    ("deepercluster", "kmeans_iters", -1),
    ("deepercluster", "reassign_every", 0),
    ("sela", "num_heads", 0),
    ("sela", "lambda_", -1.0),
    ("sela", "sinkhorn_iters", 0),
    ("sela", "num_clusters", N + 1),
    ("sela", "label_updates", 1),
    ("sela", "label_horizon", -1),
    ("sela", "label_power", 0),
    ("sela", "reassign_every", 0),
    ("sela", "num_examples", 0),
]


@pytest.mark.parametrize("name,key,value", BAD_ARGUMENTS)
def test_bad_argument_raises_naming_it(name, key, value):
  with pytest.raises(ValueError, match=key):
    toy_method(name, **{key: value})


def test_update_rejects_features_of_another_size():
  for name in NAMES:
    method = toy_method(name)
    with pytest.raises(ValueError, match="features"):
      method.dataset_update.update(
          {}, {}, None, np.zeros((N - 1, 4), np.float32), jax.random.key(0),
          0)


# ========================================================== DeeperCluster ===

def test_hierarchical_kmeans_nests_subclusters_in_superclusters():
  # Two super-blobs far apart, each of two sub-blobs.
  corners = [np.array(c, float) for c in
             ([0, 0, 0], [0, 3, 0], [30, 0, 0], [30, 3, 0])]
  x, truth = blobs([8, 6, 10, 5], corners)
  labels = np.asarray(jax.jit(
      functools.partial(hierarchical_kmeans, iterations=10),
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
      functools.partial(hierarchical_kmeans, iterations=10),
      static_argnums=(1, 2))(x, 8, 2, key=jax.random.key(1)))
  assert labels.min() >= 0 and labels.max() < 8
  assert same_partition(labels // 4, truth == 4)


def test_hierarchical_kmeans_rejects_bad_sizes():
  with pytest.raises(ValueError, match="num_super_clusters"):
    hierarchical_kmeans(rand((10, 2)), 4, 3, iterations=1,
                                      key=jax.random.key(0))
  with pytest.raises(ValueError, match="num_clusters"):
    hierarchical_kmeans(rand((10, 2)), 12, 3, iterations=1,
                                      key=jax.random.key(0))


def test_hierarchical_targets_and_loss_match_loops():
  k, m = 6, 3
  per = k // m
  labels = np.array([0, 5, 3, 3, 1])
  rotations = np.array([2, 0, 3, 1, 0])
  super_class, sub_class = hierarchical_targets(
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
  loss = functools.partial(hierarchical_loss,
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
  method = toy_method("deepercluster", num_clusters=6, num_super_clusters=3)
  images = toy_images()[:BATCH]
  params, model_state, _ = method.init(jax.random.key(0), images)
  labels = (np.arange(N) * 5 % 6).astype(np.int32)
  weights = np.linspace(0.2, 3.0, N).astype(np.float32)
  state = pl.PseudoLabels(jnp.asarray(labels[None]), jnp.asarray(weights))
  index = np.arange(N, dtype=np.int32)[::-2][:BATCH]
  rng = jax.random.key(1)
  value, out = method.loss(params, model_state, state,
                           {"image": images, "index": index}, rng, 0)
  # The rotations drawn with the second half of the key (no augmentation:
  # the view is the image itself).
  _, rotations = pretext.random_rotation(jax.random.split(rng)[1],
                                         images / 255.0)
  rotated = np.stack([np.rot90(images[b], rotations[b], axes=(0, 1))
                      for b in range(BATCH)])
  outputs, _ = plain_mlp().apply(
      pl.network_params(params), model_state,
      jnp.asarray(np_sobel(normalized(rotated)), jnp.float32), train=True)
  hidden = jax.nn.relu(outputs["projection"])
  up = np.asarray(pl.apply_heads(params[SUPER_CLASSIFIER], hidden))[0]
  down = np.asarray(pl.apply_heads(params[SUB_CLASSIFIER], hidden))
  want = 0.0
  for b, i in enumerate(index):
    s, j = 4 * (labels[i] // 2) + rotations[b], labels[i] % 2
    row_s, row_j = up[b].astype(np.float64), down[s, b].astype(np.float64)
    want -= weights[i] * (row_s[s] - np.log(np.exp(row_s).sum())
                          + row_j[j] - np.log(np.exp(row_j).sum()))
  np.testing.assert_allclose(value, want / BATCH, rtol=1e-4)
  assert len(set(np.asarray(rotations).tolist())) > 1
  assert out.embeddings.shape == (BATCH, 8)


def deepercluster_heads(num_super_clusters, dim=3):
  super_classes = 4 * num_super_clusters
  return {
      SUPER_CLASSIFIER: pl.init_heads(jax.random.key(0), num_heads=1,
                                      in_dim=dim, num_classes=super_classes),
      SUB_CLASSIFIER: pl.init_heads(jax.random.key(1),
                                    num_heads=super_classes, in_dim=dim,
                                    num_classes=4 // num_super_clusters)}


def test_deepercluster_update_balances_over_superclusters():
  method = toy_method("deepercluster", num_clusters=4, num_super_clusters=2,
                      proj_dim=3, pca_dim=2)
  corners = [np.array(c, float) for c in
             ([0, 0, 0], [0, 3, 0], [30, 0, 0], [30, 3, 0])]
  # Each side of either axis holds 16 rows: the whitened blobs sit at
  # (±1, ±1), and the super-clusters pair neighbouring blobs.
  features, truth = blobs([9, 7, 7, 9], corners)
  params = deepercluster_heads(2)
  state = pl.init_labels(N, 1, weighted=True)
  new_params, new_state, metrics = method.dataset_update.update(
      params, {}, state, features, jax.random.key(1), 0)
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
  assert method.dataset_update.reset == (SUPER_CLASSIFIER, SUB_CLASSIFIER)
  for key in (SUPER_CLASSIFIER, SUB_CLASSIFIER):
    assert not np.allclose(new_params[key]["kernel"], params[key]["kernel"])


def test_deepercluster_keeps_the_rotation_layer_of_one_super_cluster():
  # m = 1: the super-classes are the 4 rotations, which no clustering
  # changes; the official code keeps that layer and its optimizer state
  # (`if args.nmb_super_clusters > 1`), and re-draws the sub-class layers.
  method = toy_method("deepercluster", num_clusters=4, num_super_clusters=1,
                      proj_dim=3, pca_dim=2)
  assert method.dataset_update.reset == (SUB_CLASSIFIER,)
  features, _ = blobs([8, 8, 8, 8], [np.array(c, float) for c in
                                     ([0, 0, 0], [0, 3, 0], [3, 0, 0],
                                      [3, 3, 0])])
  params = deepercluster_heads(1)
  new_params, _, _ = method.dataset_update.update(
      params, {}, pl.init_labels(N, 1, weighted=True), features,
      jax.random.key(1), 0)
  chex.assert_trees_all_equal(new_params[SUPER_CLASSIFIER],
                              params[SUPER_CLASSIFIER])
  assert not np.allclose(new_params[SUB_CLASSIFIER]["kernel"],
                         params[SUB_CLASSIFIER]["kernel"])


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
      sinkhorn_labels, lambda_=25.0, iterations=200))(logits))
  np.testing.assert_array_equal(got, numpy_self_label(logits, 25.0, 200))
  counts = np.bincount(got, minlength=4)
  assert np.all(np.abs(counts - 30) <= 3), counts
  # Without the equipartition most examples would take cluster 0.
  assert np.bincount(np.argmax(logits, 1), minlength=4).max() > 50



def test_sela_update_labels_every_head_from_its_outputs():
  method = toy_method("sela", num_heads=3, num_clusters=4,
                      sinkhorn_iters=100)
  features = rand((N, 5))
  heads = {"kernel": jnp.asarray(rand((3, 5, 4), 1)),
           "bias": jnp.asarray(rand((3, 4), 2))}
  state = method.init(jax.random.key(0), toy_images()[:BATCH])[2]
  params, new_state, metrics = jax.jit(method.dataset_update.update)(
      {HEADS: heads}, {}, state, features, jax.random.key(0), 0)
  assert params[HEADS] is not None and metrics["relabelled"] == 1
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
  method, (params, model_state, state) = initialised("sela")
  images = toy_images()[:BATCH]
  got = method.dataset_update.features(params, model_state, state, images)
  backbone = models.get("tiny_cnn", dtype=jnp.float32,
                        param_dtype=jnp.float32)
  want, _ = backbone.apply(params["backbone"], model_state["backbone"],
                           jnp.asarray(normalized(images)), train=False)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert got.dtype == jnp.float32


def test_sela_loss_averages_heads():
  method, (params, model_state, state) = initialised("sela")
  images = toy_images()[:BATCH]
  labels = (np.arange(2 * N).reshape(2, N) * 3 % 4).astype(np.int32)
  state = state._replace(labels=jnp.asarray(labels))
  index = np.arange(BATCH, dtype=np.int32) * 2
  value, _ = method.loss(params, model_state, state,
                         {"image": images, "index": index},
                         jax.random.key(1), 0)
  backbone = models.get("tiny_cnn", dtype=jnp.float32,
                        param_dtype=jnp.float32)
  features, _ = backbone.apply(params["backbone"], model_state["backbone"],
                               jnp.asarray(normalized(images)), train=True)
  logits = np.asarray(pl.apply_heads(params[HEADS], features))
  want = 0.0
  for h in range(2):
    for b, i in enumerate(index):
      row = logits[h, b].astype(np.float64)
      want -= row[labels[h, i]] - np.log(np.exp(row).sum())
  np.testing.assert_allclose(value, want / (2 * BATCH), rtol=1e-5)


def official_label_iterations(epochs, n, batch, nopts, power, margin):
  """The iterations at which self-label optimises the labels: `main.py`'s
  `optimize_times` (p = 2, margin 1.01) or `cifar.py`'s (p = 1, margin
  1.0001), popped while training (epochs + 1 for `main.py`) epochs of
  n / batch iterations."""
  times = [(epochs + 2) * n] + (
      (epochs + margin) * n * np.linspace(0, 1, nopts) ** power)[::-1].tolist()
  done = []
  for niter in range((epochs + 1) * n // batch):
    if niter * batch >= times[-1]:
      times.pop()
      done.append(niter)
  return done


@pytest.mark.parametrize("power,margin", [(2, 1.01), (1, 1.0001)])
def test_label_steps_are_the_official_schedule(power, margin):
  # 4 epochs of 100 iterations; the horizon (epochs + margin) · n / batch
  # is 401 iterations for `main.py`, 400.01 for `cifar.py`, whose updates
  # fall on the same iterations as with the run's 400 (the configs' choice).
  epochs, n, batch, nopts = 3, 1000, 10, 12
  horizon = 401 if power == 2 else 400
  want = official_label_iterations(epochs, n, batch, nopts, power, margin)
  got = [s for s in label_steps(nopts, horizon, power)
         if s < (epochs + 1) * n // batch]
  assert got == want, (got, want)
  assert len(want) == nopts - 1  # the last one falls past the run


def test_sela_relabels_at_the_passes_after_its_label_steps():
  # Label steps (0, 10, 40, 90); a pass every 20 steps relabels at 0, 20
  # (for 10), 40 and 100 (for 90), and its features pass skips the network
  # before the others.
  method = toy_method("sela", label_updates=4, label_horizon=90,
                      reassign_every=20)
  params, model_state, state = initialised("sela")[1]
  assert bool(state.relabel_next)
  images = toy_images()
  passes = method.dataset_update
  features = jax.jit(passes.features)
  update = jax.jit(passes.update)
  relabelled, computed = [], []
  for step in range(0, 120, 20):
    f = jnp.concatenate([features(params, model_state, state,
                                  images[i:i + BATCH])
                         for i in range(0, N, BATCH)])
    computed.append(bool(np.any(f != 0)))
    labels = state.labels
    params_after, state, metrics = update(params, model_state, state, f,
                                          jax.random.key(step), step)
    relabelled.append(float(metrics["relabelled"]))
    if not metrics["relabelled"]:
      np.testing.assert_array_equal(state.labels, labels)
    chex.assert_trees_all_equal(params_after, params)
  assert relabelled == [1, 1, 1, 0, 0, 1]
  assert computed == [True, True, True, False, False, True]


def test_sela_grayscale_comes_before_the_colour_jitter():
  # The official `augs=3`: RandomGrayscale(0.2) then ColorJitter; the
  # library's `view` jitters first. With both certain the order shows: the
  # hue shift changes a coloured image's grey level, not a grey image.
  assert inspect.signature(methods.sela).parameters[
      "grayscale_first"].default is True
  recipe = _shared.augment_config(
      "byol", scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_prob=0.0,
      jitter_prob=1.0, brightness=0.4, contrast=0.4, saturation=0.4,
      hue=0.4, grayscale_prob=1.0, blur_prob=0.0, solarize_prob=0.0)
  setup = _shared.setup("tiny_cnn", None, recipe, "float32")
  images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), np.uint8)
  rng = jax.random.key(0)
  got, = grayscale_first_view(setup, recipe)(rng, {"image": images})
  _, gray_rng, jitter_rng = jax.random.split(rng, 3)
  x = augment_lib.to_float(jnp.asarray(images))
  gray = functools.partial(augment_lib.batched(augment_lib.grayscale),
                           gray_rng, p=1.0)
  jitter = functools.partial(augment_lib.batched(augment_lib.color_jitter),
                             jitter_rng, brightness=0.4, contrast=0.4,
                             saturation=0.4, hue=0.4, p=1.0)
  standardize = functools.partial(augment_lib.normalize,
                                  mean=augment_lib.IMAGENET_MEAN,
                                  std=augment_lib.IMAGENET_STD)
  np.testing.assert_allclose(got, standardize(jitter(gray(x))), atol=1e-4)
  assert not np.allclose(got, standardize(gray(jitter(x))), atol=1e-2)
  # The whole view is grey: the jitter's saturation and hue keep it so.
  pixels = (np.asarray(got) * np.array(augment_lib.IMAGENET_STD)
            + np.array(augment_lib.IMAGENET_MEAN))
  np.testing.assert_allclose(pixels, np.repeat(pixels[..., :1], 3, axis=-1),
                             atol=1e-4)


# ================================================================ configs ===


@pytest.mark.parametrize("name", NAMES)
def test_configs_build_every_preset(name, tmp_path):
  assert methods.get(name) is getattr(methods, name)
  for preset in common.PRESETS[:-1]:
    config = methods_config_of(name, preset)
    assert config.method.name == name
    assert config.method.num_examples == config.dataset.train_size
    assert config.method.num_clusters <= config.dataset.train_size
    assert config.optimizer.exclude_bias_and_norm is False
    method = methods.build(config)
    assert method.dataset_update.every >= 1
  mnist = methods_config_of(name, "mnist5k")
  assert mnist.method.backbone == "small_cnn"
  epochs = {"deepercluster": 3}.get(name, 1)
  assert mnist.method.reassign_every == epochs * (4000 // mnist.batch_size)
  assert "method.reassign_every" in mnist.epoch_settings
  # An image folder: its facts are read from the folder, then it builds.
  folder = tmp_path / "train" / "a"
  folder.mkdir(parents=True)
  for i in range(6):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(
        folder / f"{i}.png")
  clusters = "4" if name == "deepercluster" else "2"  # m = 4 on ImageNet
  config = methods_config_of(
      name, f"imagefolder,method.num_clusters={clusters},batch_size=2")
  config.dataset.path = str(tmp_path)
  common.resolve_dataset(config)
  assert config.method.num_examples == 6
  assert methods.build(config).dataset_update.every == epochs * 3


def test_imagenet_recipes_follow_the_official_optimizers():
  deepcluster = methods_config_of("deepcluster", "imagenet2012")
  opt = deepcluster.optimizer
  # `main.py`: batch 256, SGD at a constant 0.05 (no schedule).
  assert (deepcluster.batch_size, opt.learning_rate, opt.warmup_steps) == (
      256, 0.05, 0)
  assert set(opt.constant_lr_parts) == {"backbone", "projector", CLASSIFIER}
  deeper = methods_config_of("deepercluster", "imagenet2012")
  # 48 images on each of 64 processes at a constant 0.1, not scaled.
  peak = train.learning_rate_schedule(deeper)(0)
  assert deeper.batch_size == 3072 and abs(float(peak) - 0.1) < 1e-7
  assert set(deeper.optimizer.constant_lr_parts) == {
      "backbone", "projector", SUPER_CLASSIFIER, SUB_CLASSIFIER}
  sela = methods_config_of("sela", "imagenet2012")
  assert (sela.batch_size, sela.optimizer.learning_rate,
          sela.optimizer.weight_decay) == (256, 0.08, 1e-5)


def test_each_step_trains_on_one_view_per_example():
  # The official code draws one augmented view of each image per step; the
  # default recipes ("byol" crops and flips) define two, of which the
  # methods use the first, and the host cuts only that one.
  for name in NAMES:
    factory = getattr(methods, name)
    method = toy_method(name, augment=inspect.signature(factory).parameters[
        "augment"].default)
    assert len(method.crops(16)) == 1
    params, model_state, state = method.init(jax.random.key(0),
                                             toy_images()[:BATCH])
    _, out = method.loss(params, model_state, state,
                         {"image": toy_images()[:BATCH],
                          "index": np.arange(BATCH)}, jax.random.key(1), 0)
    assert out.embeddings.shape[0] == BATCH


def test_sela_configs_follow_the_official_schedules():
  imagenet = methods_config_of("sela", "imagenet2012")
  assert (imagenet.method.label_updates, imagenet.method.label_power,
          imagenet.total_epochs, imagenet.batch_size) == (100, 2, 400.0, 256)
  assert imagenet.method.label_horizon == imagenet.total_steps
  cifar = methods_config_of("sela", "cifar10")
  assert (cifar.method.label_updates, cifar.method.label_power) == (400, 1)
  # The horizon follows the run's length until set itself.
  short = methods_config_of("sela", "mnist5k,total_epochs=10.0")
  assert short.method.label_horizon == short.total_steps == 10 * 15
  assert methods_config_of(
      "sela", "mnist5k,method.label_horizon=7").method.label_horizon == 7


# ============================================================ checkpoints ===


def roundtrip(state, tmp_path):
  config = ml_collections.ConfigDict(dict(seed=0))
  with train.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, state, {}, config)
    ckpt.wait()
    restored, _ = ckpt.restore(config, jax.eval_shape(lambda: state),
                               data=False)
  return restored


@pytest.mark.parametrize("name", ["deepcluster", "sela"])
def test_state_round_trips_through_a_checkpoint(name, tmp_path):
  state = initialised(name)[1][2]
  state = jax.tree.map(lambda x: x + 1, state) if name == "deepcluster" \
      else state._replace(labels=state.labels + 3)
  restored = roundtrip(state, tmp_path)
  assert type(restored) is type(state)
  chex.assert_trees_all_equal(restored, state)
