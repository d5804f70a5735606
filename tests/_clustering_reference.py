"""Shared by the clustering loss and state tests: inputs, mesh, references."""

import jax
import numpy as np
import pytest


@pytest.fixture(scope="module")
def mesh():
  return jax.make_mesh((8,), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def rand(shape, seed=0, scale=1.0):
  return scale * np.random.default_rng(seed).uniform(-1, 1, shape).astype(
      np.float32)


def np_sinkhorn(scores, epsilon, iterations):
  """The official `distributed_sinkhorn` on one device, exp domain, float64."""
  q = np.exp(np.asarray(scores, np.float64) / epsilon).T  # [K, B]
  k, b = q.shape
  q /= q.sum()
  for _ in range(iterations):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= b
  return (q * b).T
