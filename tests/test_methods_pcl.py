"""ssljax.methods.pcl: PCL's E-step (`DatasetUpdate`) and M-step.

The training loop is simulated as `ssljax.train.train` runs it: before step
0 and every epoch, the momentum features of the whole (toy) split in dataset
order, the jitted `update`, then train steps whose batches carry "index".
The clusterings are checked on well-separated blobs against numpy written
from the official `run_kmeans` with explicit loops, the loss's ProtoNCE term
against a numpy ProtoNCE of the labels looked up by index. Sizes are tiny
(16×16 images, a CNN of 8 channels); most of the time is compiling.
"""

import functools
import inspect
import math
from typing import Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from _toy_data import shape_images
from configs import common
from configs import pcl as pcl_configs
from ssljax import methods, models, train
from ssljax.methods import _shared
from ssljax.methods.moco_v2 import moco_head
from ssljax.methods.pcl import MOCO_V2_AUGMENT, Clustering, PCLState, cluster
from ssljax.state import kmeans

BATCH = 16
N = 64  # num_examples: an epoch is N // BATCH = 4 steps.
# Crops and flips only: the colour ops and blur (tested in test_augment.py)
# triple the compile time of a step.
CHEAP_VIEWS = dict(jitter_prob=0.0, grayscale_prob=0.0, blur_prob=0.0,
                   solarize_prob=0.0)
# Two identical, key-independent views (whole image, no flip), so a loss
# does not depend on the batch order through the augmentation.
FIXED_VIEWS = _shared.augment_config("simclr", scale=(1.0, 1.0),
                                     ratio=(1.0, 1.0), flip_prob=0.0,
                                     **CHEAP_VIEWS)


def tiny_method(**fields):
  """`methods.pcl` for the toy split: one epoch of warm-up, a clustering
  every epoch (4 steps)."""
  return methods.pcl(**{
      "backbone": "tiny_cnn", "proj_hidden_dim": 32, "proj_dim": 16,
      "queue_size": 2 * BATCH, "num_clusters": (4, 8), "warmup_steps": 4,
      "cluster_every": 4, "kmeans_iterations": 5, "kmeans_redo": 2,
      "num_examples": N, "augment": {**MOCO_V2_AUGMENT, **CHEAP_VIEWS},
      **fields})


def toy_config(learning_rate=3e-3) -> ml_collections.ConfigDict:
  """The optimizer's config only: one device, Adam."""
  return ml_collections.ConfigDict(dict(
      batch_size=BATCH, total_steps=40, mesh=dict(data=1),
      optimizer=dict(name="adamw", learning_rate=learning_rate,
                     weight_decay=0.0, momentum=0.9, warmup_steps=0)))


def toy_images():
  """N toy images of 4 shapes (row i shows shape i % 4)."""
  return shape_images(np.arange(N) % 4, 16)[0]


def network(augment=FIXED_VIEWS, hidden=32, dim=16):
  """PCL's network (backbone and MoCo v2's head), built by hand."""
  setup = _shared.setup("tiny_cnn", None, augment, "float32")
  return models.compose(setup.backbone,
                        projector=moco_head(hidden, dim, setup.kw))


def unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def all_features(method, state, images):
  """The loop's stage 1: momentum features of the split, in dataset order."""
  embed = jax.jit(method.dataset_update.features)
  return jnp.concatenate([
      embed(state.params, state.model_state, state.method_state,
            images[i:i + BATCH]) for i in range(0, N, BATCH)])


# ============================================================ training ===


def test_training_lowers_the_loss_with_the_prototype_term_on():
  # A queue of one batch is full of real keys from step 1 on (at step 0 it
  # holds random vectors, an easy contrast); a fast EMA lets the keys move
  # within the 20 steps (5 epochs, one of warm-up).
  method = tiny_method(queue_size=BATCH, momentum=0.9)
  config = toy_config(3e-2)
  images = toy_images()
  every = method.dataset_update.every
  assert every == 4
  mesh = train.make_mesh(config)
  tx = train.make_optimizer(config)
  state = train.create_train_state(method, jax.random.key(0),
                                   jnp.asarray(images[:BATCH]), tx)
  state = jax.device_put(state, train.replicated(mesh))
  step_fn = train.make_train_step(config, method, tx, mesh)
  update = jax.jit(method.dataset_update.update)
  order = np.random.default_rng(0).permutation(N)
  history, updates = [], []
  for t in range(20):
    if t % every == 0:
      params, method_state, metrics = update(
          state.params, state.model_state, state.method_state,
          all_features(method, state, images), jax.random.key(t), t)
      state = state._replace(params=params, method_state=method_state)
      updates.append(jax.device_get(metrics))
    index = order[t % every * BATCH:][:BATCH].astype(np.int32)
    batch = {"image": images[index], "index": index}
    state, metrics = step_fn(state,
                             jax.device_put(batch, train.data_sharded(mesh)))
    history.append(jax.device_get(metrics))

  losses = np.array([m["loss"] for m in history])
  info, proto = (np.array([m[k] for m in history])
                 for k in ("info_nce", "proto_nce"))
  assert np.all(np.isfinite(losses)), losses
  np.testing.assert_allclose(losses, info + proto, rtol=1e-5)
  # Warm-up: one epoch of plain InfoNCE, then ProtoNCE from step 4.
  assert np.all(proto[:4] == 0.0) and np.all(proto[4:] > 0.0), proto
  assert [m["clustered"] for m in updates] == [0.0, 1.0, 1.0, 1.0, 1.0]
  assert info[-3:].mean() < info[1:4].mean(), info
  # Every epoch sees the same batches in the same order: the last epoch's
  # total is below the first one with the prototype term.
  assert losses[-every:].sum() < losses[every:2 * every].sum(), losses
  for m in updates[1:]:
    for c in range(2):
      np.testing.assert_allclose(m[f"concentration_mean_{c}"], 0.2,
                                 rtol=1e-5)
      assert m[f"concentration_std_{c}"] > 0
      assert 0 <= m[f"empty_clusters_{c}"] < (4, 8)[c]


# ============================================================== E-step ===


def blobs():
  """64 rows on the unit sphere of R^16: 2 groups (around e0 and e1) of 2
  tight sub-blobs each, of sizes 20, 12, 24, 8. Clustering into 2 gives the
  groups, into 4 the sub-blobs."""
  rng = np.random.default_rng(0)
  e = np.eye(16)
  centres = [e[0] + 0.4 * e[2], e[0] - 0.4 * e[2], e[1] + 0.4 * e[3],
             e[1] - 0.4 * e[3]]
  sizes = (20, 12, 24, 8)
  spreads = (0.01, 0.03, 0.02, 0.05)
  rows, sub = [], []
  for b, (c, n, s) in enumerate(zip(centres, sizes, spreads)):
    rows.append(c + s * rng.normal(size=(n, 16)))
    sub += [b] * n
  perm = rng.permutation(N)  # Not sorted by blob in dataset order.
  sub = np.array(sub)[perm]
  return unit(np.concatenate(rows)[perm]).astype(np.float32), sub // 2, sub


def np_concentration(v, labels, num_clusters, alpha=10.0, temperature=0.2):
  """`run_kmeans`'s φ with explicit loops, centroids the members' means (a
  converged k-means)."""
  density = np.zeros(num_clusters)
  sizes = np.zeros(num_clusters, int)
  for j in range(num_clusters):
    members = [v[i] for i in range(len(v)) if labels[i] == j]
    sizes[j] = len(members)
    if len(members) > 1:
      c = np.mean(members, axis=0)
      d = [math.sqrt(np.sum((m - c) ** 2)) for m in members]
      density[j] = np.mean(d) / math.log(len(members) + alpha)
  density[sizes <= 1] = density.max()
  density = np.clip(density, np.percentile(density, 10),
                    np.percentile(density, 90))
  return temperature * density / density.mean()


def same_partition(a, b):
  """Equal up to a permutation of the cluster ids."""
  pairs = set(zip(np.asarray(a).tolist(), np.asarray(b).tolist()))
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.fixture(scope="module")
def blob_state():
  """(method_state after `init`, jitted `update`) of a PCL with clusterings
  of 2 and 4 on `blobs()`; k-means++ seeding, which finds well-separated
  blobs from any key (random seeding, the default, needs luck: one seed per
  blob; see `test_cluster_keeps_the_best_of_redo`)."""
  method = tiny_method(num_clusters=(2, 4), kmeans_iterations=10,
                       kmeans_seeding="k-means++")
  _, _, state = method.init(jax.random.key(0), toy_images()[:BATCH])
  return state, jax.jit(method.dataset_update.update)


def test_update_recovers_the_blobs_at_every_granularity(blob_state):
  state, update = blob_state
  v, groups, sub = blobs()
  params, new, metrics = update({"untouched": jnp.ones(3)}, None, state, v,
                                jax.random.key(1), 4)
  np.testing.assert_array_equal(params["untouched"], np.ones(3))
  assert float(metrics["clustered"]) == 1.0 and bool(new.clustered)
  for m, (truth, num) in enumerate(((groups, 2), (sub, 4))):
    c = new.clusterings[m]
    labels = np.asarray(c.labels)
    assert labels.shape == (N,) and labels.dtype == np.int32
    assert same_partition(labels, truth), (m, labels, truth)
    means = np.stack([v[labels == j].mean(axis=0) for j in range(num)])
    np.testing.assert_allclose(c.prototypes, unit(means), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c.prototypes, axis=1), 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(c.concentration,
                               np_concentration(v, labels, num), rtol=1e-4)
    assert float(metrics[f"empty_clusters_{m}"]) == 0.0
  # The target and the queue are MoCo's business.
  jax.tree.map(np.testing.assert_array_equal, new.moco, state.moco)


def test_update_during_warmup_skips_kmeans(blob_state):
  state, update = blob_state
  v, _, _ = blobs()
  args = ({"untouched": jnp.ones(3)}, None, state, v, jax.random.key(1))
  _, before, metrics = update(*args, 3)  # warmup_steps = 4
  assert float(metrics["clustered"]) == 0.0 and not bool(before.clustered)
  jax.tree.map(np.testing.assert_array_equal, before.clusterings,
               state.clusterings)
  _, after, metrics = update(*args, 4)
  assert float(metrics["clustered"]) == 1.0 and bool(after.clustered)
  assert len(set(np.asarray(after.clusterings[1].labels).tolist())) == 4


def test_cluster_keeps_the_best_of_redo():
  # Random seeding on 4 blobs often merges two of them: the runs differ,
  # and `cluster` keeps the run of least inertia.
  v, _, _ = blobs()
  key, redo = jax.random.key(3), 6
  run = jax.jit(lambda k: kmeans(v, 4, iterations=5, key=k,
                                 seeding="random"))
  runs = [run(k) for k in jax.random.split(key, redo)]
  inertia = [float(r.inertia) for r in runs]
  assert max(inertia) > 1.5 * min(inertia), inertia  # A test that can fail.
  got = jax.jit(functools.partial(cluster, num_clusters=4, iterations=5,
                                  redo=redo))(v, key=key)
  np.testing.assert_array_equal(got.labels,
                                runs[int(np.argmin(inertia))].assignments)


def test_momentum_features_use_the_target_in_eval_mode():
  augment = {**MOCO_V2_AUGMENT, **CHEAP_VIEWS, "mean": (0.5,),
             "std": (0.25,)}
  method = tiny_method(augment=augment)
  images = toy_images()[:BATCH]
  params, model_state, state = method.init(jax.random.key(0), images)
  embed = jax.jit(method.dataset_update.features)
  f = embed(params, model_state, state, images)
  assert f.shape == (BATCH, 16) and f.dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-5)
  # Reference: the target network applied by hand, eval mode, normalised.
  x = (images / 255.0 - 0.5) / 0.25  # The dataset's mean and std.
  target = state.moco.target
  want, _ = network(augment).apply(target.params, target.model_state,
                                   jnp.asarray(x, jnp.float32), train=False)
  np.testing.assert_allclose(f, unit(np.asarray(want["projection"])),
                             atol=1e-5)
  # The online parameters play no part; the target's do.
  shifted = jax.tree.map(lambda p: p + 0.1, params)
  np.testing.assert_array_equal(embed(shifted, model_state, state, images), f)
  moved = state._replace(moco=state.moco._replace(
      target=target._replace(params=shifted)))
  assert not np.allclose(embed(params, model_state, moved, images), f)
  # A bfloat16 network still hands float32 unit rows to k-means.
  half = tiny_method(augment=augment, dtype="bfloat16").dataset_update
  low = half.features(params, model_state, state, images)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, f, atol=0.05)


# ============================================================== M-step ===


class Clustered(NamedTuple):
  method: methods.Method
  params: dict
  model_state: dict
  state: PCLState
  step: Callable  # (params, batch, state) -> ((loss, StepOutput), grads)


@pytest.fixture(scope="module")
def clustered():
  """A fixed-view PCL, its initial state with hand-set clusterings, and the
  jitted loss and gradient that the M-step tests share (one compile)."""
  method = tiny_method(num_clusters=(3, 5), augment=FIXED_VIEWS)
  params, model_state, state = method.init(jax.random.key(0),
                                           toy_images()[:BATCH])
  rng = np.random.default_rng(0)
  state = state._replace(clustered=jnp.ones((), bool), clusterings=tuple(
      Clustering(
          jnp.asarray(rng.integers(0, c, N), jnp.int32),
          jnp.asarray(unit(rng.normal(size=(c, 16))), jnp.float32),
          jnp.asarray(rng.uniform(0.1, 0.4, c), jnp.float32))
      for c in (3, 5)))
  step = jax.jit(jax.value_and_grad(
      lambda p, batch, s: method.loss(p, model_state, s, batch,
                                      jax.random.key(1), 0), has_aux=True))
  return Clustered(method, params, model_state, state, step)


def np_proto_nce(q, clusterings, index):
  """Eq. 11's prototype term, labels looked up by dataset row, loops."""
  total = 0.0
  for c in clusterings:
    labels, protos, phi = (np.asarray(a, np.float64) for a in c)
    for b, i in enumerate(index):
      s = int(labels[i])
      logits = [q[b] @ protos[j] / phi[j] for j in range(len(phi))]
      total += -logits[s] + math.log(sum(math.exp(l) for l in logits))
  return total / (len(clusterings) * len(index))


def batch_of(index, rows=None):
  """Images of dataset `rows` (default: `index`) labelled with `index`."""
  rows = index if rows is None else rows
  return {"image": toy_images()[rows], "index": np.asarray(index, np.int32)}


def test_proto_term_looks_labels_up_by_index(clustered):
  c = clustered
  index = np.arange(5, 5 + 3 * BATCH, 3)  # rows 5, 8, ..., 50

  def run(batch):
    (value, out), _ = c.step(c.params, batch, c.state)
    return float(value), {k: float(v) for k, v in out.metrics.items()}

  value, metrics = run(batch_of(index))
  # The query: normalised online projection of view 1 (the whole image), in
  # train mode on the batch.
  view = (toy_images()[index] / 255.0 - 0.1307) / 0.3081
  out, _ = jax.jit(functools.partial(network().apply, train=True))(
      c.params, c.model_state, jnp.asarray(view, jnp.float32))
  q = unit(np.asarray(out["projection"], np.float64))
  np.testing.assert_allclose(metrics["proto_nce"],
                             np_proto_nce(q, c.state.clusterings, index),
                             rtol=1e-5)
  np.testing.assert_allclose(value, metrics["info_nce"] + metrics["proto_nce"],
                             rtol=1e-6)
  # The batch and its indices permuted together: the same loss.
  perm = np.random.default_rng(1).permutation(BATCH)
  np.testing.assert_allclose(run(batch_of(index[perm]))[0], value, rtol=1e-5)
  # The indices alone permuted: other labels, another prototype term.
  shuffled = run(batch_of(index[perm], rows=index))[1]
  np.testing.assert_allclose(shuffled["info_nce"], metrics["info_nce"],
                             rtol=1e-5)
  assert abs(shuffled["proto_nce"] - metrics["proto_nce"]) > 1e-3


def test_bn_groups_normalise_each_slice_of_the_batch(clustered):
  # The official per-GPU BatchNorm (as `moco_v2`'s `bn_groups`): with 2
  # groups each half of the batch has its own statistics, which the query,
  # hence the prototype term, shows.
  c = clustered
  method = tiny_method(num_clusters=(3, 5), augment=FIXED_VIEWS,
                       bn_groups=2)
  index = np.arange(BATCH)
  _, out = method.loss(c.params, c.model_state, c.state, batch_of(index),
                       jax.random.key(1), 0)
  view = jnp.asarray((toy_images()[index] / 255.0 - 0.1307) / 0.3081,
                     jnp.float32)
  halves = [network().apply(c.params, c.model_state, part, train=True)[0]
            for part in (view[:BATCH // 2], view[BATCH // 2:])]
  q = unit(np.concatenate([np.asarray(h["projection"], np.float64)
                           for h in halves]))
  want = np_proto_nce(q, c.state.clusterings, index)
  np.testing.assert_allclose(out.metrics["proto_nce"], want, rtol=1e-5)
  (_, whole), _ = c.step(c.params, batch_of(index), c.state)
  assert abs(float(whole.metrics["proto_nce"]) - want) > 1e-4


def test_sharded_batch_matches_one_device(clustered):
  # The global view: the batch and its indices split over 8 devices, the
  # clusterings replicated; BatchNorm and the lookup see the global batch.
  c = clustered
  batch = batch_of(np.arange(N - BATCH, N))
  mesh = jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  (value, _), grads = c.step(c.params, sharded, c.state)
  (want, _), want_grads = c.step(c.params, batch, c.state)
  np.testing.assert_allclose(value, want, rtol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-6), grads, want_grads)


def test_proto_term_is_on_once_clustered(clustered):
  # Before the first clustering (the warm-up) the term is off, whatever the
  # step: passes and warm-up need not line up.
  c = clustered
  batch = batch_of(np.arange(BATCH))
  (off, out_off), g_off = c.step(c.params, batch,
                                 c.state._replace(clustered=jnp.zeros((),
                                                                      bool)))
  (on, out_on), g_on = c.step(c.params, batch, c.state)
  m_off, m_on = out_off.metrics, out_on.metrics
  assert float(m_off["proto_nce"]) == 0.0
  assert float(off) == float(m_off["info_nce"])
  assert float(m_on["proto_nce"]) > 0.0
  np.testing.assert_allclose(on, m_on["info_nce"] + m_on["proto_nce"],
                             rtol=1e-6)
  np.testing.assert_allclose(m_on["info_nce"], m_off["info_nce"], rtol=1e-6)
  # The term's gradient reaches the parameters only once it is on.
  diff = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)),
                                      g_on, g_off))
  assert max(float(d) for d in diff) > 0
  assert all(np.all(np.isfinite(g))
             for g in jax.tree.leaves(g_off) + jax.tree.leaves(g_on))


def test_post_update_advances_target_and_queue_only(clustered):
  c = clustered
  (_, out), _ = c.step(c.params, batch_of(np.arange(BATCH)), c.state)
  moved = jax.tree.map(lambda p: p + 1.0, c.params)
  params, new = c.method.post_update(moved, c.state, out.update, 0)
  chex.assert_trees_all_equal(params, moved)
  np.testing.assert_allclose(new.moco.queue.buffer[:BATCH],
                             unit(np.asarray(out.update[1])), atol=1e-6)
  for t, p in zip(jax.tree.leaves(new.moco.target.params),
                  jax.tree.leaves(c.state.moco.target.params)):
    np.testing.assert_allclose(t, p + (1 - 0.999), atol=1e-6)
  assert new.clusterings is c.state.clusterings
  assert new.clustered is c.state.clustered


def test_state_round_trips_through_a_checkpoint(clustered, tmp_path):
  config = ml_collections.ConfigDict(dict(seed=0))
  with train.Checkpointer(str(tmp_path)) as ckpt:
    ckpt.save(1, clustered.state, {}, config)
    ckpt.wait()
    restored, _ = ckpt.restore(
        config, jax.eval_shape(lambda: clustered.state), data=False)
  assert type(restored) is PCLState
  chex.assert_trees_all_equal(restored, clustered.state)


# ======================================================= config, errors ===


def test_defaults_are_pcl_v2s():
  defaults = {name: p.default for name, p in
              inspect.signature(methods.pcl).parameters.items()}
  # PCL v2's official settings (`main_pcl.py`, README), ImageNet epochs of
  # 1,281,167 // 256 steps.
  assert defaults["num_clusters"] == (25000, 50000, 100000)
  assert (defaults["temperature"], defaults["alpha"],
          defaults["queue_size"], defaults["momentum"]) == (
              0.2, 10.0, 16384, 0.999)
  assert (defaults["warmup_steps"], defaults["cluster_every"]) == (
      20 * 5004, 5004)
  assert (defaults["kmeans_iterations"], defaults["kmeans_redo"],
          defaults["kmeans_seeding"]) == (20, 5, "random")
  method = tiny_method()
  assert method.name == "pcl" and method.dataset_update.reset == ()


def test_configs(tmp_path):
  assert methods.get("pcl") is methods.pcl
  for preset in common.PRESETS[:-1]:
    config = pcl_configs.get_config(preset)
    assert config.method.name == "pcl"
    assert config.optimizer.exclude_bias_and_norm is False
    assert config.method.num_examples == config.dataset.train_size
    assert methods.build(config).dataset_update.every == \
        config.method.cluster_every
  config = pcl_configs.get_config("mnist5k")
  # Batch 128: an epoch is 4000 // 128 = 31 steps, warm-up 3 epochs.
  assert config.method.cluster_every == 31
  assert config.method.num_clusters == (20, 40, 80)
  assert config.method.warmup_steps == 93
  config = pcl_configs.get_config("imagenet2012")
  assert (config.total_steps, config.method.warmup_steps) == (
      200 * 5004, 20 * 5004)
  assert (config.optimizer.name, config.optimizer.learning_rate,
          config.batch_size) == ("sgd", 0.03, 256)
  config = pcl_configs.get_config("mnist5k,method.num_clusters=(10,)")
  assert config.method.num_clusters == (10,)
  # An image folder: its facts are read from the folder, then it builds.
  (tmp_path / "train").mkdir()
  for i in range(6):
    Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(
        tmp_path / "train" / f"{i}.png")
  config = pcl_configs.get_config(
      "imagefolder,method.num_clusters=(2,),batch_size=2")
  config.dataset.path = str(tmp_path)
  common.resolve_dataset(config)
  assert methods.build(config).dataset_update.every == 3


@pytest.mark.parametrize("field, value", [
    ("num_clusters", (4, N + 1)),
    ("num_clusters", (N,)),
    ("num_clusters", ()),
    ("num_clusters", (0,)),
    ("num_clusters", (4.0,)),
    ("num_examples", 0),
    ("warmup_steps", -1),
    ("cluster_every", 0),
    ("kmeans_iterations", 0),
    ("kmeans_redo", 0),
    ("kmeans_seeding", "kmeans++"),
    ("alpha", -1.0),
    ("temperature", 0.0),
    ("augment", _shared.augment_config("none")),
    ("bn_groups", 0),
])
def test_bad_argument_raises_naming_it(field, value):
  with pytest.raises(ValueError, match=f"`{field}`"):
    tiny_method(**{field: value})


def test_bad_inputs_raise(clustered):
  c = clustered
  images = toy_images()[:BATCH]
  with pytest.raises(ValueError, match="features"):
    c.method.dataset_update.update(None, None, c.state,
                                   np.zeros((N, 8), np.float32),
                                   jax.random.key(0), 0)
  with pytest.raises(ValueError, match="index"):
    c.method.loss(c.params, c.model_state, c.state, {"image": images},
                  jax.random.key(0), 0)
  with pytest.raises(ValueError, match="redo"):
    cluster(np.zeros((N, 4), np.float32), 2, key=jax.random.key(0), redo=0)
