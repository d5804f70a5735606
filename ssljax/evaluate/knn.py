"""Weighted k-nearest-neighbour classification of frozen features.

The protocol of Wu et al., "Unsupervised Feature Learning via Non-Parametric
Instance Discrimination", CVPR 2018 (section 3.4), used as the kNN monitor of
most self-supervised papers and implemented by DINO's `eval_knn.py`
(`knn_classifier`, Caron et al. 2021): features are l2-normalised, the k
training features with the largest cosine similarity s_i to a test feature
vote for their class with weight exp(s_i / T), and the class with the largest
total vote is predicted.

    score_c(x) = Σ_{i ∈ topk(x)} [y_i = c] · exp(s_i / T),   ŷ(x) = argmax_c score_c(x)

Test rows are processed in chunks of `batch_size` inside one compiled scan
(`jax.lax.map`), so the similarity matrix held at any time is
[batch_size, N_train] rather than [N_test, N_train]. Under `jax.jit` with the
train features sharded over a mesh, each chunk's similarities are sharded the
same way and the compiler partitions `lax.top_k`; the predictions are those of
one device.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax._common import (check_count, check_dim, check_positive, check_rank,
                            l2_normalize, to_compute)
from ssljax.evaluate._checks import check_num_classes, check_split

WEIGHTINGS = ("exp", "uniform")

# DINO reports top-5 next to top-1; with fewer classes it is trivially 100%.
_TOP5 = 5


class KnnAccuracy(NamedTuple):
  """Fractions in [0, 1] of test rows classified correctly.

  Attributes:
    top1: the predicted class is the label.
    top5: the label is among the 5 classes with the largest vote (and got a
      vote at all); None when `num_classes` < 5.
  """
  top1: jax.Array
  top5: Optional[jax.Array]


def _check_knn_args(fn, train_features, train_labels, test_features, *,
                    num_classes, k, temperature, weighting, batch_size):
  check_num_classes(num_classes, fn)
  check_split(fn, train_features, train_labels, num_classes=num_classes,
              features_name="train_features", labels_name="train_labels")
  check_rank(test_features, 2, "test_features", fn)
  check_dim(fn, 1, train_features=train_features, test_features=test_features)
  check_count(k, "k", fn, minimum=1)
  num_train = np.shape(train_features)[0]
  if k > num_train:
    raise ValueError(
        f"{fn}: `k` must be <= the number of training rows "
        f"(train_features.shape[0] = {num_train}), got {k}.")
  check_positive(temperature, "temperature", fn)
  if weighting not in WEIGHTINGS:
    raise ValueError(
        f"{fn}: `weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
  check_count(batch_size, "batch_size", fn, minimum=1)


@functools.partial(jax.jit, static_argnames=(
    "num_classes", "k", "weighting", "batch_size", "top"))
def _ranked_classes(train_features, train_labels, test_features, temperature,
                    *, num_classes, k, weighting, batch_size, top):
  """The `top` classes of each test row by vote, and whether each got a vote.

  Returns ([N_test, top] int32 classes in decreasing vote order, ties to the
  lower class index; [N_test, top] bool, False for classes without a
  neighbour, which rank below every voted class).
  """
  train, test = to_compute(train_features, test_features)
  train = l2_normalize(train)
  test = l2_normalize(test)

  def rank_row(x):
    # HIGHEST: neighbours must not depend on the backend's default matmul
    # precision (bf16 passes on TPU, TF32 on GPU).
    sims = jnp.dot(train, x, precision=jax.lax.Precision.HIGHEST)
    top_sims, index = jax.lax.top_k(sims, k)
    if weighting == "exp":
      # Shifting by the best similarity scales every class's vote by the same
      # factor exp(-s_max / T), so the ranking is that of exp(s / T), but no
      # vote overflows for small T and the nearest neighbour's is exactly 1.
      weights = jnp.exp((top_sims - top_sims[0]) / temperature)
    else:
      weights = jnp.ones_like(top_sims)
    neighbour_labels = train_labels[index]
    votes = jnp.zeros(num_classes, weights.dtype).at[neighbour_labels].add(
        weights)
    voted = jnp.zeros(num_classes, bool).at[neighbour_labels].set(True)
    _, classes = jax.lax.top_k(jnp.where(voted, votes, -1), top)
    return classes, voted[classes]

  return jax.lax.map(rank_row, test, batch_size=batch_size)


def knn_classify(train_features: jax.Array, train_labels: jax.Array,
                 test_features: jax.Array, *, num_classes: int, k: int = 20,
                 temperature: float = 0.07, weighting: str = "exp",
                 batch_size: int = 256) -> jax.Array:
  """Predicts the class of each test row by a vote of its k nearest neighbours.

      s_i = <x/||x||, t_i/||t_i||>,   score_c = Σ_{i ∈ topk(s)} [y_i = c] · w_i,
      ŷ = argmax_c score_c,

  with w_i = exp(s_i / T) for `weighting="exp"` (Wu et al. 2018, eq. 9;
  DINO's `knn_classifier`, whose defaults k=20, T=0.07 are used here) or
  w_i = 1 for `weighting="uniform"`, a plain majority vote (k=1 gives the
  nearest-neighbour class). Ties go to the lower class index, as in
  scikit-learn's `KNeighborsClassifier`.

  Jittable: shape and argument checks run at trace time, label values are
  checked when concrete. Memory is O(batch_size × N_train).

  Args:
    train_features: [N_train, D] features of the labelled set.
    train_labels: [N_train] integer labels in [0, num_classes).
    test_features: [N_test, D] features to classify.
    num_classes: C, the number of classes (a Python int).
    k: number of neighbours, 1 <= k <= N_train.
    temperature: T > 0 of the exponential vote (unused when uniform).
    weighting: "exp" or "uniform".
    batch_size: test rows per chunk.

  Returns:
    [N_test] int32 predicted classes.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import knn_classify
    >>> train = jnp.array([[1., 0.], [0.9, 0.1], [0., 1.], [0.1, 1.]])
    >>> labels = jnp.array([0, 0, 1, 1])
    >>> test = jnp.array([[2., 0.3], [0.2, 3.]])
    >>> print(knn_classify(train, labels, test, num_classes=2, k=3).tolist())
    [0, 1]
  """
  _check_knn_args("knn_classify", train_features, train_labels, test_features,
                  num_classes=num_classes, k=k, temperature=temperature,
                  weighting=weighting, batch_size=batch_size)
  classes, _ = _ranked_classes(
      train_features, train_labels, test_features, temperature,
      num_classes=num_classes, k=k, weighting=weighting,
      batch_size=batch_size, top=1)
  return classes[:, 0]


def knn_accuracy(train_features: jax.Array, train_labels: jax.Array,
                 test_features: jax.Array, test_labels: jax.Array, *,
                 num_classes: int, k: int = 20, temperature: float = 0.07,
                 weighting: str = "exp", batch_size: int = 256) -> KnnAccuracy:
  """Top-1 (and top-5) accuracy of `knn_classify` on labelled test features.

  Top-5 counts a test row as correct when its label is among the five classes
  with the largest vote. Unlike DINO's `knn_classifier`, which sorts all C
  class scores, a class that no neighbour voted for never counts, so with
  k < 5 the top-5 hits are those of the k voted classes (DINO's
  `min(5, k)`), and zero-vote classes cannot be hit by tie order.

  Args:
    train_features, train_labels, test_features, num_classes, k, temperature,
      weighting, batch_size: as in `knn_classify`.
    test_labels: [N_test] integer labels in [0, num_classes).

  Returns:
    A `KnnAccuracy`; `top5` is None when `num_classes` < 5.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import knn_accuracy
    >>> train = jnp.array([[1., 0.], [0.9, 0.1], [0., 1.], [0.1, 1.]])
    >>> labels = jnp.array([0, 0, 1, 1])
    >>> test = jnp.array([[2., 0.3], [0.2, 3.], [1., 0.]])
    >>> acc = knn_accuracy(train, labels, test, jnp.array([0, 1, 1]),
    ...                    num_classes=2, k=3)
    >>> print(round(float(acc.top1), 4), acc.top5)
    0.6667 None
  """
  fn = "knn_accuracy"
  _check_knn_args(fn, train_features, train_labels, test_features,
                  num_classes=num_classes, k=k, temperature=temperature,
                  weighting=weighting, batch_size=batch_size)
  check_split(fn, test_features, test_labels, num_classes=num_classes,
              features_name="test_features", labels_name="test_labels")
  top = min(_TOP5, num_classes)
  classes, voted = _ranked_classes(
      train_features, train_labels, test_features, temperature,
      num_classes=num_classes, k=k, weighting=weighting,
      batch_size=batch_size, top=top)
  hits = (classes == test_labels[:, None]) & voted
  top1 = jnp.mean(hits[:, 0].astype(jnp.float32))
  top5 = None
  if num_classes >= _TOP5:
    top5 = jnp.mean(jnp.any(hits, axis=1).astype(jnp.float32))
  return KnnAccuracy(top1=top1, top5=top5)
