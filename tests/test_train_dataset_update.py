"""`train` with a method's dataset pass (`Method.dataset_update`) and with
class-balanced batches, on the real mnist5k split.

The method under test is the toy of `_multihost_toy` plus a classifier head
trained on per-example pseudo-labels that a dataset pass recomputes, the
shape of DeepCluster; its features start with each image's mean pixel, so
the tests can check that the pass sees every example once, in dataset order.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _multihost_toy as toy
from ssljax import data
from ssljax.methods.base import DatasetUpdate, Method, StepOutput
from ssljax.train import dataset_update
from ssljax.train.metrics import read_metrics
from ssljax import train

TRAIN_SIZE = 4000  # mnist5k's train split
CLUSTERS = 3
EVERY = 3


def init(config, rng, images):
  params, model_state, method_state = toy.init(config, rng, images)
  params["head"] = {"kernel": jnp.zeros((toy.CHANNELS, CLUSTERS))}
  method_state.update(
      labels=jnp.zeros(TRAIN_SIZE, jnp.int32),
      pixel_means=jnp.zeros(TRAIN_SIZE),
      pass_steps=jnp.full(8, -1, jnp.int32), passes=jnp.zeros((), jnp.int32))
  return params, model_state, method_state


def features(config, params, model_state, method_state, images):
  del method_state
  pixel_mean = images.astype(jnp.float32).mean(axis=(1, 2, 3)) / 255.0
  return jnp.concatenate(
      [pixel_mean[:, None], toy.encode(config, params, model_state, images)],
      axis=1)


def update(config, params, model_state, method_state, feats, rng, step):
  del config, model_state
  kernel = jax.random.normal(rng, (toy.CHANNELS, CLUSTERS))
  labels = jnp.argmax(feats[:, 1:] @ kernel, axis=1).astype(jnp.int32)
  passes = method_state["passes"]
  method_state = {**method_state, "labels": labels,
                  "pixel_means": feats[:, 0],
                  "pass_steps": method_state["pass_steps"].at[passes].set(step),
                  "passes": passes + 1}
  params = {**params, "head": {"kernel": 0.1 * kernel}}
  return params, method_state, {"passes": passes + 1}


def loss(config, params, model_state, method_state, batch, rng, step):
  value, out = toy.loss(config, params, model_state, method_state, batch, rng,
                        step)
  logits = out.embeddings @ params["head"]["kernel"]
  labels = method_state["labels"][batch["index"]]
  value += optax.softmax_cross_entropy_with_integer_labels(
      logits, labels).mean()
  present = jnp.zeros(10).at[batch["label"]].set(1.0)
  return value, out._replace(
      metrics={**out.metrics, "distinct_labels": present.sum()})


def post_update(config, params, method_state, update_, step):
  ema = toy.post_update(config, {k: v for k, v in params.items()
                                 if k != "head"},
                        method_state, update_, step)
  return {**method_state, **ema}


CLUSTER_TOY = Method(
    name="cluster_toy", init=init, loss=loss, post_update=post_update,
    encode=toy.encode, default_config=toy.default_config,
    dataset_update=DatasetUpdate(every=lambda config: EVERY,
                                 features=features, update=update,
                                 reset=("head",)))


def make_config(data_dir, **overrides):
  config = toy.make_config(**{"batch_size": 64, "total_steps": 7, **overrides})
  config.dataset = dict(name="mnist5k", train_size=TRAIN_SIZE)
  config.data_dir = str(data_dir)
  return config


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


def test_data_without_index_and_wrong_train_size_are_errors(data_dir,
                                                            tmp_path):
  config = make_config(data_dir)
  images, labels = toy.toy_images(size=28)
  plain = toy.ArrayIterator(images, labels, global_batch=config.batch_size)
  with pytest.raises(ValueError, match="'index'"):
    run(config, tmp_path / "a", data=plain)
  assert not (tmp_path / "a").exists()
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
