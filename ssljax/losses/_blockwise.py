"""Row-wise logsumexp of a similarity matrix without materialising it.

Every softmax-contrastive loss reduces to, per anchor row i,

    lse_i = log sum_{j != exclude_i} exp(scale * q_i . k_j)

minus the logit of its positive. The dense way builds the [N, M] logits; at
the batch sizes contrastive learning likes (SimCLR N = 2 x 32k, CLIP 32k) that
matrix alone is tens of GB. `blockwise_logsumexp` scans over blocks of keys
with an online (running max + running sum) logsumexp, and its custom VJP
keeps only q, k and the [N] result, recomputing each block in the backward
pass. Peak memory is O(N * (D + block_size)) in both passes; the FLOPs are
those of the dense forward plus one extra q @ k.T in the backward.

`row_logsumexp` picks between the two with the `implementation` /
`block_size` arguments that the public losses forward.
"""

from __future__ import annotations

import functools
import numbers
from typing import Optional

import jax
import jax.numpy as jnp

from ssljax import _common

IMPLEMENTATIONS = ("auto", "dense", "blockwise")

# Keys per scan step. Each step holds a few [N, block] buffers: with N = 65k
# anchors that is ~256 MB each in f32, while a step's [N, D] @ [D, block]
# matmul is still large enough to keep an accelerator busy.
DEFAULT_BLOCK_SIZE = 1024

# "auto" switches to the blockwise path when the logits matrix would have more
# elements than this (2**24 floats = 64 MiB in f32, e.g. SimCLR with more
# than 2 x 2048 views). Below it the dense path is faster and small.
AUTO_DENSE_MAX_ELEMENTS = 2**24


def check_implementation(implementation, block_size, fn: str) -> None:
  """Raises ValueError naming `fn` for an unknown mode or a bad block size."""
  if implementation not in IMPLEMENTATIONS:
    raise ValueError(f"{fn}: `implementation` must be one of "
                     f"{IMPLEMENTATIONS}, got {implementation!r}.")
  if (not isinstance(block_size, numbers.Integral)
      or isinstance(block_size, bool) or block_size <= 0):
    raise ValueError(
        f"{fn}: `block_size` must be a positive integer, got {block_size!r}.")


def _key_blocks(k: jax.Array, block_size: int):
  """k zero-padded and split into [n_blocks, size, D], and block starts."""
  n_keys, dim = k.shape
  size = max(1, min(block_size, n_keys))  # no padding beyond a single block
  n_blocks = -(-n_keys // size)
  padded = jnp.pad(k, ((0, n_blocks * size - n_keys), (0, 0)))
  return padded.reshape(n_blocks, size, dim), jnp.arange(n_blocks) * size


def _match_varying(*xs):
  """xs, each given the device-varying axes of all of them (inside shard_map).

  A custom VJP must return cotangents of its inputs' types. With keys that
  vary across devices and queries that do not (a replicated MoCo queue is
  the other way round), the blockwise dq would vary while q does not, and
  shard_map rejects it. Adding an exactly-zero scalar built from every input
  (the sum of an empty slice) casts each to the union type without changing
  a value, and autodiff turns the implicit cast into the psum that a
  replicated input's gradient needs. Outside shard_map this is a no-op.
  """
  zero = sum(jnp.sum(x.reshape(-1)[:0]).astype(jnp.float32) for x in xs)
  return tuple(x + zero.astype(x.dtype) for x in xs)


def _block_logits(q, k_block, start, n_keys, exclude):
  """One [N, size] block of q @ k.T and the mask of entries that count.

  Padding keys (index >= n_keys) and each row's excluded keys ([N, E]) do
  not count.
  """
  logits = q @ k_block.T
  col = start + jnp.arange(k_block.shape[0])
  valid = (col < n_keys)[None, :] & _kept(col, exclude)
  return logits, valid


def _kept(col: jax.Array, exclude: jax.Array) -> jax.Array:
  """[N, M]: column `col[m]` is none of row n's excluded indices [N, E]."""
  return jnp.all(col[None, :, None] != exclude[:, None, :], axis=-1)


def _finite_shift(row_max):
  """The max to subtract, 0 for rows with nothing valid (max -inf).

  Avoids exp(-inf - -inf) = NaN; such rows still add exp(-inf) = 0.
  """
  return jnp.where(jnp.isneginf(row_max), 0.0, row_max)


def _merge_online(a, b):
  """Combines two (max, sum exp(x - max)) partial logsumexps of a row."""
  (max_a, sum_a), (max_b, sum_b) = a, b
  row_max = jnp.maximum(max_a, max_b)
  shift = _finite_shift(row_max)
  return row_max, (sum_a * jnp.exp(max_a - shift)
                   + sum_b * jnp.exp(max_b - shift))


def _lse_forward(q, k, exclude, block_size):
  n_keys = k.shape[0]

  def step(carry, block):
    logits, valid = _block_logits(q, *block, n_keys, exclude)
    logits = jnp.where(valid, logits, -jnp.inf)
    block_max = logits.max(axis=1)
    shifted = jnp.exp(logits - _finite_shift(block_max)[:, None])
    return _merge_online(carry, (block_max, shifted.sum(axis=1))), None

  # Built like q (not from constants) so that inside shard_map the carry has
  # the varying type of every step's output, which scan requires.
  init = (jnp.full_like(q[:, 0], -jnp.inf), jnp.zeros_like(q[:, 0]))
  (row_max, row_sum), _ = jax.lax.scan(step, init, _key_blocks(k, block_size))
  # A row with no valid key at all gives -inf + log(0) = -inf, as logsumexp.
  return row_max + jnp.log(row_sum)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lse(q, k, exclude, block_size):
  return _lse_forward(q, k, exclude, block_size)


def _lse_fwd(q, k, exclude, block_size):
  lse = _lse_forward(q, k, exclude, block_size)
  # O(N * D) residuals: the blocks are recomputed in the backward pass.
  return lse, (q, k, exclude, lse)


def _lse_bwd(block_size, residuals, g):
  """dq_i = sum_j g_i P_ij k_j, dk_j = sum_i g_i P_ij q_i, P = softmax rows."""
  q, k, exclude, lse = residuals
  n_keys, dim = k.shape

  def step(dq, block):
    k_block, start = block
    logits, valid = _block_logits(q, k_block, start, n_keys, exclude)
    # Masked first: a row with no valid key has lse = -inf, and its
    # exp(logits - lse) = inf must not reach the products.
    weights = jnp.where(valid, jnp.exp(logits - lse[:, None]), 0.0) * g[:, None]
    return dq + weights @ k_block, weights.T @ q

  dq, dk_blocks = jax.lax.scan(step, jnp.zeros_like(q),
                               _key_blocks(k, block_size))
  dk = dk_blocks.reshape(-1, dim)[:n_keys]
  return dq, dk, None  # `exclude` is an integer index: no cotangent


_lse.defvjp(_lse_fwd, _lse_bwd)


def _exclude_array(exclude, n_rows):
  """[N, E] excluded key indices of each row ([N] is one per row)."""
  if exclude is None:
    return jnp.full((n_rows, 1), -1, jnp.int32)
  exclude = jnp.asarray(exclude, jnp.int32)
  return exclude[:, None] if exclude.ndim == 1 else exclude


def blockwise_logsumexp(q: jax.Array, k: jax.Array,
                        exclude: Optional[jax.Array] = None, *,
                        scale=1.0,
                        block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """lse_i = log sum_{j != exclude_i} exp(scale q_i . k_j), block by block.

  Scans over blocks of `block_size` keys keeping a running max m_i and a
  running sum s_i = sum_j exp(logit_ij - m_i) per row, so no more than an
  [N, block_size] block of logits exists at a time. The custom VJP saves q,
  k and the result and recomputes each block with P = exp(logits - lse):
  dq_i = scale * sum_j g_i P_ij k_j and dk_j = scale * sum_i g_i P_ij q_i.
  `scale` multiplies q before the custom-VJP core, so the chain rule supplies
  the `scale` factor above and a traced scale (a learnt CLIP temperature)
  gets its gradient too.

  Args:
    q: [N, D] queries (anchors), in their compute dtype.
    k: [M, D] keys.
    exclude: optional [N] integer key index to leave out of row i (the anchor
      itself in self-similarity), or [N, E] indices (DCL leaves out the
      anchor and its positive); an index outside [0, M) leaves out nothing.
    scale: multiplies every logit (1 / temperature); may be traced.
    block_size: keys per scan step; the last block is zero-padded and masked.

  Returns:
    [N] array of row logsumexps; -inf for a row with no key left.

  Example:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[1., 0.], [0., 1.]])
    >>> k = jnp.array([[1., 0.], [0., 1.], [1., 1.]])
    >>> lse = blockwise_logsumexp(q, k, jnp.array([0, 1]), block_size=2)
    >>> print([round(float(x), 4) for x in lse])  # log(e^0 + e^1) each
    [1.3133, 1.3133]
  """
  _common.check_rank(q, 2, "q", "blockwise_logsumexp")
  _common.check_rank(k, 2, "k", "blockwise_logsumexp")
  _common.check_dim("blockwise_logsumexp", 1, q=q, k=k)
  check_implementation("blockwise", block_size, "blockwise_logsumexp")
  q, k = _common.to_compute(q, k)
  q, k, exclude = _match_varying(q * scale, k,
                                 _exclude_array(exclude, q.shape[0]))
  return _lse(q, k, exclude, int(block_size))


def dense_logsumexp(q: jax.Array, k: jax.Array,
                    exclude: Optional[jax.Array] = None, *,
                    scale=1.0) -> jax.Array:
  """Same result as `blockwise_logsumexp` from the full [N, M] logits."""
  q, k = _common.to_compute(q, k)
  logits = scale * (q @ k.T)
  if exclude is not None:
    kept = _kept(jnp.arange(k.shape[0]), _exclude_array(exclude, q.shape[0]))
    logits = jnp.where(kept, logits, -jnp.inf)
  return jax.nn.logsumexp(logits, axis=1)


def use_blockwise(implementation: str, n_rows: int, n_keys: int) -> bool:
  """Whether `implementation` resolves to the blockwise path for [N, M]."""
  if implementation == "auto":
    return n_rows * n_keys > AUTO_DENSE_MAX_ELEMENTS
  return implementation == "blockwise"


def row_logsumexp(q: jax.Array, k: jax.Array,
                  exclude: Optional[jax.Array] = None, *,
                  scale=1.0, implementation: str = "auto",
                  block_size: int = DEFAULT_BLOCK_SIZE) -> jax.Array:
  """lse_i = log Σ_{j ∉ exclude_i} exp(scale · q_i · k_j) of every row.

  The denominator of a softmax cross-entropy over keys, the building block
  of the contrastive losses (Oord et al. 2018, InfoNCE): `dense_logsumexp`
  from the [N, M] logits, or `blockwise_logsumexp` in O(N·(D + block))
  memory with its own VJP. "auto" is blockwise when the logits would exceed
  `AUTO_DENSE_MAX_ELEMENTS` elements. Callers validate `implementation` and
  `block_size` with `check_implementation` so errors name the public loss.

  Example:
    >>> import jax.numpy as jnp
    >>> q = jnp.array([[1., 0.]])
    >>> k = jnp.array([[1., 0.], [0., 1.]])
    >>> print(round(float(row_logsumexp(q, k)[0]), 4))  # log(e + 1)
    1.3133
  """
  if use_blockwise(implementation, q.shape[0], k.shape[0]):
    return blockwise_logsumexp(q, k, exclude, scale=scale,
                               block_size=block_size)
  return dense_logsumexp(q, k, exclude, scale=scale)
