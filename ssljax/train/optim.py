"""Optimizers of the self-supervised papers, built from `config.optimizer`.

Fields of `config.optimizer` (an `ml_collections.ConfigDict`):

* `name`: "lars" (SimCLR, BYOL, Barlow Twins, SwAV), "adamw" (DINO, MoCo v3,
  ViTs) or "sgd" (MoCo v2, SimSiam, clustering methods).
* `learning_rate`: the *base* rate for a batch of 256. The peak rate is
  `learning_rate * config.batch_size / 256`, the linear scaling rule that the
  papers state their rates with (Goyal et al. 2017; SimCLR: 0.3 × B/256 with
  LARS, BYOL: 0.2 × B/256, MoCo v2: 0.03 × B/256, DINO: 5e-4 × B/256).
* `weight_decay`: decoupled from the adaptive scaling as in each paper.
* `momentum` (default 0.9): heavy-ball momentum of LARS and SGD, β1 of AdamW.
* `b2` (default 0.999): AdamW's β2.
* `trust_coefficient` (default 1e-3): LARS's η.
* `warmup_steps` (default 0): linear warm-up from 0 to the peak rate, then a
  cosine decay to 0 at `config.total_steps` (Loshchilov & Hutter 2017).

Biases and normalisation parameters (every leaf of rank <= 1) get neither
weight decay nor LARS's trust ratio, as in SimCLR (Chen et al. 2020, App. B.1)
and BYOL (Grill et al. 2020, App. C.1).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import optax

from ssljax._common import (check_in_range, check_non_negative,
                            check_positive)

PyTree = Any

OPTIMIZERS = ("lars", "adamw", "sgd")


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warm-up to `base × batch_size / 256`, then cosine decay to 0.

  lr(t) = peak · t / w                                   for t < w
  lr(t) = peak · ½ (1 + cos(π (t − w) / (T − w)))        for w <= t <= T

  with w = `config.optimizer.warmup_steps`, T = `config.total_steps` and
  peak = `config.optimizer.learning_rate · config.batch_size / 256`.

  Args:
    config: experiment config with `batch_size`, `total_steps` and
      `optimizer.learning_rate` (optionally `optimizer.warmup_steps`).

  Returns:
    An optax schedule, step -> learning rate.

  Raises:
    ValueError: naming the field if the rate is not positive or the warm-up
      is negative or longer than `config.total_steps`.

  Example:
    >>> import ml_collections
    >>> from ssljax.train import learning_rate_schedule
    >>> config = ml_collections.ConfigDict(dict(
    ...     batch_size=512, total_steps=10,
    ...     optimizer=dict(learning_rate=0.3, warmup_steps=2)))
    >>> schedule = learning_rate_schedule(config)
    >>> print([round(float(schedule(t)), 4) for t in (0, 1, 2, 6, 10)])
    [0.0, 0.3, 0.6, 0.3, 0.0]
  """
  fn = "learning_rate_schedule"
  base = config.optimizer.learning_rate
  check_positive(base, "config.optimizer.learning_rate", fn)
  check_positive(config.total_steps, "config.total_steps", fn)
  warmup = config.optimizer.get("warmup_steps", 0)
  if not 0 <= warmup <= config.total_steps:
    raise ValueError(
        f"{fn}: `config.optimizer.warmup_steps` must be in [0, "
        f"config.total_steps={config.total_steps}], got {warmup} (shorten "
        f"the warm-up along with the run).")
  peak = base * config.batch_size / 256
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=config.total_steps, end_value=0.0)


def decay_mask(params: PyTree) -> PyTree:
  """True for the leaves that get weight decay and LARS adaptation.

  Kernels (rank >= 2) are decayed; biases and BatchNorm/LayerNorm scales and
  offsets (rank <= 1) are not.

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.train import decay_mask
    >>> print(decay_mask({"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}))
    {'bias': False, 'kernel': True}
  """
  return jax.tree.map(lambda x: x.ndim > 1, params)


def make_optimizer(config, *, trainable: Optional[Callable] = None
                   ) -> optax.GradientTransformation:
  """The optimizer named by `config.optimizer.name` (see module docstring).

  With g' = g + λw (λ = `weight_decay`, 0 for biases and norms), m the
  momentum and lr the scheduled rate:

  * LARS (You et al. 2017; the SimCLR/BYOL implementation):
    v ← m·v + lr·η·‖w‖/‖g'‖·g' (trust ratio 1 for biases and norms), w ← w − v.
  * AdamW (Loshchilov & Hutter 2019): Adam's moments of g with β1 = m,
    w ← w − lr·(m̂/(√v̂ + ε) + λw).
  * SGD with momentum: v ← m·v + g', w ← w − lr·v.

  Args:
    config: experiment config (`optimizer`, `batch_size`, `total_steps`).
    trainable: optional `trainable(params) -> pytree of bools` (a method's
      `optimizer_mask`); leaves marked False get a zero update and no
      optimizer state.

  Returns:
    An `optax.GradientTransformation`.

  Raises:
    ValueError: naming `config.optimizer.name` if it is unknown, or another
      field if its value is out of range.

  Example:
    >>> import jax.numpy as jnp
    >>> import ml_collections
    >>> import optax
    >>> from ssljax.train import make_optimizer
    >>> config = ml_collections.ConfigDict(dict(
    ...     batch_size=256, total_steps=100,
    ...     optimizer=dict(name="sgd", learning_rate=0.1, weight_decay=0.0,
    ...                    momentum=0.0)))
    >>> tx = make_optimizer(config, trainable=lambda p: {"a": True, "b": False})
    >>> params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    >>> grads = {"a": jnp.ones(2), "b": jnp.ones(2)}
    >>> updates, _ = tx.update(grads, tx.init(params), params)
    >>> print([round(float(u), 4) for u in updates["a"]], updates["b"].tolist())
    [-0.1, -0.1] [0.0, 0.0]
  """
  fn = "make_optimizer"
  opt = config.optimizer
  weight_decay = opt.get("weight_decay", 0.0)
  check_non_negative(weight_decay, "config.optimizer.weight_decay", fn)
  momentum = opt.get("momentum", 0.9)
  check_in_range(momentum, 0.0, 1.0, "config.optimizer.momentum", fn)
  lr = learning_rate_schedule(config)
  if opt.name == "lars":
    tx = optax.lars(lr, weight_decay=weight_decay, weight_decay_mask=decay_mask,
                    trust_coefficient=opt.get("trust_coefficient", 1e-3),
                    trust_ratio_mask=decay_mask, momentum=momentum)
  elif opt.name == "adamw":
    tx = optax.adamw(lr, b1=momentum, b2=opt.get("b2", 0.999),
                     weight_decay=weight_decay, mask=decay_mask)
  elif opt.name == "sgd":
    tx = optax.chain(optax.add_decayed_weights(weight_decay, mask=decay_mask),
                     optax.sgd(lr, momentum=momentum or None))
  else:
    raise ValueError(
        f"{fn}: `config.optimizer.name` must be one of {OPTIMIZERS}, "
        f"got {opt.name!r}.")
  if trainable is None:
    return tx
  return optax.partition({True: tx, False: optax.set_to_zero()}, trainable)
