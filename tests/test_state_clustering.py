"""Sinkhorn codes, k-means and the FIFO queue against numpy references."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

# `mesh` is a fixture, used by name.
from _clustering_reference import mesh, np_sinkhorn, rand  # pylint: disable=unused-import
from ssljax.state import queue
from ssljax.state._kmeans import SPLIT_EPS, KMeansState, _split_empty, kmeans
from ssljax.state._sinkhorn import sinkhorn

# One compiled k-means per shape: eager calls would compile every loop anew.
run_kmeans = jax.jit(kmeans, static_argnames=("k", "iterations", "metric",
                                              "seeding"))


# ---------------------------------------------------------------- sinkhorn --


@pytest.mark.parametrize("epsilon,iterations", [(0.05, 3), (0.05, 0),
                                                (0.3, 1), (0.1, 10)])
def test_sinkhorn_matches_official_algorithm(epsilon, iterations):
  scores = rand((12, 5), seed=1)
  q = sinkhorn(scores, epsilon=epsilon, iterations=iterations)
  np.testing.assert_allclose(q, np_sinkhorn(scores, epsilon, iterations),
                             rtol=2e-5, atol=1e-7)


def test_sinkhorn_small_epsilon_large_scores_stay_finite():
  # exp(5 / 0.01) overflows float32 by far; the log domain must not.
  scores = rand((10, 6), seed=2, scale=5.0)
  q = sinkhorn(scores, epsilon=0.01, iterations=3)
  assert q.dtype == jnp.float32 and np.all(np.isfinite(q))
  np.testing.assert_allclose(q, np_sinkhorn(scores, 0.01, 3), atol=1e-5)


def test_sinkhorn_rows_and_equipartition():
  scores = rand((16, 4), seed=3)
  q = np.asarray(sinkhorn(scores, epsilon=0.3, iterations=100))
  np.testing.assert_allclose(q.sum(axis=1), np.ones(16), rtol=1e-5)
  np.testing.assert_allclose(q.sum(axis=0), np.full(4, 16 / 4), rtol=1e-3)
  # Few iterations: rows exact, columns only approximately balanced.
  q3 = np.asarray(sinkhorn(scores, epsilon=0.05, iterations=3))
  np.testing.assert_allclose(q3.sum(axis=1), np.ones(16), rtol=1e-5)
  assert np.abs(q3.sum(axis=0) - 4).max() > 1e-3


def test_sinkhorn_zero_scores_are_uniform():
  q = sinkhorn(jnp.zeros((6, 3)))
  np.testing.assert_allclose(q, np.full((6, 3), 1 / 3), rtol=1e-6)


def test_sinkhorn_has_no_gradient_and_jits():
  scores = jnp.asarray(rand((8, 3), seed=4))
  weights = jnp.asarray(rand((8, 3), seed=5))
  grad = jax.grad(lambda s: jnp.sum(sinkhorn(s) * weights))(scores)
  np.testing.assert_array_equal(grad, np.zeros((8, 3)))
  jitted = jax.jit(sinkhorn, static_argnames=("iterations",))
  np.testing.assert_allclose(jitted(scores, epsilon=0.1, iterations=5),
                             sinkhorn(scores, epsilon=0.1, iterations=5),
                             rtol=1e-5)


def test_sinkhorn_bf16_computes_in_f32():
  scores = rand((8, 4), seed=6)
  q = sinkhorn(jnp.asarray(scores, jnp.bfloat16), epsilon=0.1)
  assert q.dtype == jnp.float32
  bf16_scores = np.asarray(jnp.asarray(scores, jnp.bfloat16), np.float32)
  np.testing.assert_allclose(q, sinkhorn(bf16_scores, epsilon=0.1), rtol=1e-6)
  np.testing.assert_allclose(q, sinkhorn(scores, epsilon=0.1), atol=0.05)


def test_sinkhorn_global_view_equals_single_device(mesh):
  scores = rand((16, 4), seed=7)
  sharded = jax.device_put(scores, NamedSharding(mesh, P("data")))
  np.testing.assert_allclose(jax.jit(sinkhorn)(sharded), sinkhorn(scores),
                             rtol=1e-5)


@pytest.mark.parametrize("iterations", [0, 4])
def test_sinkhorn_shard_map_rows_equal_single_device(mesh, iterations):
  scores = rand((16, 4), seed=8, scale=3.0)
  per_device = jax.jit(jax.shard_map(
      lambda s: sinkhorn(s, epsilon=0.05, iterations=iterations,
                         axis_name="data"),
      mesh=mesh, in_specs=P("data"), out_specs=P("data")))(scores)
  np.testing.assert_allclose(
      per_device, sinkhorn(scores, epsilon=0.05, iterations=iterations),
      rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kwargs,match", [
    (dict(scores=jnp.zeros((2, 3, 4))), "scores"),
    (dict(epsilon=0.0), "epsilon"),
    (dict(iterations=-1), "iterations"),
    (dict(iterations=2.0), "iterations"),
])
def test_sinkhorn_bad_inputs(kwargs, match):
  args = dict(scores=jnp.zeros((4, 3)))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    sinkhorn(args.pop("scores"), **args)


# ------------------------------------------------------------------ kmeans --


def np_lloyd(x, init, iterations, cosine=False):
  """Plain Lloyd iterations (no empty clusters expected), float64 loops."""
  x = np.asarray(x, np.float64)
  c = np.asarray(init, np.float64).copy()
  if cosine:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    c = c / np.linalg.norm(c, axis=1, keepdims=True)

  def assign(c):
    d2 = np.array([[np.sum((xi - cj) ** 2) for cj in c] for xi in x])
    return d2.argmin(axis=1), d2.min(axis=1)

  for _ in range(iterations):
    a, _ = assign(c)
    for j in range(len(c)):
      assert np.any(a == j), "reference expects no empty cluster"
      c[j] = x[a == j].mean(axis=0)
      if cosine:
        c[j] /= np.linalg.norm(c[j])
  a, d2 = assign(c)
  return c, a, np.bincount(a, minlength=len(c)), d2.sum()


def blobs(seed=0, per_blob=20):
  rng = np.random.default_rng(seed)
  centers = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
  x = np.concatenate([c + 0.5 * rng.standard_normal((per_blob, 2))
                      for c in centers])
  return x.astype(np.float32), np.repeat(np.arange(3), per_blob)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_kmeans_warm_start_matches_numpy_lloyd(metric):
  x = rand((30, 3), seed=10) + np.array([0.0, 0.0, 2.0], np.float32)
  init = x[:4]
  state = run_kmeans(x, 4, iterations=4, key=jax.random.key(0), metric=metric,
                 init=init)
  c, a, counts, inertia = np_lloyd(x, init, 4, cosine=metric == "cosine")
  np.testing.assert_allclose(state.centroids, c, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(state.assignments, a)
  np.testing.assert_array_equal(state.counts, counts)
  np.testing.assert_allclose(state.inertia, inertia, rtol=1e-5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_recovers_separated_blobs(seed):
  x, truth = blobs(seed)
  state = run_kmeans(x, 3, iterations=10, key=jax.random.key(seed))
  a = np.asarray(state.assignments)
  # The same partition up to relabelling: each blob maps to its own cluster.
  mapping = {t: set(a[truth == t]) for t in range(3)}
  assert all(len(m) == 1 for m in mapping.values())
  assert len(set.union(*mapping.values())) == 3
  for t in range(3):
    np.testing.assert_allclose(state.centroids[a[truth == t][0]],
                               x[truth == t].mean(axis=0), rtol=1e-5,
                               atol=1e-5)
  np.testing.assert_array_equal(np.sort(state.counts), [20, 20, 20])


def test_kmeans_empty_cluster_is_split_as_faiss():
  x, _ = blobs(3)
  far = np.array([[1000.0, 1000.0]], np.float32)
  init = np.concatenate([x.mean(axis=0, keepdims=True), far])
  # One step: everything joins cluster 0, cluster 1 is empty and takes the
  # only donor's mean with the opposite alternating perturbation.
  state = run_kmeans(x, 2, iterations=1, key=jax.random.key(0), init=init)
  mean = x.astype(np.float64).mean(axis=0)
  sign = np.array([1.0, -1.0])
  np.testing.assert_allclose(state.centroids[0], mean * (1 - SPLIT_EPS * sign),
                             rtol=1e-5)
  np.testing.assert_allclose(state.centroids[1], mean * (1 + SPLIT_EPS * sign),
                             rtol=1e-5)
  # A few more steps and all three blobs' points use both clusters.
  state = run_kmeans(x, 3, iterations=8, key=jax.random.key(0),
                 init=np.concatenate([init, far + 5.0]))
  assert np.all(np.asarray(state.counts) > 0)
  assert np.all(np.abs(np.asarray(state.centroids)) < 20)


def test_split_never_takes_a_singleton_donor():
  centroids = jnp.arange(8.0).reshape(4, 2) + 1.0
  counts = jnp.array([5, 1, 0, 0])
  split = jax.jit(_split_empty)
  for seed in range(20):
    out = np.asarray(split(centroids, counts, jax.random.key(seed)))
    np.testing.assert_array_equal(out[1], centroids[1])
    # Clusters 2 and 3 are copies of cluster 0 (directly, or of cluster 2
    # after it split 0), each perturbed by at most two factors 1 ± 1/1024.
    for j in (0, 2, 3):
      np.testing.assert_allclose(out[j], centroids[0], rtol=2.1 * SPLIT_EPS)
    assert len({tuple(r) for r in out.tolist()}) == 4


@pytest.mark.parametrize("seeding", ["k-means++", "random"])
def test_kmeans_seeding_picks_distinct_rows(seeding):
  x = rand((12, 3), seed=11)
  state = run_kmeans(x, 5, iterations=0, key=jax.random.key(3), seeding=seeding)
  rows = {tuple(r) for r in np.asarray(state.centroids).tolist()}
  assert len(rows) == 5 and rows <= {tuple(r) for r in x.tolist()}
  # Different keys give different seeds.
  other = run_kmeans(x, 5, iterations=0, key=jax.random.key(4), seeding=seeding)
  assert not np.array_equal(other.centroids, state.centroids)


def test_kmeans_pytree_and_bf16():
  x, _ = blobs(4)
  state = run_kmeans(x, 3, iterations=5, key=jax.random.key(0))
  assert isinstance(state, KMeansState) and len(jax.tree.leaves(state)) == 4
  assert state.assignments.dtype == state.counts.dtype == jnp.int32
  half = run_kmeans(jnp.asarray(x, jnp.bfloat16), 3, iterations=5,
                    key=jax.random.key(0))
  assert half.centroids.dtype == jnp.float32
  np.testing.assert_array_equal(half.assignments, state.assignments)
  np.testing.assert_allclose(half.centroids, state.centroids, atol=0.05)


def test_kmeans_global_view_equals_single_device(mesh):
  x, _ = blobs(5, per_blob=16)
  x = x[:40]
  sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
  state = run_kmeans(sharded, 3, iterations=4, key=jax.random.key(1))
  single = run_kmeans(x, 3, iterations=4, key=jax.random.key(1))
  np.testing.assert_allclose(state.centroids, single.centroids, rtol=1e-5)
  np.testing.assert_array_equal(state.assignments, single.assignments)


@pytest.mark.parametrize("kwargs,match", [
    (dict(x=jnp.zeros((4,))), "`x`"),
    (dict(k=0), "`k`"),
    (dict(k=7), "`k`"),
    (dict(iterations=-1), "iterations"),
    (dict(metric="manhattan"), "metric"),
    (dict(seeding="farthest"), "seeding"),
    (dict(init=jnp.zeros((3, 2))), "init"),
])
def test_kmeans_bad_inputs(kwargs, match):
  args = dict(x=jnp.zeros((6, 3)), k=2, iterations=1, key=jax.random.key(0))
  args.update(kwargs)
  with pytest.raises(ValueError, match=match):
    kmeans(args.pop("x"), args.pop("k"), **args)


# ------------------------------------------------------------------- queue --


def test_queue_wraps_like_a_deque():
  size, dim, batch = 8, 2, 3
  q = queue.init(size, dim)
  ref = collections.deque(maxlen=size)
  push = jax.jit(queue.push)
  for step in range(7):
    keys = rand((batch, dim), seed=20 + step)
    q = push(q, keys)
    ref.extend(keys.tolist())
    count, ptr = int(q.count), int(q.ptr)
    assert count == len(ref) and ptr == 3 * (step + 1) % size
    buffer = np.asarray(q.buffer)
    # Oldest to newest: the written prefix before wrapping, then from ptr.
    ordered = buffer[:count] if count < size else np.roll(buffer, -ptr, axis=0)
    np.testing.assert_array_equal(ordered, np.array(ref, np.float32))


def test_queue_init_zero_or_unit_rows():
  q = queue.init(5, 3, jnp.bfloat16)
  assert q.buffer.dtype == jnp.bfloat16
  assert not np.any(np.asarray(q.buffer, np.float32))
  assert q.ptr.dtype == jnp.int32 and int(q.ptr) == int(q.count) == 0
  rows = queue.init(5, 3, key=jax.random.key(0)).buffer
  np.testing.assert_allclose(np.linalg.norm(rows, axis=1), np.ones(5),
                             rtol=1e-6)
  assert len({tuple(r) for r in np.asarray(rows).tolist()}) == 5


def test_queue_push_full_batch_casts_and_stops_gradient():
  q = queue.init(4, 2, jnp.bfloat16)
  keys = jnp.asarray(rand((4, 2), seed=30))
  out = queue.push(q, keys)
  assert out.buffer.dtype == jnp.bfloat16 and int(out.ptr) == 0
  assert int(out.count) == 4
  grad = jax.grad(lambda k: jnp.sum(queue.push(queue.init(4, 2), k).buffer))(
      keys)
  np.testing.assert_array_equal(grad, np.zeros((4, 2)))


def test_queue_shard_map_pushes_all_devices_keys(mesh):
  keys = rand((16, 2), seed=31)
  start = queue.push(queue.init(24, 2), rand((5, 2), seed=32))

  def per_device(k):
    new = queue.push(start, k, axis_name="data")
    return jax.tree.map(lambda a: a[None], new)

  replicas = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P("data"),
                                   out_specs=P("data")))(keys)
  expected = queue.push(start, keys)
  for device in range(8):
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[device], b),
                 replicas, expected)


@pytest.mark.parametrize("keys,match", [
    (jnp.zeros((5, 2)), "keys"),     # more rows than the queue
    (jnp.zeros((2, 3)), "keys"),     # wrong dimension
    (jnp.zeros((2,)), "keys"),       # wrong rank
])
def test_queue_push_bad_keys(keys, match):
  with pytest.raises(ValueError, match=match):
    queue.push(queue.init(4, 2), keys)


@pytest.mark.parametrize("size,dim,match", [(0, 2, "size"), (4, 0, "dim"),
                                            (4.0, 2, "size")])
def test_queue_init_bad_sizes(size, dim, match):
  with pytest.raises(ValueError, match=match):
    queue.init(size, dim)
