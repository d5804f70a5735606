"""SwAV, ProtoNCE and PCL's concentration against numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P
from jax.test_util import check_grads

# `mesh` is a fixture, used by name.
from _clustering_reference import mesh, np_sinkhorn, rand  # pylint: disable=unused-import
from ssljax.losses.clustering import (pcl_concentration, proto_nce, swav,
                                      swapped_prediction)


def np_softmax(z):
  z = z - z.max()
  return np.exp(z) / np.exp(z).sum()


def np_swapped_prediction(codes, scores, temperature):
  """main_swav.py's loop over crops_for_assign, given their codes."""
  scores = np.asarray(scores, np.float64)
  n_views, batch, _ = scores.shape
  loss = 0.0
  for i, q in enumerate(codes):
    subloss = 0.0
    for v in range(n_views):
      if v == i:
        continue
      for b in range(batch):
        p = np_softmax(scores[v, b] / temperature)
        subloss -= np.sum(q[b] * np.log(p)) / batch
    loss += subloss / (n_views - 1)
  return loss / len(codes)


def np_swav(scores, temperature, epsilon, iters, n_global):
  codes = [np_sinkhorn(s, epsilon, iters) for s in scores[:n_global]]
  return np_swapped_prediction(codes, scores, temperature)


def np_swav_grad(scores, temperature, epsilon, iters, n_global):
  """d loss / d scores with the codes held fixed: (p_v − q_i) / τ per pair."""
  scores = np.asarray(scores, np.float64)
  n_views, batch, _ = scores.shape
  grad = np.zeros_like(scores)
  for i in range(n_global):
    q = np_sinkhorn(scores[i], epsilon, iters)
    for v in range(n_views):
      if v == i:
        continue
      for b in range(batch):
        p = np_softmax(scores[v, b] / temperature)
        grad[v, b] += (p - q[b]) / (
            temperature * batch * (n_views - 1) * n_global)
  return grad


# -------------------------------------------------------------------- swav --


@pytest.mark.parametrize("n_global", [1, 2])
def test_swav_hand_case(n_global):
  # Codes of s are [[e, 1], [1, e]] / (1 + e) by symmetry; every other view
  # is s again, so each term is log(1 + e) − e / (1 + e).
  s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  loss = swav(jnp.stack([s, s, s]), temperature=1.0, epsilon=1.0,
              n_global=n_global)
  e = np.e
  np.testing.assert_allclose(loss, np.log(1 + e) - e / (1 + e), rtol=1e-6)


@pytest.mark.parametrize("views,n_global,temperature,epsilon,iters", [
    (2, 2, 0.1, 0.05, 3), (4, 2, 0.1, 0.05, 3), (3, 1, 0.5, 0.3, 1),
    (3, 3, 0.2, 0.1, 0)])
def test_swav_matches_official_loop(views, n_global, temperature, epsilon,
                                    iters):
  scores = rand((views, 6, 5), seed=views + n_global)
  loss = swav(scores, temperature=temperature, epsilon=epsilon,
              sinkhorn_iters=iters, n_global=n_global)
  np.testing.assert_allclose(
      loss, np_swav(scores, temperature, epsilon, iters, n_global), rtol=1e-5)


def test_swav_gradient_matches_formula_float64():
  with jax.enable_x64(True):
    scores = np.asarray(rand((4, 5, 3), seed=3), np.float64)
    grad = jax.grad(lambda s: swav(s, temperature=0.2))(scores)
    assert grad.dtype == jnp.float64
    np.testing.assert_allclose(grad, np_swav_grad(scores, 0.2, 0.05, 3, 2),
                               rtol=1e-9, atol=1e-12)


def test_swav_check_grads_on_predicting_views_float64():
  # Finite differences see the codes move, so perturb only the views that
  # are not assigned codes (the local crops); the formula test above covers
  # the global crops as predictors.
  with jax.enable_x64(True):
    scores = np.asarray(rand((4, 5, 3), seed=4), np.float64)
    f = jax.jit(lambda local: swav(jnp.concatenate([scores[:2], local]),
                                   temperature=0.3))
    check_grads(f, (scores[2:],), order=1, modes=["rev"])


def test_swav_jit_and_bf16():
  scores = rand((3, 8, 4), seed=5)
  loss = swav(scores)
  np.testing.assert_allclose(jax.jit(swav)(scores), loss, rtol=1e-5)
  half = swav(jnp.asarray(scores, jnp.bfloat16))
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, loss, rtol=0.05)


@pytest.mark.parametrize("temperature,epsilon,scale", [
    (1e-4, 0.05, 1.0), (1e4, 0.05, 1.0), (0.1, 0.01, 20.0), (0.1, 0.05, 0.0)])
def test_swav_extremes_are_finite(temperature, epsilon, scale):
  scores = rand((3, 8, 4), seed=6, scale=scale)
  value, grad = jax.value_and_grad(
      lambda s: swav(s, temperature=temperature, epsilon=epsilon))(scores)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_swav_global_view_equals_single_device(mesh):
  scores = rand((3, 16, 4), seed=7)
  sharded = jax.device_put(scores, NamedSharding(mesh, P(None, "data")))
  value, grad = jax.jit(jax.value_and_grad(swav))(sharded)
  np.testing.assert_allclose(value, swav(scores), rtol=1e-5)
  np.testing.assert_allclose(grad, jax.grad(swav)(scores), rtol=1e-4,
                             atol=1e-7)


def test_swav_shard_map_axis_name_equals_single_device(mesh):
  scores = rand((3, 16, 4), seed=8, scale=2.0)

  def sharded(s):
    per = jax.shard_map(
        lambda x: swav(x, n_global=2, axis_name="data")[None], mesh=mesh,
        in_specs=P(None, "data"), out_specs=P("data"))(s)
    return per.mean()

  np.testing.assert_allclose(jax.jit(sharded)(scores), swav(scores),
                             rtol=1e-5)
  np.testing.assert_allclose(jax.jit(jax.grad(sharded))(scores),
                             jax.grad(swav)(scores), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("scores,kwargs,match", [
    (jnp.zeros((4, 3)), {}, "scores"),
    (jnp.zeros((1, 4, 3)), dict(n_global=1), "scores"),
    (jnp.zeros((2, 4, 3)), dict(n_global=0), "n_global"),
    (jnp.zeros((2, 4, 3)), dict(n_global=3), "n_global"),
    (jnp.zeros((2, 4, 3)), dict(temperature=0.0), "temperature"),
    (jnp.zeros((2, 4, 3)), dict(epsilon=-1.0), "epsilon"),
    (jnp.zeros((2, 4, 3)), dict(sinkhorn_iters=-1), "sinkhorn_iters"),
])
def test_swav_bad_inputs(scores, kwargs, match):
  with pytest.raises(ValueError, match=match):
    swav(scores, **kwargs)


def test_swapped_prediction_matches_loop_and_check_grads_float64():
  rng = np.random.default_rng(9)
  codes = rng.uniform(0.0, 1.0, (2, 5, 3))
  codes /= codes.sum(axis=-1, keepdims=True)
  scores = rng.uniform(-1.0, 1.0, (4, 5, 3))
  with jax.enable_x64(True):
    np.testing.assert_allclose(
        swapped_prediction(codes, scores, temperature=0.3),
        np_swapped_prediction(codes, scores, 0.3), rtol=1e-10)
    check_grads(jax.jit(lambda s: swapped_prediction(codes, s,
                                                     temperature=0.3)),
                (scores,), order=1, modes=["rev"])
    grad = jax.grad(lambda c: swapped_prediction(c, scores))(codes)
    np.testing.assert_array_equal(grad, np.zeros_like(codes))


@pytest.mark.parametrize("codes,scores,match", [
    (np.zeros((1, 4, 3)), np.zeros((4, 3)), "scores"),
    (np.zeros((4, 3)), np.zeros((2, 4, 3)), "codes"),
    (np.zeros((3, 4, 3)), np.zeros((2, 4, 3)), "codes"),
    (np.zeros((1, 4, 2)), np.zeros((2, 4, 3)), "codes"),
    (np.zeros((1, 4, 3)), np.zeros((1, 4, 3)), "scores"),
])
def test_swapped_prediction_bad_inputs(codes, scores, match):
  with pytest.raises(ValueError, match=match):
    swapped_prediction(codes, scores)


# --------------------------------------------------------------- proto_nce --


def np_proto_nce(query, prototypes, labels, concentration):
  """Eq. (11)'s prototype term with every prototype in the denominator."""
  q = np.asarray(query, np.float64)
  q = q / np.linalg.norm(q, axis=1, keepdims=True)
  total = 0.0
  for c, l, phi in zip(prototypes, labels, concentration):
    c = np.asarray(c, np.float64)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    for b in range(len(q)):
      logits = np.array([q[b] @ c[j] / phi[j] for j in range(len(c))])
      total -= (logits[l[b]] - np.log(np.sum(np.exp(logits)))) / len(q)
  return total / len(prototypes)


def proto_inputs(sizes=(5, 5), batch=6, dim=3, seed=0):
  rng = np.random.default_rng(seed)
  query = rng.standard_normal((batch, dim)).astype(np.float32)
  prototypes = [rng.standard_normal((c, dim)).astype(np.float32)
                for c in sizes]
  labels = [rng.integers(0, c, batch).astype(np.int32) for c in sizes]
  phi = [rng.uniform(0.1, 0.5, c).astype(np.float32) for c in sizes]
  return query, prototypes, labels, phi


def test_proto_nce_matches_numpy_for_each_input_form():
  query, protos, labels, phi = proto_inputs()
  expected = np_proto_nce(query, protos, labels, phi)
  np.testing.assert_allclose(proto_nce(query, protos, labels, phi), expected,
                             rtol=1e-5)
  stacked = proto_nce(query, np.stack(protos), np.stack(labels), np.stack(phi))
  np.testing.assert_allclose(stacked, expected, rtol=1e-5)
  single = proto_nce(query, protos[0], labels[0], phi[0])
  np.testing.assert_allclose(
      single, np_proto_nce(query, protos[:1], labels[:1], phi[:1]), rtol=1e-5)


def test_proto_nce_clusterings_of_different_sizes():
  query, protos, labels, phi = proto_inputs(sizes=(3, 7, 4), seed=1)
  np.testing.assert_allclose(proto_nce(query, protos, labels, phi),
                             np_proto_nce(query, protos, labels, phi),
                             rtol=1e-5)


def test_proto_nce_hand_case():
  # Each query sits on its prototype: −log(e / (e + e^0)).
  loss = proto_nce(jnp.array([[3.0, 0.0], [0.0, 0.5]]),
                   jnp.array([[2.0, 0.0], [0.0, 1.0]]), jnp.array([0, 1]),
                   jnp.array([1.0, 1.0]))
  np.testing.assert_allclose(loss, np.log1p(np.exp(-1.0)), rtol=1e-6)


def test_proto_nce_check_grads_float64():
  query, protos, labels, phi = proto_inputs(seed=2)
  with jax.enable_x64(True):
    as64 = lambda xs: [np.asarray(x, np.float64) for x in xs]
    f = jax.jit(lambda q, c, p: proto_nce(q, c, labels, p))
    check_grads(f, (np.asarray(query, np.float64), as64(protos), as64(phi)),
                order=1, modes=["rev"])


def test_proto_nce_jit_bf16_and_nan_for_bad_labels_under_jit():
  query, protos, labels, phi = proto_inputs(seed=3)
  loss = proto_nce(query, protos, labels, phi)
  np.testing.assert_allclose(jax.jit(proto_nce)(query, protos, labels, phi),
                             loss, rtol=1e-5)
  half = proto_nce(jnp.asarray(query, jnp.bfloat16),
                   [jnp.asarray(c, jnp.bfloat16) for c in protos], labels, phi)
  assert half.dtype == jnp.float32
  np.testing.assert_allclose(half, loss, rtol=0.05)
  bad = [labels[0], labels[1].copy()]
  bad[1][0] = 5
  assert np.isnan(jax.jit(proto_nce)(query, protos, bad, phi))


@pytest.mark.parametrize("zero_query,phi_value", [(True, 0.2), (False, 1e-6),
                                                  (False, 1e6)])
def test_proto_nce_extremes_are_finite(zero_query, phi_value):
  query, protos, labels, phi = proto_inputs(seed=4)
  if zero_query:
    query[0] = 0.0
  phi = [np.full_like(p, phi_value) for p in phi]
  value, grad = jax.value_and_grad(proto_nce)(query, protos, labels, phi)
  assert np.isfinite(value) and np.all(np.isfinite(grad))


def test_proto_nce_global_view_equals_single_device(mesh):
  query, protos, labels, phi = proto_inputs(batch=16, seed=5)
  shard = NamedSharding(mesh, P("data"))
  value = jax.jit(proto_nce)(jax.device_put(query, shard), protos,
                             [jax.device_put(l, shard) for l in labels], phi)
  np.testing.assert_allclose(value, proto_nce(query, protos, labels, phi),
                             rtol=1e-5)


@pytest.mark.parametrize("change,match", [
    (dict(query=np.zeros((6,), np.float32)), "query"),
    (dict(prototypes=np.zeros((2, 2, 5, 3), np.float32)), "prototypes"),
    (dict(prototypes=[np.zeros((5, 4), np.float32)] * 2), "prototypes"),
    (dict(prototypes=[]), "prototypes"),
    (dict(labels=[np.zeros((5,), np.int32)] * 2), "labels"),
    (dict(labels=[np.zeros((6,), np.float32)] * 2), "labels"),
    (dict(labels=[np.full((6,), 5, np.int32)] * 2), "labels"),
    (dict(labels=[np.zeros((6,), np.int32)] * 3), "clusterings"),
    (dict(concentration=[np.ones((4,), np.float32)] * 2), "concentration"),
    (dict(concentration=[np.zeros((5,), np.float32)] * 2), "concentration"),
])
def test_proto_nce_bad_inputs(change, match):
  query, protos, labels, phi = proto_inputs()
  args = dict(query=query, prototypes=protos, labels=labels,
              concentration=phi)
  args.update(change)
  with pytest.raises(ValueError, match=match):
    proto_nce(**args)


# ------------------------------------------------------- pcl_concentration --


def np_pcl_concentration(features, labels, centroids, alpha, temperature):
  """salesforce/PCL main_pcl.py `run_kmeans`, after the faiss search."""
  k = len(centroids)
  sq_dist = [np.sum((f - centroids[l]) ** 2) for f, l in zip(
      np.asarray(features, np.float64), labels)]
  dcluster = [[] for _ in range(k)]
  for d, l in zip(sq_dist, labels):
    dcluster[l].append(d)
  density = np.zeros(k)
  for i, dist in enumerate(dcluster):
    if len(dist) > 1:
      density[i] = (np.asarray(dist) ** 0.5).mean() / np.log(len(dist) + alpha)
  dmax = density.max()
  for i, dist in enumerate(dcluster):
    if len(dist) <= 1:
      density[i] = dmax
  density = density.clip(np.percentile(density, 10),
                         np.percentile(density, 90))
  return temperature * density / density.mean()


def test_pcl_concentration_matches_official():
  rng = np.random.default_rng(0)
  features = rng.standard_normal((120, 3)).astype(np.float32)
  # 30 clusters of uneven sizes, one singleton (28) and one empty (29): the
  # 10th and 90th percentiles fall between distinct values.
  labels = np.concatenate([np.arange(28), np.arange(28),
                           rng.integers(0, 28, 63), [28]]).astype(np.int32)
  centroids = rng.standard_normal((30, 3)).astype(np.float32)
  for alpha, temperature in [(10.0, 0.2), (2.0, 0.1)]:
    phi = pcl_concentration(features, labels, centroids, alpha=alpha,
                            temperature=temperature)
    np.testing.assert_allclose(
        phi, np_pcl_concentration(features, labels, centroids, alpha,
                                  temperature), rtol=1e-5)
  jitted = jax.jit(pcl_concentration)(features, labels, centroids)
  np.testing.assert_allclose(jitted, pcl_concentration(features, labels,
                                                       centroids), rtol=1e-5)


def test_pcl_concentration_hand_case_and_no_gradient():
  # Clusters at distance 1 and 2 of their centroids, then a singleton:
  # φ = [1, 2, 2] / log 12, clipped to [φ₁ + 0.2 (φ₂ − φ₁), φ₂], mean → 0.2.
  features = jnp.array([[0.0], [2.0], [10.0], [14.0], [30.0]])
  centroids = jnp.array([[1.0], [12.0], [30.0]])
  labels = jnp.array([0, 0, 1, 1, 2])
  raw = np.array([1.2, 2.0, 2.0])
  np.testing.assert_allclose(pcl_concentration(features, labels, centroids),
                             0.2 * raw / raw.mean(), rtol=1e-5)
  grad = jax.grad(lambda f: pcl_concentration(f, labels, centroids).sum())(
      features)
  np.testing.assert_array_equal(grad, np.zeros((5, 1)))


@pytest.mark.parametrize("change,match", [
    (dict(features=np.zeros((4,), np.float32)), "features"),
    (dict(labels=np.zeros((3,), np.int32)), "labels"),
    (dict(labels=np.full((4,), 3, np.int32)), "labels"),
    (dict(centroids=np.zeros((3, 2), np.float32)), "centroids"),
    (dict(alpha=-1.0), "alpha"),
    (dict(temperature=0.0), "temperature"),
])
def test_pcl_concentration_bad_inputs(change, match):
  args = dict(features=np.zeros((4, 3), np.float32),
              labels=np.zeros((4,), np.int32),
              centroids=np.zeros((3, 3), np.float32))
  args.update(change)
  features, labels, centroids = (args.pop(n) for n in
                                 ("features", "labels", "centroids"))
  with pytest.raises(ValueError, match=match):
    pcl_concentration(features, labels, centroids, **args)
