"""`train` with a method's dataset pass (`Method.dataset_update`) and with
class-balanced batches, on the real mnist5k split.

The method under test is `_multihost_toy.CLUSTER_TOY` (`cluster_toy()`, a
factory with a `DatasetUpdate` bound to it): the toy method plus a
classifier head trained on per-example pseudo-labels that a dataset pass
recomputes every 3 steps, the shape of DeepCluster. A library factory
(SeLa, built from its config) runs through the same loop.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _multihost_toy as toy
from ssljax import data
from ssljax.train import dataset_update
from ssljax.train.metrics import read_metrics
from ssljax import train

CLUSTER_TOY = toy.CLUSTER_TOY
TRAIN_SIZE = toy.TRAIN_SIZE
make_config = toy.cluster_config


def run(config, workdir, method=CLUSTER_TOY, **kwargs):
  return train.train(config, str(workdir), method=method, **kwargs)


def final_state(config, workdir, method=CLUSTER_TOY):
  return train.restore_state(config, str(workdir), image_shape=(28, 28, 1),
                             method=method)


def host_leaves(state):
  state = state._replace(rng=jax.random.key_data(state.rng))
  return [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data_dir):
  workdir = tmp_path_factory.mktemp("straight")
  config = make_config(data_dir)
  run(config, workdir)
  return config, workdir


def test_pass_runs_before_step_0_and_every_interval(straight):
  config, workdir = straight
  state = final_state(config, workdir)
  steps = np.asarray(state.method_state["pass_steps"])
  assert steps.tolist() == [0, 3, 6, -1, -1, -1, -1, -1]
  logged = {r["step"]: r.get("passes") for r in read_metrics(workdir)}
  # A pass's metrics go with the first update that trains on its result.
  assert {s: p for s, p in logged.items() if p is not None} == {
      1: 1.0, 4: 2.0, 7: 3.0}


def test_pass_sees_every_example_once_in_dataset_order(straight, data_dir):
  config, workdir = straight
  state = final_state(config, workdir)
  (split,) = data.load("mnist5k", "train", batch_size=TRAIN_SIZE,
                       shuffle=False, num_epochs=1, data_dir=str(data_dir))
  assert split["index"].tolist() == list(range(TRAIN_SIZE))
  want = split["image"].astype(np.float64).mean(axis=(1, 2, 3)) / 255.0
  np.testing.assert_allclose(state.method_state["pixel_means"], want,
                             rtol=1e-5)


def test_pass_on_eight_devices_equals_one_device(straight, data_dir,
                                                  tmp_path):
  config, workdir = straight
  one = make_config(data_dir, **{"mesh.data": 1})
  run(one, tmp_path)
  for a, b in zip(host_leaves(final_state(one, tmp_path)),
                  host_leaves(final_state(config, workdir))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_resume_at_a_pass_step_is_exact(straight, tmp_path):
  """Stopped right after the checkpoint of step 3, whose pass has not run
  yet: the restart runs it, and the run ends as the uninterrupted one."""
  config, workdir = straight

  def stop_at_3(step, state):
    del state
    if step == 3:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    run(config, tmp_path, hooks=[stop_at_3])
  run(config, tmp_path)
  for resumed, uninterrupted in zip(
      host_leaves(final_state(config, tmp_path)),
      host_leaves(final_state(config, workdir))):
    np.testing.assert_array_equal(resumed, uninterrupted)


def test_a_factory_method_relabels_in_the_loop_at_its_label_steps(data_dir,
                                                                  tmp_path):
  # SeLa built from its config (`methods.build`), on 8 devices: label
  # steps (0, 3) and a pass every 2 steps relabel at 0, not at 2 (whose
  # pass skips the network), and again at 4.
  config = make_config(data_dir, total_steps=5)
  config.method = dict(
      name="sela", backbone="tiny_cnn", num_clusters=10, num_heads=1,
      sinkhorn_iters=5, num_examples=TRAIN_SIZE, reassign_every=2,
      label_updates=2, label_horizon=3, augment={"preset": "none"})
  run(config, tmp_path, method=None)
  logged = {r["step"]: r.get("relabelled") for r in read_metrics(tmp_path)}
  assert {s: p for s, p in logged.items() if p is not None} == {
      1: 1.0, 3: 0.0, 5: 1.0}
  state = train.restore_state(config, str(tmp_path),
                              image_shape=(28, 28, 1))
  labels = np.asarray(state.method_state.labels)
  assert labels.shape == (1, TRAIN_SIZE) and len(np.unique(labels)) > 1


class Unindexed(toy.ArrayIterator):
  """Batches without "index", as a user's own iterator may give."""

  def __next__(self):
    batch = super().__next__()
    del batch["index"]
    return batch


def test_data_without_index_wrong_train_size_and_bad_interval_are_errors(
    data_dir, tmp_path):
  config = make_config(data_dir)
  images, labels = toy.toy_images(size=28)
  unindexed = Unindexed(images, labels, global_batch=config.batch_size)
  with pytest.raises(ValueError, match="'index'"):
    run(config, tmp_path / "a", data=unindexed)
  assert not (tmp_path / "a").exists()
  for every in (0, 1.5):
    with pytest.raises(ValueError, match="interval"):
      run(config, tmp_path / "c", method=toy.cluster_toy(every=every))
  config.dataset.train_size = 100
  with pytest.raises(ValueError, match="train_size"):
    run(config, tmp_path / "b")


@pytest.mark.parametrize("name", ["sgd", "adamw", "lars"])
def test_reset_entries_zeroes_the_optimizer_state_of_the_reset_params(name):
  params = {"body": {"w": jnp.ones((2, 2))}, "head": {"w": jnp.ones((2, 3))}}
  mask = {"body": {"w": True}, "head": {"w": False}}
  tx = {"sgd": optax.sgd(0.1, momentum=0.9), "adamw": optax.adamw(0.1),
        "lars": optax.masked(optax.lars(0.1), mask)}[name]
  grads = jax.tree.map(jnp.ones_like, params)
  state = tx.update(grads, tx.init(params), params)[1]
  reset = dataset_update.reset_entries(state, params, ("head",))
  fresh = tx.init(params)
  is_params = lambda x: isinstance(x, dict) and set(x) == {"body", "head"}
  copies = [x for x in jax.tree.leaves(reset, is_leaf=is_params)
            if is_params(x)]
  old_copies = [x for x in jax.tree.leaves(state, is_leaf=is_params)
                if is_params(x)]
  assert copies, "the optimizer state holds copies of the params"
  for new, old in zip(copies, old_copies):
    for leaf in jax.tree.leaves(new["head"]):
      np.testing.assert_array_equal(leaf, 0.0)
    jax.tree.map(np.testing.assert_array_equal, new["body"], old["body"])
  # Step counters are kept: only the reset parameters restart.
  counts = [x for x in jax.tree.leaves(reset) if jnp.ndim(x) == 0]
  assert counts == [x for x in jax.tree.leaves(state) if jnp.ndim(x) == 0]
  assert jax.tree.structure(reset) == jax.tree.structure(fresh)


def test_classes_per_batch_gives_the_loop_balanced_batches(data_dir,
                                                           tmp_path):
  balanced_toy = CLUSTER_TOY._replace(name="balanced_toy",
                                      dataset_update=None)
  config = make_config(data_dir, total_steps=3)
  with config.unlocked():
    config.method.classes_per_batch = 4
  run(config, tmp_path, method=balanced_toy)
  assert {r["distinct_labels"] for r in read_metrics(tmp_path)} == {4.0}
  # Drawn from 4,000 shuffled digits, 64 images hold all ten classes.
  run(make_config(data_dir, total_steps=3), tmp_path / "plain",
      method=balanced_toy)
  assert {r["distinct_labels"] for r in read_metrics(tmp_path / "plain")} \
      == {10.0}


def test_load_balanced_checks_its_arguments(data_dir):
  load = functools.partial(data.load, "mnist5k", "train", batch_size=64,
                           data_dir=str(data_dir))
  batch = next(load(classes_per_batch=8))
  assert [np.unique(batch["label"][i:i + 8]).size for i in range(0, 64, 8)] \
      == [1] * 8
  with pytest.raises(ValueError, match="classes_per_batch"):
    load(classes_per_batch=5)
  with pytest.raises(ValueError, match="num_epochs"):
    load(classes_per_batch=8, num_epochs=1)
  with pytest.raises(ValueError, match="random access"):
    data.load("cifar10", "train", batch_size=64, classes_per_batch=8)
