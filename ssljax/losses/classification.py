"""Softmax cross-entropy against integer labels, and the matching accuracy.

The pretext tasks (rotation, jigsaw, relative patch, exemplar) and the
pseudo-label methods (DeepCluster, SeLa, DeeperCluster) all train a
classifier with this loss; it lives here once, computed in float32 for
bf16/f16 logits.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from ssljax import _common

__all__ = ["accuracy", "cross_entropy"]


def cross_entropy(logits: jax.Array, labels: jax.Array,
                  weights: Optional[jax.Array] = None) -> jax.Array:
  """mean_n w_n · (−log softmax(logits_n)[labels_n]), with w = 1 if None.

  The mean runs over every row of `logits` [..., K] (the weights rescale
  rows, they do not renormalise the mean: DeepCluster's per-example weights
  have mean 1 over the dataset, colourisation's zero the gray images).
  Computed in float32 with a log-sum-exp, so it stays finite for extreme
  logits.

  Args:
    logits: [..., K] unnormalised scores.
    labels: int labels in [0, K), broadcast to logits.shape[:-1].
    weights: optional per-row weights, broadcast to logits.shape[:-1].

  Returns:
    The scalar mean, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> logits = jnp.zeros((2, 4))
    >>> print(round(float(cross_entropy(logits, jnp.array([0, 1]))), 4))
    1.3863
    >>> print(float(cross_entropy(logits, jnp.array([0, 1]),
    ...                           jnp.array([0.0, 0.0]))))
    0.0
  """
  _common.check_integer(labels, "labels", "cross_entropy")
  per_row = optax.softmax_cross_entropy_with_integer_labels(
      _common.to_compute(logits), jnp.broadcast_to(labels, logits.shape[:-1]))
  return jnp.mean(per_row if weights is None else per_row * weights)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """The fraction of rows whose arg-max is the label (a logged metric).

  Example:
    >>> import jax.numpy as jnp
    >>> print(float(accuracy(jnp.array([[1., 0.], [1., 0.]]),
    ...                      jnp.array([0, 1]))))
    0.5
  """
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)
