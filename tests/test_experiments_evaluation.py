"""Tests of `ssljax.train.evaluation` and the reporting helpers of
`ssljax.train.metrics` (in process, on the 8 fake CPU devices)."""

import ml_collections
import numpy as np
import pytest

import jax
from ssljax import data, evaluate, methods
from ssljax.train import evaluation, make_mesh
from ssljax.train.metrics import ProgressBar, summary_line


def numpy_knn(train, train_labels, test, *, k, temperature, num_classes):
  """Weighted kNN of Wu et al. (2018) written out with loops."""
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  test = test / np.linalg.norm(test, axis=1, keepdims=True)
  predictions = []
  for row in test:
    sims = train @ row
    votes = np.zeros(num_classes)
    for i in np.argsort(-sims, kind="stable")[:k]:
      votes[train_labels[i]] += np.exp(sims[i] / temperature)
    predictions.append(np.argmax(votes))
  return np.array(predictions)


def test_score_matches_numpy_knn():
  rng = np.random.default_rng(0)
  train_y = rng.integers(0, 3, 60).astype(np.int32)
  test_y = rng.integers(0, 3, 30).astype(np.int32)
  centres = rng.normal(size=(3, 6))
  train = (centres[train_y] + rng.normal(size=(60, 6))).astype(np.float32)
  test = (centres[test_y] + rng.normal(size=(30, 6))).astype(np.float32)
  scores = evaluation.score(
      evaluation.Features(train, train_y, test, test_y), num_classes=3,
      linear=False)
  assert sorted(scores) == ["embedding_std", "knn1_top1", "knn_top1", "rankme"]
  for key, k in (("knn_top1", 20), ("knn1_top1", 1)):
    expected = np.mean(numpy_knn(train, train_y, test, k=k, temperature=0.07,
                                 num_classes=3) == test_y)
    assert scores[key] == pytest.approx(expected, abs=1e-6), key
  assert all(isinstance(v, float) for v in scores.values())


def test_score_caps_k_at_the_training_set():
  x = np.eye(4, dtype=np.float32)
  y = np.arange(4, dtype=np.int32)
  scores = evaluation.score(evaluation.Features(x, y, x, y), num_classes=4,
                            linear=False)
  assert scores["knn1_top1"] == 1.0


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  return ml_collections.ConfigDict(dict(
      method=dict(name="simclr", backbone="tiny_cnn",
                  backbone_kwargs={"width": 4}, proj_hidden_dim=8,
                  proj_dim=4),
      dataset=dict(name="mnist5k"), batch_size=96, total_steps=5, seed=0,
      mesh=dict(data=-1), checkpoint_every=3,
      data_dir=str(tmp_path_factory.mktemp("data"))))


def test_encode_split_equals_one_call_on_one_device(config):
  """1000 test images in padded batches of 96 over 8 devices: every image
  once, in dataset order, as encoding all of them in one call."""
  method = methods.build(config)
  images = next(data.load("mnist5k", "test", batch_size=1000, shuffle=False,
                          num_epochs=1, data_dir=config.data_dir))
  tree = method.init(jax.random.key(0), images["image"][:8])
  mesh = make_mesh(config)
  assert mesh.size == 8
  features, labels = evaluation.encode_split(
      config, evaluation.method_encoder(method, mesh), tree, "test",
      mesh=mesh)
  expected = jax.jit(lambda im: method.encode(*tree, im))(images["image"])
  np.testing.assert_array_equal(labels, images["label"])
  np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
  assert features.dtype == np.float32
  with pytest.raises(ValueError, match="split"):
    evaluation.encode_split(config, None, tree, "validation", mesh=mesh)


def test_eval_every_defaults_to_the_checkpoint_interval(config):
  assert evaluation.eval_every(config) == 3
  with_field = ml_collections.ConfigDict(dict(eval_every=0,
                                              checkpoint_every=3))
  assert evaluation.eval_every(with_field) == 0


@pytest.mark.parametrize("every, evaluated", [(3, [3, 5]), (2, [2, 4, 5]),
                                              (0, [5])])
def test_hook_schedule(config, monkeypatch, every, evaluated):
  calls = []
  monkeypatch.setattr(
      evaluation, "evaluate_state",
      lambda cfg, state, *, linear, **kw: calls.append(linear) or {"x": 1.0})
  config = ml_collections.ConfigDict(config.to_dict())
  config.eval_every = every
  hook = evaluation.evaluation_hook(config)
  results = {step: hook(step, None) for step in range(1, 6)}
  assert [s for s, r in results.items() if r] == evaluated
  # The linear probe runs at the last step only.
  assert calls == [False] * (len(evaluated) - 1) + [True]


def test_progress_bar_writes_to_stderr_only(capsys):
  with ProgressBar(4, start_step=1, active=True) as bar:
    bar.update(2)
    bar.update(4, {"loss": 1.5, "images_per_sec": 300.0, "other": 1.0})
  out, err = capsys.readouterr()
  assert out == ""
  assert "4/4" in err and "loss=1.5" in err and "img/s=300" in err
  with ProgressBar(4, active=False) as bar:
    bar.update(4, {"loss": 1.0})
  assert capsys.readouterr() == ("", "")


def test_summary_line_puts_the_evaluation_first():
  config = ml_collections.ConfigDict(dict(method=dict(name="byol"),
                                          dataset=dict(name="cifar10")))
  line = summary_line(config, {"step": 7, "loss": 2.0, "linear_top1": 0.25,
                               "knn_top1": 0.5, "a": 1.0})
  assert line == ("byol on cifar10, step 7: knn_top1=0.5 linear_top1=0.25 "
                  "loss=2 a=1")
  assert summary_line(config, {"step": 7}).endswith("already trained")


def test_few_label_subsets_are_stratified_fixed_and_shared():
  """1% and 10% of mnist5k's 4000 train labels: 4 and 40 per class, the
  same rows whatever the run's seed (so for every method and the pixels),
  and the scores are those of `score` on exactly those rows."""
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(10), 400).astype(np.int32)
  rng.shuffle(labels)
  train = rng.normal(size=(4000, 6)).astype(np.float32) + labels[:, None]
  test_labels = np.arange(200, dtype=np.int32) % 10
  test = rng.normal(size=(200, 6)).astype(np.float32) + test_labels[:, None]
  features = evaluation.Features(train, labels, test, test_labels)
  rows = {f: evaluate.class_balanced_subset(
      labels, f, num_classes=10, seed=evaluation.FEW_LABEL_SEED)
          for f in evaluation.FEW_LABEL_FRACTIONS}
  assert np.bincount(labels[rows[0.01]]).tolist() == [4] * 10
  assert np.bincount(labels[rows[0.1]]).tolist() == [40] * 10
  one = evaluation.few_label_scores(features, num_classes=10, seed=0)
  other = evaluation.few_label_scores(features, num_classes=10, seed=3)
  # kNN does not depend on the run's seed: the subset is the same.
  assert one["knn_top1_1pct"] == other["knn_top1_1pct"]
  subset = features._replace(train=train[rows[0.01]],
                             train_labels=labels[rows[0.01]])
  expected = evaluation.score(subset, num_classes=10, linear=True, seed=0)
  assert one["knn_top1_1pct"] == expected["knn_top1"]
  assert one["probe_top1_1pct"] == expected["probe_top1"]


def test_encode_split_keeps_one_call_in_flight_on_a_cpu_mesh(config):
  """XLA:CPU runs independent programs concurrently: with a few hundred
  encoder calls in flight over 4 or 8 devices, every device's thread can
  end up waiting in a different call's all-gather until XLA aborts the
  process (seen in CI at the end of a 1 × 4 device pre-training). Each call
  finishes before the next starts, though these calls take longer than the
  host's batches and would otherwise pile up; the features are unchanged."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = 64
  mesh = make_mesh(config)

  def encode(weights, images):
    x = images.reshape(len(images), -1)[:, :256].astype(np.float32) / 255
    for _ in range(32):
      x = jax.numpy.tanh(x @ weights)
    return x

  encoder = evaluation.make_encoder(encode, mesh)
  previous = []

  def checked_encoder(*args):
    assert all(leaf.is_ready() for leaf in jax.tree.leaves(previous))
    previous[:] = [encoder(*args)]
    return previous[0]

  weights = (np.random.default_rng(0).normal(size=(256, 256)) / 16).astype(
      np.float32)
  features, labels = evaluation.encode_split(config, checked_encoder, weights,
                                             "train", mesh=mesh)
  images = next(data.load("mnist5k", "train", batch_size=4000,
                          shuffle=False, num_epochs=1,
                          data_dir=config.data_dir))
  np.testing.assert_array_equal(labels, images["label"])
  np.testing.assert_allclose(features, jax.jit(encode)(weights, images[
      "image"]), rtol=1e-5, atol=1e-5)
