"""Tests for ssljax.evaluate: kNN, linear probe and collapse metrics.

References are numpy loops written from the papers' formulas and
scikit-learn's `KNeighborsClassifier` / `LogisticRegression`.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jax.test_util import check_grads
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import StandardScaler

from ssljax.evaluate import (LinearParams, class_balanced_subset,
                             embedding_std, knn_accuracy, knn_classify,
                             linear_probe, linear_probe_init,
                             linear_probe_loss, linear_probe_optimizer,
                             linear_probe_step, rankme)


def _mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def _knn_data(num_train=40, num_test=13, dim=6, num_classes=4, seed=0):
  rng = np.random.default_rng(seed)
  train = rng.normal(size=(num_train, dim)).astype(np.float32)
  test = rng.normal(size=(num_test, dim)).astype(np.float32)
  labels = rng.integers(0, num_classes, num_train).astype(np.int32)
  return train, labels, test


def _knn_votes_reference(train, labels, test, *, num_classes, k, temperature,
                         uniform):
  """Per test row, the class votes of its k most cosine-similar train rows."""
  votes = []
  for x in np.asarray(test, np.float64):
    x = x / np.linalg.norm(x)
    sims = [float(x @ (t / np.linalg.norm(t)))
            for t in np.asarray(train, np.float64)]
    nearest = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
    row = {}
    for i in nearest:
      weight = 1.0 if uniform else math.exp(sims[i] / temperature)
      row[int(labels[i])] = row.get(int(labels[i]), 0.0) + weight
    votes.append(row)
  return votes


def _ranked(row_votes):
  """Voted classes by decreasing vote, ties to the lower class."""
  return sorted(row_votes, key=lambda c: (-row_votes[c], c))


# ------------------------------------------------------------------- kNN ---


@pytest.mark.parametrize("k", [1, 3, 7])
def test_knn_uniform_matches_sklearn(k):
  train, labels, test = _knn_data()
  want = KNeighborsClassifier(n_neighbors=k, metric="cosine",
                              algorithm="brute").fit(train, labels)
  got = knn_classify(train, labels, test, num_classes=4, k=k,
                     weighting="uniform", batch_size=5)
  assert got.dtype == jnp.int32
  np.testing.assert_array_equal(got, want.predict(test))


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_exp_weighting_matches_numpy_loop(temperature):
  train, labels, test = _knn_data(seed=1)
  votes = _knn_votes_reference(train, labels, test, num_classes=4, k=5,
                               temperature=temperature, uniform=False)
  want = [_ranked(row)[0] for row in votes]
  got = knn_classify(train, labels, test, num_classes=4, k=5,
                     temperature=temperature, batch_size=4)
  np.testing.assert_array_equal(got, want)


def test_knn_hand_worked_vote():
  # Test row (1, 0). Cosines: a (class 1) 0.99875, b and c (class 0)
  # 0.857493, d -1 (never among k=3). Uniform: 2 votes to 1 for class 0.
  # exp(s/T): class 1 wins iff exp((0.99875 - 0.857493)/T) > 2, i.e.
  # T < 0.14126 / ln 2 = 0.2038: class 1 at T=0.07, class 0 at T=1.
  train = np.array([[1., 0.05], [1., 0.6], [1., -0.6], [-1., 0.]], np.float32)
  labels = np.array([1, 0, 0, 1], np.int32)
  test = np.array([[3., 0.]], np.float32)
  run = functools.partial(knn_classify, train, labels, test, num_classes=2,
                          k=3)
  assert run(weighting="uniform").tolist() == [0]
  assert run(temperature=0.07).tolist() == [1]
  assert run(temperature=1.0).tolist() == [0]


def test_knn_predictions_do_not_depend_on_chunk_size():
  train, labels, test = _knn_data(seed=2)
  runs = [knn_classify(train, labels, test, num_classes=4, k=4, batch_size=b)
          for b in (1, 4, 100)]
  for got in runs[1:]:
    np.testing.assert_array_equal(got, runs[0])


@pytest.mark.parametrize("k,weighting", [(10, "exp"), (3, "exp"),
                                         (6, "uniform")])
def test_knn_accuracy_top1_top5_match_numpy(k, weighting):
  train, labels, test = _knn_data(num_train=60, num_test=30, num_classes=7,
                                  seed=3)
  test_labels = np.random.default_rng(4).integers(0, 7, 30).astype(np.int32)
  votes = _knn_votes_reference(train, labels, test, num_classes=7, k=k,
                               temperature=0.07, uniform=weighting == "uniform")
  top1 = np.mean([_ranked(v)[0] == y for v, y in zip(votes, test_labels)])
  top5 = np.mean([y in _ranked(v)[:5] for v, y in zip(votes, test_labels)])
  got = knn_accuracy(train, labels, test, test_labels, num_classes=7, k=k,
                     weighting=weighting, batch_size=8)
  np.testing.assert_allclose(got.top1, top1, atol=1e-6)
  np.testing.assert_allclose(got.top5, top5, atol=1e-6)
  assert 0 < top1 < top5 < 1  # the data exercise both metrics


def test_knn_accuracy_perfect_and_no_top5_below_five_classes():
  train, labels, _ = _knn_data(num_classes=3)
  acc = knn_accuracy(train, labels, train, labels, num_classes=3, k=1)
  assert float(acc.top1) == 1.0 and acc.top5 is None


def test_knn_jit_with_sharded_features_matches_one_device():
  mesh = _mesh()
  train, labels, test = _knn_data(num_train=48, num_test=24, seed=5)
  sharded = NamedSharding(mesh, P("data"))
  train_s, labels_s, test_s = jax.device_put((train, labels, test), sharded)
  assert len(train_s.sharding.device_set) == 8
  classify = jax.jit(functools.partial(knn_classify, num_classes=4, k=5,
                                       batch_size=5))
  want = knn_classify(train, labels, test, num_classes=4, k=5)
  np.testing.assert_array_equal(classify(train_s, labels_s, test), want)
  np.testing.assert_array_equal(classify(train_s, labels_s, test_s), want)
  accuracy = jax.jit(functools.partial(knn_accuracy, num_classes=4, k=5))
  got = accuracy(train_s, labels_s, test_s, labels_s[:24])
  np.testing.assert_allclose(
      got.top1, np.mean(np.asarray(want) == labels[:24]), atol=1e-6)


def test_knn_bf16_inputs_match_f32_on_rounded_values():
  train, labels, test = _knn_data(seed=6)
  train16, test16 = jnp.bfloat16(train), jnp.bfloat16(test)
  got = knn_classify(train16, labels, test16, num_classes=4, k=5)
  want = knn_classify(np.float32(train16), labels, np.float32(test16),
                      num_classes=4, k=5)
  np.testing.assert_array_equal(got, want)


def test_knn_zero_vectors_and_extreme_temperatures():
  train, labels, test = _knn_data(num_classes=2, seed=7)
  train[0] = 0.0
  test[0] = 0.0
  got = knn_classify(train, labels, test, num_classes=2, k=5)
  assert np.all((np.asarray(got) >= 0) & (np.asarray(got) < 2))
  acc = knn_accuracy(train, labels, test, labels[:13], num_classes=2, k=5,
                     temperature=1e-30)
  assert np.isfinite(float(acc.top1))
  # T -> 0: only the nearest neighbour counts; T -> inf: a plain majority.
  nearest = knn_classify(train, labels, test, num_classes=2, k=1,
                         weighting="uniform")
  majority = knn_classify(train, labels, test, num_classes=2, k=5,
                          weighting="uniform")
  for temperature, want in ((1e-30, nearest), (1e-6, nearest),
                            (1e8, majority)):
    got = knn_classify(train, labels, test, num_classes=2, k=5,
                       temperature=temperature)
    np.testing.assert_array_equal(got[1:], want[1:])


def test_knn_bad_inputs():
  train, labels, test = _knn_data()
  run = functools.partial(knn_classify, num_classes=4)
  cases = [
      (dict(train_labels=labels[:-1]), "train_labels"),
      (dict(train_labels=labels[:, None]), "train_labels"),
      (dict(train_labels=labels.astype(np.float32)), "train_labels"),
      (dict(train_labels=np.where(labels == 0, 4, labels)), "train_labels"),
      (dict(train_labels=np.where(labels == 0, -1, labels)), "train_labels"),
      (dict(test_features=test[:, :5]), "test_features"),
      (dict(test_features=test[0]), "test_features"),
      (dict(train_features=train[None]), "train_features"),
      (dict(k=41), "`k`"),
      (dict(k=0), "`k`"),
      (dict(k=2.0), "`k`"),
      (dict(temperature=0.0), "`temperature`"),
      (dict(weighting="cosine"), "`weighting`"),
      (dict(batch_size=0), "`batch_size`"),
      (dict(num_classes=0), "`num_classes`"),
  ]
  for change, match in cases:
    args = dict(train_features=train, train_labels=labels,
                test_features=test) | change
    with pytest.raises(ValueError, match=match):
      run(**args)
  with pytest.raises(ValueError, match="`test_labels`"):
    knn_accuracy(train, labels, test, labels[:12], num_classes=4)
  with pytest.raises(ValueError, match="`test_labels`"):
    knn_accuracy(train, labels, test, np.full(13, 4), num_classes=4)


# ---------------------------------------------------------- linear probe ---


def _blobs(num_per_class, centers, spread, seed):
  rng = np.random.default_rng(seed)
  centers = np.asarray(centers, np.float64)
  labels = np.repeat(np.arange(len(centers)), num_per_class)
  features = centers[labels] + spread * rng.normal(
      size=(len(labels), centers.shape[1]))
  # An affine distortion: the probe must standardise per dimension.
  features = features * np.array([30., 0.1, 1., 5.])[:centers.shape[1]] + 7.
  return features.astype(np.float32), labels.astype(np.int32)


_OVERLAPPING = [[0., 0., 0., 0.], [2., 1., 0., 1.], [0., 2., 2., -1.]]
_SEPARABLE = [[0., 0., 0., 0.], [8., 0., 0., 0.], [0., 8., 0., 0.]]

# One shape and schedule for every probe below, so they share a compilation.
_probe = functools.partial(linear_probe, num_classes=3, epochs=10,
                           batch_size=16)


def test_linear_probe_matches_sklearn_logistic_regression():
  x_train, y_train = _blobs(30, _OVERLAPPING, 1.0, seed=0)
  x_test, y_test = _blobs(30, _OVERLAPPING, 1.0, seed=1)
  # sklearn minimises C·Σ CE + ½||W||², ours mean CE + λ/2 ||W||²: equal
  # minimisers for λ = 1/(C·N). λ = 0 would move the probabilities by more
  # than 0.25, far beyond the tolerance left for the 60 noisy SGD steps, so
  # the comparison below sees the weight decay.
  inverse_c = 10.0
  scaler = StandardScaler().fit(x_train)
  sk = LogisticRegression(C=1 / inverse_c, max_iter=1000).fit(
      scaler.transform(x_train), y_train)
  result = _probe(x_train, y_train, x_test, y_test, learning_rate=0.3,
                  weight_decay=inverse_c / len(y_train))
  sk_train = sk.score(scaler.transform(x_train), y_train)
  sk_test = sk.score(scaler.transform(x_test), y_test)
  assert 0.7 < sk_test < 0.97  # overlapping classes: not a trivial task
  assert abs(float(result.train_top1) - sk_train) <= 0.025
  assert abs(float(result.test_top1) - sk_test) <= 0.025
  # Same regularised objective, so the same class probabilities.
  logits = x_test @ np.asarray(result.params.weights) + np.asarray(
      result.params.bias)
  probs = np.exp(logits - logits.max(1, keepdims=True))
  probs /= probs.sum(1, keepdims=True)
  np.testing.assert_allclose(
      probs, sk.predict_proba(scaler.transform(x_test)), atol=0.04)


def test_linear_probe_separable_reaches_100_percent_on_raw_params():
  x_train, y_train = _blobs(30, _SEPARABLE, 0.5, seed=2)
  x_test, y_test = _blobs(30, _SEPARABLE, 0.5, seed=3)
  result = _probe(x_train, y_train, x_test, y_test)
  assert float(result.train_top1) == 1.0
  assert float(result.test_top1) == 1.0
  # The returned classifier works on raw features.
  raw = np.argmax(x_test @ np.asarray(result.params.weights)
                  + np.asarray(result.params.bias), axis=1)
  np.testing.assert_array_equal(raw, y_test)


def test_linear_probe_ignores_dimensions_constant_on_train():
  x_train, y_train = _blobs(30, _SEPARABLE, 0.5, seed=4)
  x_test, y_test = _blobs(30, _SEPARABLE, 0.5, seed=5)
  x_train[:, 3] = 2.5
  x_test[:, 3] = 1e6  # would swamp every logit if scaled by 1/std
  result = _probe(x_train, y_train, x_test, y_test)
  assert float(result.test_top1) == 1.0
  np.testing.assert_array_equal(result.params.weights[3], 0.0)


def test_linear_probe_mesh_matches_one_device():
  x_train, y_train = _blobs(30, _OVERLAPPING, 1.0, seed=6)
  x_test, y_test = _blobs(30, _OVERLAPPING, 1.0, seed=7)
  run = functools.partial(_probe, x_train, y_train, x_test, y_test,
                          weight_decay=1e-3)
  want, got = run(), run(mesh=_mesh())
  np.testing.assert_allclose(got.params.weights, want.params.weights,
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(got.params.bias, want.params.bias, rtol=1e-4,
                             atol=1e-5)
  assert float(got.test_top1) == float(want.test_top1)
  with pytest.raises(ValueError, match="`batch_size`"):
    run(batch_size=12, mesh=_mesh())


def test_linear_probe_label_fraction_trains_on_its_subset_only():
  x_train, y_train = _blobs(30, _SEPARABLE, 0.5, seed=8)
  x_test, y_test = _blobs(30, _SEPARABLE, 0.5, seed=9)
  # Rows outside the 10% subset (9 rows, fewer than one batch) get the
  # features of the next class: only a probe trained on the subset is right.
  subset = class_balanced_subset(y_train, 0.1, num_classes=3, seed=3)
  outside = np.setdiff1d(np.arange(90), subset)
  x_train[outside] = x_train[(outside + 30) % 90]
  run = functools.partial(_probe, x_train, y_train, x_test, y_test, seed=3)
  few = run(label_fraction=0.1)
  assert float(few.train_top1) == 1.0
  assert float(few.test_top1) >= 0.9
  assert float(run(label_fraction=1.0).test_top1) < 0.2


def test_class_balanced_subset_counts():
  counts = [100, 260, 37, 3, 0]
  labels = np.repeat(np.arange(5), counts)
  np.random.default_rng(0).shuffle(labels)
  for fraction, want in ((0.1, [10, 26, 4, 1, 0]), (0.01, [1, 3, 1, 1, 0]),
                         (0.5, [50, 130, 19, 2, 0]), (1.0, counts)):
    subset = class_balanced_subset(labels, fraction, num_classes=5, seed=1)
    assert len(np.unique(subset)) == len(subset)
    assert np.bincount(labels[subset], minlength=5).tolist() == want
  np.testing.assert_array_equal(
      class_balanced_subset(labels, 1.0, num_classes=5), np.arange(400))
  first = class_balanced_subset(labels, 0.1, num_classes=5, seed=1)
  np.testing.assert_array_equal(
      first, class_balanced_subset(labels, 0.1, num_classes=5, seed=1))
  assert not np.array_equal(
      first, class_balanced_subset(labels, 0.1, num_classes=5, seed=2))


def _softmax_grads_reference(weights, bias, x, y):
  """Mean cross-entropy and its gradients, one example at a time."""
  grad_w, grad_b, loss = np.zeros_like(weights), np.zeros_like(bias), 0.0
  for xb, yb in zip(x, y):
    logits = xb @ weights + bias
    p = np.exp(logits - logits.max())
    p /= p.sum()
    loss -= math.log(p[yb])
    p[yb] -= 1.0
    grad_w += np.outer(xb, p)
    grad_b += p
  return loss / len(y), grad_w / len(y), grad_b / len(y)


def test_linear_probe_step_matches_numpy_sgd_under_jit():
  rng = np.random.default_rng(10)
  x = rng.normal(size=(6, 3)).astype(np.float32)
  y = np.array([0, 1, 3, 3, 2, 0], np.int32)
  optimizer = optax.sgd(0.5)
  step = jax.jit(functools.partial(linear_probe_step, optimizer=optimizer))
  state = linear_probe_init(3, 4, optimizer=optimizer)
  w, b = np.zeros((3, 4)), np.zeros(4)
  for _ in range(3):
    want_loss, grad_w, grad_b = _softmax_grads_reference(w, b, x, y)
    state, loss = step(state, x, y)
    w, b = w - 0.5 * grad_w, b - 0.5 * grad_b
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    np.testing.assert_allclose(state.params.weights, w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params.bias, b, rtol=1e-5, atol=1e-6)


def test_linear_probe_optimizer_weight_decay_and_schedule():
  # One step from W with zero data gradient: Nesterov SGD's first update is
  # −lr·(1 + μ)·g with g = λW on the weights and 0 on the bias.
  optimizer = linear_probe_optimizer(learning_rate=0.2, weight_decay=0.1,
                                     total_steps=4, momentum=0.5)
  params = LinearParams(jnp.ones((2, 3)), jnp.ones(3))
  grads = jax.tree.map(jnp.zeros_like, params)
  updates, _ = optimizer.update(grads, optimizer.init(params), params)
  np.testing.assert_allclose(updates.weights, -0.2 * 1.5 * 0.1, rtol=1e-6)
  np.testing.assert_allclose(updates.bias, 0.0)


def test_linear_probe_loss_grads_dtypes_and_bad_labels():
  rng = np.random.default_rng(11)
  x = rng.normal(size=(5, 3))
  y = np.array([0, 2, 1, 2, 0], np.int32)
  with jax.enable_x64(True):
    w, b = jnp.asarray(rng.normal(size=(3, 3))), jnp.asarray(rng.normal(size=3))
    check_grads(lambda w, b: linear_probe_loss(LinearParams(w, b),
                                               jnp.asarray(x), y),
                (w, b), order=1, modes=["rev"])
  params = LinearParams(jnp.float32(rng.normal(size=(3, 3))),
                        jnp.zeros(3, jnp.float32))
  x16 = jnp.bfloat16(x)
  loss16 = linear_probe_loss(params, x16, y)
  assert loss16.dtype == jnp.float32
  np.testing.assert_allclose(
      loss16, linear_probe_loss(params, np.float32(x16), y), rtol=1e-6)
  jitted = jax.jit(linear_probe_loss)(params, np.float32(x),
                                      np.array([0, 2, 1, 2, 3], np.int32))
  assert np.isnan(float(jitted))


def test_linear_probe_bad_inputs():
  x, y = _blobs(4, _OVERLAPPING, 1.0, seed=12)
  cases = [
      (dict(train_labels=y[:-1]), "`train_labels`"),
      (dict(test_labels=np.full(12, 3)), "`test_labels`"),
      (dict(train_labels=np.full(12, -1)), "`train_labels`"),
      (dict(test_features=x[:, :3]), "`test_features`"),
      (dict(label_fraction=0.0), "`label_fraction`"),
      (dict(label_fraction=1.5), "`label_fraction`"),
      (dict(label_fraction=float("nan")), "`label_fraction`"),
      (dict(epochs=0), "`epochs`"),
      (dict(batch_size=0), "`batch_size`"),
      (dict(learning_rate=-1.0), "`learning_rate`"),
      (dict(weight_decay=-1e-3), "`weight_decay`"),
      (dict(num_classes=1.5), "`num_classes`"),
      (dict(seed=-1), "`seed`"),
  ]
  for change, match in cases:
    args = dict(train_features=x, train_labels=y, test_features=x,
                test_labels=y, num_classes=3) | change
    with pytest.raises(ValueError, match=match):
      linear_probe(**args)
  params = LinearParams(jnp.zeros((4, 3)), jnp.zeros(3))
  with pytest.raises(ValueError, match="`features`"):
    linear_probe_loss(params, x[:, :3], y)
  with pytest.raises(ValueError, match="`labels`"):
    linear_probe_loss(params, x, y + 1)
  with pytest.raises(ValueError, match="`momentum`"):
    linear_probe_optimizer(learning_rate=0.1, total_steps=3, momentum=1.0)
  with pytest.raises(ValueError, match="`total_steps`"):
    linear_probe_optimizer(learning_rate=0.1, total_steps=0)
  with pytest.raises(ValueError, match="`dim`"):
    linear_probe_init(0, 3, optimizer=optax.sgd(0.1))


# ------------------------------------------------------ collapse metrics ---


def _embedding_std_reference(z):
  z = np.asarray(z, np.float64)
  normed = [row / np.linalg.norm(row) for row in z]
  stds = []
  for d in range(z.shape[1]):
    column = [row[d] for row in normed]
    mean = sum(column) / len(column)
    stds.append(math.sqrt(sum((v - mean) ** 2 for v in column) / len(column)))
  return sum(stds) / len(stds)


def _rankme_reference(z, eps):
  singular = np.linalg.svd(np.asarray(z, np.float64), compute_uv=False)
  total = singular.sum()
  entropy = 0.0
  for s in singular:
    p = s / total + eps
    entropy -= p * math.log(p)
  return math.exp(entropy)


def test_embedding_std_matches_numpy_and_limits():
  rng = np.random.default_rng(13)
  z = rng.normal(size=(9, 5)).astype(np.float32) * 3.0
  np.testing.assert_allclose(embedding_std(z), _embedding_std_reference(z),
                             rtol=1e-5)
  # Collapsed: one direction, different norms.
  collapsed = np.outer(rng.uniform(0.5, 4.0, size=8), rng.normal(size=6))
  np.testing.assert_allclose(embedding_std(collapsed), 0.0, atol=1e-6)
  isotropic = rng.normal(size=(4000, 16)).astype(np.float32)
  np.testing.assert_allclose(embedding_std(isotropic), 1 / math.sqrt(16),
                             rtol=0.02)
  with_zero = z.copy()
  with_zero[0] = 0.0
  assert np.isfinite(float(embedding_std(with_zero)))


def test_rankme_matches_numpy_and_limits():
  rng = np.random.default_rng(14)
  z = (rng.normal(size=(12, 6)) * np.array([5., 3., 1., .5, .1, .01])).astype(
      np.float32)
  for eps in (1e-7, 1e-3):
    np.testing.assert_allclose(rankme(z, eps=eps), _rankme_reference(z, eps),
                               rtol=1e-5)
  isotropic = rng.normal(size=(4000, 16)).astype(np.float32)
  np.testing.assert_allclose(rankme(isotropic), 16.0, rtol=0.01)
  rank_one = np.outer(rng.normal(size=20), rng.normal(size=8))
  np.testing.assert_allclose(rankme(rank_one), 1.0, atol=1e-3)
  np.testing.assert_allclose(rankme(rank_one, eps=0.0), 1.0, atol=1e-3)
  np.testing.assert_allclose(rankme(np.eye(4, dtype=np.float32)), 4.0,
                             rtol=1e-5)
  assert float(rankme(z[:3])) <= 3.0 + 1e-4  # B < D: at most B
  for zeros_eps in (1e-7, 0.0):
    np.testing.assert_allclose(rankme(np.zeros((5, 3)), eps=zeros_eps), 1.0,
                               atol=1e-3)


def test_collapse_metrics_bf16_jit_and_sharded():
  rng = np.random.default_rng(15)
  z = rng.normal(size=(16, 4)).astype(np.float32)
  z16 = jnp.bfloat16(z)
  sharded = jax.device_put(z, NamedSharding(_mesh(), P("data")))
  for metric in (embedding_std, rankme):
    assert metric(z16).dtype == jnp.float32
    np.testing.assert_allclose(metric(z16), metric(z), rtol=2e-2)
    np.testing.assert_allclose(jax.jit(metric)(sharded), metric(z),
                               rtol=1e-5)


def test_collapse_metrics_bad_inputs():
  for metric in (embedding_std, rankme):
    with pytest.raises(ValueError, match="`z`"):
      metric(np.ones(4))
  with pytest.raises(ValueError, match="`eps`"):
    rankme(np.ones((3, 2)), eps=-1e-7)
