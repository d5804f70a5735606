"""Exponential moving average of parameters (BYOL, MoCo, DINO target networks).

The EMA target is a plain pytree with the online parameters' structure, so it
is sharded, donated and checkpointed like them; `update` is a pure function
that runs inside the jitted step after the optimizer update. The momentum
comes from a schedule with the signature `schedule(step, total_steps, base)`
(`cosine_momentum`, `constant_momentum`) so that methods can swap them.
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp

from ssljax._common import (check_in_range, check_positive, check_rank,
                            check_same_shape, is_concrete, to_compute)

PyTree = Any


def _check_momentum(momentum, fn: str, name: str = "momentum") -> None:
  """A scalar, and in [0, 1] when its value is known at trace time.

  Unlike `_common.check_in_range` this also checks concrete 0-d arrays, since
  schedules return arrays; traced values (a schedule under jit) pass.
  """
  check_rank(momentum, 0, name, fn)
  if is_concrete(momentum):
    check_in_range(float(momentum), 0.0, 1.0, name, fn)


def init(online: PyTree) -> PyTree:
  """The initial target: a copy of the online parameters (θt ← θo).

  The copy gets its own buffers, so a train step may donate both the online
  parameters and the target without donating one buffer twice.

  Args:
    online: pytree of arrays.

  Returns:
    A pytree equal to `online`, same dtypes, distinct buffers.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.state import ema
    >>> target = ema.init({"w": jnp.ones(2)})
    >>> print(target["w"].tolist())
    [1.0, 1.0]
  """
  return jax.tree.map(jnp.copy, online)


def update(target: PyTree, online: PyTree, momentum) -> PyTree:
  """One EMA step, θt ← m·θt + (1 − m)·θo, leaf by leaf.

  Grill et al. 2020 (BYOL) eq. 1; He et al. 2020 (MoCo) eq. 2. The mix is
  computed in float32 for half-precision leaves and cast back, so every leaf
  keeps its dtype.

  Args:
    target: pytree of the target parameters θt.
    online: pytree of the online parameters θo, same structure and shapes.
    momentum: m in [0, 1], a Python float or a (possibly traced) scalar.

  Returns:
    The new target pytree.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.state import ema
    >>> new = ema.update({"w": jnp.zeros(2)}, {"w": jnp.ones(2)}, 0.75)
    >>> print(new["w"].tolist())
    [0.25, 0.25]
  """
  fn = "ema.update"
  _check_momentum(momentum, fn)
  target_tree = jax.tree.structure(target)
  online_tree = jax.tree.structure(online)
  if target_tree != online_tree:
    raise ValueError(
        f"{fn}: `online` must have the structure of `target`, got "
        f"{online_tree} and {target_tree}.")
  for t, o in zip(jax.tree.leaves(target), jax.tree.leaves(online)):
    check_same_shape(fn, target=t, online=o)

  def mix(t, o):
    t32, o32 = to_compute(t, o)
    m = jnp.asarray(momentum, t32.dtype)
    return (m * t32 + (1.0 - m) * o32).astype(jnp.result_type(t))

  return jax.tree.map(mix, target, online)


def cosine_momentum(step, total_steps, base: float = 0.996,
                    final: float = 1.0) -> jax.Array:
  """BYOL's cosine momentum schedule, from `base` at step 0 to `final`.

      m(step) = final − (final − base) · (cos(π · step / total_steps) + 1) / 2

  Grill et al. 2020, section 3.2 (with final = 1). `step` may be traced; it is
  clamped to [0, total_steps], so the schedule stays at `final` afterwards.

  Args:
    step: current step, int or scalar array.
    total_steps: > 0, the step at which `final` is reached.
    base: momentum at step 0, in [0, 1].
    final: momentum at and after `total_steps`, in [0, 1].

  Returns:
    float32 scalar.

  Example:
    >>> from ssljax.state import ema
    >>> print(round(float(ema.cosine_momentum(50, 100, base=0.99)), 4))
    0.995
  """
  fn = "ema.cosine_momentum"
  check_positive(total_steps, "total_steps", fn)
  _check_momentum(base, fn, "base")
  _check_momentum(final, fn, "final")
  progress = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
  return final - (final - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def constant_momentum(step, total_steps: Optional[int] = None,
                      base: float = 0.99) -> jax.Array:
  """A constant momentum (MoCo v2's 0.999, SimSiam-style baselines).

  Takes `step` and `total_steps` only to share `cosine_momentum`'s signature,
  so a method can switch schedules by name.

  Args:
    step: ignored.
    total_steps: ignored.
    base: the momentum, in [0, 1].

  Returns:
    float32 scalar equal to `base`.

  Example:
    >>> from ssljax.state import ema
    >>> print(round(float(ema.constant_momentum(7, base=0.999)), 4))
    0.999
  """
  del step, total_steps
  _check_momentum(base, "ema.constant_momentum", "base")
  return jnp.asarray(base, jnp.float32)
