"""Supervised metric-learning losses on embeddings and their labels.

Pair and triplet losses (contrastive pair, FaceNet triplet, in-batch triplet
mining), N-pair, lifted structure and the soft nearest-neighbour loss live
here; the class-weight margin losses (center loss, SphereFace, CosFace,
ArcFace) live in `_margin` and are re-exported.

Batch losses build the [B, B] pairwise distance matrix from one Gram matmul,
so under `jax.jit` with a batch sharded over a mesh they see the global batch
with no hand-written collectives. Rows (anchors, pairs) that have no valid
positive or negative in the batch are left out of the mean, and a batch with
none at all gives 0 rather than NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ssljax import _common
from ssljax.losses._margin import (arcface, center_loss, center_loss_update,
                                   cosface, sphereface)

__all__ = [
    "contrastive_pair", "triplet", "batch_triplet", "n_pair",
    "lifted_structured", "soft_nearest_neighbour", "center_loss",
    "center_loss_update", "sphereface", "cosface", "arcface",
]


# ---------------------------------------------------------------- helpers ---


def _pairwise_sq_distances(x: jax.Array) -> jax.Array:
  """[B, B] squared Euclidean distances, exactly 0 on the diagonal.

  ||x_i||² + ||x_j||² − 2 x_i·x_j is one matmul (B·B·D work and B·B memory,
  not the B·B·D of explicit differences). HIGHEST precision because TPUs
  otherwise multiply f32 in bfloat16, and the cancellation in this form
  would then swamp the distances of nearby points; the clamp removes the
  small negative values that cancellation can still leave.
  """
  sq = jnp.sum(jnp.square(x), axis=-1)
  gram = jnp.matmul(x, x.T, precision=jax.lax.Precision.HIGHEST)
  d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
  return jnp.where(jnp.eye(x.shape[0], dtype=bool), 0.0, d2)


def _pairwise_distances(x: jax.Array, squared: bool) -> jax.Array:
  """Squared or Euclidean distances; the square root has a finite gradient
  at 0 (same eps as `_common.safe_norm`)."""
  d2 = _pairwise_sq_distances(x)
  return d2 if squared else jnp.sqrt(jnp.maximum(d2, _common.EPS))


def _label_masks(labels: jax.Array):
  """(positive, negative) [B, B] masks: same label but not self; other label."""
  same = labels[:, None] == labels[None, :]
  return same & ~jnp.eye(labels.shape[0], dtype=bool), ~same


def _masked_max(x, mask):
  """Last-axis max over `mask`; -inf where it is empty (callers exclude
  those rows)."""
  return jnp.max(jnp.where(mask, x, -jnp.inf), axis=-1)


def _masked_min(x, mask):
  """Last-axis min over `mask`; +inf where it is empty (callers exclude
  those rows)."""
  return jnp.min(jnp.where(mask, x, jnp.inf), axis=-1)


def _masked_mean(x, mask):
  """Mean of x over `mask`; 0, not NaN, when the mask is empty."""
  total = jnp.sum(jnp.where(mask, x, 0.0))
  return total / jnp.maximum(jnp.sum(mask), 1).astype(total.dtype)


def _masked_logsumexp(x, mask):
  """Row-wise log Σ_{mask} exp(x), 0 for empty rows (callers exclude them).

  An empty row would be log 0 = −inf whose gradient is NaN even after a
  later `where`, so such rows take the logsumexp of the whole (finite) row
  instead and are then replaced.
  """
  nonempty = jnp.any(mask, axis=-1, keepdims=True)
  lse = jax.nn.logsumexp(x, axis=-1, where=mask | ~nonempty)
  return jnp.where(nonempty[:, 0], lse, 0.0)


def _check_embeddings_labels(fn: str, embeddings, labels) -> None:
  """embeddings [B, D] and integer labels [B] (any values: only equality
  between labels matters)."""
  _common.check_rank(embeddings, 2, "embeddings", fn)
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_dim(fn, 0, embeddings=embeddings, labels=labels)
  _common.check_integer(labels, "labels", fn)


def _check_binary(same, fn: str) -> None:
  if _common.is_concrete(same) and np.size(same):
    values = np.asarray(same)
    if not np.all((values == 0) | (values == 1)):
      raise ValueError(
          f"{fn}: `same` must hold 0/1 or bool values, got values in "
          f"[{values.min()}, {values.max()}].")


# ------------------------------------------------------------ pair losses ---


def contrastive_pair(x1: jax.Array, x2: jax.Array, same: jax.Array, *,
                     margin=1.0) -> jax.Array:
  """Contrastive loss on pairs (Hadsell, Chopra and LeCun).

  With d_i = ||x1_i − x2_i||₂:

      loss = mean_i [ same_i · d_i² + (1 − same_i) · max(0, margin − d_i)² ].

  The paper's ½ factors are dropped (a constant scale). d is computed with
  an eps under the square root, so identical dissimilar pairs (d = 0) still
  have a finite gradient.

  Reference: Hadsell, Chopra and LeCun, "Dimensionality Reduction by
  Learning an Invariant Mapping", CVPR 2006.

  Args:
    x1: [B, D] first embeddings.
    x2: [B, D] second embeddings.
    same: [B] 1 (or True) for similar pairs, 0 (or False) for dissimilar.
    margin: radius m >= 0 beyond which dissimilar pairs cost nothing.

  Returns:
    Scalar mean loss in the compute dtype (f32 for bf16/f16 inputs).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import contrastive_pair
    >>> x1 = jnp.array([[0., 0.], [0., 0.]])
    >>> x2 = jnp.array([[3., 4.], [0.6, 0.]])
    >>> same = jnp.array([True, False])
    >>> print(round(float(contrastive_pair(x1, x2, same)), 4))  # (25+.16)/2
    12.58
  """
  fn = "contrastive_pair"
  _common.check_rank(x1, 2, "x1", fn)
  _common.check_same_shape(fn, x1=x1, x2=x2)
  _common.check_rank(same, 1, "same", fn)
  _common.check_dim(fn, 0, x1=x1, same=same)
  _common.check_non_negative(margin, "margin", fn)
  _check_binary(same, fn)
  x1, x2 = _common.to_compute(x1, x2)
  same = jnp.asarray(same).astype(x1.dtype)
  # The similar term uses the exact squared distance (smooth everywhere);
  # only the hinge needs d itself.
  sq = jnp.sum(jnp.square(x1 - x2), axis=-1)
  d = _common.safe_norm(x1 - x2)
  losses = same * sq + (1.0 - same) * jnp.square(jax.nn.relu(margin - d))
  return jnp.mean(losses)


def triplet(anchor: jax.Array, positive: jax.Array, negative: jax.Array, *,
            margin=0.2) -> jax.Array:
  """FaceNet triplet loss on squared Euclidean distances.

      loss = mean_i max(0, ||a_i − p_i||² − ||a_i − n_i||² + margin).

  Reference: Schroff, Kalenichenko and Philbin, "FaceNet: A Unified Embedding
  for Face Recognition and Clustering", CVPR 2015.

  Args:
    anchor: [B, D] anchors.
    positive: [B, D] same-identity embeddings.
    negative: [B, D] other-identity embeddings.
    margin: alpha >= 0 enforced between the two distances.

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import triplet
    >>> a = jnp.array([[0., 0.]])
    >>> p = jnp.array([[0.5, 0.]])
    >>> n = jnp.array([[0., 0.6]])
    >>> print(round(float(triplet(a, p, n)), 4))  # 0.25 - 0.36 + 0.2
    0.09
  """
  fn = "triplet"
  _common.check_rank(anchor, 2, "anchor", fn)
  _common.check_same_shape(fn, anchor=anchor, positive=positive,
                           negative=negative)
  _common.check_non_negative(margin, "margin", fn)
  anchor, positive, negative = _common.to_compute(anchor, positive, negative)
  d_ap = jnp.sum(jnp.square(anchor - positive), axis=-1)
  d_an = jnp.sum(jnp.square(anchor - negative), axis=-1)
  return jnp.mean(jax.nn.relu(d_ap - d_an + margin))


# ---------------------------------------------------- in-batch triplets ---


def _batch_hard(dist, pos, neg, margin):
  """Per anchor: its farthest positive against its closest negative."""
  hinge = jax.nn.relu(margin + _masked_max(dist, pos) - _masked_min(dist, neg))
  return _masked_mean(hinge, jnp.any(pos, -1) & jnp.any(neg, -1))


def _batch_all(dist, pos, neg, margin):
  """Every valid (a, p, n), averaged over the triplets with a loss > 0."""
  hinge = jax.nn.relu(margin + dist[:, :, None] - dist[:, None, :])
  valid = pos[:, :, None] & neg[:, None, :]
  return _masked_mean(hinge, valid & (hinge > 0))


def _semi_hard(dist, pos, neg, margin):
  """Per (a, p): the closest negative farther than p, else the farthest."""
  d_an = jnp.broadcast_to(dist[:, None, :], (dist.shape[0],) * 3)
  farther = neg[:, None, :] & (d_an > dist[:, :, None])     # [a, p, n]
  d_neg = jnp.where(jnp.any(farther, -1), _masked_min(d_an, farther),
                    _masked_max(dist, neg)[:, None])
  valid = pos & jnp.any(neg, -1, keepdims=True)
  return _masked_mean(jax.nn.relu(margin + dist - d_neg), valid)


_MINERS = {"batch_hard": _batch_hard, "batch_all": _batch_all,
           "semi_hard": _semi_hard}
MINING = tuple(_MINERS)


def batch_triplet(embeddings: jax.Array, labels: jax.Array, *, margin=0.2,
                  mining: str = "batch_hard", squared: bool = True
                  ) -> jax.Array:
  """Triplet loss with triplets mined inside the batch.

  With D the pairwise distance matrix (squared Euclidean by default),
  P(a) = {p ≠ a : y_p = y_a} and N(a) = {n : y_n ≠ y_a}:

  * "batch_hard" (Hermans et al.): per anchor,
        l_a = max(0, margin + max_{p∈P(a)} D_ap − min_{n∈N(a)} D_an),
    averaged over anchors with a non-empty P(a) and N(a).
  * "batch_all" (Hermans et al.): l_apn = max(0, margin + D_ap − D_an) over
    every p ∈ P(a), n ∈ N(a), averaged over the triplets with l_apn > 0 (the
    paper's "BA≠0" variant: the plain mean is diluted by the many easy
    triplets as training progresses).
  * "semi_hard" (FaceNet): per positive pair (a, p), the negative is the
    closest one still farther than p, n* = argmin {D_an : n ∈ N(a),
    D_an > D_ap}, or, when every negative is closer than p, the farthest
    negative, argmax_{n∈N(a)} D_an (the easiest of the hard ones: FaceNet
    avoids the hardest negatives, which collapse training early).
    l_ap = max(0, margin + D_ap − D_an*), averaged over all positive pairs
    whose anchor has a negative, zero-loss pairs included. The paper's
    semi-hard negatives satisfy D_ap < D_an < D_ap + margin: n* is one
    whenever one exists, and otherwise its loss is 0 or it is the fallback.
    These are TensorFlow Addons' `triplet_semihard_loss` semantics (which
    also counts pairs whose anchor has no negative at all).

  A batch without any valid anchor, pair or triplet gives 0.

  References:
    Hermans, Beyer and Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017 (batch_hard, batch_all).
    Schroff, Kalenichenko and Philbin, "FaceNet", CVPR 2015, sec. 3.2
    (semi_hard).

  Args:
    embeddings: [B, D] embeddings (FaceNet l2-normalises them first).
    labels: [B] integer class ids; only equality between them matters.
    margin: margin >= 0.
    mining: "batch_hard", "batch_all" or "semi_hard".
    squared: squared Euclidean distances (FaceNet) if True, Euclidean
      (Hermans et al.) if False.

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import batch_triplet
    >>> x = jnp.array([[0.], [1.], [3.], [3.5]])
    >>> labels = jnp.array([0, 0, 1, 1])
    >>> # per anchor: max(0, 5 + D_ap − D_an) = 0, 5+1−4, 5+0.25−4, 0
    >>> print(round(float(batch_triplet(x, labels, margin=5.)), 4))
    0.8125
  """
  fn = "batch_triplet"
  _check_embeddings_labels(fn, embeddings, labels)
  _common.check_non_negative(margin, "margin", fn)
  if mining not in _MINERS:
    raise ValueError(
        f"{fn}: `mining` must be one of {MINING}, got {mining!r}.")
  x = _common.to_compute(embeddings)
  pos, neg = _label_masks(jnp.asarray(labels))
  return _MINERS[mining](_pairwise_distances(x, squared), pos, neg, margin)


# --------------------------------------------------- other batch losses ---


def n_pair(anchors: jax.Array, positives: jax.Array, *,
           l2_reg=0.0) -> jax.Array:
  """Multi-class N-pair loss with in-batch negatives.

  Row i of `anchors` and of `positives` come from class i; the positives of
  the other rows are its negatives:

      loss = mean_i log(1 + Σ_{j≠i} exp(a_i·p_j − a_i·p_i))
             + l2_reg/4 · (mean_i ||a_i||² + mean_i ||p_i||²),

  i.e. cross-entropy over the logits a @ pᵀ with the diagonal as target.
  The embeddings are not normalised (the paper regularises their norm
  instead); the ¼ matches TensorFlow's `npairs_loss(reg_lambda=...)`, so the
  paper's λ = 0.002 carries over.

  Reference: Sohn, "Improved Deep Metric Learning with Multi-class N-pair
  Loss Objective", NeurIPS 2016.

  Args:
    anchors: [N, D] one anchor per class.
    positives: [N, D] positive of each anchor.
    l2_reg: weight >= 0 of the embedding-norm regulariser.

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import n_pair
    >>> a = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(n_pair(a, a)), 4))  # log(1 + e^-1)
    0.3133
  """
  fn = "n_pair"
  _common.check_rank(anchors, 2, "anchors", fn)
  _common.check_same_shape(fn, anchors=anchors, positives=positives)
  _common.check_non_negative(l2_reg, "l2_reg", fn)
  anchors, positives = _common.to_compute(anchors, positives)
  logits = anchors @ positives.T
  xent = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(anchors * positives, -1)
  norms = (jnp.mean(jnp.sum(jnp.square(anchors), -1))
           + jnp.mean(jnp.sum(jnp.square(positives), -1)))
  return jnp.mean(xent) + 0.25 * l2_reg * norms


def lifted_structured(embeddings: jax.Array, labels: jax.Array, *,
                      margin=1.0) -> jax.Array:
  """Lifted structured embedding loss.

  With Euclidean distances D, positive pairs P = {(i, j) : i ≠ j, y_i = y_j}
  and negative pairs N = {(i, k) : y_i ≠ y_k}:

      J_ij = log(Σ_{(i,k)∈N} exp(m − D_ik) + Σ_{(j,l)∈N} exp(m − D_jl)) + D_ij,
      loss = 1/(2|P|) Σ_{(i,j)∈P} max(0, J_ij)².

  The log-sum is computed as logaddexp of per-row logsumexps, so it is
  stable for any distances. J is symmetric, so the mean over ordered pairs
  equals the paper's mean over unordered ones. Pairs without any negative
  (a batch of one class) are left out; with none left the loss is 0.

  Reference: Song, Xiang, Jegelka and Savarese, "Deep Metric Learning via
  Lifted Structured Feature Embedding", CVPR 2016.

  Args:
    embeddings: [B, D] embeddings.
    labels: [B] integer class ids; only equality between them matters.
    margin: m >= 0.

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import lifted_structured
    >>> x = jnp.array([[0.], [1.], [3.]])
    >>> labels = jnp.array([0, 0, 1])
    >>> # one positive pair: ½ (log(e^-2 + e^-1) + 1)²
    >>> print(round(float(lifted_structured(x, labels)), 4))
    0.0491
  """
  fn = "lifted_structured"
  _check_embeddings_labels(fn, embeddings, labels)
  _common.check_non_negative(margin, "margin", fn)
  dist = _pairwise_distances(_common.to_compute(embeddings), squared=False)
  pos, neg = _label_masks(jnp.asarray(labels))
  lse = _masked_logsumexp(margin - dist, neg)
  j = jnp.logaddexp(lse[:, None], lse[None, :]) + dist
  valid = pos & jnp.any(neg, -1, keepdims=True)
  return 0.5 * _masked_mean(jnp.square(jax.nn.relu(j)), valid)


def soft_nearest_neighbour(embeddings: jax.Array, labels: jax.Array, *,
                           temperature=1.0) -> jax.Array:
  """Soft nearest-neighbour loss: how entangled the classes are.

      loss = −1/b Σ_i log( Σ_{j≠i, y_j=y_i} exp(−||x_i − x_j||²/T)
                           / Σ_{k≠i} exp(−||x_i − x_k||²/T) ),

  computed as a difference of logsumexps, so any temperature is finite. An
  anchor whose class has no other member in the batch has an empty
  numerator (log 0); such anchors are left out and b counts the others (a
  batch without any gives 0).

  Reference: Frosst, Papernot and Hinton, "Analyzing and Improving
  Representations with the Soft Nearest Neighbor Loss", ICML 2019.

  Args:
    embeddings: [B, D] embeddings.
    labels: [B] integer class ids; only equality between them matters.
    temperature: T > 0 (a Python number or a traced scalar, e.g. learned).

  Returns:
    Scalar mean loss in the compute dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import soft_nearest_neighbour
    >>> x = jnp.array([[0.], [1.], [2.]])
    >>> labels = jnp.array([0, 0, 1])
    >>> # anchors 0 and 1: log(1 + e^-3) and log 2; anchor 2 has no partner
    >>> print(round(float(soft_nearest_neighbour(x, labels)), 4))
    0.3709
  """
  fn = "soft_nearest_neighbour"
  _check_embeddings_labels(fn, embeddings, labels)
  _common.check_positive(temperature, "temperature", fn)
  x = _common.to_compute(embeddings)
  logits = -_pairwise_sq_distances(x) / temperature
  pos, _ = _label_masks(jnp.asarray(labels))
  others = ~jnp.eye(x.shape[0], dtype=bool)
  losses = _masked_logsumexp(logits, others) - _masked_logsumexp(logits, pos)
  return _masked_mean(losses, jnp.any(pos, -1))
