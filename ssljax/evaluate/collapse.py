"""Collapse metrics of a batch of embeddings, cheap enough to log every step.

Both are jittable and see the global batch under `jax.jit` on sharded
arrays; neither needs labels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from ssljax._common import (EPS, check_non_negative, check_rank,
                            l2_normalize, to_compute)


def embedding_std(z: jax.Array) -> jax.Array:
  """Mean over dimensions of the batch standard deviation of z/||z||.

      embedding_std = (1/D) Σ_d std_b( z_bd / ||z_b|| )

  Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021,
  section 4.1 and fig. 2: a collapsed representation (every row the same
  direction) gives 0; rows spread isotropically on the unit sphere give about
  1/sqrt(D). The standard deviation is the population one (divisor B).

  Args:
    z: [B, D] embeddings, B >= 1.

  Returns:
    Scalar in [0, 1], float32 for half-precision inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import embedding_std
    >>> print(round(float(embedding_std(jnp.array([[1., 0.], [0., 1.]]))), 4))
    0.5
    >>> print(float(embedding_std(jnp.ones((4, 3)))))
    0.0
  """
  check_rank(z, 2, "z", "embedding_std")
  return jnp.mean(jnp.std(l2_normalize(to_compute(z)), axis=0))


def rankme(z: jax.Array, *, eps: float = 1e-7) -> jax.Array:
  """RankMe, a smooth effective rank of the embeddings.

      p_k = σ_k / Σ_j σ_j + ε,   RankMe(z) = exp(− Σ_k p_k log p_k),

  with σ the min(B, D) singular values of z (Garrido et al., "RankMe:
  Assessing the Downstream Performance of Pretrained Self-Supervised
  Representations by Their Rank", ICML 2023, eq. 1). It lies in
  [1, min(B, D)] up to the ε terms: about D for isotropic data with B >> D,
  1 for rank-one data. A zero matrix gives about 1 rather than NaN (the sum
  of singular values is floored at a tiny constant).

  Args:
    z: [B, D] embeddings (not normalised: the rank of what the encoder
      outputs).
    eps: ε >= 0 added to every p_k (0 log 0 is taken as 0, so ε = 0 is
      the plain entropy).

  Returns:
    Scalar, float32 for half-precision inputs.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.evaluate import rankme
    >>> print(round(float(rankme(jnp.eye(4))), 3))
    4.0
    >>> print(round(float(rankme(jnp.ones((4, 4)))), 3))
    1.0
  """
  check_rank(z, 2, "z", "rankme")
  check_non_negative(eps, "eps", "rankme")
  singular = jnp.linalg.svd(to_compute(z), compute_uv=False)
  p = singular / jnp.maximum(jnp.sum(singular), EPS) + eps
  return jnp.exp(-jnp.sum(xlogy(p, p)))
