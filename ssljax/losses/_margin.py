"""Class-weight metric losses: center loss and the angular-margin softmaxes.

These compare each embedding with per-class parameters (centers, or the
columns of a classifier `weights` [dim, num_classes]) selected by its label,
so labels must lie in [0, num_classes). Concrete labels are checked at trace
time; under `jax.jit` they cannot be, and an out-of-range label makes the
loss NaN (never a silently clipped or wrapped gather), so a training loop's
non-finite check stops.

Public names are re-exported by `ssljax.losses.metric`.
"""

from __future__ import annotations

import math
import numbers

import jax
import jax.numpy as jnp

from ssljax import _common

# cos θ is clipped to [−1 + eps, 1 − eps] before arccos, whose derivative
# −1/sqrt(1 − c²) is infinite at ±1; at the clip it is about −2e3, and
# beyond it zero. 1e-7 is still representable below 1 in float32.
ARCCOS_EPS = 1e-7


def _valid_labels(labels: jax.Array, num_classes: int) -> jax.Array:
  return (labels >= 0) & (labels < num_classes)


def _nan_where_invalid(losses: jax.Array, labels: jax.Array,
                       num_classes: int) -> jax.Array:
  """Per-example losses, NaN where the label is outside [0, num_classes)."""
  return jnp.where(_valid_labels(labels, num_classes), losses, jnp.nan)


def _check_features_labels(fn: str, x_name: str, x, labels) -> None:
  _common.check_rank(x, 2, x_name, fn)
  _common.check_rank(labels, 1, "labels", fn)
  _common.check_dim(fn, 0, **{x_name: x, "labels": labels})


# ------------------------------------------------------------ center loss ---


def _check_centers(fn: str, features, labels, centers) -> None:
  _check_features_labels(fn, "features", features, labels)
  _common.check_rank(centers, 2, "centers", fn)
  _common.check_dim(fn, -1, features=features, centers=centers)
  _common.check_labels(labels, centers.shape[0], "labels", fn)


def center_loss(features: jax.Array, labels: jax.Array,
                centers: jax.Array) -> jax.Array:
  """Center loss: squared distance of each feature to its class center.

      loss = ½ · mean_i ||x_i − c_{y_i}||²

  (the paper sums over the mini-batch; this is the mean). It is used next
  to a softmax loss, L = L_S + λ·L_C. In the paper the centers are not
  learned by this gradient but kept as state and moved towards their
  features by `center_loss_update` with rate alpha; to do that, pass
  `jax.lax.stop_gradient(centers)` here. Passing trainable centers instead
  learns them by gradient descent.

  Reference: Wen, Zhang, Li and Qiao, "A Discriminative Feature Learning
  Approach for Deep Face Recognition", ECCV 2016.

  Args:
    features: [B, D] deep features.
    labels: [B] integer labels in [0, num_classes).
    centers: [num_classes, D] class centers.

  Returns:
    Scalar mean loss in the compute dtype; NaN if a label is out of range
    under `jax.jit`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import center_loss
    >>> centers = jnp.array([[0., 0.], [1., 1.]])
    >>> features = jnp.array([[0., 2.], [1., 1.]])
    >>> labels = jnp.array([0, 1])
    >>> print(round(float(center_loss(features, labels, centers)), 4))  # 4/4
    1.0
  """
  fn = "center_loss"
  _check_centers(fn, features, labels, centers)
  x, c = _common.to_compute(features, centers)
  labels = jnp.asarray(labels)
  # Out-of-range rows gather zeros (never a wrapped or clipped center) and
  # are then set to NaN.
  c_y = c.at[labels].get(mode="fill", fill_value=0,
                         wrap_negative_indices=False)
  losses = 0.5 * jnp.sum(jnp.square(x - c_y), axis=-1)
  return jnp.mean(_nan_where_invalid(losses, labels, c.shape[0]))


def center_loss_update(centers: jax.Array, features: jax.Array,
                       labels: jax.Array, *, alpha=0.5) -> jax.Array:
  """The center loss paper's update of the class centers.

      Δc_j = Σ_i δ(y_i = j)(c_j − x_i) / (1 + Σ_i δ(y_i = j)),
      c_j ← c_j − α · Δc_j.

  Classes absent from the batch keep their center. The 1 in the
  denominator damps classes seen only a few times. Pure function: no
  gradient is meant to flow through it; returns the new centers in the
  dtype of `centers`. Under `jax.jit` an out-of-range label makes every
  center NaN rather than dropping that feature silently.

  Reference: Wen, Zhang, Li and Qiao, ECCV 2016.

  Args:
    centers: [num_classes, D] current centers.
    features: [B, D] features of the batch.
    labels: [B] integer labels in [0, num_classes).
    alpha: learning rate of the centers, in [0, 1].

  Returns:
    [num_classes, D] updated centers.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import center_loss_update
    >>> centers = jnp.zeros((2, 1))
    >>> features = jnp.array([[3.], [6.]])
    >>> new = center_loss_update(centers, features, jnp.array([0, 0]))
    >>> print(new[:, 0].tolist())  # 0 − 0.5·(0 − 9)/3, class 1 untouched
    [1.5, 0.0]
  """
  fn = "center_loss_update"
  _check_centers(fn, features, labels, centers)
  _common.check_in_range(alpha, 0.0, 1.0, "alpha", fn)
  x, c = _common.to_compute(features, centers)
  labels = jnp.asarray(labels)
  num_classes = c.shape[0]
  one_hot = (labels[:, None] == jnp.arange(num_classes)).astype(c.dtype)
  counts = jnp.sum(one_hot, axis=0)[:, None]
  delta = (counts * c - one_hot.T @ x) / (1.0 + counts)
  new = c - alpha * delta
  new = jnp.where(jnp.all(_valid_labels(labels, num_classes)), new, jnp.nan)
  return new.astype(jnp.result_type(centers))


# --------------------------------------------------- angular-margin losses ---


def _check_class_weights(fn: str, embeddings, labels, weights) -> None:
  _check_features_labels(fn, "embeddings", embeddings, labels)
  _common.check_rank(weights, 2, "weights", fn)
  dim = embeddings.shape[1]
  if weights.shape[0] != dim:
    raise ValueError(
        f"{fn}: `weights` must have shape [dim={dim}, num_classes], got "
        f"{weights.shape}.")
  _common.check_labels(labels, weights.shape[1], "labels", fn)


def _cosines(embeddings: jax.Array, weights: jax.Array) -> jax.Array:
  """[B, C] cos θ_ij between embeddings and l2-normalised weight columns."""
  x, w = _common.to_compute(embeddings, weights)
  return _common.l2_normalize(x) @ _common.l2_normalize(w, axis=0)


def _clipped_arccos(cos: jax.Array) -> jax.Array:
  return jnp.arccos(jnp.clip(cos, -1.0 + ARCCOS_EPS, 1.0 - ARCCOS_EPS))


def _margin_cross_entropy(cos, labels, target_fn, scale) -> jax.Array:
  """mean_i CE over logits scale_i·cos θ_ij, the true class's replaced.

  The true-class logit is scale_i·target_fn(cos θ_{i,y_i}); `scale` is a
  scalar or one value per row. Only the B target cosines go through the
  (arccos-based) target function, not all B·C.
  """
  labels = jnp.asarray(labels)
  num_classes = cos.shape[-1]
  is_target = labels[:, None] == jnp.arange(num_classes)
  cos_y = jnp.sum(jnp.where(is_target, cos, 0.0), axis=-1)
  scale = jnp.broadcast_to(jnp.asarray(scale, cos.dtype), cos_y.shape)
  target = scale * target_fn(cos_y)
  logits = jnp.where(is_target, target[:, None], scale[:, None] * cos)
  losses = jax.nn.logsumexp(logits, axis=-1) - target
  return jnp.mean(_nan_where_invalid(losses, labels, num_classes))


def sphereface(embeddings: jax.Array, labels: jax.Array, weights: jax.Array,
               *, margin: int = 4, scale=None) -> jax.Array:
  """SphereFace's angular softmax (A-Softmax) with a multiplicative margin.

  With θ_j the angle between x_i and the normalised column w_j, the logits
  are ||x_i||·cos θ_j for j ≠ y_i and ||x_i||·ψ(θ_{y_i}) for the true class,

      ψ(θ) = (−1)^k cos(mθ) − 2k,  θ ∈ [kπ/m, (k+1)π/m],  k ∈ {0..m−1},

  a monotonically decreasing extension of cos(mθ) to [0, π]; loss = mean
  cross-entropy. `scale` replaces ||x_i|| by a constant s (the
  normalised-feature variant). The paper's training-time annealing
  (mixing with the plain softmax logit) is left to the caller.

  Reference: Liu, Wen, Yu, Li, Raj and Song, "SphereFace: Deep Hypersphere
  Embedding for Face Recognition", CVPR 2017.

  Args:
    embeddings: [B, dim] features; θ uses their direction, the default
      scale their norm.
    labels: [B] integer labels in [0, num_classes).
    weights: [dim, num_classes] class weights; their columns are
      l2-normalised inside (no bias).
    margin: integer m >= 1 (m = 1 is the plain weight-normalised softmax).
    scale: None to use the feature norm ||x_i||, or a constant s > 0.

  Returns:
    Scalar mean loss in the compute dtype; NaN if a label is out of range
    under `jax.jit`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import sphereface
    >>> w = jnp.eye(2)
    >>> x = jnp.array([[0.5, 0.75 ** 0.5]])  # θ = π/3 and π/6, ||x|| = 1
    >>> # m = 4: k = 1, ψ(π/3) = −cos(4π/3) − 2 = −1.5
    >>> # loss = log(1 + e^(cos(π/6) + 1.5))
    >>> print(round(float(sphereface(x, jnp.array([0]), w)), 4))
    2.4557
  """
  fn = "sphereface"
  _check_class_weights(fn, embeddings, labels, weights)
  if (isinstance(margin, bool) or not isinstance(margin, numbers.Integral)
      or margin < 1):
    raise ValueError(f"{fn}: `margin` must be an integer >= 1, got {margin!r}.")
  _common.check_positive(scale, "scale", fn)

  def psi(cos_y):
    theta = _clipped_arccos(cos_y)
    # Clipping keeps θ < π, so k <= m − 1; floor has zero gradient.
    k = jnp.floor(margin * theta / math.pi)
    sign = 1.0 - 2.0 * jnp.mod(k, 2.0)
    return sign * jnp.cos(margin * theta) - 2.0 * k

  if scale is None:
    scale = _common.safe_norm(_common.to_compute(embeddings))
  return _margin_cross_entropy(_cosines(embeddings, weights), labels, psi,
                               scale)


def cosface(embeddings: jax.Array, labels: jax.Array, weights: jax.Array, *,
            scale=64.0, margin=0.35) -> jax.Array:
  """CosFace's large-margin cosine loss (LMCL).

  With normalised features and weight columns, logits are s·cos θ_j for
  j ≠ y_i and s·(cos θ_{y_i} − m) for the true class; loss = mean
  cross-entropy (computed with logsumexp).

  Reference: Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
  Recognition", CVPR 2018.

  Args:
    embeddings: [B, dim] features (normalised inside).
    labels: [B] integer labels in [0, num_classes).
    weights: [dim, num_classes] class weights; their columns are
      l2-normalised inside (no bias).
    scale: s > 0.
    margin: cosine margin m >= 0.

  Returns:
    Scalar mean loss in the compute dtype; NaN if a label is out of range
    under `jax.jit`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import cosface
    >>> w = jnp.eye(2)
    >>> x = jnp.array([[1., 0.]])  # cos = 1 to class 0, 0 to class 1
    >>> loss = cosface(x, jnp.array([0]), w, scale=1., margin=0.5)
    >>> print(round(float(loss), 4))  # log(1 + e^(0 − 0.5))
    0.4741
  """
  fn = "cosface"
  _check_class_weights(fn, embeddings, labels, weights)
  _common.check_positive(scale, "scale", fn)
  _common.check_non_negative(margin, "margin", fn)
  return _margin_cross_entropy(_cosines(embeddings, weights), labels,
                               lambda cos_y: cos_y - margin, scale)


def arcface(embeddings: jax.Array, labels: jax.Array, weights: jax.Array, *,
            scale=64.0, margin=0.5) -> jax.Array:
  """ArcFace's additive angular margin loss.

  With normalised features and weight columns, logits are s·cos θ_j for
  j ≠ y_i and s·ψ(θ_{y_i}) for the true class, loss = mean cross-entropy:

      ψ(θ) = cos(θ + m)        if θ + m < π  (cos θ > cos(π − m)),
      ψ(θ) = cos θ − m·sin(m)  otherwise.

  cos(θ + m) stops decreasing in θ past π − m, which would reward pushing
  a feature away from its class; the fallback, as in the official
  insightface implementation (`easy_margin=False`), keeps the target logit
  decreasing there with a CosFace-style penalty m·sin(m). Like insightface,
  ψ jumps at θ = π − m (from −1 to −cos m − m·sin m).

  Reference: Deng, Guo, Xue and Zafeiriou, "ArcFace: Additive Angular
  Margin Loss for Deep Face Recognition", CVPR 2019.

  Args:
    embeddings: [B, dim] features (normalised inside).
    labels: [B] integer labels in [0, num_classes).
    weights: [dim, num_classes] class weights; their columns are
      l2-normalised inside (no bias).
    scale: s > 0.
    margin: angular margin m in [0, π], in radians.

  Returns:
    Scalar mean loss in the compute dtype; NaN if a label is out of range
    under `jax.jit`.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.losses.metric import arcface
    >>> w = jnp.eye(2)
    >>> x = jnp.array([[1., 1.]])  # θ = π/4 to both classes
    >>> loss = arcface(x, jnp.array([0]), w, scale=1., margin=jnp.pi / 4)
    >>> print(round(float(loss), 4))  # log(1 + e^(cos(π/4) − cos(π/2)))
    1.1079
  """
  fn = "arcface"
  _check_class_weights(fn, embeddings, labels, weights)
  _common.check_positive(scale, "scale", fn)
  _common.check_in_range(margin, 0.0, math.pi, "margin", fn)

  def psi(cos_y):
    arc = jnp.cos(_clipped_arccos(cos_y) + margin)
    # jnp rather than math: `margin` may be a traced schedule value.
    return jnp.where(cos_y > jnp.cos(math.pi - margin), arc,
                     cos_y - margin * jnp.sin(margin))

  return _margin_cross_entropy(_cosines(embeddings, weights), labels, psi,
                               scale)

