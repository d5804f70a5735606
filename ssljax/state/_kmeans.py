"""Jittable Lloyd k-means with DeepCluster's empty-cluster re-seeding."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import _common

METRICS = ("euclidean", "cosine")
SEEDINGS = ("k-means++", "random")

# Relative perturbation that splits a copied centroid from its donor; faiss's
# value ("a bit above machine epsilon for float16").
SPLIT_EPS = 1.0 / 1024.0

# Rows whose distances to all centroids are materialised at once: bounds the
# assignment's memory at ASSIGN_BLOCK x k instead of N x k (ImageNet x 3000
# clusters would be 15 GB in float32).
ASSIGN_BLOCK = 4096


class KMeansState(NamedTuple):
  """Result of `kmeans`; a pytree, so it can be carried in a method's state.

  Attributes:
    centroids: [k, D] centroids (unit vectors for metric="cosine").
    assignments: [N] int32 index of each row's nearest centroid.
    counts: [k] int32 rows assigned to each centroid.
    inertia: scalar Σ_n ||x_n − c_{a(n)}||², on the l2-normalised rows and
      centroids for metric="cosine" (where it equals 2 Σ_n (1 − cos)).
  """
  centroids: jax.Array
  assignments: jax.Array
  counts: jax.Array
  inertia: jax.Array


def _nearest(x: jax.Array, centroids: jax.Array):
  """Index of and squared distance to the nearest centroid of every row."""
  c_sq = jnp.sum(jnp.square(centroids), axis=-1)

  def one_row(row):
    # Full precision: TPUs default to bf16 matmuls, enough to flip the
    # nearest centroid of points near a boundary.
    cross = jnp.matmul(centroids, row, precision=jax.lax.Precision.HIGHEST)
    d2 = jnp.maximum(jnp.sum(jnp.square(row)) - 2.0 * cross + c_sq, 0.0)
    best = jnp.argmin(d2)
    return best.astype(jnp.int32), d2[best]

  return jax.lax.map(one_row, x, batch_size=ASSIGN_BLOCK)


def _counts(assignments: jax.Array, k: int) -> jax.Array:
  return jax.ops.segment_sum(jnp.ones_like(assignments), assignments,
                             num_segments=k)


def _means(x, assignments, centroids):
  """Lloyd update; an empty cluster keeps its previous centroid."""
  k = centroids.shape[0]
  counts = _counts(assignments, k)
  sums = jax.ops.segment_sum(x, assignments, num_segments=k)
  means = sums / jnp.maximum(counts, 1)[:, None].astype(x.dtype)
  return jnp.where(counts[:, None] > 0, means, centroids), counts


def _split_empty(centroids, counts, key):
  """Re-seeds empty clusters by splitting populated ones (faiss/DeepCluster).

  For each empty cluster in turn, a donor cluster j is drawn with probability
  ∝ (n_j − 1)⁺ (faiss's rule: big clusters are split most often, singletons
  never); both get the donor's centroid, scaled coordinate-wise by
  (1 ± SPLIT_EPS) with opposite, alternating signs so the two move apart, and
  the donor's count is shared between them so that later empty clusters in
  the same step see the split. The next assignment divides the donor's rows.
  """
  k, dim = centroids.shape
  sign = jnp.where(jnp.arange(dim) % 2 == 0, 1.0, -1.0).astype(centroids.dtype)
  is_empty = counts == 0
  empty_ids = jnp.nonzero(is_empty, size=k, fill_value=0)[0]

  # k <= N and the splits conserve Σ counts, so while a cluster is empty
  # some other cluster has two or more rows and the draw below is defined.
  def more_empty(carry):
    return carry[0] < jnp.sum(is_empty)

  def split(carry):
    i, centroids, counts = carry
    target = empty_ids[i]
    weights = jnp.maximum(counts - 1, 0).astype(centroids.dtype)
    donor = jax.random.categorical(jax.random.fold_in(key, i), jnp.log(weights))
    base = centroids[donor]
    centroids = centroids.at[target].set(base * (1.0 + SPLIT_EPS * sign))
    centroids = centroids.at[donor].set(base * (1.0 - SPLIT_EPS * sign))
    half = counts[donor] // 2
    counts = counts.at[target].set(half).at[donor].add(-half)
    return i + 1, centroids, counts

  _, centroids, _ = jax.lax.while_loop(more_empty, split,
                                       (jnp.int32(0), centroids, counts))
  return centroids


def _seed_random(x, k, key):
  """k distinct rows drawn uniformly (faiss's initialisation)."""
  return x[jax.random.choice(key, x.shape[0], (k,), replace=False)]


def _seed_kmeans_pp(x, k, key):
  """k-means++: each new centroid is a row drawn with probability ∝ D(x)²."""
  first_key, key = jax.random.split(key)
  first = x[jax.random.randint(first_key, (), 0, x.shape[0])]
  sq_dist_to = lambda c: jnp.sum(jnp.square(x - c), axis=-1)

  def add(i, carry):
    centroids, d2 = carry
    # Chosen rows have D = 0 exactly, so they are never drawn again. If every
    # row already coincides with a centroid (fewer than k distinct rows),
    # draw uniformly: some clusters must stay empty anyway.
    logits = jnp.where(jnp.any(d2 > 0), jnp.log(d2), 0.0)
    pick = x[jax.random.categorical(jax.random.fold_in(key, i), logits)]
    return centroids.at[i].set(pick), jnp.minimum(d2, sq_dist_to(pick))

  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  centroids, _ = jax.lax.fori_loop(1, k, add, (centroids, sq_dist_to(first)))
  return centroids


_SEEDERS = {"k-means++": _seed_kmeans_pp, "random": _seed_random}


def kmeans(x: jax.Array, k: int, *, iterations: int, key: jax.Array,
           metric: str = "euclidean", init: Optional[jax.Array] = None,
           seeding: str = "k-means++") -> KMeansState:
  r"""Lloyd's k-means with empty clusters re-seeded by splitting (DeepCluster).

  Minimises Σ_n ||x_n − c_{a(n)}||² by alternating, `iterations` times,

      a(n) ← argmin_j ||x_n − c_j||²,      c_j ← mean{x_n : a(n) = j},

  and re-seeding every cluster left empty by the update: it copies the
  centroid of a populated cluster drawn with probability ∝ (size − 1), and
  the two copies are perturbed in opposite directions (× (1 ± 1/1024),
  alternating over coordinates) so the next assignment splits that
  cluster's rows between them. DeepCluster's official `clustering.py` runs
  faiss k-means, whose `split_clusters` does exactly this; the paper
  describes it as taking "a non-empty cluster's centroid with a small random
  perturbation". A final assignment pass gives `assignments`, `counts` and
  `inertia` consistent with the returned centroids (a cluster can still end
  empty, e.g. when the rows of the cluster it split from are identical).

  metric="cosine" is spherical k-means: rows and centroids are l2-normalised
  (centroids after every update and split), so assignment maximises the dot
  product, as in DeepCluster-v2 and PCL's normalised prototypes.

  Initial centroids are `init` (a warm start, e.g. the previous epoch's
  centroids), else drawn from the rows with `key`: "k-means++" (default;
  D²-sampling, Arthur & Vassilvitskii 2007, one candidate per step) or
  "random" (k distinct rows, faiss's and so DeepCluster's choice). The
  splits also draw from `key`.

  Jit with `k`, `iterations`, `metric` and `seeding` static. No gradient
  flows through the clustering. Under `jax.jit` with `x` sharded over a mesh
  the sums are global; no collectives are needed.

  Args:
    x: [N, D] rows to cluster (bf16/f16 are computed in float32).
    k: number of clusters, 1 <= k <= N.
    iterations: Lloyd iterations (assignment + update + re-seeding).
    key: PRNG key for the seeding and the splits.
    metric: "euclidean" or "cosine".
    init: optional [k, D] initial centroids.
    seeding: "k-means++" or "random"; ignored when `init` is given.

  Returns:
    A `KMeansState`.

  References:
    Caron et al., "Deep Clustering for Unsupervised Learning of Visual
    Features", ECCV 2018, Sec. 3.3 (avoiding empty clusters), and the faiss
    `Clustering::train` / `split_clusters` that its code calls.
    Lloyd, "Least squares quantization in PCM", 1982.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.state import kmeans
    >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [10.0, 0.0], [10.0, 1.0]])
    >>> state = kmeans(x, 2, iterations=5, key=jax.random.key(0))
    >>> print(sorted(state.centroids.tolist()))
    [[0.0, 0.5], [10.0, 0.5]]
    >>> print(round(float(state.inertia), 4))
    1.0
  """
  fn = "kmeans"
  _common.check_rank(x, 2, "x", fn)
  _common.check_count(k, "k", fn, minimum=1)
  if k > x.shape[0]:
    raise ValueError(
        f"{fn}: `k` must be <= the number of rows of `x` ({x.shape[0]}), "
        f"got {k}.")
  _common.check_count(iterations, "iterations", fn)
  if metric not in METRICS:
    raise ValueError(
        f"{fn}: `metric` must be one of {METRICS}, got {metric!r}.")
  if seeding not in SEEDINGS:
    raise ValueError(
        f"{fn}: `seeding` must be one of {SEEDINGS}, got {seeding!r}.")
  if init is not None and tuple(jnp.shape(init)) != (k, x.shape[1]):
    raise ValueError(
        f"{fn}: `init` must have shape [k, D] = [{k}, {x.shape[1]}], got "
        f"{jnp.shape(init)}.")

  x = _common.to_compute(jax.lax.stop_gradient(x))
  project = _common.l2_normalize if metric == "cosine" else (lambda c: c)
  x = project(x)
  seed_key, steps_key = jax.random.split(key)
  if init is None:
    centroids = _SEEDERS[seeding](x, k, seed_key)
  else:
    centroids = jax.lax.stop_gradient(jnp.asarray(init)).astype(x.dtype)
  centroids = project(centroids)

  def lloyd(centroids, step_key):
    assignments, _ = _nearest(x, centroids)
    centroids, counts = _means(x, assignments, centroids)
    return project(_split_empty(centroids, counts, step_key)), None

  centroids, _ = jax.lax.scan(lloyd, centroids,
                              jax.random.split(steps_key, iterations))
  assignments, sq_dist = _nearest(x, centroids)
  return KMeansState(centroids=centroids, assignments=assignments,
                     counts=_counts(assignments, k), inertia=jnp.sum(sq_dist))
