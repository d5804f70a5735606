"""The open registry of method factories, and `build(config)`.

`build(config)` is the one place where an experiment config becomes a
`Method`: it splats `config.method` (minus its `name`) into the factory named
by `config.method.name`, a registered name or "package.module:factory" for a
user's own. A config value of the form `{"schedule": kind, ...}` becomes a
`step -> value` function first (`schedule`), so that step-dependent settings
such as BYOL's cosine EMA momentum can live in a config.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Mapping
from typing import Any, Callable

import jax.numpy as jnp

from ssljax.methods.base import Method
from ssljax.state import ema

Factory = Callable[..., Method]

_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, replace: bool = False) -> None:
  """Makes `factory` buildable as `config.method.name = name`.

  Args:
    name: the registry name.
    factory: a function of keyword-only hyper-parameters returning a
      `Method`.
    replace: allow replacing an existing entry.

  Example:
    >>> from ssljax import methods
    >>> methods.register("my_simclr", lambda **kw: methods.simclr(**kw))
    >>> "my_simclr" in methods.names()
    True
  """
  if not (isinstance(name, str) and name and callable(factory)):
    raise ValueError(f"register: need a non-empty `name` and a callable "
                     f"`factory`, got {name!r} and {factory!r}.")
  if name in _FACTORIES and not replace:
    raise ValueError(f"register: {name!r} is already registered; pass "
                     f"replace=True to replace it.")
  _FACTORIES[name] = factory


def names() -> tuple[str, ...]:
  """The registered method names, sorted."""
  return tuple(sorted(_FACTORIES))


def get(name: str) -> Factory:
  """The factory registered as `name`, or "package.module:factory".

  Raises:
    ValueError: if `name` is unknown; the message lists the valid names.
  """
  if isinstance(name, str) and ":" in name:
    module_name, _, attribute = name.partition(":")
    try:
      factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
      raise ValueError(f"methods.get: cannot import the factory {name!r} "
                       f"(\"package.module:factory\"): {error}") from error
    if not callable(factory):
      raise ValueError(f"methods.get: {name!r} is not callable.")
    return factory
  if name not in _FACTORIES:
    raise ValueError(f"methods.get: unknown method `name` {name!r}; valid "
                     f"names: {', '.join(names())}, or "
                     f"\"package.module:factory\" for your own.")
  return _FACTORIES[name]


# ------------------------------------------------------------ schedules ---


def _linear(start: float, end: float, steps: int) -> Callable:
  """start → end linearly over `steps`, then constant (DINO's warm-ups)."""

  def value(step):
    progress = jnp.clip(jnp.asarray(step, jnp.float32) / max(steps, 1), 0, 1)
    return start + progress * (end - start)

  return value


SCHEDULES: dict[str, Callable[..., Callable]] = {
    # BYOL's m(t) = 1 − (1 − base)(cos(πt/steps) + 1)/2.
    "cosine": lambda base, final, steps: functools.partial(
        ema.cosine_momentum, total_steps=steps, base=base, final=final),
    "linear": _linear,
    "constant": lambda value: (lambda step: jnp.full((), value, jnp.float32)),
}


def schedule(spec: Mapping) -> Callable:
  """A `step -> value` function from its config form.

  `{"schedule": "cosine", "base": m0, "final": m1, "steps": T}` (BYOL's EMA
  momentum), `{"schedule": "linear", "start": a, "end": b, "steps": T}`
  (then constant) or `{"schedule": "constant", "value": v}`.

  Example:
    >>> m = schedule({"schedule": "cosine", "base": 0.996, "final": 1.0,
    ...               "steps": 100})
    >>> print(round(float(m(0)), 4), round(float(m(100)), 4))
    0.996 1.0
  """
  spec = dict(spec)
  kind = spec.pop("schedule")
  if kind not in SCHEDULES:
    raise ValueError(f"schedule: unknown kind {kind!r}; valid: "
                     f"{sorted(SCHEDULES)}.")
  try:
    return SCHEDULES[kind](**spec)
  except TypeError as error:
    raise ValueError(f"schedule: bad fields {sorted(spec)} for {kind!r}: "
                     f"{error}") from None


def _resolve(value: Any) -> Any:
  """Config values as factory arguments: schedules become functions,
  mappings dicts, lists tuples."""
  if isinstance(value, Mapping):
    if "schedule" in value:
      return schedule(value)
    return {k: _resolve(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_resolve(v) for v in value)
  return value


def _as_dict(spec) -> dict:
  to_dict = getattr(spec, "to_dict", None)
  return dict(to_dict() if to_dict is not None else spec)


def parameters(factory: Factory) -> dict[str, inspect.Parameter]:
  """The keyword parameters of a factory, by name."""
  return {name: p for name, p in inspect.signature(factory).parameters.items()
          if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build(config) -> Method:
  """The `Method` of an experiment config: `config.method` splatted into the
  factory named by `config.method.name`.

  Args:
    config: an experiment config with a `method` field (or that field
      itself, any mapping with "name").

  Raises:
    ValueError: for an unknown method name, or a key of `config.method` that
      is not a parameter of the factory (the message lists them).

  Example:
    >>> from ssljax import methods
    >>> method = methods.build({"method": {
    ...     "name": "simclr", "backbone": "tiny_cnn", "temperature": 0.2}})
    >>> method.name
    'simclr'
  """
  spec = config["method"] if "method" in config else config
  kwargs = _as_dict(spec)
  name = kwargs.pop("name", None)
  factory = get(name)
  accepted = parameters(factory)
  takes_any = any(p.kind == p.VAR_KEYWORD
                  for p in inspect.signature(factory).parameters.values())
  unknown = sorted(set(kwargs) - set(accepted))
  if unknown and not takes_any:
    raise ValueError(
        f"methods.build: `config.method.{unknown[0]}` is not a parameter of "
        f"the {name!r} factory; its parameters: {', '.join(accepted)}.")
  return factory(**{k: _resolve(v) for k, v in kwargs.items()})
