"""Helpers shared by losses and state updates: checks, dtype policy, collectives.

Everything here runs at trace time (checks) or is a thin pure function, so it
costs nothing inside a compiled step.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

# Added under square roots and to denominators so that zero vectors give
# finite values and gradients.
EPS = 1e-12


def compute_dtype(*xs: jax.Array) -> jnp.dtype:
  """float32 for half/bfloat16 (and integer) inputs; float64 stays float64."""
  dtype = jnp.result_type(*xs)
  if not jnp.issubdtype(dtype, jnp.floating):
    dtype = jnp.float32
  return jnp.promote_types(dtype, jnp.float32)


def to_compute(*xs: jax.Array):
  """Casts arrays to their common compute dtype (see `compute_dtype`)."""
  dtype = compute_dtype(*xs)
  cast = tuple(jnp.asarray(x).astype(dtype) for x in xs)
  return cast[0] if len(cast) == 1 else cast


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = EPS) -> jax.Array:
  """x / ||x||, finite with a finite gradient when x is zero."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * jax.lax.rsqrt(jnp.maximum(sq, eps))


def safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False,
              eps: float = EPS) -> jax.Array:
  """||x||_2 with a finite gradient at zero."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  return jnp.sqrt(jnp.maximum(sq, eps))


# ----------------------------------------------------------------- checks ---


def check_rank(x, rank: int | Sequence[int], name: str, fn: str) -> None:
  """Raises ValueError naming `fn` and argument `name` if x has another rank."""
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  ndim = np.ndim(x)
  if ndim not in ranks:
    want = " or ".join(str(r) for r in ranks)
    raise ValueError(
        f"{fn}: `{name}` must have rank {want}, got shape {np.shape(x)}.")


def check_same_shape(fn: str, **arrays) -> None:
  """All keyword arrays must share one shape."""
  shapes = {k: np.shape(v) for k, v in arrays.items()}
  if len(set(shapes.values())) > 1:
    desc = ", ".join(f"`{k}` {s}" for k, s in shapes.items())
    raise ValueError(f"{fn}: shapes must match, got {desc}.")


def check_dim(fn: str, axis: int, **arrays) -> None:
  """All keyword arrays must share the size of dimension `axis`."""
  sizes = {k: np.shape(v)[axis] for k, v in arrays.items()}
  if len(set(sizes.values())) > 1:
    desc = ", ".join(f"`{k}` {s}" for k, s in sizes.items())
    raise ValueError(
        f"{fn}: dimension {axis} must match, got sizes {desc}.")


def check_positive(value, name: str, fn: str) -> None:
  """A Python number must be > 0 (temperatures, margins that scale, epsilons)."""
  if isinstance(value, numbers.Number):
    if not value > 0:  # also catches NaN
      raise ValueError(f"{fn}: `{name}` must be > 0, got {value}.")


def check_non_negative(value, name: str, fn: str) -> None:
  if isinstance(value, numbers.Number):
    if not value >= 0:
      raise ValueError(f"{fn}: `{name}` must be >= 0, got {value}.")


def check_in_range(value, low, high, name: str, fn: str) -> None:
  """low <= value <= high for Python numbers."""
  if isinstance(value, numbers.Number):
    if not low <= value <= high:
      raise ValueError(
          f"{fn}: `{name}` must be in [{low}, {high}], got {value}.")


def check_count(value, name: str, fn: str, minimum: int = 0) -> None:
  """A static Python int >= `minimum` (iterations, sizes, cluster counts)."""
  if (not isinstance(value, numbers.Integral) or isinstance(value, bool)
      or value < minimum):
    raise ValueError(
        f"{fn}: `{name}` must be a Python int >= {minimum}, got {value!r}.")


def check_integer(x, name: str, fn: str) -> None:
  if not jnp.issubdtype(jnp.result_type(x), jnp.integer):
    raise ValueError(
        f"{fn}: `{name}` must be an integer array, got {jnp.result_type(x)}.")


def is_concrete(x) -> bool:
  """True when x holds values now (not a tracer under jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_labels(labels, num_classes: Optional[int], name: str, fn: str) -> None:
  """Integer labels in [0, num_classes).

  Values can be checked only when `labels` is concrete; under `jax.jit`
  out-of-range labels are handled by the caller (losses return NaN for them so
  a training loop's non-finite check stops, rather than silently clipping).
  """
  check_integer(labels, name, fn)
  if is_concrete(labels) and np.size(labels):
    values = np.asarray(labels)
    low, high = values.min(), values.max()
    if low < 0 or (num_classes is not None and high >= num_classes):
      limit = f"[0, {num_classes})" if num_classes is not None else ">= 0"
      raise ValueError(
          f"{fn}: `{name}` must be in {limit}, got values in [{low}, {high}].")


# ------------------------------------------------------------ collectives ---


def all_gather(x: jax.Array, axis_name: Optional[str]) -> jax.Array:
  """Concatenates x over the mapped axis along dim 0 (identity if None).

  Its transpose is a reduce-scatter, so gradients reach the device that owns
  each row: the per-device losses' mean has the single-device gradient.
  """
  if axis_name is None:
    return x
  return jax.lax.all_gather(x, axis_name, axis=0, tiled=True)


def axis_size(axis_name: Optional[str]) -> int:
  return 1 if axis_name is None else jax.lax.axis_size(axis_name)


def axis_index(axis_name: Optional[str]) -> jax.Array:
  return jnp.int32(0) if axis_name is None else jax.lax.axis_index(axis_name)


def global_row_offset(local_rows: int, axis_name: Optional[str]) -> jax.Array:
  """Index in the gathered batch of this device's first row."""
  return axis_index(axis_name) * local_rows


def psum(x, axis_name: Optional[str]):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def pmean(x, axis_name: Optional[str]):
  return x if axis_name is None else jax.lax.pmean(x, axis_name)
