"""DINO's teacher center: a running mean of the teacher's output logits.

The state is the [K] center array itself (a pytree leaf), which is what
`ssljax.losses.dino` takes; a wrapper tuple around one array would add
nothing. Subtracting the center from the teacher logits before the sharpened
softmax keeps the teacher from collapsing onto one dimension (Caron et al.,
"Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
section 3.1, eq. 4).
"""

from __future__ import annotations

import numbers
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from ssljax._common import check_rank, pmean, to_compute
from ssljax.state.ema import _check_momentum


def init(dim: int) -> jax.Array:
  """A zero center of `dim` float32 entries.

  Args:
    dim: K > 0, the number of teacher output dimensions.

  Returns:
    [K] float32 zeros.

  Example:
    >>> from ssljax.state import center
    >>> print(center.init(3).tolist())
    [0.0, 0.0, 0.0]
  """
  if not isinstance(dim, numbers.Integral) or dim <= 0:
    raise ValueError(f"center.init: `dim` must be a positive int, got {dim!r}.")
  return jnp.zeros((dim,), jnp.float32)


def update(center: jax.Array, teacher_logits: jax.Array, momentum=0.9, *,
           axis_name: Optional[str] = None) -> jax.Array:
  """c ← m·c + (1 − m)·mean of the teacher logits over all rows.

  The mean runs over every leading dimension (e.g. views and batch of a
  [Vt, B, K] array) and, with `axis_name`, over devices (a pmean of per-device
  means, which is the global mean for equal-sized shards, as in the official
  code's all-reduce divided by the world batch). No gradient flows into the
  center.

  Args:
    center: [K] current center.
    teacher_logits: [..., K] teacher outputs, at least 2-D.
    momentum: m in [0, 1], a Python float or a (possibly traced) scalar.
    axis_name: mapped axis to average over, or None.

  Returns:
    The new [K] center, in `center`'s dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.state import center
    >>> logits = jnp.array([[[1., 3.], [3., 5.]]])  # [Vt=1, B=2, K=2]
    >>> print(center.update(center.init(2), logits, momentum=0.5).tolist())
    [1.0, 2.0]
  """
  fn = "center.update"
  check_rank(center, 1, "center", fn)
  if np.ndim(teacher_logits) < 2:
    raise ValueError(
        f"{fn}: `teacher_logits` must have rank >= 2 ([..., K]), got shape "
        f"{np.shape(teacher_logits)}.")
  dim = np.shape(center)[0]
  if np.shape(teacher_logits)[-1] != dim:
    raise ValueError(
        f"{fn}: `teacher_logits` must end in the center size K={dim} of "
        f"`center`, got shape {np.shape(teacher_logits)}.")
  _check_momentum(momentum, fn)
  c, logits = to_compute(center, jax.lax.stop_gradient(teacher_logits))
  batch_mean = pmean(jnp.mean(logits.reshape(-1, dim), axis=0), axis_name)
  m = jnp.asarray(momentum, c.dtype)
  new = m * c + (1.0 - m) * batch_mean
  return jax.lax.stop_gradient(new).astype(jnp.result_type(center))
