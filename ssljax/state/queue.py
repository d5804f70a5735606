"""A fixed-size FIFO of embeddings: MoCo's negatives, NNCLR's support set.

`QueueState` is a NamedTuple of arrays, so it lives in a method's state pytree
and is sharded, donated and checkpointed with it. `push` is pure: it returns a
new state and writes in place only when the caller donates the old one.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from ssljax import _common


class QueueState(NamedTuple):
  """A circular buffer of the most recent keys.

  Attributes:
    buffer: [size, dim] stored rows.
    ptr: int32 scalar, the row the next push writes first.
    count: int32 scalar, rows written so far, capped at `size`. Until the
      queue has wrapped, only `buffer[:count]` holds pushed keys (the rest is
      the initial content); `jnp.arange(size) < count` is the mask of pushed
      rows, which NNCLR-style nearest-neighbour lookups can use to ignore the
      initial rows.
  """
  buffer: jax.Array
  ptr: jax.Array
  count: jax.Array


def init(size: int, dim: int, dtype=jnp.float32, *,
         key: Optional[jax.Array] = None) -> QueueState:
  """An empty queue of `size` rows of dimension `dim`.

  With `key`, the rows start as random unit vectors (standard normal rows,
  l2-normalised), as MoCo initialises its queue so that the first steps
  already see spread-out negatives; without it they start at zero.

  Args:
    size: number of rows K.
    dim: row dimension D.
    dtype: dtype of the stored rows.
    key: optional PRNG key for the random unit-vector initialisation.

  Returns:
    A `QueueState` with ptr = count = 0.

  References:
    He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020 (the queue and its random initialisation).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from ssljax.state import queue
    >>> q = queue.init(4, 2)
    >>> print(q.buffer.shape, int(q.ptr), int(q.count))
    (4, 2) 0 0
    >>> q = queue.init(4, 2, key=jax.random.key(0))
    >>> print([round(float(n), 4) for n in jnp.linalg.norm(q.buffer, axis=1)])
    [1.0, 1.0, 1.0, 1.0]
  """
  fn = "queue.init"
  _common.check_count(size, "size", fn, minimum=1)
  _common.check_count(dim, "dim", fn, minimum=1)
  if key is None:
    buffer = jnp.zeros((size, dim), dtype)
  else:
    # Normalise in float32 at least, then store in the requested dtype.
    rows = jax.random.normal(key, (size, dim), _common.compute_dtype(dtype))
    buffer = _common.l2_normalize(rows).astype(dtype)
  return QueueState(buffer=buffer, ptr=jnp.zeros((), jnp.int32),
                    count=jnp.zeros((), jnp.int32))


def push(queue: QueueState, keys: jax.Array, *,
         axis_name: Optional[str] = None) -> QueueState:
  """Enqueues `keys` over the oldest rows (FIFO), wrapping around the end.

  Row `(ptr + i) mod size` receives `keys[i]`; then ptr ← (ptr + B) mod size
  and count ← min(count + B, size). Any batch size 1 <= B <= size works,
  including sizes that do not divide `size`. Keys are stored without
  gradient (stop_gradient) and cast to the buffer's dtype.

  Under `jax.jit` with sharded keys the whole global batch is pushed. Inside
  `shard_map`/pmap, pass `axis_name`: every device pushes the keys of all
  devices (all-gathered in device order), as MoCo's `concat_all_gather`, so
  the replicas of the queue stay identical.

  Args:
    queue: the current `QueueState`.
    keys: [B, D] rows to enqueue (per device when `axis_name` is given).
    axis_name: mapped axis to gather keys over, or None.

  Returns:
    The new `QueueState`.

  References:
    He et al., "Momentum Contrast for Unsupervised Visual Representation
    Learning", CVPR 2020, Algorithm 1 (enqueue / dequeue).

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.state import queue
    >>> q = queue.init(4, 1)
    >>> q = queue.push(q, jnp.array([[1.0], [2.0], [3.0]]))
    >>> q = queue.push(q, jnp.array([[4.0], [5.0]]))  # wraps: 5 overwrites 1
    >>> print(q.buffer[:, 0].tolist(), int(q.ptr), int(q.count))
    [5.0, 2.0, 3.0, 4.0] 1 4
  """
  fn = "queue.push"
  size, dim = queue.buffer.shape
  _common.check_rank(keys, 2, "keys", fn)
  if keys.shape[1] != dim:
    raise ValueError(
        f"{fn}: `keys` must have shape [B, {dim}] to match the queue, got "
        f"{keys.shape}.")
  keys = _common.all_gather(jax.lax.stop_gradient(keys), axis_name)
  batch = keys.shape[0]
  if batch > size:
    raise ValueError(
        f"{fn}: `keys` has {batch} rows (over all devices), more than the "
        f"queue size {size}; a push must fit in the queue.")
  # batch <= size, so the rows written are distinct.
  rows = (queue.ptr + jnp.arange(batch)) % size
  buffer = queue.buffer.at[rows].set(keys.astype(queue.buffer.dtype),
                                     unique_indices=True)
  return QueueState(buffer=buffer, ptr=(queue.ptr + batch) % size,
                    count=jnp.minimum(queue.count + batch, size))
