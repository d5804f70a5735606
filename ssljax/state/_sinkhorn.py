"""Sinkhorn-Knopp equipartition of prototype scores (SwAV's online codes)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from ssljax import _common


def _global_logsumexp(x: jax.Array, axis: int | Sequence[int],
                      axis_name: Optional[str]) -> jax.Array:
  """log Σ exp(x) over `axis` and, with `axis_name`, over all devices."""
  lse = jax.nn.logsumexp(x, axis=axis, keepdims=True)
  if axis_name is None:
    return lse
  # Shift by the largest per-device value so the psum of exponentials can
  # neither overflow nor underflow to log(0).
  top = jax.lax.pmax(lse, axis_name)
  return top + jnp.log(jax.lax.psum(jnp.exp(lse - top), axis_name))


def sinkhorn(scores: jax.Array, *, epsilon: float = 0.05, iterations: int = 3,
             axis_name: Optional[str] = None) -> jax.Array:
  r"""Soft codes Q that spread a batch evenly over K prototypes (SwAV).

  Solves max_Q Tr(Qᵀ S) + ε H(Q) over the transportation polytope where each
  of the B samples has mass 1 and each of the K prototypes mass B/K, with a
  few Sinkhorn-Knopp iterations on P = exp(S/ε) (B = the global batch):

      P ← P / Σ_bk P_bk
      repeat `iterations` times:
        P_bk ← P_bk / (K · Σ_b' P_b'k)      # every prototype gets mass 1/K
        P_bk ← P_bk / (B · Σ_k' P_bk')      # every sample gets mass 1/B
      Q = B · P

  This is the order of the official `distributed_sinkhorn`, so the codes
  match it for every `iterations`: rows of Q sum to 1 (for iterations >= 1)
  and its columns sum to approximately B/K, more exactly with more
  iterations. The iterations run on log P with logsumexp, so ε = 0.01 with
  scores near 1 (exp(100) overflows float32) stays finite.

  The codes are targets: no gradient flows through them. bf16/f16 scores are
  computed (and returned) in float32.

  Under `jax.jit` with `scores` sharded over a mesh, the sums already run over
  the global batch. Inside `shard_map`/pmap, pass `axis_name`: the sums over
  the batch are all-reduced and B is the global batch, so every device gets
  its own rows of the single-device codes.

  Args:
    scores: [B, K] scores of the samples against the prototypes (normalised
      features · normalised prototypes).
    epsilon: entropic regularisation ε; smaller gives harder codes.
    iterations: Sinkhorn-Knopp iterations (SwAV uses 3).
    axis_name: mapped axis holding the other shards of the batch, or None.

  Returns:
    [B, K] codes Q, each row a distribution over the prototypes.

  References:
    Caron et al., "Unsupervised Learning of Visual Features by Contrasting
    Cluster Assignments", NeurIPS 2020, Algorithm 1 and the official
    `distributed_sinkhorn` (facebookresearch/swav).
    Cuturi, "Sinkhorn Distances", NeurIPS 2013.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.state import sinkhorn
    >>> scores = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.9]])
    >>> q = sinkhorn(scores, epsilon=0.1, iterations=50)
    >>> print([round(float(s), 3) for s in q.sum(axis=0)])  # B/K = 2 each
    [2.0, 2.0]
    >>> print([int(i) for i in q.argmax(axis=1)])
    [0, 0, 1, 1]
  """
  fn = "sinkhorn"
  _common.check_rank(scores, 2, "scores", fn)
  _common.check_positive(epsilon, "epsilon", fn)
  _common.check_count(iterations, "iterations", fn)
  # Stopping at the input (not only the output) keeps reverse mode from
  # tracing the iterations at all.
  log_p = _common.to_compute(jax.lax.stop_gradient(scores)) / epsilon
  local_batch, num_prototypes = scores.shape
  log_b = math.log(local_batch * _common.axis_size(axis_name))
  log_k = math.log(num_prototypes)

  # A no-op after the first prototype normalisation, but it sets the result
  # of iterations=0 exactly as the reference does.
  log_p = log_p - _global_logsumexp(log_p, (0, 1), axis_name)

  def normalise(_, log_p):
    log_p = log_p - _global_logsumexp(log_p, 0, axis_name) - log_k
    # Each sample's row lives on one device: no collective needed.
    return log_p - jax.nn.logsumexp(log_p, axis=1, keepdims=True) - log_b

  log_p = jax.lax.fori_loop(0, iterations, normalise, log_p)
  return jnp.exp(log_p + log_b)
