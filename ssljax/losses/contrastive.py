"""Softmax-contrastive losses: SimCLR, CPC, MoCo, NNCLR, SupCon, CLIP, CURL.

Each loss is a cross-entropy whose logits are similarities between an anchor
and a set of keys, with the positive among them. Every one is computed as

    loss_i = logsumexp_j(logit_ij) - logit_i,positive,

the logsumexp over keys by `_blockwise.row_logsumexp` (dense or blockwise,
never an exp-sum, so temperatures of 1e-4 and 1e4 stay finite) and the
positive logit as a row-wise dot product. Nothing builds an [N, N] one-hot
target.

Losses whose negatives are the other examples of the batch take
`axis_name`: inside `jax.shard_map` (or pmap-style code) each device passes
its local rows; the keys are all-gathered, the local rows stay anchors with
their positives and self-exclusions placed at their global index, and the
result is the mean over local anchors, so the mean over devices of the value
and of the gradient equals the single-device loss on the global batch. Under
plain `jax.jit` with sharded arrays leave `axis_name=None`: the code already
sees the global batch.

`nt_xent`, `clip`, `supcon` and `info_nce` (shared negatives) take
`implementation="auto" | "dense" | "blockwise"` and `block_size`; see
`_blockwise` for the memory-bounded path that batch sizes in the tens of
thousands need.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ssljax import _common
from ssljax.losses import _blockwise

DEFAULT_BLOCK_SIZE = _blockwise.DEFAULT_BLOCK_SIZE


def _row_dot(a: jax.Array, b: jax.Array) -> jax.Array:
  """[N] dot products of matching rows."""
  return jnp.sum(a * b, axis=-1)


def _check_pair(fn: str, a_name: str, a, b_name: str, b) -> None:
  """Both [N, D] with the same shape."""
  _common.check_rank(a, 2, a_name, fn)
  _common.check_rank(b, 2, b_name, fn)
  _common.check_same_shape(fn, **{a_name: a, b_name: b})


def _check_hyper(fn: str, temperature, implementation, block_size) -> None:
  _common.check_positive(temperature, "temperature", fn)
  _blockwise.check_implementation(implementation, block_size, fn)


def _global_rows(n_local: int, axis_name: Optional[str]) -> jax.Array:
  """Indices in the all-gathered batch of this device's n_local rows."""
  return _common.global_row_offset(n_local, axis_name) + jnp.arange(n_local)


def _batch_softmax_xent(anchors, keys, positive_logits, exclude=None, *,
                        scale, implementation="auto",
                        block_size=DEFAULT_BLOCK_SIZE) -> jax.Array:
  """[N] cross-entropies: logsumexp_{j != exclude_i}(scale a_i.k_j) - pos_i."""
  lse = _blockwise.row_logsumexp(anchors, keys, exclude, scale=scale,
                                 implementation=implementation,
                                 block_size=block_size)
  return lse - positive_logits


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature=0.5,
            axis_name: Optional[str] = None, implementation: str = "auto",
            block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """SimCLR's normalised-temperature cross-entropy (NT-Xent).

  With z = l2_normalize(concat(z1, z2)) of 2N rows and s_ij = z_i . z_j,
  each of the 2N rows is an anchor whose positive is its other view, p(i) =
  (i + N) mod 2N, against the other 2N - 1 rows (itself excluded):

      l_i = -log exp(s_ip(i) / T) / sum_{j != i} exp(s_ij / T),
      loss = mean_i l_i.

  Reference: Chen et al., "A Simple Framework for Contrastive Learning of
  Visual Representations" (SimCLR), ICML 2020, eq. 1.

  Args:
    z1: [N, D] projections of the first views.
    z2: [N, D] projections of the second views, row i paired with z1's row i.
    temperature: T > 0.
    axis_name: mapped axis to gather negatives over inside shard_map; the
      result is then the mean over this device's 2N anchors.
    implementation: "dense" builds the [2N, 2N] logits, "blockwise" scans
      key blocks in O(N * (D + block_size)) memory, "auto" picks blockwise
      above `_blockwise.AUTO_DENSE_MAX_ELEMENTS` logits.
    block_size: keys per block of the blockwise path.

  Returns:
    Scalar mean loss in the compute dtype (f32 for bf16/f16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import nt_xent
    >>> z = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(nt_xent(z, z, temperature=0.5)), 4))  # log(2+e^2)-2
    0.2395
  """
  fn = "nt_xent"
  _check_pair(fn, "z1", z1, "z2", z2)
  _check_hyper(fn, temperature, implementation, block_size)
  z1, z2 = _common.to_compute(z1, z2)
  z1, z2 = _common.l2_normalize(z1), _common.l2_normalize(z2)
  keys1 = _common.all_gather(z1, axis_name)
  keys2 = _common.all_gather(z2, axis_name)
  # Global key order [all z1 views; all z2 views], as on one device.
  rows = _global_rows(z1.shape[0], axis_name)
  anchors = jnp.concatenate([z1, z2])
  positives = jnp.concatenate([z2, z1])
  losses = _batch_softmax_xent(
      anchors, jnp.concatenate([keys1, keys2]),
      _row_dot(anchors, positives) / temperature,
      jnp.concatenate([rows, rows + keys1.shape[0]]),
      scale=1.0 / temperature, implementation=implementation,
      block_size=block_size)
  return jnp.mean(losses)


def dcl(z1: jax.Array, z2: jax.Array, *, temperature=0.1,
        weighted: bool = False, sigma=0.5, axis_name: Optional[str] = None,
        implementation: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """Decoupled contrastive loss (DCL), and its weighted form (DCLW).

  NT-Xent with the positive removed from the denominator. With z =
  l2_normalize(concat(z1, z2)) of 2N rows, s_ij = z_i . z_j and p(i) =
  (i + N) mod 2N the other view of row i,

      l_i = -w_i s_ip(i) / T + log sum_{j not in {i, p(i)}} exp(s_ij / T),
      loss = mean_i l_i,

  with w_i = 1 (DCL), or with `weighted` the negative von Mises-Fisher
  weight of DCLW, w = 2 - N softmax_n(z1_n . z2_n / sigma), the same for
  both views of an image and without gradient. Under `axis_name` the
  softmax runs over the global batch.

  Reference: Yeh et al., "Decoupled Contrastive Learning", ECCV 2022, eq. 6
  (one logsumexp over the 2N - 2 negatives of both views, as the paper
  writes it).

  Args:
    z1, z2: [N, D] projections of the two views, rows paired.
    temperature: T > 0.
    weighted: DCLW's weighting of the positive term.
    sigma: sigma > 0 of the weighting.
    axis_name, implementation, block_size: as `nt_xent`.

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(dcl(z, z, temperature=0.5)), 4))  # log(2) - 2
    -1.3069
  """
  fn = "dcl"
  _check_pair(fn, "z1", z1, "z2", z2)
  _check_hyper(fn, temperature, implementation, block_size)
  _common.check_positive(sigma, "sigma", fn)
  z1, z2 = _common.to_compute(z1, z2)
  z1, z2 = _common.l2_normalize(z1), _common.l2_normalize(z2)
  keys1 = _common.all_gather(z1, axis_name)
  keys2 = _common.all_gather(z2, axis_name)
  n = keys1.shape[0]
  rows = _global_rows(z1.shape[0], axis_name)
  anchors = jnp.concatenate([z1, z2])
  positive = _row_dot(anchors, jnp.concatenate([z2, z1]))
  if weighted:
    similarity = jax.lax.stop_gradient(_row_dot(keys1, keys2)) / sigma
    weights = 2.0 - n * jax.nn.softmax(similarity)[rows]
    positive = positive * jnp.concatenate([weights, weights])
  exclude = jnp.stack([jnp.concatenate([rows, rows + n]),
                       jnp.concatenate([rows + n, rows])], axis=1)
  losses = _batch_softmax_xent(
      anchors, jnp.concatenate([keys1, keys2]), positive / temperature,
      exclude, scale=1.0 / temperature, implementation=implementation,
      block_size=block_size)
  return jnp.mean(losses)


def _info_nce_losses(query, positive, negatives, *, temperature,
                     implementation, block_size) -> jax.Array:
  """[B] InfoNCE terms; inputs already checked and in the compute dtype."""
  positive_logits = _row_dot(query, positive) / temperature
  if negatives.ndim == 2:
    negative_lse = _blockwise.row_logsumexp(
        query, negatives, scale=1.0 / temperature,
        implementation=implementation, block_size=block_size)
  else:
    negative_lse = jax.nn.logsumexp(
        jnp.einsum("bd,bkd->bk", query, negatives) / temperature, axis=1)
  # logsumexp over [positive, negatives] without concatenating them.
  return jnp.logaddexp(positive_logits, negative_lse) - positive_logits


def _check_info_nce(fn, names, query, positive, negatives, negative_ranks):
  q_name, p_name, n_name = names
  _check_pair(fn, q_name, query, p_name, positive)
  _common.check_rank(negatives, negative_ranks, n_name, fn)
  _common.check_dim(fn, -1, **{q_name: query, n_name: negatives})
  if negatives.ndim == 3:
    _common.check_dim(fn, 0, **{q_name: query, n_name: negatives})


def info_nce(query: jax.Array, positive: jax.Array, negatives: jax.Array, *,
             temperature=1.0, implementation: str = "auto",
             block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """InfoNCE / CPC loss on raw dot products, positive at index 0.

      logits_b = [q_b . p_b, q_b . n_1, ..., q_b . n_K] / T,
      loss = mean_b (logsumexp(logits_b) - logits_b[0]).

  No normalisation: CPC scores are bilinear/dot products of unnormalised
  context and latent vectors (fold a W_k into `query` for CPC's f_k).

  Reference: van den Oord et al., "Representation Learning with Contrastive
  Predictive Coding", 2018, eq. 4.

  Args:
    query: [B, D] queries (CPC: predictions from the context).
    positive: [B, D] positive key of each query.
    negatives: [K, D] negatives shared by all queries, or [B, K, D] negatives
      per query.
    temperature: T > 0.
    implementation: "auto" | "dense" | "blockwise" for the [B, K] logits of
      shared negatives; per-query negatives are always dense.
    block_size: negatives per block of the blockwise path.

  Returns:
    Scalar mean loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import info_nce
    >>> q = jnp.array([[1., 0.]])
    >>> negatives = jnp.array([[0., 1.], [-1., 0.]])
    >>> print(round(float(info_nce(q, q, negatives)), 4))  # log(e+1+1/e)-1
    0.4076
  """
  fn = "info_nce"
  _check_info_nce(fn, ("query", "positive", "negatives"), query, positive,
                  negatives, (2, 3))
  _check_hyper(fn, temperature, implementation, block_size)
  if negatives.ndim == 3 and implementation == "blockwise":
    # [B, K] logits are smaller than the [B, K, D] input: nothing to save.
    raise ValueError(
        f"{fn}: `implementation`='blockwise' needs shared [K, D] `negatives`, "
        f"got per-query shape {negatives.shape}.")
  query, positive, negatives = _common.to_compute(query, positive, negatives)
  return jnp.mean(_info_nce_losses(
      query, positive, negatives, temperature=temperature,
      implementation=implementation, block_size=block_size))


def moco(query: jax.Array, key: jax.Array, queue: jax.Array, *,
         temperature=0.2) -> jax.Array:
  """MoCo's InfoNCE against a queue of past keys.

  With q, k and the queue rows l2-normalised,

      l_b = -log exp(q_b . k_b / T) / (exp(q_b . k_b / T)
                                       + sum_j exp(q_b . queue_j / T)).

  `key` and `queue` come from the momentum encoder, so no gradient flows into
  either (stop_gradient inside). Re-normalising the queue is a no-op on the
  normalised keys `ssljax.state.queue` stores, and makes a raw queue safe.
  "auto" blockwise evaluation applies when B x K exceeds
  `_blockwise.AUTO_DENSE_MAX_ELEMENTS`.

  Reference: He et al., "Momentum Contrast for Unsupervised Visual
  Representation Learning", CVPR 2020, eq. 1 (v2: Chen et al. 2020).

  Args:
    query: [B, D] online-encoder projections.
    key: [B, D] momentum-encoder projections of the other views.
    queue: [K, D] negatives.
    temperature: T > 0.

  Returns:
    Scalar mean loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import moco
    >>> q = jnp.array([[2., 0.]])
    >>> queue = jnp.array([[0., 3.]])
    >>> print(round(float(moco(q, q, queue, temperature=1.0)), 4))  # log(1+1/e)
    0.3133
  """
  fn = "moco"
  _check_info_nce(fn, ("query", "key", "queue"), query, key, queue, 2)
  _common.check_positive(temperature, "temperature", fn)
  query, key, queue = _common.to_compute(query, key, queue)
  key = jax.lax.stop_gradient(_common.l2_normalize(key))
  queue = jax.lax.stop_gradient(_common.l2_normalize(queue))
  return jnp.mean(_info_nce_losses(
      _common.l2_normalize(query), key, queue, temperature=temperature,
      implementation="auto", block_size=DEFAULT_BLOCK_SIZE))


def nnclr(z1: jax.Array, z2: jax.Array, support: jax.Array, *,
          temperature=0.1, axis_name: Optional[str] = None) -> jax.Array:
  """NNCLR: the nearest support-set neighbour of z1 as the anchor for z2.

  With all rows l2-normalised and NN(z) = argmax_{s in support} z . s (no
  gradient through the lookup or the support set),

      l_i = -log exp(NN(z1_i) . z2_i / T) / sum_k exp(NN(z1_i) . z2_k / T),

  k over the (global) batch. NNCLR symmetrises by also calling it with the
  views swapped; z1 itself gets no gradient from this term, as in the paper.
  The lookup builds the [N, M] similarities to the support set (M is a queue
  of ~100k rows at most); the batch softmax is blockwise above
  `_blockwise.AUTO_DENSE_MAX_ELEMENTS` logits.

  Reference: Dwibedi et al., "With a Little Help from My Friends: Nearest-
  Neighbor Contrastive Learning of Visual Representations", ICCV 2021, eq. 2.

  Args:
    z1: [N, D] projections whose neighbours are looked up.
    z2: [N, D] projections of the other views.
    support: [M, D] support set (queue of past projections).
    temperature: T > 0.
    axis_name: mapped axis to gather z2 over inside shard_map.

  Returns:
    Scalar mean loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import nnclr
    >>> z1 = jnp.array([[1., 0.1], [0.1, 1.]])
    >>> z2 = jnp.array([[1., 0.], [0., 1.]])
    >>> support = jnp.array([[0., 1.], [1., 0.]])
    >>> print(round(float(nnclr(z1, z2, support, temperature=1.0)), 4))
    0.3133
  """
  fn = "nnclr"
  _check_pair(fn, "z1", z1, "z2", z2)
  _common.check_rank(support, 2, "support", fn)
  _common.check_dim(fn, 1, z1=z1, support=support)
  _common.check_positive(temperature, "temperature", fn)
  z1, z2, support = _common.to_compute(z1, z2, support)
  z1, z2, support = (_common.l2_normalize(x) for x in (z1, z2, support))
  nearest = support[jnp.argmax(z1 @ support.T, axis=1)]
  nearest = jax.lax.stop_gradient(nearest)
  keys = _common.all_gather(z2, axis_name)
  losses = _batch_softmax_xent(nearest, keys,
                               _row_dot(nearest, z2) / temperature,
                               scale=1.0 / temperature)
  return jnp.mean(losses)


def _check_supcon(fn, features, labels):
  _common.check_rank(features, 3, "features", fn)
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_integer(labels, "labels", fn)
  if labels.shape[0] != features.shape[0]:
    raise ValueError(
        f"{fn}: `labels` must have shape [B] = ({features.shape[0]},) to match "
        f"`features` {features.shape}, got {labels.shape}.")


def supcon(features: jax.Array, labels: jax.Array, *, temperature=0.1,
           axis_name: Optional[str] = None, implementation: str = "auto",
           block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """Supervised contrastive loss, L^sup_out.

  Every one of the B*V l2-normalised views z_i is an anchor; A(i) is all
  other views, P(i) those with the same label:

      l_i = -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/T) / sum_{a in A(i)}
            exp(z_i.z_a/T)
          = logsumexp_{a in A(i)}(z_i.z_a/T)
            - z_i.(sum_{p in P(i)} z_p) / (T |P(i)|),

  and the loss is the mean over anchors with |P(i)| > 0 (every anchor when
  V >= 2). The positive sum is S[label_i] - z_i with S a per-label sum of
  views, so no [BV, BV] mask is built. With labels = arange(B) and V = 2 this
  is `nt_xent`.

  Reference: Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020,
  eq. 2 (L^sup_out).

  Args:
    features: [B, V, D] projections of V views of B examples.
    labels: [B] integer class labels (any integer values).
    temperature: T > 0.
    axis_name: mapped axis to gather views and labels over inside shard_map;
      each device's value is normalised by the global anchor count so that
      the mean over devices is the global loss.
    implementation: "auto" | "dense" | "blockwise" for the [BV, BV] logits.
    block_size: keys per block of the blockwise path.

  Returns:
    Scalar mean loss (0 if no anchor has a positive).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import supcon
    >>> features = jnp.array([[[1., 0.]], [[1., 0.]], [[0., 1.]]])  # V = 1
    >>> labels = jnp.array([0, 0, 1])  # the third view has no positive
    >>> print(round(float(supcon(features, labels, temperature=1.0)), 4))
    0.3133
  """
  fn = "supcon"
  _check_supcon(fn, features, labels)
  _check_hyper(fn, temperature, implementation, block_size)
  z = _common.l2_normalize(_common.to_compute(features))
  n_local, n_views, dim = z.shape
  keys = _common.all_gather(z, axis_name)
  all_labels = _common.all_gather(labels, axis_name)
  n_global = keys.shape[0]
  # Dense ids in [0, n_global) so the per-label sums fit a static size.
  _, label_ids = jnp.unique(all_labels, size=n_global, return_inverse=True)
  label_ids = label_ids.reshape(n_global)
  label_sum = jax.ops.segment_sum(keys.sum(axis=1), label_ids, n_global)
  label_count = jax.ops.segment_sum(
      jnp.full((n_global,), n_views), label_ids, n_global)
  offset = _common.global_row_offset(n_local, axis_name)
  local_ids = jax.lax.dynamic_slice_in_dim(label_ids, offset, n_local)

  anchors = z.reshape(n_local * n_views, dim)
  positive_sum = (label_sum[local_ids][:, None, :] - z).reshape(anchors.shape)
  positive_count = jnp.repeat(label_count[local_ids] - 1, n_views)
  has_positive = positive_count > 0
  # Anchor (r, v) is row (offset + r) * V + v of the flattened global views.
  exclude = (_global_rows(n_local, axis_name)[:, None] * n_views
             + jnp.arange(n_views)).reshape(-1)
  positive_logits = (_row_dot(anchors, positive_sum)
                     / (temperature * jnp.maximum(positive_count, 1)))
  losses = _batch_softmax_xent(
      anchors, keys.reshape(-1, dim), positive_logits, exclude,
      scale=1.0 / temperature, implementation=implementation,
      block_size=block_size)
  # Normalise by the global count of anchors with positives, so the mean
  # over devices of these per-device values is the single-device loss.
  n_counted = _common.psum(jnp.sum(has_positive), axis_name)
  n_per_device = jnp.maximum(n_counted, 1).astype(losses.dtype) / (
      _common.axis_size(axis_name))
  return jnp.sum(jnp.where(has_positive, losses, 0.0)) / n_per_device


def clip(a: jax.Array, b: jax.Array, *, temperature=0.07,
         axis_name: Optional[str] = None, implementation: str = "auto",
         block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """CLIP's symmetric InfoNCE between paired embeddings.

  With a, b l2-normalised and logits_ij = a_i . b_j / T,

      loss = 0.5 * (mean_i CE(logits_i:, i) + mean_j CE(logits_:j, j)).

  `temperature` may be a traced array (CLIP learns log(1/T)); its gradient
  flows through both paths.

  Reference: Radford et al., "Learning Transferable Visual Models From
  Natural Language Supervision", ICML 2021, Figure 3.

  Args:
    a: [N, D] embeddings of one modality (images).
    b: [N, D] embeddings of the other (texts), row i paired with a's row i.
    temperature: T > 0.
    axis_name: mapped axis to gather both sides over inside shard_map.
    implementation: "auto" | "dense" | "blockwise" for the [N, N] logits.
    block_size: keys per block of the blockwise path.

  Returns:
    Scalar mean loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import clip
    >>> a = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(clip(a, a, temperature=1.0)), 4))  # log(1+1/e)
    0.3133
  """
  fn = "clip"
  _check_pair(fn, "a", a, "b", b)
  _check_hyper(fn, temperature, implementation, block_size)
  a, b = _common.to_compute(a, b)
  a, b = _common.l2_normalize(a), _common.l2_normalize(b)
  positive_logits = _row_dot(a, b) / temperature
  kwargs = dict(scale=1.0 / temperature, implementation=implementation,
                block_size=block_size)
  a_to_b = _batch_softmax_xent(a, _common.all_gather(b, axis_name),
                               positive_logits, **kwargs)
  b_to_a = _batch_softmax_xent(b, _common.all_gather(a, axis_name),
                               positive_logits, **kwargs)
  return 0.5 * (jnp.mean(a_to_b) + jnp.mean(b_to_a))


def bilinear_info_nce(query: jax.Array, key: jax.Array,
                      w: jax.Array) -> jax.Array:
  """CURL's bilinear InfoNCE over the batch, positives on the diagonal.

      logits_ij = q_i^T W k_j,  loss = mean_i CE(logits_i:, i).

  No stop-gradient inside: CURL's caller passes keys from the momentum
  encoder (already without gradient) and learns W through this loss.

  Reference: Laskin et al., "CURL: Contrastive Unsupervised Representations
  for Reinforcement Learning", ICML 2020, Section 4.

  Args:
    query: [B, Dq] anchors.
    key: [B, Dk] keys, row i the positive of query i.
    w: [Dq, Dk] bilinear weight.

  Returns:
    Scalar mean loss.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.contrastive import bilinear_info_nce
    >>> q = jnp.array([[1., 0.], [0., 1.]])
    >>> loss = bilinear_info_nce(q, q, jnp.eye(2))
    >>> print(round(float(loss), 4))  # log(1 + 1/e)
    0.3133
  """
  fn = "bilinear_info_nce"
  _common.check_rank(query, 2, "query", fn)
  _common.check_rank(key, 2, "key", fn)
  _common.check_rank(w, 2, "w", fn)
  _common.check_dim(fn, 0, query=query, key=key)
  if w.shape != (query.shape[1], key.shape[1]):
    raise ValueError(
        f"{fn}: `w` must have shape [Dq, Dk] = ({query.shape[1]}, "
        f"{key.shape[1]}), got {w.shape}.")
  query, key, w = _common.to_compute(query, key, w)
  projected = query @ w
  return jnp.mean(_batch_softmax_xent(projected, key,
                                      _row_dot(projected, key), scale=1.0))
