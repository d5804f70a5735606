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
* `lars_rate_after_momentum` (default False): where LARS applies the rate.
  False: before the momentum, v ← m·v + lr·u, w ← w − v (optax's `lars`, the
  SimCLR TF code); True: after it, v ← m·v + u, w ← w − lr·v (PyTorch's SGD
  momentum, under the LARS of BYOL, Barlow Twins, VICReg, MoCo v3, SwAV's
  LARC and solo-learn). The two agree at a constant rate; while the rate
  changes (warm-up, decay) the first weighs each past update by the rate of
  its own step, the second by the current one.
* `warmup_steps` (default 0): linear warm-up from 0 to the peak rate, then a
  cosine decay to 0 at `config.total_steps` (Loshchilov & Hutter 2017).
* `exclude_bias_and_norm` (default True): biases and normalisation
  parameters (every leaf of rank <= 1) get neither weight decay nor LARS's
  trust ratio, as in SimCLR (Chen et al. 2020, App. B.1), BYOL (Grill et al.
  2020, App. C.1), MoCo v3 and DINO; False decays and adapts every
  parameter, as the official code of MoCo v2, SimSiam, SwAV (LARC) and the
  clustering methods does.
* `weight_decay_end` (default None): the weight decay follows a cosine from
  `weight_decay` to this value over the run (DINO's ViT schedule).
* `clip_grad` (default 0, off): gradients are clipped to this norm before
  the optimizer, over all parameters together, or each parameter tensor on
  its own with `clip_per_parameter` (DINO's `clip_gradients`).
* `bias_lr_scale` (default 1): the rate of biases and normalisation
  parameters relative to the others (Barlow Twins' LARS: 0.0048 / 0.2).
* `constant_lr_parts` (default ()): top-level parameter keys whose rate
  stays at the peak instead of following the schedule (SimSiam's
  predictor, `--fix-pred-lr`).
* `momentum_free_parts` (default ()): top-level parameter keys optimised
  without momentum (SGD: w ← w − lr·g'; LARS and AdamW with m = 0), e.g.
  DeepCluster's classifier, which the official code updates with its own
  `SGD(top_layer, lr, weight_decay)`.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from ssljax._common import (check_in_range, check_non_negative,
                            check_positive)

PyTree = Any

OPTIMIZERS = ("lars", "adamw", "sgd")


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warm-up to `base × batch_size / 256`, then cosine decay to 0.

  lr(t) = peak · t / w                                   for t < w
  lr(t) = peak · ½ (1 + cos(π (t − w) / (T − w)))        for w <= t <= T

  (a run that is all warm-up, w = T, only warms up).

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
  if warmup == config.total_steps:
    # A run that is all warm-up (a short run's shrunk one): optax's cosine
    # part would have no steps.
    return optax.linear_schedule(0.0, peak, warmup)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=config.total_steps, end_value=0.0)


def decay_mask(params: PyTree) -> PyTree:
  """True for the leaves that are not biases or normalisation parameters.

  Kernels and embeddings (rank >= 2) are True; BatchNorm/LayerNorm scales
  and offsets (rank <= 1) and every leaf named "bias", whatever its rank (an
  attention layer's [heads, head_dim] query/key/value biases: the fused
  `qkv.bias` of the official ViTs is 1-D), are False. With
  `exclude_bias_and_norm` only the former get weight decay and LARS
  adaptation, the rule of timm's `add_weight_decay` and DINO's
  `get_params_groups` (rank 1 or a name ending in ".bias").

  Example:
    >>> import jax.numpy as jnp
    >>> from ssljax.train import decay_mask
    >>> print(decay_mask({"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2),
    ...                   "query": {"bias": jnp.ones((2, 4))}}))
    {'bias': False, 'kernel': True, 'query': {'bias': False}}
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim > 1 and _leaf_name(path) != "bias", params)


def _leaf_name(path) -> str:
  last = path[-1] if path else None
  return str(getattr(last, "key", getattr(last, "name", "")))


def map_param_trees(fn: Callable, state: PyTree, *rest: PyTree,
                    params: PyTree) -> PyTree:
  """`fn(subtree, *rest_subtrees)` on every subtree of an optimizer state
  shaped like `params` (momentum traces, Adam moments, also inside chained
  or masked states); every other node is kept from `state`.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> params = {"w": jnp.ones(2)}
    >>> state = optax.adam(0.1).init(params)
    >>> zeroed = map_param_trees(
    ...     lambda tree: jax.tree.map(lambda x: x - x + 7, tree), state,
    ...     params=params)
    >>> print(zeroed[0].mu["w"].tolist(), int(zeroed[0].count))
    [7.0, 7.0] 0
  """
  structure = jax.tree.structure(params)

  def is_params(node) -> bool:
    return jax.tree.structure(node) == structure

  return jax.tree.map(
      lambda node, *others: fn(node, *others) if is_params(node) else node,
      state, *rest, is_leaf=is_params)


class AdamState(NamedTuple):
  """Adam's moments and, per parameter, the number of its updates."""
  count: PyTree
  mu: PyTree
  nu: PyTree


def scale_by_adam_per_parameter(b1: float = 0.9, b2: float = 0.999,
                                eps: float = 1e-8
                                ) -> optax.GradientTransformation:
  """Adam's scaling (Kingma & Ba 2015) with a step count per parameter.

      m ← b1·m + (1 − b1)·g,  v ← b2·v + (1 − b2)·g²,  t ← t + 1,
      update = (m / (1 − b1^t)) / (√(v / (1 − b2^t)) + eps).

  optax's `scale_by_adam` counts steps once for all parameters; PyTorch's
  Adam keeps a count per parameter, so a parameter frozen at first (DINO's
  last layer, `freeze`) starts its bias correction when it first moves. The
  counts are shaped like the parameters, so `freeze` keeps a frozen
  parameter's count, as its moments, unchanged.

  Example:
    >>> import jax.numpy as jnp
    >>> tx = scale_by_adam_per_parameter()
    >>> state = tx.init({"w": jnp.zeros(2)})
    >>> u, state = tx.update({"w": jnp.array([1.0, -2.0])}, state)
    >>> print([round(float(x), 4) for x in u["w"]], int(state.count["w"]))
    [1.0, -1.0] 1
  """

  def init(params):
    return AdamState(
        count=jax.tree.map(lambda _: jnp.zeros((), jnp.int32), params),
        mu=jax.tree.map(jnp.zeros_like, params),
        nu=jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    count = jax.tree.map(lambda c: c + 1, state.count)
    mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
    nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu,
                      updates)

    def scale(m, v, t):
      t = t.astype(jnp.float32)
      return (m / (1 - b1 ** t)) / (jnp.sqrt(v / (1 - b2 ** t)) + eps)

    return jax.tree.map(scale, mu, nu, count), AdamState(count, mu, nu)

  return optax.GradientTransformation(init, update)


class FreezeState(NamedTuple):
  """`freeze`'s state: the wrapped optimizer's and the update count."""
  inner: optax.OptState
  count: jax.Array


def freeze(inner: optax.GradientTransformation,
           frozen: Callable[[PyTree, jax.Array], PyTree]
           ) -> optax.GradientTransformation:
  """`inner`, but parameters frozen at the current step do not move.

  At update t (t = 0, 1, ... counted here), `mask = frozen(params, t)`, a
  pytree of bools shaped like `params`; where it is True the update is zero
  and the optimizer state (momentum, Adam moments) keeps its old value, as
  PyTorch optimizers skip a parameter whose gradient is None (DINO's frozen
  last layer, SwAV's prototypes): weight decay does not touch it either,
  and "adamw"'s per-parameter step count (`scale_by_adam_per_parameter`)
  waits too. Global counters (schedules) advance for everyone.

  Example:
    >>> import jax.numpy as jnp, optax
    >>> tx = freeze(optax.sgd(1.0, momentum=0.9),
    ...             lambda params, t: {"a": t < 1, "b": jnp.bool_(False)})
    >>> params = {"a": jnp.ones(1), "b": jnp.ones(1)}
    >>> state = tx.init(params)
    >>> g = {"a": jnp.ones(1), "b": jnp.ones(1)}
    >>> u, state = tx.update(g, state, params)
    >>> print(float(u["a"][0]), float(u["b"][0]))
    0.0 -1.0
    >>> u, state = tx.update(g, state, params)  # t = 1: "a" thaws
    >>> print(float(u["a"][0]), round(float(u["b"][0]), 4))
    -1.0 -1.9
  """

  def init(params):
    return FreezeState(inner.init(params), jnp.zeros((), jnp.int32))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError("freeze: `params` are needed to build the mask.")
    mask = frozen(params, state.count)
    new_updates, new_inner = inner.update(updates, state.inner, params)

    def keep_frozen(new, old):
      return jax.tree.map(lambda m, n, o: jnp.where(m, o, n), mask, new, old)

    new_updates = jax.tree.map(lambda m, u: jnp.where(m, jnp.zeros_like(u), u),
                               mask, new_updates)
    new_inner = map_param_trees(keep_frozen, new_inner, state.inner,
                                params=params)
    return new_updates, FreezeState(new_inner, state.count + 1)

  return optax.GradientTransformation(init, update)


def make_optimizer(config, *, frozen: Optional[Callable] = None
                   ) -> optax.GradientTransformation:
  """The optimizer named by `config.optimizer.name` (see module docstring).

  With g' = g + λw (λ = `weight_decay`, 0 for biases and norms), m the
  momentum and lr the scheduled rate:

  * LARS (You et al. 2017; the SimCLR/BYOL implementation):
    v ← m·v + lr·η·‖w‖/‖g'‖·g' (trust ratio 1 for biases and norms), w ← w − v.
  * AdamW (Loshchilov & Hutter 2019): Adam's moments of g with β1 = m and
    a step count per parameter, as PyTorch's,
    w ← w − lr·(m̂/(√v̂ + ε) + λw).
  * SGD with momentum: v ← m·v + g', w ← w − lr·v.

  Args:
    config: experiment config (`optimizer`, `batch_size`, `total_steps`).
    frozen: optional `frozen(params, step) -> pytree of bools` (a method's
      `Method.frozen`); parameters marked True at a step neither move nor
      advance their optimizer state (`freeze`).

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
    >>> tx = make_optimizer(
    ...     config, frozen=lambda p, t: {"a": t < 0, "b": t >= 0})
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
  if opt.name not in OPTIMIZERS:
    raise ValueError(
        f"{fn}: `config.optimizer.name` must be one of {OPTIMIZERS}, "
        f"got {opt.name!r}.")
  mask = decay_mask if opt.get("exclude_bias_and_norm", True) else True
  decay = _weight_decay(config, weight_decay)

  def base(lr, momentum=momentum):
    if opt.name == "lars":
      # optax's `lars`, with the rate and the momentum in either order.
      rate_then_momentum = (optax.scale_by_learning_rate(lr),
                            optax.trace(decay=momentum))
      if opt.get("lars_rate_after_momentum", False):
        rate_then_momentum = rate_then_momentum[::-1]
      return optax.chain(
          optax.add_decayed_weights(decay, mask=mask),
          optax.masked(optax.scale_by_trust_ratio(
              trust_coefficient=opt.get("trust_coefficient", 1e-3)), mask),
          *rate_then_momentum)
    if opt.name == "adamw":
      return optax.chain(
          scale_by_adam_per_parameter(b1=momentum, b2=opt.get("b2", 0.999)),
          optax.add_decayed_weights(decay, mask=mask),
          optax.scale_by_learning_rate(lr))
    return optax.chain(optax.add_decayed_weights(decay, mask=mask),
                       optax.sgd(lr, momentum=momentum or None))

  schedule = learning_rate_schedule(config)
  tx = base(schedule)
  constant = tuple(opt.get("constant_lr_parts", ()))
  still = tuple(opt.get("momentum_free_parts", ()))
  if constant or still:
    peak = schedule(max(opt.get("warmup_steps", 0), 0))
    # One optimizer per group of top-level keys, labelled by its rate and
    # its momentum.
    def group(key: str) -> str:
      return (f"{'constant' if key in constant else 'schedule'}/"
              f"{'no_momentum' if key in still else 'momentum'}")

    tx = optax.multi_transform(
        {f"{rate}/{kind}": base(peak if rate == "constant" else schedule,
                                0.0 if kind == "no_momentum" else momentum)
         for rate in ("schedule", "constant")
         for kind in ("momentum", "no_momentum")},
        lambda params: {k: jax.tree.map(lambda _, k=k: group(k), v)
                        for k, v in params.items()})
  tx = optax.chain(*_clipping(opt, fn), tx,
                   *_bias_scaling(opt.get("bias_lr_scale", 1.0), fn))
  return tx if frozen is None else freeze(tx, frozen)


def _weight_decay(config, start: float):
  """The weight decay: a number, or a cosine from it to `weight_decay_end`
  over the run (DINO: 0.04 → 0.4)."""
  end = config.optimizer.get("weight_decay_end")
  if end is None or end == start:
    return start
  check_non_negative(end, "config.optimizer.weight_decay_end",
                     "make_optimizer")

  def schedule(step):
    progress = jnp.clip(step / config.total_steps, 0.0, 1.0)
    return end + 0.5 * (start - end) * (1 + jnp.cos(jnp.pi * progress))

  return schedule


def _clipping(opt, fn: str) -> tuple[optax.GradientTransformation, ...]:
  """Gradient clipping to `clip_grad`: global norm, or per parameter."""
  limit = opt.get("clip_grad", 0.0)
  check_non_negative(limit, "config.optimizer.clip_grad", fn)
  if not limit:
    return ()
  if not opt.get("clip_per_parameter", False):
    return (optax.clip_by_global_norm(limit),)

  def clip(g):
    # DINO's clip_gradients: g ← g · min(1, c / (||g|| + 1e-6)) per tensor.
    return g * jnp.minimum(1.0, limit / (jnp.linalg.norm(g) + 1e-6))

  return (optax.stateless(lambda updates, params: jax.tree.map(clip,
                                                               updates)),)


def _bias_scaling(scale: float, fn: str
                  ) -> tuple[optax.GradientTransformation, ...]:
  """Scales the updates of biases and norms (rank <= 1) by `scale`; as the
  updates are linear in the rate, this is their own rate."""
  check_positive(scale, "config.optimizer.bias_lr_scale", fn)
  if scale == 1.0:
    return ()
  return (optax.masked(optax.scale(scale),
                       lambda params: jax.tree.map(lambda x: x.ndim <= 1,
                                                   params)),)
