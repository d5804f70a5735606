"""Clustering losses: SwAV's swapped prediction and PCL's ProtoNCE."""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.state import sinkhorn

ArrayOrArrays = Union[jax.Array, Sequence[jax.Array]]


def _check_views(scores_shape, n_codes: int, codes_name: str, fn: str):
  """At least 2 views, and 1 <= n_codes <= V views carry codes."""
  n_views = scores_shape[0]
  if n_views < 2:
    raise ValueError(
        f"{fn}: `scores` must hold at least 2 views [V, B, K], got shape "
        f"{scores_shape}.")
  if not 1 <= n_codes <= n_views:
    raise ValueError(
        f"{fn}: `{codes_name}` must give codes for 1 to V = {n_views} views, "
        f"got {n_codes}.")


def _swapped_cross_entropy(codes, scores, temperature):
  n_codes, n_views, batch = codes.shape[0], scores.shape[0], scores.shape[1]
  log_p = jax.nn.log_softmax(scores / temperature, axis=-1)
  # cross[i, v] = H(q_i, p_v) = −1/B Σ_b Σ_k q_i[b, k] log p_v[b, k]
  cross = -jnp.einsum("ibk,vbk->iv", codes, log_p) / batch
  swapped = 1.0 - jnp.eye(n_codes, n_views, dtype=cross.dtype)  # v ≠ i
  return jnp.sum(cross * swapped) / (n_codes * (n_views - 1))


def swapped_prediction(codes: jax.Array, scores: jax.Array, *,
                       temperature: float = 0.1) -> jax.Array:
  r"""SwAV's cross-entropy between given codes and the other views' scores.

  The second half of `swav`, for callers that compute the codes themselves
  (e.g. with SwAV's feature queue joined to the batch in `sinkhorn`). With
  q_i = `codes[i]` for the first n = `codes.shape[0]` views:

      p_v = softmax(s_v / τ)
      ℓ = 1/n Σ_{i<n} 1/(V−1) Σ_{v≠i} −1/B Σ_b Σ_k q_i[b,k] log p_v[b,k]

  The codes are targets: no gradient flows into them. Each row's term
  depends only on that row, so per-device use needs no collective.

  Args:
    codes: [n, B, K] codes of the first n views (rows sum to 1).
    scores: [V, B, K] prototype scores of all V >= 2 views.
    temperature: τ of the predicted distribution p_v.

  Returns:
    Scalar loss (float32 for bf16/f16 inputs).

  References:
    Caron et al., "Unsupervised Learning of Visual Features by Contrasting
    Cluster Assignments", NeurIPS 2020, Eq. (1) and `main_swav.py`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.clustering import swapped_prediction
    >>> codes = jnp.array([[[1.0, 0.0]]])  # view 0 of the one row is code 0
    >>> scores = jnp.zeros((2, 1, 2))      # view 1 predicts uniformly: log 2
    >>> print(round(float(swapped_prediction(codes, scores)), 4))
    0.6931
  """
  fn = "swapped_prediction"
  _common.check_rank(codes, 3, "codes", fn)
  _common.check_rank(scores, 3, "scores", fn)
  _check_views(scores.shape, codes.shape[0], "codes", fn)
  if codes.shape[1:] != scores.shape[1:]:
    raise ValueError(
        f"{fn}: `codes` must have shape [n, B, K] with [B, K] = "
        f"{list(scores.shape[1:])} like `scores`, got {codes.shape}.")
  _common.check_positive(temperature, "temperature", fn)
  codes, scores = _common.to_compute(jax.lax.stop_gradient(codes), scores)
  return _swapped_cross_entropy(codes, scores, temperature)


def swav(scores: jax.Array, *, temperature: float = 0.1, epsilon: float = 0.05,
         sinkhorn_iters: int = 3, n_global: int = 2,
         axis_name: Optional[str] = None) -> jax.Array:
  r"""SwAV swapped-prediction loss: predict one view's codes from another.

  For V views of a batch, with s_v = `scores[v]` the [B, K] scores against
  the prototypes, codes come from the first `n_global` (global-crop) views,
  q_i = sinkhorn(s_i) (no gradient), and every other view predicts them:

      p_v = softmax(s_v / τ)
      ℓ = 1/n_global Σ_{i<n_global} 1/(V−1) Σ_{v≠i} H(q_i, p_v)
      H(q_i, p_v) = −1/B Σ_b Σ_k q_i[b,k] log p_v[b,k]

  as in the official `main_swav.py` (`crops_for_assign` = the first
  `n_global` crops; each is predicted by all other crops, global or local).
  SwAV's optional feature queue (for small batches) is not part of this
  function: with one, take codes as sinkhorn(concat(queued scores, s_i))[-B:]
  and pass them to `swapped_prediction`.

  Under `jax.jit` with `scores` sharded along the batch, the Sinkhorn sums
  are global. Inside `shard_map`/pmap pass `axis_name`: the codes equal the
  single-device codes of the global batch, and the returned value is this
  device's mean over its rows, so the mean over devices (and its gradient) is
  the single-device loss.

  Args:
    scores: [V, B, K] prototype scores (normalised features · normalised
      prototypes) of V >= 2 views, global crops first.
    temperature: τ of the predicted distribution p_v.
    epsilon: Sinkhorn entropic regularisation ε.
    sinkhorn_iters: Sinkhorn-Knopp iterations.
    n_global: number of leading views whose codes are predicted (1..V).
    axis_name: mapped axis of the batch shards, or None.

  Returns:
    Scalar loss (float32 for bf16/f16 inputs).

  References:
    Caron et al., "Unsupervised Learning of Visual Features by Contrasting
    Cluster Assignments", NeurIPS 2020, Eqs. (1)-(3) and the official
    `main_swav.py` (facebookresearch/swav).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.clustering import swav
    >>> s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> # codes of view 0 are [[e, 1], [1, e]] / (1 + e), predicted by view 1:
    >>> # log(1 + e) − e / (1 + e) = 0.5822
    >>> loss = swav(jnp.stack([s, s]), temperature=1.0, epsilon=1.0, n_global=1)
    >>> print(round(float(loss), 4))
    0.5822
  """
  fn = "swav"
  _common.check_rank(scores, 3, "scores", fn)
  _common.check_count(n_global, "n_global", fn, minimum=1)
  _check_views(scores.shape, n_global, "n_global", fn)
  _common.check_positive(temperature, "temperature", fn)
  _common.check_positive(epsilon, "epsilon", fn)
  _common.check_count(sinkhorn_iters, "sinkhorn_iters", fn)

  scores = _common.to_compute(scores)
  codes = jax.vmap(functools.partial(
      sinkhorn, epsilon=epsilon, iterations=sinkhorn_iters,
      axis_name=axis_name))(scores[:n_global])
  return _swapped_cross_entropy(codes, scores, temperature)


def _per_clustering(x, rank: int, name: str, fn: str) -> list:
  """One array or a sequence/stack of M arrays of `rank` -> list of M arrays."""
  if isinstance(x, (list, tuple)):
    if not x:
      raise ValueError(f"{fn}: `{name}` must hold at least one clustering.")
    for x_m in x:
      _common.check_rank(x_m, rank, name, fn)
    return list(x)
  _common.check_rank(x, (rank, rank + 1), name, fn)
  return [x] if np.ndim(x) == rank else list(x)


def _check_concentration(phi, num_prototypes: int, fn: str) -> None:
  if np.shape(phi) != (num_prototypes,):
    raise ValueError(
        f"{fn}: `concentration` must have shape [C] = [{num_prototypes}] per "
        f"clustering, got {np.shape(phi)}.")
  if _common.is_concrete(phi) and not np.all(np.asarray(phi) > 0):
    raise ValueError(f"{fn}: `concentration` must be > 0 everywhere.")


def proto_nce(query: jax.Array, prototypes: ArrayOrArrays,
              labels: ArrayOrArrays, concentration: ArrayOrArrays) -> jax.Array:
  r"""PCL's ProtoNCE prototype term, averaged over M clusterings.

  With v̂ = v/||v|| the normalised query and ĉ^m_j the normalised prototypes
  of clustering m, each with its concentration φ^m_j > 0:

      ℓ = 1/M Σ_m 1/B Σ_b −log( exp(v̂_b·ĉ^m_s / φ^m_s)
                                / Σ_j exp(v̂_b·ĉ^m_j / φ^m_j) )

  where s = labels[m, b] is the cluster of example b in clustering m.

  The official code's denominator holds, per clustering, the batch's B
  positive prototypes (repeats included) and r = 16384 prototypes sampled
  from the rest; here it holds every prototype of the clustering once, the
  full sum that the paper's sampled one stands for. The instance-wise
  InfoNCE term of ProtoNCE is `moco`/`info_nce`.

  Clusterings may have different numbers of prototypes C_m (PCL uses 25k,
  50k and 100k): pass sequences of M arrays, or stacked arrays when the C_m
  are equal, or single arrays for M = 1. Each example's term depends only on
  its own query, so per-device use needs no collective: the mean over
  devices of per-device losses is the global loss. Prototypes and
  concentrations are ordinary inputs (PCL passes k-means results, constants
  for the step); see `pcl_concentration`. Out-of-range labels under `jax.jit`
  give NaN.

  Args:
    query: [B, D] query embeddings (normalised inside).
    prototypes: [C, D], [M, C, D] or a sequence of M [C_m, D] centroids
      (normalised inside).
    labels: [B], [M, B] or a sequence of M [B] int cluster assignments of
      the queries.
    concentration: [C], [M, C] or a sequence of M [C_m] concentrations φ.

  Returns:
    Scalar loss (float32 for bf16/f16 inputs).

  References:
    Li, Zhou, Xiong, Hoi, "Prototypical Contrastive Learning of Unsupervised
    Representations", ICLR 2021, Eq. (11), and salesforce/PCL `pcl/builder.py`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.clustering import proto_nce
    >>> query = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    >>> prototypes = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    >>> phi = jnp.array([1.0, 1.0])
    >>> # each query is its prototype: −log(e / (e + 1)) = 0.3133
    >>> loss = proto_nce(query, prototypes, jnp.array([0, 1]), phi)
    >>> print(round(float(loss), 4))
    0.3133
  """
  fn = "proto_nce"
  _common.check_rank(query, 2, "query", fn)
  batch, dim = query.shape
  protos = _per_clustering(prototypes, 2, "prototypes", fn)
  labs = _per_clustering(labels, 1, "labels", fn)
  phis = _per_clustering(concentration, 1, "concentration", fn)
  if not len(protos) == len(labs) == len(phis):
    raise ValueError(
        f"{fn}: `prototypes`, `labels` and `concentration` must describe the "
        f"same number of clusterings M, got {len(protos)}, {len(labs)} and "
        f"{len(phis)}.")

  dtype = _common.compute_dtype(query, *protos, *phis)
  q = _common.l2_normalize(jnp.asarray(query, dtype))
  terms = []
  for c_m, l_m, phi_m in zip(protos, labs, phis):
    num_prototypes = np.shape(c_m)[0]
    if np.shape(c_m)[1] != dim:
      raise ValueError(
          f"{fn}: `prototypes` must have dimension D = {dim} like `query`, "
          f"got shape {np.shape(c_m)}.")
    if np.shape(l_m) != (batch,):
      raise ValueError(
          f"{fn}: `labels` must have shape [B] = [{batch}] per clustering, "
          f"got {np.shape(l_m)}.")
    _common.check_labels(l_m, num_prototypes, "labels", fn)
    _check_concentration(phi_m, num_prototypes, fn)
    c_hat = _common.l2_normalize(jnp.asarray(c_m, dtype))
    logits = q @ c_hat.T / jnp.asarray(phi_m, dtype)
    positive = jnp.take_along_axis(logits, l_m[:, None], axis=1, mode="fill",
                                   fill_value=jnp.nan)[:, 0]
    terms.append(jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive))
  return jnp.mean(jnp.stack(terms))


def pcl_concentration(features: jax.Array, labels: jax.Array,
                      centroids: jax.Array, *, alpha: float = 10.0,
                      temperature: float = 0.2) -> jax.Array:
  r"""PCL's per-cluster concentration φ, as the official code estimates it.

  For cluster j with Z_j members v and centroid c_j:

      φ_j = (Σ_v ||v − c_j||₂ / Z_j) / log(Z_j + α)        (Z_j >= 2)
      φ_j = max_{i : Z_i >= 2} φ_i                          (Z_j <= 1)
      φ ← clip(φ, 10th percentile of φ, 90th percentile of φ)
      φ ← τ · φ / mean(φ)

  i.e. the paper's Eq. (12), then the official `main_pcl.py` steps: small
  clusters take the largest estimate, extremes are clamped "for stability",
  and φ is rescaled so its mean is the temperature τ (PCL's 0.2). Percentiles
  interpolate linearly (numpy's default). The distances are to the k-means
  centroids as given (PCL measures them before normalising its prototypes).
  At least one cluster needs two members, otherwise the result is NaN. No
  gradient flows through φ.

  Args:
    features: [N, D] embeddings that were clustered.
    labels: [N] int cluster of each row, in [0, C).
    centroids: [C, D] cluster centroids.
    alpha: smoothing α that keeps small clusters from getting large φ.
    temperature: mean τ of the returned concentrations.

  Returns:
    [C] concentrations φ (float32 for bf16/f16 inputs).

  References:
    Li, Zhou, Xiong, Hoi, "Prototypical Contrastive Learning of Unsupervised
    Representations", ICLR 2021, Eq. (12), and salesforce/PCL `main_pcl.py`
    (`run_kmeans`).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.clustering import pcl_concentration
    >>> features = jnp.array([[0.0], [2.0], [10.0], [14.0], [30.0]])
    >>> centroids = jnp.array([[1.0], [12.0], [30.0]])
    >>> phi = pcl_concentration(features, jnp.array([0, 0, 1, 1, 2]), centroids)
    >>> print([round(float(p), 4) for p in phi])  # the singleton gets the max
    [0.1385, 0.2308, 0.2308]
  """
  fn = "pcl_concentration"
  _common.check_rank(features, 2, "features", fn)
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_rank(centroids, 2, "centroids", fn)
  _common.check_dim(fn, 0, features=features, labels=labels)
  _common.check_dim(fn, 1, features=features, centroids=centroids)
  num_clusters = centroids.shape[0]
  _common.check_labels(labels, num_clusters, "labels", fn)
  _common.check_non_negative(alpha, "alpha", fn)
  _common.check_positive(temperature, "temperature", fn)

  features, centroids = _common.to_compute(
      jax.lax.stop_gradient(features), jax.lax.stop_gradient(centroids))
  dist = jnp.linalg.norm(features - centroids[labels], axis=-1)
  total = jax.ops.segment_sum(dist, labels, num_segments=num_clusters)
  size = jax.ops.segment_sum(jnp.ones_like(dist), labels,
                             num_segments=num_clusters)
  enough = size > 1
  # Singletons and empty clusters are replaced below; the maximum keeps their
  # placeholder division finite.
  phi = jnp.where(enough, total / jnp.maximum(size, 1.0)
                  / jnp.log(jnp.maximum(size, 2.0) + alpha), 0.0)
  phi = jnp.where(enough, phi, jnp.max(phi))
  phi = jnp.clip(phi, jnp.percentile(phi, 10), jnp.percentile(phi, 90))
  return temperature * phi / jnp.mean(phi)
