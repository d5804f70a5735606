"""Self-supervised methods as factories of pure functions.

    method = ssljax.methods.byol(backbone="resnet18", momentum=0.99)
    params, model_state, method_state = method.init(rng, images)
    loss, aux = method.loss(params, model_state, method_state, batch, rng,
                            step)
    params, method_state = method.post_update(params, method_state,
                                              aux.update, step)

Each factory (`simclr`, `byol`, `dino`, ...) takes keyword-only
hyper-parameters with its paper's defaults and returns a `Method` whose
functions close over them (see `ssljax.methods.base` for the protocol).
Each method's module docstring gives its paper, recipe and official code;
docs/fidelity.md lists where it differs. `build(config)` makes the method of
an experiment config (`config.method.name` and the factory's arguments);
`register(name, factory)` adds your own, and
`config.method.name = "package.module:factory"` builds one without
registering it.

Example:
  >>> from ssljax import methods
  >>> method = methods.byol(backbone="tiny_cnn", proj_hidden_dim=16,
  ...                       proj_dim=8, pred_hidden_dim=16)
  >>> print(method.name, "supcon" in methods.names())
  byol True
"""

from __future__ import annotations

from ssljax.methods._registry import (SCHEDULES, build, get, names,
                                      parameters, register, schedule)
from ssljax.methods.base import (DatasetUpdate, Method, Schedule,
                                 StepOutput)
from ssljax.methods.byol import byol
from ssljax.methods.dcl import dcl
from ssljax.methods.dino import dino
from ssljax.methods.moco_v2 import moco_v2
from ssljax.methods.simclr import simclr
# contrastive and non-contrastive (group A)
# breadth: clip, cpc, metric (group B)
# clustering (group C)
# pretext tasks (group D)
# masked image modelling (group E)

_FACTORIES = (
    simclr, byol, dino, moco_v2, dcl,
    # group A
    # group B
    # group C
    # group D
    # group E
)

for _factory in _FACTORIES:
  register(_factory.__name__, _factory)

__all__ = ["DatasetUpdate", "Method", "SCHEDULES", "Schedule", "StepOutput",
           "build", "get", "names", "parameters", "register", "schedule",
           *(f.__name__ for f in _FACTORIES)]
