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
from ssljax.methods.barlow_twins import barlow_twins
from ssljax.methods.moco_v3 import moco_v3
from ssljax.methods.nnclr import nnclr
from ssljax.methods.simsiam import simsiam
from ssljax.methods.supcon import supcon
from ssljax.methods.swav import swav
from ssljax.methods.vicreg import vicreg
# breadth: clip, cpc, metric (group B)
from ssljax.methods.clip import clip
from ssljax.methods.cpc import cpc
from ssljax.methods.metric import metric
# clustering (group C)
from ssljax.methods.deepcluster import deepcluster
from ssljax.methods.deepercluster import deepercluster
from ssljax.methods.pcl import pcl
from ssljax.methods.sela import sela
# pretext tasks (group D)
from ssljax.methods.colorization import colorization
from ssljax.methods.context_encoder import context_encoder
from ssljax.methods.denoising_autoencoder import denoising_autoencoder
from ssljax.methods.exemplar import exemplar
from ssljax.methods.jigsaw import jigsaw
from ssljax.methods.relative_patch import relative_patch
from ssljax.methods.rotation import rotation
# masked image modelling (group E)
from ssljax.methods.ibot import ibot
from ssljax.methods.ijepa import ijepa
from ssljax.methods.mae import mae

_FACTORIES = (
    simclr, byol, dino, moco_v2, dcl,
    # group A
    moco_v3, simsiam, barlow_twins, vicreg, nnclr, supcon, swav,
    # group B
    clip, cpc, metric,
    # group C
    deepcluster, deepercluster, sela, pcl,
    # group D
    rotation, jigsaw, relative_patch, context_encoder, colorization,
    denoising_autoencoder, exemplar,
    # group E
    mae, ibot, ijepa,
)

for _factory in _FACTORIES:
  register(_factory.__name__, _factory)

__all__ = ["DatasetUpdate", "Method", "SCHEDULES", "Schedule", "StepOutput",
           "build", "get", "names", "parameters", "register", "schedule",
           *(f.__name__ for f in _FACTORIES)]
